package nft

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// changeDeadline bounds the wait for a notification (they arrive within
// microseconds of the commit; the bound is for a loaded CI machine).
const changeDeadline = 5 * time.Second

// seen is a Change with the time it was reported.
type seen struct {
	Change
	at time.Time
}

// appliedKernel is a Kernel in a fresh namespace with testSpec applied.
func appliedKernel(t *testing.T) (*netns, context.Context, *Kernel) {
	t.Helper()
	ns := newNetns(t)
	requireTool(t, "nft", "nftables")
	ctx := ctxT(t)
	k := newKernel(t, ns)
	if err := k.Apply(ctx, testSpec(QueueCompat)); err != nil {
		t.Fatal(err)
	}
	return ns, ctx, k
}

// startWatch subscribes before returning (so the test's later changes are
// all reported) and runs the Watcher until the test ends. fn never blocks:
// a change that does not fit the buffer fails the test.
func startWatch(t *testing.T, k *Kernel) <-chan seen {
	t.Helper()
	w, err := k.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	return runWatch(t, w)
}

func runWatch(t *testing.T, w *Watcher) <-chan seen {
	t.Helper()
	ch := make(chan seen, 4096)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- w.Run(ctx, func(c Change) {
			select {
			case ch <- seen{c, time.Now()}:
			default:
				t.Errorf("change buffer full, dropped %s", c)
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(changeDeadline):
			t.Error("Run did not return after cancel")
		}
	})
	return ch
}

// next returns the next change, failing the test after changeDeadline.
func next(t *testing.T, ch <-chan seen, what string) seen {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(changeDeadline):
		t.Fatalf("no change reported within %s, waiting for %s", changeDeadline, what)
		return seen{}
	}
}

// noise makes changes the watcher must not report: our own pinholes added
// and deleted, and another table created, filled, flushed and deleted.
func noise(t *testing.T, ctx context.Context, ns *netns, k *Kernel) {
	t.Helper()
	holes := []Pinhole{
		{Src: netip.MustParseAddr("192.0.2.2"), Dst: netip.MustParseAddr("198.51.100.2"), DstPort: 50000, Timeout: time.Minute},
		{Src: netip.MustParseAddr("2001:db8:c::2"), Dst: netip.MustParseAddr("2001:db8:5::2"), DstPort: 50001, Timeout: time.Minute},
	}
	for range 3 {
		if err := k.AddPinholes(ctx, holes...); err != nil {
			t.Fatal(err)
		}
		if err := k.DeletePinholes(ctx, holes...); err != nil {
			t.Fatal(err)
		}
	}
	ns.runStdin(t, `table inet other {
	set s { type ipv4_addr; elements = { 203.0.113.1 } }
	chain c { type filter hook forward priority 0; policy accept; ip saddr @s counter accept; }
}
table ip ftpsalg { chain c { counter; }; }
`, "nft", "-f", "-")
	ns.run(t, "nft", "flush", "chain", "inet", "other", "c")
	ns.run(t, "nft", "delete", "element", "inet", "other", "s", "{ 203.0.113.1 }")
	ns.run(t, "nft", "delete", "table", "inet", "other")
	// Same name, other family: not ours.
	ns.run(t, "nft", "delete", "table", "ip", DefaultTable)
}

// TestKernelWatch applies the table in a fresh namespace, starts a watch,
// makes changes that must not be reported (noise), then damages the table
// with nft(8) and checks that the damage is reported first, within
// changeDeadline, and that Check sees it. The latency from the nft
// command's exit to the notification is logged.
func TestKernelWatch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		cmd     []string
		want    Change // must be reported, after the first change
		first   ChangeKind
		missing []string
	}{
		{
			name: "delete table", cmd: []string{"nft", "delete", "table", "inet", DefaultTable},
			// The kernel deletes the contents first, one notification
			// each: rules, then sets, chains, the table last.
			first: RuleDeleted, want: Change{Kind: TableDeleted, Table: DefaultTable},
			missing: []string{"table inet ftpsalg"},
		},
		{
			name: "flush ruleset", cmd: []string{"nft", "flush", "ruleset"},
			first: RuleDeleted, want: Change{Kind: TableDeleted, Table: DefaultTable},
			missing: []string{"table inet ftpsalg"},
		},
		{
			name: "delete chain", cmd: []string{"nft", "delete", "chain", "inet", DefaultTable, "forward"},
			first: RuleDeleted, want: Change{Kind: ChainDeleted, Table: DefaultTable, Name: "forward"},
			missing: []string{"chain forward: 0 of 6 rules"},
		},
		{
			name: "flush chain", cmd: []string{"nft", "flush", "chain", "inet", DefaultTable, "forward"},
			first: RuleDeleted, want: Change{Kind: RuleDeleted, Table: DefaultTable, Name: "forward"},
			missing: []string{"chain forward: 0 of 6 rules"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns, ctx, k := appliedKernel(t)
			if h, err := k.Check(ctx); err != nil || !h.Intact {
				t.Fatalf("Check after Apply: %v, %v", h, err)
			}
			ch := startWatch(t, k)
			noise(t, ctx, ns, k)
			if h, err := k.Check(ctx); err != nil || !h.Intact {
				t.Fatalf("Check after the noise: %v, %v", h, err)
			}

			start := time.Now()
			ns.run(t, tc.cmd...)
			done := time.Now()
			first := next(t, ch, tc.want.String())
			if first.Kind != tc.first || first.Table != DefaultTable || first.Own {
				t.Fatalf("first change reported: %s, want %s in inet %s, not own (noise leaked?)", first.Change, tc.first, DefaultTable)
			}
			// nft runs under ip netns exec: the notification usually
			// arrives before its exit is seen (a negative delay).
			t.Logf("%s: first change (%s) %v after nft exited, %v after it started", tc.name, first.Change, first.at.Sub(done), first.at.Sub(start))
			for c := first; c.Change != tc.want; {
				c = next(t, ch, tc.want.String())
				if c.Change == tc.want {
					t.Logf("%s: %s %v after nft exited, %v after it started", tc.name, c.Change, c.at.Sub(done), c.at.Sub(start))
				}
			}
			h, err := k.Check(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.missing, h.Missing); h.Intact || diff != "" {
				t.Errorf("Check after %s: %v (-want +got):\n%s", tc.name, h, diff)
			}
			// Rebuilding heals it; our own changes are reported as own.
			if err := k.Apply(ctx, testSpec(QueueCompat)); err != nil {
				t.Fatal(err)
			}
			if h, err := k.Check(ctx); err != nil || !h.Intact {
				t.Fatalf("Check after the rebuild: %v, %v", h, err)
			}
			if err := k.Delete(ctx); err != nil {
				t.Fatal(err)
			}
			for {
				if c := next(t, ch, "own deletion"); c.Own && c.Kind == TableDeleted {
					break
				}
			}
		})
	}
}

// TestKernelWatchOwn checks that our own Apply and Delete are reported with
// Own set, and that a watch started before the first Apply of a Kernel made
// with WithTable follows that table.
func TestKernelWatchOwn(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ctx := ctxT(t)
	k, err := New(WithNetNS(ns.fd()), WithTable(DefaultTable))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Close() })
	if _, err := k.Check(ctx); err == nil {
		t.Fatal("Check before Apply succeeded")
	}
	ch := startWatch(t, k)
	if err := k.Apply(ctx, testSpec(QueueCompat)); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	if err := k.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	committed := time.Now()
	for {
		c := next(t, ch, "own table deletion")
		if !c.Own {
			t.Fatalf("own change reported as foreign: %s", c.Change)
		}
		if c.Kind == TableDeleted && c.at.After(before) {
			// In-process, no fork: the delay from the commit to the
			// callback.
			t.Logf("table deleted: reported %v after Delete returned (%v after it was called)", c.at.Sub(committed), c.at.Sub(before))
			break
		}
	}
	if h, err := k.Check(ctx); err != nil || h.Intact || !slices.Equal(h.Missing, []string{"table inet ftpsalg"}) {
		t.Fatalf("Check after Delete: %v, %v", h, err)
	}
}

// TestKernelWatchResync overflows the watcher's socket buffer before it
// reads anything and checks that the loss is reported as ChangeResync and
// that the watch goes on.
func TestKernelWatchResync(t *testing.T) {
	t.Parallel()
	_, ctx, k := appliedKernel(t)
	w, err := k.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	// The kernel's minimum; each rebuild notifies a few kilobytes.
	if err := w.conn.SetReadBuffer(1); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if err := k.Apply(ctx, testSpec(QueueCompat)); err != nil {
			t.Fatal(err)
		}
	}
	ch := runWatch(t, w)
	for {
		c := next(t, ch, "resync")
		if c.Kind == ChangeResync {
			break
		}
	}
	if err := k.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	for {
		c := next(t, ch, "table deletion after the resync")
		if c.Kind == TableDeleted && c.Own {
			break
		}
	}
}

// TestKernelWatchCancel checks that Run returns promptly when its context
// ends, with nothing happening in the kernel.
func TestKernelWatchCancel(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	k := newKernel(t, ns)
	if err := k.Apply(ctxT(t), testSpec(QueueCompat)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- k.Watch(ctx, func(Change) {}) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(changeDeadline):
		t.Fatal("Watch did not return after cancel")
	}
}
