package nft

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

// throttleSpec is the mitm golden spec with bans.
func throttleSpec(kind QueueKind) Spec {
	s := mitmSpec(kind)
	s.Bans = true
	return s
}

// goldenBans are in table-throttle.golden; they outlive any test run.
var goldenBans = []Ban{
	{Addr: netip.MustParseAddr("203.0.113.66"), Timeout: 30 * time.Minute},
	{Addr: netip.MustParseAddr("2001:db8:bad::1"), Timeout: time.Hour},
}

// banScenario is what both tables must do with bans.
func banScenario(t *testing.T, tbl Table, banner Banner) {
	ctx := ctxT(t)
	a4, a6 := netip.MustParseAddr("203.0.113.7"), netip.MustParseAddr("2001:db8:bad::7")
	if err := tbl.Apply(ctx, testSpec(QueueCompat)); err != nil {
		t.Fatal(err)
	}
	if err := banner.AddBans(ctx, Ban{Addr: a4, Timeout: time.Minute}); !errors.Is(err, ErrNoBans) {
		t.Fatalf("AddBans without Spec.Bans: got %v, want ErrNoBans", err)
	}
	spec := testSpec(QueueCompat)
	spec.Bans = true
	if err := tbl.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := banner.AddBans(ctx, Ban{Addr: a4, Timeout: 0}); err == nil {
		t.Fatal("AddBans with a zero timeout succeeded")
	}
	// The last of equal keys wins.
	if err := banner.AddBans(ctx, Ban{Addr: a4, Timeout: time.Second}, Ban{Addr: a6, Timeout: time.Hour},
		Ban{Addr: netip.MustParseAddr("::ffff:203.0.113.7"), Timeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	got, err := banner.Bans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Addr != a4 || got[0].Timeout != time.Minute || got[1].Addr != a6 || got[1].Timeout != time.Hour ||
		got[0].Expires <= 0 || got[0].Expires > time.Minute {
		t.Fatalf("Bans: got %+v, want %s for 1m and %s for 1h", got, a4, a6)
	}
	// A rebuild (reload, restart) keeps the bans with what is left.
	if err := tbl.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	again, err := banner.Bans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != 2 || again[0].Addr != a4 || again[0].Timeout > time.Minute || again[1].Timeout > time.Hour {
		t.Fatalf("Bans after a rebuild: got %+v, want both, none longer than before", again)
	}
	// A table without bans has none; the next one starts empty.
	if err := tbl.Apply(ctx, testSpec(QueueCompat)); err != nil {
		t.Fatal(err)
	}
	if err := tbl.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if got, err := banner.Bans(ctx); err != nil || len(got) != 0 {
		t.Fatalf("Bans after a table without bans: got %+v, %v; want none", got, err)
	}
}

func TestFakeBans(t *testing.T) {
	t.Parallel()
	f := NewFake()
	banScenario(t, f, f)

	ctx := ctxT(t)
	spec := testSpec(QueueCompat)
	spec.Bans = true
	if err := f.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	bad := netip.MustParseAddr("203.0.113.9")
	ctl := netip.MustParseAddrPort("198.51.100.2:21")
	if err := f.AddBans(ctx, Ban{Addr: bad, Timeout: 3 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if !f.Refused(bad, ctl) {
		t.Error("a banned client's control connection was not refused")
	}
	if f.Refused(bad, netip.MustParseAddrPort("198.51.100.2:22")) {
		t.Error("a banned client's connection to another port was refused")
	}
	if f.Refused(netip.MustParseAddr("203.0.113.10"), ctl) {
		t.Error("another client was refused")
	}
	f.Advance(3 * time.Second)
	if f.Refused(bad, ctl) {
		t.Error("the ban outlived its timeout")
	}
}

func TestKernelBans(t *testing.T) {
	t.Parallel()
	k := newKernel(t, newNetns(t))
	banScenario(t, k, k)
}

// TestKernelLabBan bans a client in the lab: its new connections to a
// control endpoint are dropped, its other connections and another client's
// are not, a rebuild keeps the ban, and the ban expires.
func TestKernelLabBan(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	ctx := ctxT(t)
	k := newKernel(t, l.gw)
	kind, err := ProbeQueue(ctx, WithNetNS(l.gw.fd()))
	if err != nil {
		t.Fatal(err)
	}
	spec := testSpec(kind) // fail open: nothing reads the queue here
	spec.Bans = true
	spec.Control = append(spec.Control,
		netip.MustParseAddrPort(labServer4+":2121"), netip.AddrPortFrom(netip.MustParseAddr(labServer6), 2121))
	if err := k.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	listen(t, l.server, ":2121")
	listen(t, l.server, ":2122")
	ctl4, ctl6 := net.JoinHostPort(labServer4, "2121"), net.JoinHostPort(labServer6, "2121")
	if err := dial(l.client, ctl4, 2*time.Second); err != nil {
		t.Fatalf("before the ban: %v", err)
	}
	if err := k.AddBans(ctx, Ban{Addr: netip.MustParseAddr(labClient4), Timeout: 3 * time.Second}); err != nil {
		t.Fatal(err)
	}
	const blocked = 500 * time.Millisecond
	if err := dial(l.client, ctl4, blocked); !isTimeout(err) {
		t.Fatalf("banned client to a control endpoint: got %v, want a timeout (SYN dropped)", err)
	}
	if err := dial(l.client, net.JoinHostPort(labServer4, "2122"), 2*time.Second); err != nil {
		t.Fatalf("banned client to another port: %v", err)
	}
	if err := dial(l.client, ctl6, 2*time.Second); err != nil {
		t.Fatalf("the client's other (unbanned) address: %v", err)
	}
	// A rebuild keeps the ban.
	if err := k.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := dial(l.client, ctl4, blocked); !isTimeout(err) {
		t.Fatalf("after a rebuild: got %v, want a timeout (ban carried over)", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := dial(l.client, ctl4, blocked)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the 3s ban still holds after 10s: %v", err)
		}
	}
	if bans, err := k.Bans(ctx); err != nil || len(bans) != 0 {
		t.Fatalf("Bans after expiry: %+v, %v", bans, err)
	}
}
