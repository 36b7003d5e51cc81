package nft

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// relaySpec is mitmSpec with a relay port.
func relaySpec(kind QueueKind) Spec {
	s := mitmSpec(kind)
	s.RelayPort = 8022
	return s
}

// goldenRelayPinholes are goldenSNATPinholes plus relay elements: a passive
// one per family and an active one (server to client) for IPv4.
var goldenRelayPinholes = append([]Pinhole{
	{Src: netip.MustParseAddr("192.0.2.2"), Dst: netip.MustParseAddr("198.51.100.4"), DstPort: 50004, Timeout: 5 * time.Hour, Relay: true},
	{Src: netip.MustParseAddr("198.51.100.4"), Dst: netip.MustParseAddr("192.0.2.2"), DstPort: 40000, Timeout: 5 * time.Hour, Relay: true},
	{Src: netip.MustParseAddr("2001:db8:c::2"), Dst: netip.MustParseAddr("2001:db8:5::4"), DstPort: 50005, Timeout: 6 * time.Hour, Relay: true},
}, goldenSNATPinholes...)

func TestSpecValidateRelay(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		edit func(*Spec)
		want string
	}{
		{"valid", func(*Spec) {}, ""},
		{"no relay", func(s *Spec) { s.RelayPort = 0 }, ""},
		{"relay without mitm", func(s *Spec) { s.MITM, s.Masqueraded = nil, nil }, "relay port needs mitm servers"},
		{"relay port is tproxy port", func(s *Spec) { s.RelayPort = s.TProxyPort }, "also the tproxy port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := relaySpec(QueueCompat)
			tc.edit(&s)
			err := NewFake().Apply(t.Context(), s)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Apply: unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Apply: error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestFakeNoRelayUnchanged checks that a mitm table without a relay port
// is exactly the mitm table.
func TestFakeNoRelayUnchanged(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	f := NewFake()
	if err := f.Apply(ctx, mitmSpec(QueueCompat)); err != nil {
		t.Fatal(err)
	}
	if err := f.AddPinholes(ctx, goldenSNATPinholes...); err != nil {
		t.Fatal(err)
	}
	got, err := f.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "table-mitm.golden", got)
}

// relayScenario runs the relay element semantics on a Table: the fake and
// the kernel must agree.
func relayScenario(t *testing.T, tbl Table) {
	ctx := ctxT(t)
	cli, srv := netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("198.51.100.4")
	relay := Pinhole{Src: cli, Dst: srv, DstPort: 50000, Timeout: time.Minute, Relay: true}
	plain := Pinhole{Src: cli, Dst: srv, DstPort: 50001, Timeout: time.Minute}
	active6 := Pinhole{Src: netip.MustParseAddr("2001:db8:5::4"), Dst: netip.MustParseAddr("2001:db8:c::2"), DstPort: 40000,
		Timeout: time.Minute, Relay: true}

	// No relay elements in a mitm table without a relay port.
	if err := tbl.Apply(ctx, mitmSpec(QueueCompat)); err != nil {
		t.Fatal(err)
	}
	if err := tbl.AddPinholes(ctx, plain, relay); !errors.Is(err, ErrNoRelay) {
		t.Fatalf("AddPinholes with Relay on a table without relay port: %v, want ErrNoRelay", err)
	}
	if got, _ := tbl.Pinholes(ctx); len(got) != 0 {
		t.Fatalf("a rejected request left pinholes: %v", got)
	}
	if err := tbl.Apply(ctx, relaySpec(QueueCompat)); err != nil {
		t.Fatal(err)
	}
	withSNAT := relay
	withSNAT.SNAT = netip.MustParseAddr("198.51.100.1")
	if err := tbl.AddPinholes(ctx, withSNAT); err == nil || !strings.Contains(err.Error(), "no source NAT") {
		t.Fatalf("AddPinholes of a relay element with SNAT: %v, want an error", err)
	}
	kinds := func() map[uint16]bool {
		t.Helper()
		els, err := tbl.Pinholes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := map[uint16]bool{}
		for _, e := range els {
			out[e.DstPort] = e.Relay
		}
		return out
	}
	if err := tbl.AddPinholes(ctx, relay, plain, active6); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[uint16]bool{50000: true, 50001: false, 40000: true}, kinds()); diff != "" {
		t.Fatalf("after add (-want +got):\n%s", diff)
	}
	// A key is one kind or the other: re-adding switches it.
	relay.Relay, plain.Relay = false, true
	if err := tbl.AddPinholes(ctx, relay, plain); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[uint16]bool{50000: false, 50001: true, 40000: true}, kinds()); diff != "" {
		t.Fatalf("after switching kinds (-want +got):\n%s", diff)
	}
	d, err := tbl.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(d, ". 50001 timeout"); n != 1 {
		t.Fatalf("key 50001 in %d sets, want 1:\n%s", n, d)
	}
	// DeletePinholes needs only the key, whatever the kind.
	if err := tbl.DeletePinholes(ctx, Pinhole{Src: cli, Dst: srv, DstPort: 50001}, active6, relay); err != nil {
		t.Fatal(err)
	}
	if got, _ := tbl.Pinholes(ctx); len(got) != 0 {
		t.Fatalf("after delete: %v, want nothing", got)
	}
}

func TestFakeRelay(t *testing.T) {
	t.Parallel()
	relayScenario(t, NewFake())

	// The fake's packet paths: a relay element is diverted once and never
	// forwarded; a pinhole is forwarded and never diverted.
	ctx := ctxT(t)
	f := NewFake()
	if err := f.Apply(ctx, relaySpec(QueueCompat)); err != nil {
		t.Fatal(err)
	}
	r, p := goldenRelayPinholes[0], goldenPinholes[0]
	if err := f.AddPinholes(ctx, r, p); err != nil {
		t.Fatal(err)
	}
	if f.Use(r.Src, r.Dst, r.DstPort) || f.Divert(p.Src, p.Dst, p.DstPort) {
		t.Fatal("an element was used by the other kind's path")
	}
	if !f.Divert(r.Src, r.Dst, r.DstPort) || f.Divert(r.Src, r.Dst, r.DstPort) {
		t.Fatal("relay element not diverted exactly once")
	}
	if err := f.AddPinholes(ctx, r); err != nil {
		t.Fatal(err)
	}
	f.Advance(r.Timeout)
	if f.Divert(r.Src, r.Dst, r.DstPort) {
		t.Fatal("relay element outlived its timeout")
	}
}

func TestKernelRelay(t *testing.T) {
	t.Parallel()
	relayScenario(t, newKernel(t, newNetns(t)))
}

// relayListener runs the daemon's relay listener in miniature: transparent
// listeners on port (IPv4 and IPv6) that report each accepted connection,
// write "relay\n" and close. stop closes them (the daemon is down).
func relayListener(t *testing.T, ns *netns, port uint16) (<-chan accepted, func()) {
	t.Helper()
	out := make(chan accepted, 16)
	return out, serveTransparent(t, ns, port, func(c net.Conn) {
		l, r := c.LocalAddr().(*net.TCPAddr).AddrPort(), c.RemoteAddr().(*net.TCPAddr).AddrPort()
		out <- accepted{local: netip.AddrPortFrom(l.Addr().Unmap(), l.Port()), remote: netip.AddrPortFrom(r.Addr().Unmap(), r.Port())}
		_, _ = io.WriteString(c, "relay\n")
		_ = c.Close()
	})
}

// reachRelay connects from ns (from laddr when valid) to addr and reports
// whether the relay listener answered: a dropped SYN shows as a timeout.
func reachRelay(ns *netns, laddr netip.Addr, addr string, timeout time.Duration) error {
	return ns.do(func() error {
		d := net.Dialer{Timeout: timeout}
		if laddr.IsValid() {
			d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(laddr, 0))
		}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		b, err := io.ReadAll(c)
		if err != nil {
			return err
		}
		if string(b) != "relay\n" {
			return fmt.Errorf("read %q, want the relay listener's greeting", b)
		}
		return nil
	})
}

// TestKernelLabRelay diverts announced data connections to a relay
// listener in the lab gateway: passive (client to server) and active
// (server to client), IPv4 and IPv6, exactly once, only for the announced
// initiator, and never forwarded when the listener is gone.
func TestKernelLabRelay(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	requireTool(t, "nft", "nftables")
	l.gw.runStdin(t, labMITMfw, "nft", "-f", "-")
	l.gw.run(t, "nft", "add", "rule", "inet", "labfw", "input", "meta", "mark", "and", "0x40", "==", "0x40", "accept")
	// A second client address, for a connection from another client.
	l.client.run(t, "ip", "addr", "add", "192.0.2.3/24", "dev", "c0")
	l.client.run(t, "ip", "-6", "addr", "add", "2001:db8:c::3/64", "dev", "c0", "nodad")
	ctx := ctxT(t)
	kind, err := ProbeQueue(ctx, WithNetNS(l.gw.fd()))
	if err != nil {
		t.Fatal(err)
	}
	k := newKernel(t, l.gw)
	spec := labMITMSpec(kind)
	spec.RelayPort = 8022
	if err := k.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := newRouter(t, l.gw).Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	relayed, stop := relayListener(t, l.gw, 8022)
	const blocked = 500 * time.Millisecond

	for _, tc := range []struct {
		name            string
		from, to        *netns
		src, dst, other string
		port            uint16
		serverListens   bool
	}{
		{"passive ipv4", l.client, l.server, labClient4, labServer4, "192.0.2.3", 50000, true},
		{"passive ipv6", l.client, l.server, labClient6, labServer6, "2001:db8:c::3", 50001, true},
		{"active ipv4", l.server, l.client, labServer4, labClient4, "", 40000, false},
		{"active ipv6", l.server, l.client, labServer6, labClient6, "", 40001, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, dst := netip.MustParseAddr(tc.src), netip.MustParseAddr(tc.dst)
			target := net.JoinHostPort(tc.dst, fmt.Sprint(tc.port))
			// Something listens at the target: a connection that the
			// kernel forwarded instead would not read the greeting.
			listen(t, tc.to, target)
			p := Pinhole{Src: src, Dst: dst, DstPort: tc.port, Timeout: 5 * time.Second, Relay: true}
			if err := k.AddPinholes(ctx, p); err != nil {
				t.Fatal(err)
			}
			if tc.other != "" {
				if err := reachRelay(tc.from, netip.MustParseAddr(tc.other), target, blocked); !isTimeout(err) {
					t.Fatalf("from another client address: %v, want a timeout", err)
				}
				if got := pinholesFor(t, k, p); len(got) != 1 {
					t.Fatalf("another client's connection consumed the element: %v", got)
				}
			}
			// From src explicitly: with two addresses on the link, the
			// client's default IPv6 source is the newer one.
			if err := reachRelay(tc.from, src, target, 2*time.Second); err != nil {
				t.Fatalf("announced connection: %v", err)
			}
			a := recv(t, relayed)
			if a.local != netip.AddrPortFrom(dst, tc.port) || a.remote.Addr() != src {
				t.Errorf("relay listener saw local %s, remote %s; want %s:%d from %s", a.local, a.remote, dst, tc.port, src)
			}
			if got := pinholesFor(t, k, p); len(got) != 0 {
				t.Fatalf("element left after use: %v", got)
			}
			if err := reachRelay(tc.from, src, target, blocked); !isTimeout(err) {
				t.Fatalf("second connection: %v, want a timeout", err)
			}
		})
	}

	// With the relay listener gone the element is not consumed and the
	// connection is dropped in forward, even where the operator's forward
	// chain would accept it.
	t.Run("daemon down", func(t *testing.T) {
		stop()
		l.gw.run(t, "nft", "insert", "rule", "inet", "labfw", "forward", "tcp", "dport", "50002", "accept")
		listen(t, l.server, net.JoinHostPort(labServer4, "50002"))
		p := Pinhole{Src: netip.MustParseAddr(labClient4), Dst: netip.MustParseAddr(labServer4), DstPort: 50002,
			Timeout: 5 * time.Second, Relay: true}
		if err := k.AddPinholes(ctx, p); err != nil {
			t.Fatal(err)
		}
		if err := reachRelay(l.client, p.Src, net.JoinHostPort(labServer4, "50002"), blocked); !isTimeout(err) {
			t.Fatalf("with the relay listener down: %v, want a timeout", err)
		}
		if got := pinholesFor(t, k, p); len(got) != 1 {
			t.Fatalf("element consumed without a listener: %v", got)
		}
		// Without the element, the operator's rule lets it through.
		if err := k.DeletePinholes(ctx, p); err != nil {
			t.Fatal(err)
		}
		if err := dial(l.client, net.JoinHostPort(labServer4, "50002"), 2*time.Second); err != nil {
			t.Fatalf("without a relay element: %v", err)
		}
	})
}
