package nft

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ftpsalg/ftpsalg/alg/route"
)

// newRouter installs nothing yet: it opens the policy routing that goes
// with mitmSpec's TProxyMark (table 100, pref 100) in ns.
func newRouter(t testing.TB, ns *netns) *route.Kernel {
	t.Helper()
	r, err := route.New(0x40, 100, 100, route.Options{NetNS: ns.fd()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// mitmSpec is testSpec with mitm servers: one IPv4 server on an explicit
// and an implicit-TLS port, one IPv6 server.
func mitmSpec(kind QueueKind) Spec {
	s := testSpec(kind)
	s.MITM = []netip.AddrPort{
		netip.MustParseAddrPort("198.51.100.4:990"),
		netip.MustParseAddrPort("198.51.100.4:21"),
		netip.MustParseAddrPort("[2001:db8:5::4]:21"),
	}
	s.TProxyPort = 8021
	s.TProxyMark = 0x40
	s.Masqueraded = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/25"), netip.MustParsePrefix("2001:db8:3::/64")}
	return s
}

// goldenSNATPinholes are goldenPinholes plus one pinhole per family with
// source NAT (in the mitm golden files only).
var goldenSNATPinholes = append([]Pinhole{
	{Src: netip.MustParseAddr("192.0.2.2"), Dst: netip.MustParseAddr("198.51.100.4"), DstPort: 50002, Timeout: time.Hour,
		SNAT: netip.MustParseAddr("198.51.100.1")},
	{Src: netip.MustParseAddr("2001:db8:c::2"), Dst: netip.MustParseAddr("2001:db8:5::4"), DstPort: 50003, Timeout: 2 * time.Hour,
		SNAT: netip.MustParseAddr("2001:db8:5::1")},
	// A published server's passive pinhole: the client connects to the
	// public address and port, translated to the server's.
	{Src: netip.MustParseAddr("192.0.2.2"), Dst: netip.MustParseAddr("192.0.2.1"), DstPort: 40000, Timeout: time.Hour,
		DNAT: netip.MustParseAddrPort("198.51.100.4:50010")},
	// A masqueraded client's active pinhole, with the server's connection
	// leaving from the public address.
	{Src: netip.MustParseAddr("2001:db8:5::4"), Dst: netip.MustParseAddr("2001:db8:5::1"), DstPort: 61000, Timeout: time.Hour,
		DNAT: netip.MustParseAddrPort("[2001:db8:c::2]:1025"), SNAT: netip.MustParseAddr("2001:db8:c::1")},
}, goldenPinholes...)

// transparent sets IP_TRANSPARENT (IPV6_TRANSPARENT on IPv6 sockets), as
// the daemon's listener and upstream dialer do: the listener then accepts
// connections TPROXY assigns to it, and the dialer may bind to the client's
// (non-local) address.
func transparent(network, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		if network == "tcp6" {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
			return
		}
		serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
	})
	return cmp.Or(err, serr)
}

// accepted is what the lab proxy saw of one diverted connection.
type accepted struct {
	local, remote netip.AddrPort // LocalAddr is the original destination
	upstream      netip.AddrPort // local address of the spoofed upstream connection
	err           error
}

// serveTransparent listens on port in ns (IPv4 and IPv6) with
// IP_TRANSPARENT, as the daemon's listeners do, and runs handle for each
// accepted connection in its own goroutine. The returned stop closes the
// listeners and waits for the handlers (the daemon is down); it also runs
// at cleanup.
func serveTransparent(t *testing.T, ns *netns, port uint16, handle func(net.Conn)) func() {
	t.Helper()
	var lns []net.Listener
	for _, network := range []string{"tcp4", "tcp6"} {
		addr := net.JoinHostPort("0.0.0.0", fmt.Sprint(port))
		if network == "tcp6" {
			addr = net.JoinHostPort("::", fmt.Sprint(port))
		}
		if err := ns.do(func() error {
			ln, err := (&net.ListenConfig{Control: transparent}).Listen(context.Background(), network, addr)
			lns = append(lns, ln)
			return err
		}); err != nil {
			t.Fatalf("failed to listen on %s: %v", addr, err)
		}
	}
	var wg sync.WaitGroup
	var once sync.Once
	stop := func() {
		once.Do(func() {
			for _, ln := range lns {
				_ = ln.Close()
			}
			wg.Wait()
		})
	}
	t.Cleanup(stop)
	for _, ln := range lns {
		wg.Go(func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				wg.Go(func() { handle(c) })
			}
		})
	}
	return stop
}

// startProxy runs a minimal transparent proxy in ns, as the daemon's mitm
// transport does: transparent listeners on port (IPv4 and IPv6); for each
// connection, an upstream connection to its original destination bound to
// the client's address; bytes copied both ways. The returned stop closes
// the listeners (the daemon is down).
func startProxy(t *testing.T, ns *netns, port uint16) (<-chan accepted, func()) {
	t.Helper()
	out := make(chan accepted, 16)
	return out, serveTransparent(t, ns, port, func(down net.Conn) { proxyConn(ns, down, out) })
}

func proxyConn(ns *netns, down net.Conn, out chan<- accepted) {
	defer down.Close()
	a := accepted{
		local:  down.LocalAddr().(*net.TCPAddr).AddrPort(),
		remote: down.RemoteAddr().(*net.TCPAddr).AddrPort(),
	}
	a.local = netip.AddrPortFrom(a.local.Addr().Unmap(), a.local.Port())
	a.remote = netip.AddrPortFrom(a.remote.Addr().Unmap(), a.remote.Port())
	var up net.Conn
	a.err = ns.do(func() error {
		d := net.Dialer{
			LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(a.remote.Addr(), 0)),
			Control:   transparent, Timeout: 2 * time.Second,
		}
		var err error
		up, err = d.Dial("tcp", a.local.String())
		return err
	})
	if a.err == nil {
		a.upstream = up.LocalAddr().(*net.TCPAddr).AddrPort()
	}
	out <- a
	if a.err != nil {
		return
	}
	defer up.Close()
	_ = down.SetDeadline(time.Now().Add(5 * time.Second))
	_ = up.SetDeadline(time.Now().Add(5 * time.Second))
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(up, down)
		_ = up.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	_, _ = io.Copy(down, up)
	_ = down.(*net.TCPConn).CloseWrite()
	<-done
}

// echoServer listens in ns, echoes what it reads and reports each client's
// address.
func echoServer(t *testing.T, ns *netns, addr string) <-chan netip.AddrPort {
	t.Helper()
	seen := make(chan netip.AddrPort, 16)
	var l net.Listener
	if err := ns.do(func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("failed to listen on %s in %s: %v", addr, ns.name, err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = l.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			ap := c.RemoteAddr().(*net.TCPAddr).AddrPort()
			seen <- netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				_, _ = io.Copy(c, c)
			})
		}
	})
	return seen
}

// roundTrip connects from ns to addr, sends a line, half-closes and reads
// the echo.
func roundTrip(ns *netns, addr string, timeout time.Duration) error {
	return ns.do(func() error {
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		const msg = "hello through ftpsalg\n"
		if _, err := io.WriteString(c, msg); err != nil {
			return err
		}
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			return err
		}
		got, err := io.ReadAll(c)
		if err != nil {
			return err
		}
		if string(got) != msg {
			return fmt.Errorf("echo %q, want %q", got, msg)
		}
		return nil
	})
}

// labMITMfw is the operator's table in the mitm lab: default drop on input
// and forward. The input chain at first only has the rule that looks right
// but is not enough (tproxied packets keep their destination port); the
// test adds the mark rule of docs/integration.md.
const labMITMfw = `table inet labfw {
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		tcp dport 8021 accept comment "not enough for tproxy"
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		ct mark & 0x10 == 0x10 accept comment "ftpsalg pinholes"
		tcp dport 2121 accept comment "a server that is not mitm"
	}
}
`

// labMITMSpec diverts the lab server's port 21 (both families) to the
// proxy on 8021.
func labMITMSpec(kind QueueKind) Spec {
	s := mitmSpec(kind)
	s.Control = nil
	s.MITM = []netip.AddrPort{
		netip.AddrPortFrom(netip.MustParseAddr(labServer4), 21),
		netip.AddrPortFrom(netip.MustParseAddr(labServer6), 21),
	}
	return s
}

// TestKernelLabMITM runs diverted control connections and source-NATed
// data connections through the lab gateway.
func TestKernelLabMITM(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	requireTool(t, "nft", "nftables")
	l.gw.runStdin(t, labMITMfw, "nft", "-f", "-")
	ctx := ctxT(t)
	kind, err := ProbeQueue(ctx, WithNetNS(l.gw.fd()))
	if err != nil {
		t.Fatal(err)
	}
	k := newKernel(t, l.gw)
	if err := k.Apply(ctx, labMITMSpec(kind)); err != nil {
		t.Fatal(err)
	}
	if err := newRouter(t, l.gw).Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	proxied, stopProxy := startProxy(t, l.gw, 8021)
	seen21 := echoServer(t, l.server, ":21")
	seen2121 := echoServer(t, l.server, ":2121")
	const blocked = 500 * time.Millisecond

	t.Run("input rule", func(t *testing.T) {
		addr := net.JoinHostPort(labServer4, "21")
		if err := roundTrip(l.client, addr, blocked); !isTimeout(err) {
			t.Fatalf("diverted connection with only 'tcp dport 8021 accept' on input: %v, want a timeout", err)
		}
		l.gw.run(t, "nft", "add", "rule", "inet", "labfw", "input", "meta", "mark", "and", "0x40", "==", "0x40", "accept")
	})
	if t.Failed() {
		return
	}

	for _, fam := range []struct{ name, cli, srv string }{
		{"ipv4", labClient4, labServer4},
		{"ipv6", labClient6, labServer6},
	} {
		t.Run("divert "+fam.name, func(t *testing.T) {
			cli, srv := netip.MustParseAddr(fam.cli), netip.AddrPortFrom(netip.MustParseAddr(fam.srv), 21)
			if err := roundTrip(l.client, srv.String(), 2*time.Second); err != nil {
				t.Fatalf("control connection through the proxy: %v", err)
			}
			a := recv(t, proxied)
			if a.err != nil {
				t.Fatalf("proxy's upstream connection: %v", a.err)
			}
			if a.local != srv || a.remote.Addr() != cli || a.upstream.Addr() != cli {
				t.Errorf("proxy saw local %s, remote %s, upstream from %s; want %s, %s, %s", a.local, a.remote, a.upstream, srv, cli, cli)
			}
			if got := recv(t, seen21); got != a.upstream {
				t.Errorf("server saw %s, want the proxy's spoofed %s", got, a.upstream)
			}
		})
	}

	t.Run("not diverted", func(t *testing.T) {
		if err := roundTrip(l.client, net.JoinHostPort(labServer4, "2121"), 2*time.Second); err != nil {
			t.Fatal(err)
		}
		if got := recv(t, seen2121); got.Addr() != netip.MustParseAddr(labClient4) {
			t.Errorf("server saw %s, want the client", got)
		}
		select {
		case a := <-proxied:
			t.Errorf("proxy got a connection to a server that is not mitm: %+v", a)
		default:
		}
	})

	// Reverse path filtering, as sysctls and as nft fib rules (the latter
	// in the style of firewalld's IPv6_rpfilter, before our chain, and in
	// a filter chain after it).
	t.Run("rp_filter", func(t *testing.T) {
		check := func(t *testing.T, what, addr string, wantOK bool) {
			t.Helper()
			err := roundTrip(l.client, addr, blocked)
			switch {
			case wantOK && err != nil:
				t.Fatalf("with %s: %v", what, err)
			case !wantOK && err == nil:
				t.Fatalf("with %s: connection worked", what)
			}
			if wantOK {
				recv(t, proxied)
				recv(t, seen21)
			}
		}
		a4, a6 := net.JoinHostPort(labServer4, "21"), net.JoinHostPort(labServer6, "21")
		sysctl := func(kv ...string) {
			l.gw.run(t, append([]string{"sysctl", "-qw"}, kv...)...)
		}
		for _, v := range []string{"1", "2"} {
			sysctl("net.ipv4.conf.all.rp_filter="+v, "net.ipv4.conf.default.rp_filter="+v,
				"net.ipv4.conf.gc.rp_filter="+v, "net.ipv4.conf.gs.rp_filter="+v)
			check(t, "rp_filter="+v, a4, true)
		}
		// With src_valid_mark the reverse path lookup uses the packet mark,
		// finds our local default route and declares the source martian.
		sysctl("net.ipv4.conf.all.src_valid_mark=1")
		check(t, "src_valid_mark=1", a4, false)
		sysctl("net.ipv4.conf.all.accept_local=1", "net.ipv4.conf.gc.accept_local=1")
		check(t, "src_valid_mark=1 and accept_local=1", a4, true)
		sysctl("net.ipv4.conf.all.src_valid_mark=0", "net.ipv4.conf.all.accept_local=0", "net.ipv4.conf.gc.accept_local=0")

		for _, tc := range []struct {
			prio, key string
			ok        bool
		}{
			{"raw + 10", "saddr . mark . iif", true}, // firewalld: before our mark is set
			{"filter", "saddr . iif", true},
			{"filter", "saddr . mark . iif", false}, // sees our mark: the lookup finds the local route
		} {
			fw := fmt.Sprintf("table inet rpf {\n\tchain pre {\n\t\ttype filter hook prerouting priority %s; policy accept;\n\t\tfib %s oif missing drop\n\t}\n}\n", tc.prio, tc.key)
			l.gw.runStdin(t, fw, "nft", "-f", "-")
			for _, a := range []string{a4, a6} {
				check(t, fmt.Sprintf("fib %s oif missing drop at priority %s", tc.key, tc.prio), a, tc.ok)
			}
			l.gw.run(t, "nft", "delete", "table", "inet", "rpf")
		}
	})

	for _, fam := range []struct{ name, cli, srv, gw string }{
		{"ipv4", labClient4, labServer4, "198.51.100.1"},
		{"ipv6", labClient6, labServer6, "2001:db8:5::1"},
	} {
		t.Run("snat "+fam.name, func(t *testing.T) {
			seen := echoServer(t, l.server, net.JoinHostPort(fam.srv, "50000"))
			p := Pinhole{Src: netip.MustParseAddr(fam.cli), Dst: netip.MustParseAddr(fam.srv), DstPort: 50000,
				Timeout: 3 * time.Second, SNAT: netip.MustParseAddr(fam.gw)}
			if err := k.AddPinholes(ctx, p); err != nil {
				t.Fatal(err)
			}
			if got := pinholesFor(t, k, p); len(got) != 1 || got[0].SNAT != p.SNAT {
				t.Fatalf("Pinholes: %+v, want one with SNAT %s", got, p.SNAT)
			}
			if err := roundTrip(l.client, net.JoinHostPort(fam.srv, "50000"), 2*time.Second); err != nil {
				t.Fatalf("data connection through the pinhole: %v", err)
			}
			if got := recv(t, seen); got.Addr() != p.SNAT {
				t.Errorf("server saw %s, want the gateway's %s", got, p.SNAT)
			}
			if err := k.DeletePinholes(ctx, p); err != nil {
				t.Fatal(err)
			}
			dump, err := k.Dump(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(dump, ". 50000 timeout") {
				t.Errorf("DeletePinholes left an element:\n%s", dump)
			}
		})
	}

	// Without a transparent listener (daemon down) the tproxy statement
	// ends the rule: the packet is not diverted and is forwarded, so the
	// operator's forward policy decides.
	t.Run("daemon down", func(t *testing.T) {
		stopProxy()
		addr := net.JoinHostPort(labServer4, "21")
		if err := roundTrip(l.client, addr, blocked); !isTimeout(err) {
			t.Fatalf("with the proxy down: %v, want a timeout (forward policy drop)", err)
		}
		l.gw.run(t, "nft", "add", "rule", "inet", "labfw", "forward", "tcp", "dport", "21", "accept")
		if err := roundTrip(l.client, addr, 2*time.Second); err != nil {
			t.Fatalf("with the proxy down and port 21 accepted in forward: %v", err)
		}
		if got := recv(t, seen21); got.Addr() != netip.MustParseAddr(labClient4) {
			t.Errorf("server saw %s, want the client directly", got)
		}
	})
}

// labMITMIptables is the operator's input rule for mitm mode in
// iptables-nft terms (docs/integration.md), with a default-drop policy.
var labMITMIptables = [][]string{
	{"-P", "INPUT", "DROP"},
	{"-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"},
	{"-A", "INPUT", "-m", "mark", "--mark", "0x40/0x40", "-j", "ACCEPT"},
}

// TestKernelLabMITMIptables checks the iptables-nft variant of the input
// rule. iptables is optional on our machines, so this test only skips.
func TestKernelLabMITMIptables(t *testing.T) {
	t.Parallel()
	requirePriv(t)
	for _, tool := range []string{"iptables-nft", "ip6tables-nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("TEST NOT RUN: %s not found (Debian package iptables)", tool)
		}
	}
	l := newLab(t)
	for _, args := range labMITMIptables {
		l.gw.run(t, append([]string{"iptables-nft"}, args...)...)
		l.gw.run(t, append([]string{"ip6tables-nft"}, args...)...)
	}
	ctx := ctxT(t)
	if err := newKernel(t, l.gw).Apply(ctx, labMITMSpec(QueueCompat)); err != nil {
		t.Fatal(err)
	}
	if err := newRouter(t, l.gw).Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	proxied, _ := startProxy(t, l.gw, 8021)
	seen := echoServer(t, l.server, ":21")
	for _, srv := range []string{labServer4, labServer6} {
		if err := roundTrip(l.client, net.JoinHostPort(srv, "21"), 2*time.Second); err != nil {
			t.Fatalf("control connection to %s through the proxy: %v", srv, err)
		}
		if a := recv(t, proxied); a.err != nil {
			t.Fatal(a.err)
		}
		recv(t, seen)
	}
}

// recv receives from ch or fails the test after 3 s.
func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(3 * time.Second):
		t.Fatal("nothing received within 3s")
		panic("unreachable")
	}
}

func TestSpecValidateMITM(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		edit func(*Spec)
		want string // substring of the error; empty means valid
	}{
		{"valid", func(*Spec) {}, ""},
		{"no tproxy port", func(s *Spec) { s.TProxyPort = 0 }, "tproxy port"},
		{"no tproxy mark", func(s *Spec) { s.TProxyMark = 0 }, "tproxy mark must not be zero"},
		{"mark overlaps ct mark", func(s *Spec) { s.TProxyMark = 0x50 }, "overlaps ct mark"},
		{"mark overlaps packet mark", func(s *Spec) { s.TProxyMark = 0x60 }, "overlaps packet mark"},
		{"overlap without mitm", func(s *Spec) { s.MITM, s.Masqueraded = nil, nil; s.TProxyMark = 0x10 }, "overlaps ct mark"},
		{"no mitm, no tproxy", func(s *Spec) { s.MITM, s.Masqueraded, s.TProxyPort, s.TProxyMark = nil, nil, 0, 0 }, ""},
		{"inspect and mitm", func(s *Spec) {
			s.MITM = append(s.MITM, netip.MustParseAddrPort("[::ffff:198.51.100.3]:990"))
		}, "also an inspect-mode control endpoint"},
		{"bad mitm endpoint", func(s *Spec) { s.MITM = []netip.AddrPort{netip.MustParseAddrPort("[::]:21")} }, "invalid mitm endpoint"},
		{"zero mitm port", func(s *Spec) { s.MITM = []netip.AddrPort{netip.MustParseAddrPort("198.51.100.4:0")} }, "port must not be zero"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := mitmSpec(QueueCompat)
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

// TestFakeNoMITMUnchanged checks that the tproxy settings alone change
// nothing: without mitm servers the table is the inspect-only one.
func TestFakeNoMITMUnchanged(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := mitmSpec(QueueCompat)
	s.MITM, s.Masqueraded = nil, nil
	f := NewFake()
	if err := f.Apply(ctx, s); err != nil {
		t.Fatal(err)
	}
	if err := f.AddPinholes(ctx, goldenPinholes...); err != nil {
		t.Fatal(err)
	}
	got, err := f.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "table.golden", got)
}

func TestPinholeValidateSNAT(t *testing.T) {
	t.Parallel()
	v4 := netip.MustParseAddr("192.0.2.2")
	v4b := netip.MustParseAddr("198.51.100.2")
	for _, tc := range []struct {
		name string
		snat netip.Addr
		want string
	}{
		{"valid", netip.MustParseAddr("198.51.100.1"), ""},
		{"mapped", netip.MustParseAddr("::ffff:198.51.100.1"), ""},
		{"other family", netip.MustParseAddr("2001:db8:5::1"), "another family"},
		{"unspecified", netip.IPv4Unspecified(), "unicast"},
		{"multicast", netip.MustParseAddr("224.0.0.1"), "unicast"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := NewFake()
			if err := f.Apply(t.Context(), mitmSpec(QueueCompat)); err != nil {
				t.Fatal(err)
			}
			err := f.AddPinholes(t.Context(), Pinhole{Src: v4, Dst: v4b, DstPort: 1, Timeout: time.Second, SNAT: tc.snat})
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("AddPinholes: unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("AddPinholes: error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// snatScenario runs the source NAT semantics on a Table: the fake and the
// kernel must agree.
func snatScenario(t *testing.T, tbl Table) {
	ctx := ctxT(t)
	cli, srv := netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("198.51.100.4")
	gwA, gwB := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.9")
	p := Pinhole{Src: cli, Dst: srv, DstPort: 50000, Timeout: time.Minute, SNAT: gwA}
	other := Pinhole{Src: cli, Dst: srv, DstPort: 50001, Timeout: time.Minute}

	// No source NAT in a table without mitm servers.
	inspect := mitmSpec(QueueCompat)
	inspect.MITM, inspect.Masqueraded = nil, nil
	if err := tbl.Apply(ctx, inspect); err != nil {
		t.Fatal(err)
	}
	if err := tbl.AddPinholes(ctx, other, p); !errors.Is(err, ErrNoMITM) {
		t.Fatalf("AddPinholes with SNAT on an inspect-only table: %v, want ErrNoMITM", err)
	}
	if got, _ := tbl.Pinholes(ctx); len(got) != 0 {
		t.Fatalf("a rejected request left pinholes: %v", got)
	}

	if err := tbl.Apply(ctx, mitmSpec(QueueCompat)); err != nil {
		t.Fatal(err)
	}
	snatOf := func() map[uint16]netip.Addr {
		t.Helper()
		els, err := tbl.Pinholes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := map[uint16]netip.Addr{}
		for _, e := range els {
			out[e.DstPort] = e.SNAT
		}
		return out
	}
	mapElems := func() int {
		t.Helper()
		d, err := tbl.Dump(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m := d[strings.Index(d, "map snat4"):strings.Index(d, "map snat6")]
		return strings.Count(m, " timeout ")
	}
	if err := tbl.AddPinholes(ctx, p, other); err != nil {
		t.Fatal(err)
	}
	if got := snatOf(); got[50000] != gwA || got[50001].IsValid() {
		t.Fatalf("after add: SNAT %v, want 50000 -> %s only", got, gwA)
	}
	// Re-adding with another address replaces it (the kernel refuses a
	// second value for a map key unless the element is replaced).
	p.SNAT = gwB
	if err := tbl.AddPinholes(ctx, p); err != nil {
		t.Fatalf("AddPinholes with a new SNAT: %v", err)
	}
	if got := snatOf(); got[50000] != gwB {
		t.Fatalf("after replace: SNAT %v, want 50000 -> %s", got, gwB)
	}
	// Re-adding without SNAT removes the translation.
	p.SNAT = netip.Addr{}
	if err := tbl.AddPinholes(ctx, p); err != nil {
		t.Fatal(err)
	}
	if got := snatOf(); got[50000].IsValid() || mapElems() != 0 {
		t.Fatalf("after re-add without SNAT: SNAT %v, %d map elements, want none", got, mapElems())
	}
	p.SNAT = gwA
	if err := tbl.AddPinholes(ctx, p); err != nil {
		t.Fatal(err)
	}
	// DeletePinholes needs only the key and removes both elements.
	if err := tbl.DeletePinholes(ctx, Pinhole{Src: cli, Dst: srv, DstPort: 50000}, other); err != nil {
		t.Fatal(err)
	}
	if got, _ := tbl.Pinholes(ctx); len(got) != 0 || mapElems() != 0 {
		t.Fatalf("after delete: %v, %d map elements, want nothing", got, mapElems())
	}
}

func TestFakeSNAT(t *testing.T) {
	t.Parallel()
	snatScenario(t, NewFake())

	// The fake's packet path: a used pinhole keeps its map element until
	// it times out, as in the kernel (the map is not updated by packets).
	ctx := ctxT(t)
	f := NewFake()
	if err := f.Apply(ctx, mitmSpec(QueueCompat)); err != nil {
		t.Fatal(err)
	}
	p := goldenSNATPinholes[0]
	if err := f.AddPinholes(ctx, p); err != nil {
		t.Fatal(err)
	}
	if !f.Use(p.Src, p.Dst, p.DstPort) {
		t.Fatal("Use: not admitted")
	}
	if d, _ := f.Dump(ctx); !strings.Contains(d, "50002 timeout 1h : 198.51.100.1") {
		t.Fatalf("map element gone after use:\n%s", d)
	}
	f.Advance(time.Hour)
	if d, _ := f.Dump(ctx); strings.Contains(d, "50002 timeout") {
		t.Fatalf("map element outlived its timeout:\n%s", d)
	}
}

func TestKernelSNAT(t *testing.T) {
	t.Parallel()
	snatScenario(t, newKernel(t, newNetns(t)))
}
