package main

import "testing"

// TestGCPercentFor: tight from manySessions, the default below half of it,
// unchanged in between.
func TestGCPercentFor(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ n, cur, want int }{
		{0, defaultGC, defaultGC},
		{manySessions - 1, defaultGC, defaultGC},
		{manySessions, defaultGC, tightGC},
		{10 * manySessions, tightGC, tightGC},
		{manySessions - 1, tightGC, tightGC},
		{manySessions / 2, tightGC, tightGC},
		{manySessions/2 - 1, tightGC, defaultGC},
	} {
		if got := gcPercentFor(tc.n, tc.cur); got != tc.want {
			t.Errorf("gcPercentFor(%d, %d) = %d, want %d", tc.n, tc.cur, got, tc.want)
		}
	}
}
