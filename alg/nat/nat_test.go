package nat

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

var (
	cliA   = netip.MustParseAddr("192.0.2.2")
	cliB   = netip.MustParseAddr("192.0.2.3")
	srvP   = netip.MustParseAddrPort("198.51.100.2:50010")
	srvQ   = netip.MustParseAddrPort("198.51.100.3:50010")
	public = netip.MustParseAddr("192.0.2.1")
)

func TestReserveWantedPortFirst(t *testing.T) {
	var p Ports
	r := Range{40000, 40020}
	res, moved, err := p.Reserve(cliA, public, 40010, srvP, r, time.Minute)
	if err != nil || res.At.Port() != 40010 || moved || res.Initiator != cliA {
		t.Fatalf("Reserve = %v, %v, %v; want 40010 for %s", res, moved, err, cliA)
	}
	// The same translation again (the server announced the same port):
	// the same port.
	if res, moved, _ := p.Reserve(cliA, public, 40010, srvP, r, time.Minute); res.At.Port() != 40010 || moved {
		t.Fatalf("same translation again = %v, %v; want 40010 kept", res, moved)
	}
	// Another target for the same initiator: moved, within range.
	res, moved, err = p.Reserve(cliA, public, 40010, srvQ, r, time.Minute)
	if err != nil || res.At.Port() == 40010 || !moved || !r.Contains(res.At.Port()) {
		t.Fatalf("another target = %v, %v, %v; want another port of %s", res, moved, err, r)
	}
	// Shared: two holders, the port stays reserved until both released.
	first := Reservation{cliA, netip.AddrPortFrom(public, 40010)}
	p.Release(first)
	if _, moved, _ := p.Reserve(cliA, public, 40010, srvQ, r, time.Minute); !moved {
		t.Fatal("a port with one holder left was given to another target")
	}
	p.Release(first)
	if res, moved, _ := p.Reserve(cliA, public, 40010, srvQ, r, time.Minute); moved || res.At.Port() != 40010 {
		t.Fatalf("after both holders released: %v, %v; want 40010 for the new target", res, moved)
	}
	// Another initiator shares the port: its translations are its own.
	if res, moved, _ := p.Reserve(cliB, public, 40010, srvQ, r, time.Minute); res.At.Port() != 40010 || moved {
		t.Fatalf("another initiator = %v, %v; want 40010 kept", res, moved)
	}
	// A wanted port outside the range is never used.
	if res, moved, _ := p.Reserve(cliA, public, 30000, srvP, r, time.Minute); !moved || !r.Contains(res.At.Port()) {
		t.Fatalf("out-of-range port = %v, %v", res, moved)
	}
}

func TestReserveExhaustionReleaseAndExpiry(t *testing.T) {
	now := time.Unix(1000, 0)
	p := Ports{Now: func() time.Time { return now }}
	r := Range{50000, 50002}
	got := map[uint16]Reservation{}
	for i := range 3 {
		target := netip.AddrPortFrom(srvP.Addr(), uint16(1000+i))
		res, _, err := p.Reserve(cliA, public, 50000, target, r, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		got[res.At.Port()] = res
	}
	if len(got) != 3 {
		t.Fatalf("three reservations gave %v; want three distinct ports", got)
	}
	if _, _, err := p.Reserve(cliA, public, 50000, srvQ, r, 5*time.Second); !errors.Is(err, ErrExhausted) {
		t.Fatalf("fourth Reserve: err = %v; want ErrExhausted", err)
	}
	p.Release(got[50001])
	if res, _, err := p.Reserve(cliA, public, 50000, srvQ, r, 5*time.Second); err != nil || res.At.Port() != 50001 {
		t.Fatalf("after Release: %v, %v; want 50001", res, err)
	}
	if p.Held() != 3 {
		t.Fatalf("Held = %d; want 3", p.Held())
	}
	now = now.Add(6 * time.Second)
	if p.Held() != 0 {
		t.Fatalf("Held after the lifetime = %d; want 0", p.Held())
	}
	if res, moved, err := p.Reserve(cliA, public, 50000, srvQ, r, 5*time.Second); err != nil || res.At.Port() != 50000 || moved {
		t.Fatalf("after expiry: %v, %v, %v; want 50000", res, moved, err)
	}
}

func TestReserveBindProbe(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := netip.MustParseAddrPort(ln.Addr().String())
	if !BindProbe(busy) {
		t.Fatalf("BindProbe(%s) = false for a listening socket", busy)
	}
	p := Ports{Probe: BindProbe}
	res, moved, err := p.Reserve(cliA, busy.Addr(), busy.Port(), srvP, Range{busy.Port(), busy.Port() + 1}, time.Minute)
	if err != nil || !moved || res.At.Port() != busy.Port()+1 {
		t.Fatalf("Reserve of a port with a local listener = %v, %v, %v; want %d, moved", res, moved, err, busy.Port()+1)
	}
}

func TestLeg(t *testing.T) {
	c, s, g := netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("198.51.100.1")
	pub := netip.MustParseAddr("192.0.2.1")
	for _, tc := range []struct {
		leg             Leg
		published, ctrl bool
	}{
		{Leg{Client: c, Server: s, Upstream: c}, false, false},
		{Leg{Client: c, Public: pub, Server: s, Upstream: c}, true, false},
		{Leg{Client: c, Server: s, Upstream: g}, false, true},
		{Leg{Client: c, Public: s, Server: s, Upstream: netip.MustParseAddr("::ffff:192.0.2.2")}, false, false},
	} {
		if tc.leg.Published() != tc.published || tc.leg.ClientTranslated() != tc.ctrl {
			t.Errorf("%+v: Published %v ClientTranslated %v; want %v %v", tc.leg, tc.leg.Published(), tc.leg.ClientTranslated(), tc.published, tc.ctrl)
		}
	}
}
