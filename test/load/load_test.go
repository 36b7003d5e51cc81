package load

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func ms(n ...int) []time.Duration {
	d := make([]time.Duration, len(n))
	for i, v := range n {
		d[i] = time.Duration(v) * time.Millisecond
	}
	return d
}

func TestPercentile(t *testing.T) {
	t.Parallel()
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	for _, tc := range []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one", ms(7), 0.99, 7 * time.Millisecond},
		{"p0 is the minimum", ms(1, 2, 3), 0, time.Millisecond},
		{"p100 is the maximum", ms(1, 2, 3), 1, 3 * time.Millisecond},
		{"median of four is the second", ms(1, 2, 3, 4), 0.5, 2 * time.Millisecond},
		{"p50 of 1..100", hundred, 0.50, 50 * time.Millisecond},
		{"p95 of 1..100", hundred, 0.95, 95 * time.Millisecond},
		{"p99 of 1..100", hundred, 0.99, 99 * time.Millisecond},
		{"p99 of ten is the maximum", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0.99, 10 * time.Millisecond},
	} {
		if got := Percentile(tc.sorted, tc.p); got != tc.want {
			t.Errorf("%s: Percentile(%v) = %v, want %v", tc.name, tc.p, got, tc.want)
		}
	}
}

// TestRun: the window counts what completes inside it, failures count
// everywhere, and the run ends by itself when sessions block until their
// deadline.
func TestRun(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	res := Run(context.Background(), Config{Concurrency: 4, Window: 100 * time.Millisecond, SessionTimeout: time.Second},
		func(ctx context.Context) error {
			if calls.Add(1)%3 == 0 {
				return errors.New("every third fails")
			}
			<-time.After(time.Millisecond) // a session that takes time
			return nil
		})
	if res.Sessions == 0 || res.Failures == 0 {
		t.Fatalf("sessions %d, failures %d: want both", res.Sessions, res.Failures)
	}
	if len(res.Latencies) != res.Sessions {
		t.Fatalf("%d latencies for %d sessions", len(res.Latencies), res.Sessions)
	}
	for i := 1; i < len(res.Latencies); i++ {
		if res.Latencies[i] < res.Latencies[i-1] {
			t.Fatal("latencies not sorted")
		}
	}
	if diff := cmp.Diff(map[string]int{"every third fails": res.Failures}, res.Errors); diff != "" {
		t.Fatalf("errors (-want +got):\n%s", diff)
	}
	if res.Rate() != float64(res.Sessions)/0.1 {
		t.Fatalf("rate %v for %d sessions in 100 ms", res.Rate(), res.Sessions)
	}

	// Sessions that block until their deadline end the run anyway: after
	// the window and one session timeout.
	start := time.Now()
	res = Run(context.Background(), Config{Concurrency: 3, Window: 10 * time.Millisecond, SessionTimeout: 50 * time.Millisecond},
		func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("run took %v", el)
	}
	if res.Sessions != 0 || res.Failures != 3 || !strings.Contains(res.ErrorSummary(), "3× context deadline exceeded") {
		t.Fatalf("blocked sessions: %+v", res)
	}
}

func TestParseStatus(t *testing.T) {
	t.Parallel()
	status := "Name:\tftpsalg\nUmask:\t0022\nState:\tS (sleeping)\nVmPeak:\t 1268012 kB\nVmHWM:\t  104412 kB\nVmRSS:\t   98304 kB\nRssAnon:\t   80000 kB\nThreads:\t9\n"
	got, err := parseStatus([]byte(status))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Proc{RSS: 98304 << 10, HWM: 104412 << 10, Threads: 9}, got); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	if _, err := parseStatus([]byte("Name:\tkthreadd\nThreads:\t1\n")); err == nil {
		t.Fatal("a kernel thread's status (no VmRSS) parsed")
	}
}

func TestParseStat(t *testing.T) {
	t.Parallel()
	// The command name may hold spaces and parentheses.
	stat := "4242 (ftp (x) d) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 9 0 12345 1268012 24576 18446744073709551615\n"
	got, err := parseStat([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if want := 3250 * time.Millisecond; got != want {
		t.Fatalf("cpu %v, want %v (325 ticks)", got, want)
	}
	for _, bad := range []string{"", "4242 (x) S 1 2", "4242 (x) S 1 4242 4242 0 -1 0 0 0 0 0 u s 0"} {
		if _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q) did not fail", bad)
		}
	}
}

func TestParseSmapsRollup(t *testing.T) {
	t.Parallel()
	in := "00400000-7ffc2f5ff000 ---p 00000000 00:00 0                          [rollup]\nRss:              104412 kB\nPss:              103000 kB\nPss_Anon:          90000 kB\nAnonymous:         90000 kB\nTHPeligible:    0\n"
	got, err := parseSmapsRollup([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"Rss": 104412 << 10, "Pss": 103000 << 10, "Pss_Anon": 90000 << 10, "Anonymous": 90000 << 10}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
}

// TestReadProcSelf reads the test process itself.
func TestReadProcSelf(t *testing.T) {
	t.Parallel()
	p, err := ReadProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if p.RSS <= 0 || p.Threads <= 0 || p.HWM < p.RSS {
		t.Fatalf("implausible: %+v", p)
	}
}

// wellFormed decodes the whole document and returns its element names,
// in order.
func wellFormed(t *testing.T, doc []byte) []string {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(doc))
	d.Strict = true
	var names []string
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, doc)
		}
		if se, ok := tok.(xml.StartElement); ok {
			names = append(names, se.Name.Local)
			if len(names) == 1 && (se.Name.Local != "svg" || se.Name.Space != "http://www.w3.org/2000/svg") {
				t.Fatalf("root element %v, want svg in the SVG namespace", se.Name)
			}
		}
	}
}

func count(names []string, name string) int {
	n := 0
	for _, x := range names {
		if x == name {
			n++
		}
	}
	return n
}

func TestChartSVG(t *testing.T) {
	t.Parallel()
	c := Chart{
		Title: "sessions/s <& \"quotes\">", Caption: "make bench", XLabel: "concurrent sessions", YLabel: "sessions/s",
		LogX: true,
		Series: []Series{
			{Name: "mitm & TLS", Points: []Point{{1, 90}, {10, 300}, {100, 350}, {1000, 320}}},
			{Name: "inspect", Points: []Point{{1, 200}, {10, 700}, {100, 800}, {1000, 650}}, Dash: "6 3"},
		},
	}
	doc, err := c.SVG()
	if err != nil {
		t.Fatal(err)
	}
	names := wellFormed(t, doc)
	if got := count(names, "polyline"); got != 2 {
		t.Errorf("%d polylines, want one per series", got)
	}
	if got := count(names, "circle"); got != 8 {
		t.Errorf("%d markers, want one per point", got)
	}
	for _, want := range []string{"1,000", "&lt;&amp;", "mitm &amp; TLS", `stroke-dasharray="6 3"`} {
		if !bytes.Contains(doc, []byte(want)) {
			t.Errorf("picture lacks %q", want)
		}
	}

	// Log y with latencies, a linear chart with one point.
	for _, c := range []Chart{
		{Title: "latency", LogX: true, LogY: true, Series: []Series{{Name: "p99", Points: []Point{{1, 0.8}, {1000, 2400}}}}},
		{Title: "rss", Series: []Series{{Name: "rss", Points: []Point{{0, 17}}}}},
	} {
		doc, err := c.SVG()
		if err != nil {
			t.Fatalf("%s: %v", c.Title, err)
		}
		wellFormed(t, doc)
	}

	// What cannot be drawn is an error, not a broken picture.
	for _, c := range []Chart{
		{Title: "empty"},
		{Title: "zero on log", LogX: true, Series: []Series{{Points: []Point{{0, 1}}}}},
		{Title: "NaN", Series: []Series{{Points: []Point{{1, math.NaN()}}}}},
	} {
		if _, err := c.SVG(); err == nil {
			t.Errorf("%s: no error", c.Title)
		}
	}
}

func TestAxisTicks(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		values []float64
		log    bool
		want   []float64
	}{
		{"linear from zero", []float64{130, 870}, false, []float64{0, 200, 400, 600, 800, 1000}},
		{"linear RSS", []float64{17, 410}, false, []float64{0, 100, 200, 300, 400, 500}},
		{"log concurrency", []float64{1, 10, 100, 1000}, true, []float64{1, 10, 100, 1000}},
		{"log latency", []float64{0.7, 2400}, true, []float64{0.1, 1, 10, 100, 1000, 10000}},
	} {
		a, err := newAxis(tc.values, tc.log, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tc.want, a.ticks, cmp.Comparer(func(x, y float64) bool { return math.Abs(x-y) < 1e-9*math.Max(1, math.Abs(x)) })); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
}

func TestFormatNumber(t *testing.T) {
	t.Parallel()
	for v, want := range map[float64]string{0: "0", 0.1: "0.1", 2.5: "2.5", 10: "10", 1000: "1,000", 12345.6: "12,346", 100000: "100,000", -2000: "-2,000"} {
		if got := formatNumber(v); got != want {
			t.Errorf("formatNumber(%v) = %q, want %q", v, got, want)
		}
	}
}

// TestRunMaxSessions: a bounded count ends the run and the window early.
func TestRunMaxSessions(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	res := Run(context.Background(), Config{Concurrency: 3, Window: time.Minute, SessionTimeout: time.Second, MaxSessions: 10},
		func(ctx context.Context) error { calls.Add(1); return nil })
	if calls.Load() != 10 || res.Sessions != 10 || res.Failures != 0 {
		t.Fatalf("%d calls: %v", calls.Load(), res)
	}
	if res.Window >= time.Minute || res.Elapsed >= time.Minute {
		t.Fatalf("window %v, elapsed %v: the run did not end with its last session", res.Window, res.Elapsed)
	}
}

// TestRunWindowHooks: both hooks run, in order, also when the sessions
// run out during the warm-up.
func TestRunWindowHooks(t *testing.T) {
	t.Parallel()
	for _, max := range []int{0, 1} {
		var order []string
		var mu sync.Mutex
		hook := func(s string) func() { return func() { mu.Lock(); order = append(order, s); mu.Unlock() } }
		Run(context.Background(), Config{Concurrency: 2, Warmup: 20 * time.Millisecond, Window: 30 * time.Millisecond,
			SessionTimeout: time.Second, MaxSessions: max, OnWindowStart: hook("start"), OnWindowEnd: hook("end")},
			func(ctx context.Context) error { return nil })
		if diff := cmp.Diff([]string{"start", "end"}, order); diff != "" {
			t.Errorf("MaxSessions %d: hooks (-want +got):\n%s", max, diff)
		}
	}
}
