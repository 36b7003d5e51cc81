package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ftpsalg/ftpsalg/alg/ftp"
	"github.com/ftpsalg/ftpsalg/alg/gateway"
	"github.com/ftpsalg/ftpsalg/alg/nat"
	"github.com/ftpsalg/ftpsalg/alg/policy"
	"github.com/ftpsalg/ftpsalg/metrics"
	"github.com/ftpsalg/ftpsalg/nft"
)

// natRig is an inspect-mode server behind the proxy on loopback: the
// proxy listens on 127.0.0.1 (the "public" address), the scripted server
// is known to the policy as 127.0.0.9 (its "private" address) and the
// client connects from 127.0.0.5.
type natRig struct {
	t      *testing.T
	p      *Proxy
	gw     *gateway.Gateway
	proxy  string
	srv    *ftpsServer
	tbl    *fakeTable
	m      *metrics.Metrics
	upCA   *x509.CertPool
	client netip.Addr
}

var (
	natPublic  = netip.MustParseAddr("127.0.0.1")
	natPrivate = netip.MustParseAddr("127.0.0.9")
	natClient  = netip.MustParseAddr("127.0.0.5")
	natGateway = netip.MustParseAddr("127.0.0.200")
)

type natOpts struct {
	published  bool       // the client connects to the server's public address
	masquerade bool       // the client's prefix is a clients entry
	ports      *nat.Ports // nil: no bind probe
	publicMin  uint16     // public_ports (default 50000-50100)
	publicMax  uint16     //
	natMin     uint16     // nat_ports (default 50500-50510)
	natMax     uint16     //
	probeBusy  func(netip.AddrPort) bool
}

func newNATRig(t *testing.T, o natOpts) *natRig {
	t.Helper()
	upCA, upKey, _ := issue(t, "upstream CA", nil, nil, true, nil, nil)
	_, _, srvCert := issue(t, "files.test", nil, []string{"files.test"}, false, upCA, upKey)
	sln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fs := &ftpsServer{ln: sln, cert: srvCert, pasv: "127,0,0,9,195,80"}
	go fs.serve()
	t.Cleanup(func() { sln.Close() })
	pln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pport := uint16(pln.Addr().(*net.TCPAddr).Port)
	if o.publicMin == 0 {
		o.publicMin, o.publicMax = 50000, 50100
	}
	if o.natMin == 0 {
		o.natMin, o.natMax = 50500, 50510
	}
	srv := policy.Server{Name: "files", Addresses: []netip.Addr{natPrivate}, ControlPorts: []uint16{pport},
		PassiveMin: 50000, PassiveMax: 50100, Mode: policy.ModeInspect, ActiveMode: true,
		Clients: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	if o.published {
		srv.Public = []netip.Addr{natPublic}
		srv.PublicPortMin, srv.PublicPortMax = o.publicMin, o.publicMax
	} else {
		// The client connects to the server's own address.
		srv.Addresses = []netip.Addr{natPublic}
		fs.pasv = "127,0,0,1,195,80"
	}
	pol := &policy.Config{Pinholes: policy.Pinholes{Timeout: 5 * time.Second},
		Limits: policy.Limits{MaxFlows: 100, MaxLine: 1024}, Servers: []policy.Server{srv}}
	if o.masquerade {
		pol.Clients = []policy.ClientNAT{{Name: "office", Prefixes: []netip.Prefix{netip.PrefixFrom(natClient, 32)},
			NAT: []netip.Addr{natGateway}, PortMin: o.natMin, PortMax: o.natMax}}
	}
	ports := o.ports
	if ports == nil {
		ports = &nat.Ports{Probe: o.probeBusy}
	}
	tbl := &fakeTable{}
	m := metrics.NewDiscard()
	gw := newTestGateway(t, pol, tbl, m, ports)
	p := New(Options{Gateway: gw,
		// Loopback has every 127/8 address: bind where the proxy asks,
		// as the transparent dialer does.
		Dial: func(ctx context.Context, network string, laddr, _ netip.AddrPort) (net.Conn, error) {
			var d net.Dialer
			if laddr.IsValid() {
				d.LocalAddr = net.TCPAddrFromAddrPort(laddr)
			}
			return d.DialContext(ctx, network, sln.Addr().String())
		}})
	serveUntilCleanup(t, p, pln)
	pool := x509.NewCertPool()
	pool.AddCert(upCA)
	return &natRig{t: t, p: p, gw: gw, proxy: pln.Addr().String(), srv: fs, tbl: tbl, m: m, upCA: pool, client: natClient}
}

func (rg *natRig) dial() *client {
	rg.t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(rg.client, 0))}
	c, err := d.Dial("tcp4", rg.proxy)
	if err != nil {
		rg.t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	rg.t.Cleanup(func() { c.Close() })
	cl := &client{t: rg.t, c: c, r: bufio.NewReader(c)}
	if g := cl.read(); !strings.HasPrefix(g, "220") {
		rg.t.Fatalf("greeting %q", g)
	}
	return cl
}

func (rg *natRig) holes() []nft.Pinhole {
	rg.tbl.mu.Lock()
	defer rg.tbl.mu.Unlock()
	return append([]nft.Pinhole(nil), rg.tbl.holes...)
}

func TestNATPublishedPassive(t *testing.T) {
	t.Parallel()
	rg := newNATRig(t, natOpts{published: true})
	c := rg.dial()
	if r := c.cmd("PASV"); r != "227 Entering Passive Mode (127,0,0,1,195,80)." {
		t.Fatalf("PASV: %q; want the public address and the server's port", r)
	}
	// The same server port again: the same translation, the same public
	// port, and the 229 passes as the server wrote it.
	if r := c.cmd("EPSV"); r != "229 Entering Extended Passive Mode (|||50000|)" {
		t.Fatalf("EPSV: %q; want the server's own line", r)
	}
	want := nft.Pinhole{Src: natClient, Dst: natPublic, DstPort: 50000, Timeout: 5 * time.Second,
		DNAT: netip.MustParseAddrPort("127.0.0.9:50000")}
	if hs := rg.holes(); len(hs) != 2 || hs[0] != want || hs[1] != want {
		t.Fatalf("pinholes %v; want twice %v", hs, want)
	}
	// (A port leading to another target for the same client moves: two
	// servers behind one public address; alg/nat tests it.)
	if got := testutil.ToFloat64(rg.m.NATTranslations.WithLabelValues("passive", "moved")); got != 0 {
		t.Fatalf("moved translations = %v; want 0", got)
	}
	if r := c.cmd("QUIT"); !strings.HasPrefix(r, "221") {
		t.Fatalf("QUIT: %q", r)
	}
}

// TestNATMultilineAnnouncementHeld: a published server's 227 with its
// address on a non-final line cannot be rewritten; the client gets a 425
// and never a line with the server's own address.
func TestNATMultilineAnnouncementHeld(t *testing.T) {
	t.Parallel()
	rg := newNATRig(t, natOpts{published: true})
	c := rg.dial()
	rg.srv.multiline.Store(true)
	if r := c.cmd("PASV"); !strings.HasPrefix(r, "425 ") {
		t.Fatalf("PASV: %q; want a 425 and nothing of the server's address", r)
	}
	if r := c.cmd("NOOP"); strings.Contains(r, "127,0,0,9") || !strings.HasPrefix(r, "500") {
		t.Fatalf("next reply %q: a held line leaked or the pairing is off", r)
	}
	if got := testutil.ToFloat64(rg.m.NATFailures.WithLabelValues("passive", "not_rewritable")); got != 1 {
		t.Fatalf("not_rewritable failures %v, want 1", got)
	}
}

func TestNATPublishedPortTaken(t *testing.T) {
	t.Parallel()
	busy := netip.AddrPortFrom(natPublic, 50000)
	rg := newNATRig(t, natOpts{published: true, publicMin: 40000, publicMax: 40000,
		probeBusy: func(ap netip.AddrPort) bool { return ap == busy }})
	c := rg.dial()
	// A gateway socket holds public:50000: the port moves to 40000.
	if r := c.cmd("EPSV"); r != "229 Entering Extended Passive Mode (|||40000|)" {
		t.Fatalf("EPSV with the port taken: %q; want the port moved to 40000", r)
	}
	// Another server port (50001, free on the public side) is kept.
	rg.srv.setAnnounce("127,0,0,9,195,81")
	if r := c.cmd("PASV"); r != "227 Entering Passive Mode (127,0,0,1,195,81)." {
		t.Fatalf("PASV of a free port: %q; want it kept", r)
	}
	// 50000 again while 40000 leads to it: the same translation.
	rg.srv.setAnnounce("127,0,0,9,195,80")
	if r := c.cmd("EPSV"); r != "229 Entering Extended Passive Mode (|||40000|)" {
		t.Fatalf("EPSV of the same target: %q; want 40000 again", r)
	}
	// A third target whose port is taken, with the only public port
	// leading elsewhere: nothing is free, the client gets a 425, counted.
	busy = netip.AddrPortFrom(natPublic, 50002)
	rg.srv.setAnnounce("127,0,0,9,195,82")
	if r := c.cmd("PASV"); !strings.HasPrefix(r, "425") {
		t.Fatalf("PASV with no public port free: %q; want 425", r)
	}
	if got := testutil.ToFloat64(rg.m.NATFailures.WithLabelValues("passive", "ports_exhausted")); got != 1 {
		t.Fatalf("ports_exhausted = %v; want 1", got)
	}
	hs := rg.holes()
	if len(hs) != 3 || hs[0].DstPort != 40000 || hs[0].DNAT != netip.MustParseAddrPort("127.0.0.9:50000") ||
		hs[1].DstPort != 50001 || hs[2].DstPort != 40000 {
		t.Fatalf("pinholes %v; want public 40000 → :50000, 50001 → :50001, 40000 → :50000", hs)
	}
}

func TestNATMasqueradedClient(t *testing.T) {
	t.Parallel()
	rg := newNATRig(t, natOpts{masquerade: true})
	c := rg.dial()
	for _, tc := range []struct{ cmd, verb string }{
		{"PORT 127,0,0,5,4,1", "PORT"},
		{"EPRT |1|127.0.0.5|1025|", "EPRT"},
	} {
		if r := c.cmd(tc.cmd); !strings.HasPrefix(r, "200") {
			t.Fatalf("%s: %q", tc.cmd, r)
		}
	}
	rg.srv.mu.Lock()
	seen := append([]string(nil), rg.srv.seen...)
	rg.srv.mu.Unlock()
	var ports []uint16
	for _, l := range seen {
		cmd, err := ftp.ParseCommand(l)
		if err != nil || !ftp.IsActiveVerb(cmd.Verb) {
			continue
		}
		ap, err := parseActive(cmd)
		if err != nil || ap.Addr() != natGateway || ap.Port() < 50500 || ap.Port() > 50510 {
			t.Fatalf("server saw %q; want the NAT address and a port of 50500-50510", l)
		}
		ports = append(ports, ap.Port())
	}
	if len(ports) != 2 {
		t.Fatalf("server saw %q; want two translated announcements", seen)
	}
	hs := rg.holes()
	if len(hs) != 2 {
		t.Fatalf("pinholes %v; want 2", hs)
	}
	for i, h := range hs {
		want := nft.Pinhole{Src: natPublic, Dst: natGateway, DstPort: ports[i], Timeout: 5 * time.Second,
			DNAT: netip.MustParseAddrPort("127.0.0.5:1025")}
		if h != want {
			t.Errorf("pinhole %d = %v; want %v", i, h, want)
		}
	}
	// Passive: the client's data connection leaves from the NAT address.
	if r := c.cmd("PASV"); r != "227 Entering Passive Mode (127,0,0,1,195,80)." {
		t.Fatalf("PASV: %q; want the server's line unchanged", r)
	}
	if hs := rg.holes(); hs[2].SNAT != natGateway || hs[2].DNAT.IsValid() {
		t.Fatalf("passive pinhole %v; want SNAT to %s and no DNAT", hs[2], natGateway)
	}
	if got := testutil.ToFloat64(rg.m.NATTranslations.WithLabelValues("active", "kept")) +
		testutil.ToFloat64(rg.m.NATTranslations.WithLabelValues("active", "moved")); got != 2 {
		t.Fatalf("active translations = %v; want 2", got)
	}
}

func TestNATInspectSessionTurnsOpaqueAfterAUTH(t *testing.T) {
	t.Parallel()
	rg := newNATRig(t, natOpts{published: true})
	c := rg.dial()
	if r := c.cmd("AUTH TLS"); !strings.HasPrefix(r, "234") {
		t.Fatalf("AUTH: %q", r)
	}
	// The proxy does not terminate TLS for an inspect server: the client's
	// handshake reaches the server itself.
	c.raw = c.c
	tc := tls.Client(c.c, &tls.Config{RootCAs: rg.upCA, ServerName: "files.test", MinVersion: tls.VersionTLS12})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake with the server through the proxy: %v", err)
	}
	c.c, c.r = tc, bufio.NewReader(tc)
	if r := c.cmd("USER alice"); !strings.HasPrefix(r, "331") {
		t.Fatalf("USER over TLS: %q", r)
	}
	if r := c.cmd("PASV"); r != "227 Entering Passive Mode (127,0,0,9,195,80)." {
		t.Fatalf("PASV over TLS: %q; want the server's line, unread", r)
	}
	if len(rg.holes()) != 0 {
		t.Fatalf("pinholes %v; want none (encrypted control connection)", rg.holes())
	}
	if got := testutil.ToFloat64(rg.m.NATOpaque); got != 1 {
		t.Fatalf("opaque sessions = %v; want 1", got)
	}
}

// waitSessions polls until n sessions are in progress (a session's cleanup
// is done when it no longer counts).
func (rg *natRig) waitSessions(n int64) {
	rg.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for rg.p.Sessions() != n {
		if time.Now().After(deadline) {
			rg.t.Fatalf("sessions %d; want %d", rg.p.Sessions(), n)
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
	// Ended sessions are settled by the gateway's ledger task, which
	// these rigs do not run: settle them now.
	rg.gw.Drain(context.Background())
}

func (rg *natRig) deleted() []nft.Pinhole {
	rg.tbl.mu.Lock()
	defer rg.tbl.mu.Unlock()
	return append([]nft.Pinhole(nil), rg.tbl.deleted...)
}

// TestNATSessionCleanupOwnership: two sessions of one client are told the
// same translated endpoint in turn (the server reused its port); when the
// first ends it must not delete the element the second now relies on, and
// the second deletes it when it ends.
func TestNATSessionCleanupOwnership(t *testing.T) {
	t.Parallel()
	rg := newNATRig(t, natOpts{published: true})
	a, b := rg.dial(), rg.dial()
	for _, c := range []*client{a, b} {
		if r := c.cmd("PASV"); r != "227 Entering Passive Mode (127,0,0,1,195,80)." {
			t.Fatalf("PASV: %q", r)
		}
	}
	if r := a.cmd("QUIT"); !strings.HasPrefix(r, "221") {
		t.Fatalf("QUIT: %q", r)
	}
	a.c.Close()
	rg.waitSessions(1)
	if d := rg.deleted(); len(d) != 0 {
		t.Fatalf("the first session's end deleted %v, which the second session owns", d)
	}
	if r := b.cmd("QUIT"); !strings.HasPrefix(r, "221") {
		t.Fatalf("QUIT: %q", r)
	}
	b.c.Close()
	rg.waitSessions(0)
	want := nft.Pinhole{Src: natClient, Dst: natPublic, DstPort: 50000, DNAT: netip.MustParseAddrPort("127.0.0.9:50000")}
	if d := rg.deleted(); len(d) != 1 || pinholeKey(d[0]) != pinholeKey(want) || d[0].DNAT != want.DNAT {
		t.Fatalf("deleted %v; want the translation %v once", d, want)
	}
	if n := rg.gw.Ports().Held(); n != 0 {
		t.Fatalf("%d reservations left after both sessions", n)
	}
}

// parseActive reads the endpoint of a PORT, EPRT or LPRT the server saw.
func parseActive(cmd ftp.Command) (netip.AddrPort, error) {
	switch cmd.Verb {
	case "PORT":
		return ftp.ParseHostPort(cmd.Arg)
	case "EPRT":
		return ftp.ParseEPRT(cmd.Arg)
	}
	return ftp.ParseLPRT(cmd.Arg)
}
