package proxy

import (
	"bufio"
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ftpsalg/ftpsalg/alg/certs"
	"github.com/ftpsalg/ftpsalg/alg/gateway"
	"github.com/ftpsalg/ftpsalg/alg/nat"
	"github.com/ftpsalg/ftpsalg/alg/policy"
	"github.com/ftpsalg/ftpsalg/metrics"
	"github.com/ftpsalg/ftpsalg/nft"
)

// issue makes a certificate signed by parent (self-signed when nil).
func issue(t testing.TB, cn string, ips []net.IP, dns []string, isCA bool, parent *x509.Certificate, pkey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: ips, DNSNames: dns, IsCA: isCA, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if parent == nil {
		parent, pkey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, pkey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: c}
}

// fakeTable records pinholes added and deleted.
type fakeTable struct {
	mu      sync.Mutex
	holes   []nft.Pinhole
	deleted []nft.Pinhole
}

func (f *fakeTable) AddPinholes(_ context.Context, p ...nft.Pinhole) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.holes = append(f.holes, p...)
	return nil
}
func (f *fakeTable) DeletePinholes(_ context.Context, p ...nft.Pinhole) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deleted = append(f.deleted, p...)
	return nil
}
func (f *fakeTable) Pinholes(context.Context) ([]nft.Element, error) { return nil, nil }
func (f *fakeTable) Live(_ context.Context, p ...nft.Pinhole) ([]bool, error) {
	return make([]bool, len(p)), nil
}
func (f *fakeTable) Apply(context.Context, nft.Spec) error { return nil }
func (f *fakeTable) count() int                            { f.mu.Lock(); defer f.mu.Unlock(); return len(f.holes) }

// ftpsServer is a scripted explicit/implicit FTPS server on loopback.
type ftpsServer struct {
	ln        net.Listener
	cert      tls.Certificate
	implicit  bool
	pasv      string // the 227 text it announces
	once      sync.Once
	multiline atomic.Bool // PASV answered in two lines
	conf      *tls.Config
	mu        sync.Mutex
	seen      []string
	release   chan struct{} // a SLOW command is answered when this is closed

	holdTicket bool
	ticketHeld chan struct{} // one session's ticket is held back
	heldRaw    net.Conn
	held       []byte
}

// releaseTicket sends the session ticket held back.
func (s *ftpsServer) releaseTicket() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.heldRaw.Write(s.held)
	return err
}

// ticketHold holds back, from the server's first flight of a TLS 1.3
// handshake, what follows its Finished: crypto/tls writes the flight in
// one Write, the session ticket (one, by default) at its end. Records the
// server writes after it would arrive out of sequence: the test releases
// the ticket before the server writes again. The
// encrypted records before it are EncryptedExtensions, Certificate,
// CertificateVerify and Finished.
type ticketHold struct {
	net.Conn
	s    *ftpsServer
	done bool
}

func (h *ticketHold) Write(b []byte) (int, error) {
	if h.done || len(b) == 0 || b[0] != 22 {
		return h.Conn.Write(b)
	}
	encrypted, off := 0, 0
	for off+5 <= len(b) {
		n := 5 + (int(b[off+3])<<8 | int(b[off+4]))
		if b[off] == 23 {
			encrypted++
		}
		off += n
		if encrypted == 4 {
			break
		}
	}
	if encrypted < 4 || off >= len(b) {
		return h.Conn.Write(b)
	}
	h.done = true
	h.s.mu.Lock()
	h.s.heldRaw, h.s.held = h.Conn, slices.Clone(b[off:])
	h.s.mu.Unlock()
	h.s.ticketHeld <- struct{}{}
	if _, err := h.Conn.Write(b[:off]); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (s *ftpsServer) serve() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		go s.session(c)
	}
}

func (s *ftpsServer) session(c net.Conn) {
	defer c.Close()
	// One configuration for all sessions, as a real server has: its
	// session tickets are accepted across connections.
	s.once.Do(func() { s.conf = &tls.Config{Certificates: []tls.Certificate{s.cert}, MinVersion: tls.VersionTLS12} })
	cfg := s.conf
	raw := c
	if s.implicit {
		c = tls.Server(newRecordConn(raw, nil), cfg)
	}
	r := bufio.NewReader(c)
	fmt.Fprintf(c, "220 fake FTPS\r\n")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		s.mu.Lock()
		s.seen = append(s.seen, line)
		s.mu.Unlock()
		verb, _, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "AUTH":
			fmt.Fprintf(c, "234 Proceed with negotiation.\r\n")
			var w net.Conn = raw
			if s.holdTicket {
				w = &ticketHold{Conn: raw, s: s}
			}
			c = tls.Server(newRecordConn(w, &bufferedConn{Conn: raw, r: r}), cfg)
			r = bufio.NewReader(c)
		case "CCC":
			fmt.Fprintf(c, "200 CCC command successful.\r\n")
			tc := c.(*tls.Conn)
			tc.CloseWrite()
			io.Copy(io.Discard, r) // until the peer's close_notify
			raw.SetDeadline(time.Time{})
			c, r = raw, bufio.NewReader(raw)
		case "USER":
			fmt.Fprintf(c, "331 Please specify the password.\r\n")
		case "PASS":
			fmt.Fprintf(c, "230 Login successful.\r\n")
		case "PBSZ", "PROT":
			fmt.Fprintf(c, "200 ok.\r\n")
		case "PASV":
			if s.multiline.Load() { // the address on the first line of two
				fmt.Fprintf(c, "227-Entering Passive Mode (%s).\r\n227 Done.\r\n", s.announce())
				continue
			}
			fmt.Fprintf(c, "227 Entering Passive Mode (%s).\r\n", s.announce())
		case "EPSV":
			fmt.Fprintf(c, "229 Entering Extended Passive Mode (|||%d|)\r\n", s.epsvPort())
		case "PORT", "EPRT":
			fmt.Fprintf(c, "200 %s command successful.\r\n", strings.ToUpper(verb))
		case "SLOW":
			<-s.release
			fmt.Fprintf(c, "200 slow done.\r\n")
		case "QUIT":
			fmt.Fprintf(c, "221 Goodbye.\r\n")
			return
		default:
			fmt.Fprintf(c, "500 Unknown command.\r\n")
		}
	}
}

// announce returns the 227 text it announces.
func (s *ftpsServer) announce() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pasv
}

// setAnnounce changes the 227 text it announces.
func (s *ftpsServer) setAnnounce(pasv string) {
	s.mu.Lock()
	s.pasv = pasv
	s.mu.Unlock()
}

// epsvPort is the port of the 227 it announces, for EPSV.
func (s *ftpsServer) epsvPort() int {
	f := strings.Split(s.announce(), ",")
	var hi, lo int
	fmt.Sscan(f[len(f)-2], &hi)
	fmt.Sscan(f[len(f)-1], &lo)
	return hi<<8 | lo
}

func (s *ftpsServer) saw(prefix string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.seen {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

type rig struct {
	t      testing.TB
	proxy  string // proxy listener address
	caPool *x509.CertPool
	srv    *ftpsServer
	tbl    *fakeTable
	m      *metrics.Metrics
	p      *Proxy
	stop   func() error // ends Serve's context and returns what Serve returned
}

type rigOpts struct {
	implicit    bool
	untrusted   bool // the server's certificate is not signed by the upstream CA
	requireTLS  bool
	pasv        string
	timeout     time.Duration
	unreachable bool // the upstream connection fails
	firstCmd    time.Duration
	idle        time.Duration
	maxFlows    int           // 0: 100
	parkAfter   time.Duration // 0: the default; negative: never park
	holdTicket  bool          // the server holds back its TLS 1.3 session ticket (releaseTicket)
}

func newRig(t testing.TB, o rigOpts) *rig {
	t.Helper()
	ca, err := certs.InitCA(t.TempDir(), certs.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	upCA, upKey, _ := issue(t, "upstream CA", nil, nil, true, nil, nil)
	signer, signerKey := upCA, upKey
	if o.untrusted {
		signer, signerKey, _ = issue(t, "rogue CA", nil, nil, true, nil, nil)
	}
	_, _, srvCert := issue(t, "files.test", []net.IP{net.IPv4(127, 0, 0, 1)}, []string{"files.test"}, false, signer, signerKey)
	sln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if o.pasv == "" {
		o.pasv = "127,0,0,1,195,80"
	}
	fs := &ftpsServer{ln: sln, cert: srvCert, implicit: o.implicit, pasv: o.pasv, release: make(chan struct{}),
		holdTicket: o.holdTicket, ticketHeld: make(chan struct{}, 1)}
	go fs.serve()
	t.Cleanup(func() { sln.Close() })

	pln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pport := uint16(pln.Addr().(*net.TCPAddr).Port)
	to := o.timeout
	if to == 0 {
		to = 5 * time.Second
	}
	srv := policy.Server{Name: "fake", Addresses: []netip.Addr{netip.MustParseAddr("127.0.0.1")},
		PassiveMin: 50000, PassiveMax: 50100, Mode: policy.ModeMITM, ActiveMode: true,
		Clients: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		MITM: &policy.MITM{RequireTLS: o.requireTLS, AllowAnonymous: true, UpstreamSource: policy.UpstreamGateway,
			TLS: policy.ServerTLS{MinVersion: tls.VersionTLS12, Verify: policy.VerifySystem, HandshakeTimeout: to}}}
	if o.implicit {
		srv.ImplicitTLSPorts = []uint16{pport}
	} else {
		srv.ControlPorts = []uint16{pport}
	}
	pol := &policy.Config{Pinholes: policy.Pinholes{Timeout: 5 * time.Second},
		Limits:  policy.Limits{MaxFlows: cmp.Or(o.maxFlows, 100), MaxLine: 1024, FirstCommandTimeout: o.firstCmd, IdleTimeout: o.idle},
		Servers: []policy.Server{srv}}
	roots := x509.NewCertPool()
	roots.AddCert(upCA)
	tbl := &fakeTable{}
	m := metrics.NewDiscard()
	minter := certs.NewMinter(ca, 24*time.Hour, nil)
	p := New(Options{Gateway: newTestGateway(t, pol, tbl, m, nil), Leaf: minter.Leaf, Roots: roots,
		Dial: func(ctx context.Context, network string, _, _ netip.AddrPort) (net.Conn, error) {
			if o.unreachable {
				return nil, errors.New("test: connection refused")
			}
			var d net.Dialer
			return d.DialContext(ctx, network, sln.Addr().String())
		}})
	if o.parkAfter != 0 {
		p.parkAfter = max(o.parkAfter, 0) // negative: never park
	}
	stop := serveUntilCleanup(t, p, pln)
	return &rig{t: t, proxy: pln.Addr().String(), caPool: ca.Pool(), srv: fs, tbl: tbl, m: m, p: p, stop: stop}
}

// newTestGateway returns a gateway over tbl with pol applied. Its ledger
// task does not run: tests settle ended sessions with Drain.
func newTestGateway(t testing.TB, pol *policy.Config, tbl gateway.Table, m *metrics.Metrics, ports *nat.Ports) *gateway.Gateway {
	t.Helper()
	gw := gateway.New(gateway.Options{Policy: pol, Table: tbl, Metrics: m, Ports: ports})
	if err := gw.Apply(context.Background(), pol); err != nil {
		t.Fatal(err)
	}
	return gw
}

// pinholeKey is what identifies a pinhole's set element.
func pinholeKey(h nft.Pinhole) nft.Pinhole {
	return nft.Pinhole{Src: h.Src, Dst: h.Dst, DstPort: h.DstPort, Relay: h.Relay}
}

// serveUntilCleanup runs p.Serve on ln until the test ends (or stop is
// called), and checks it returns cleanly.
func serveUntilCleanup(t testing.TB, p *Proxy, ln net.Listener) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln) }()
	stop = sync.OnceValue(func() error {
		cancel()
		return <-done
	})
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return stop
}

// client is a control connection to the proxy that trusts only the
// operator CA.
type client struct {
	t   testing.TB
	c   net.Conn
	raw net.Conn
	r   *bufio.Reader
}

func (rg *rig) dial() *client {
	rg.t.Helper()
	c, err := net.DialTimeout("tcp4", rg.proxy, 5*time.Second)
	if err != nil {
		rg.t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	rg.t.Cleanup(func() { c.Close() })
	return &client{t: rg.t, c: c, r: bufio.NewReader(c)}
}

func (c *client) startTLS(pool *x509.CertPool) error {
	c.raw = c.c
	tc := tls.Client(newRecordConn(c.c, nil), &tls.Config{RootCAs: pool, ServerName: "files.test", MinVersion: tls.VersionTLS12})
	if err := tc.Handshake(); err != nil {
		return err
	}
	c.c, c.r = tc, bufio.NewReader(tc)
	return nil
}

// clearTLS finishes TLS after CCC's 200: close_notify both ways.
func (c *client) clearTLS() error {
	tc := c.c.(*tls.Conn)
	if err := tc.CloseWrite(); err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, c.r); err != nil {
		return err
	}
	// crypto/tls leaves the connection's write deadline at "now" after a
	// close_notify.
	_ = c.raw.SetDeadline(time.Now().Add(20 * time.Second))
	c.c, c.r = c.raw, bufio.NewReader(c.raw)
	return nil
}

func (c *client) read() string {
	c.t.Helper()
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return strings.TrimRight(l, "\r\n")
}

func (c *client) cmd(line string) string {
	c.t.Helper()
	if _, err := io.WriteString(c.c, line+"\r\n"); err != nil {
		c.t.Fatal(err)
	}
	return c.read()
}

func TestExplicitTLSSession(t *testing.T) {
	t.Parallel()
	rg := newRig(t, rigOpts{requireTLS: true})
	c := rg.dial()
	if g := c.read(); !strings.HasPrefix(g, "220") {
		t.Fatalf("greeting %q", g)
	}
	if r := c.cmd("USER alice"); !strings.HasPrefix(r, "530") {
		t.Fatalf("USER before AUTH: %q, want 530", r)
	}
	if r := c.cmd("AUTH TLS"); !strings.HasPrefix(r, "234") {
		t.Fatalf("AUTH: %q", r)
	}
	if err := c.startTLS(rg.caPool); err != nil {
		t.Fatalf("client handshake trusting only the operator CA: %v", err)
	}
	for _, step := range [][2]string{{"USER alice", "331"}, {"PASS secret", "230"}, {"PBSZ 0", "200"}, {"PROT P", "200"}, {"PASV", "227"}} {
		if r := c.cmd(step[0]); !strings.HasPrefix(r, step[1]) {
			t.Fatalf("%s: %q, want %s", step[0], r, step[1])
		}
	}
	if rg.tbl.count() != 1 || rg.tbl.holes[0].DstPort != 50000 {
		t.Fatalf("pinholes %v, want one to port 50000", rg.tbl.holes)
	}
	if r := c.cmd("QUIT"); !strings.HasPrefix(r, "221") {
		t.Fatalf("QUIT: %q", r)
	}
	// The credentials sent before AUTH never reached the server.
	if rg.srv.saw("USER alice") && !rg.srv.saw("AUTH") {
		t.Fatal("server saw USER before AUTH")
	}
	rg.srv.mu.Lock()
	first := rg.srv.seen[0]
	rg.srv.mu.Unlock()
	if first != "AUTH TLS" {
		t.Fatalf("first line the server saw: %q, want AUTH TLS", first)
	}
	if got := testutil.ToFloat64(rg.m.Refusals.WithLabelValues("tls_required")); got != 1 {
		t.Fatalf("tls_required refusals %v", got)
	}
}

func TestImplicitTLSSession(t *testing.T) {
	t.Parallel()
	rg := newRig(t, rigOpts{implicit: true})
	c := rg.dial()
	if err := c.startTLS(rg.caPool); err != nil {
		t.Fatal(err)
	}
	if g := c.read(); !strings.HasPrefix(g, "220") {
		t.Fatalf("greeting %q", g)
	}
	for _, step := range [][2]string{{"USER a", "331"}, {"PASS b", "230"}, {"PASV", "227"}} {
		if r := c.cmd(step[0]); !strings.HasPrefix(r, step[1]) {
			t.Fatalf("%s: %q", step[0], r)
		}
	}
	if rg.tbl.count() != 1 {
		t.Fatalf("pinholes %v", rg.tbl.holes)
	}
}

// TestUntrustedUpstreamGets431: explicit FTPS verifies the server before
// relaying its 234; a server that cannot be verified gets the client a 431
// and no TLS handshake at all (RFC 2228: a security resource is
// unavailable).
func TestUntrustedUpstreamGets431(t *testing.T) {
	t.Parallel()
	rg := newRig(t, rigOpts{untrusted: true})
	c := rg.dial()
	c.read()
	if r := c.cmd("AUTH TLS"); !strings.HasPrefix(r, "431 ") {
		t.Fatalf("AUTH: %q, want a 431 before any handshake", r)
	}
	if got := testutil.ToFloat64(rg.m.TLSHandshakeFails.WithLabelValues("upstream", "untrusted")); got != 1 {
		t.Fatalf("upstream untrusted failures %v", got)
	}
	if got := testutil.ToFloat64(rg.m.Refusals.WithLabelValues("upstream_unverified")); got != 1 {
		t.Fatalf("upstream_unverified refusals %v", got)
	}
	if rg.tbl.count() != 0 {
		t.Fatal("pinhole opened")
	}
}

// handshakeShown runs a client handshake asking for sni and returns the
// certificates the gateway showed (none when it aborted before its
// Certificate message) and the handshake's error.
func handshakeShown(c net.Conn, sni string) ([]*x509.Certificate, error) {
	var shown []*x509.Certificate
	tc := tls.Client(c, &tls.Config{ServerName: sni, MinVersion: tls.VersionTLS12,
		// Record whatever is shown; the test judges it.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			for _, der := range raw {
				if crt, err := x509.ParseCertificate(der); err == nil {
					shown = append(shown, crt)
				}
			}
			return nil
		}})
	return shown, tc.Handshake()
}

// TestNoCertificateForUnprovenName: a client asking for a name the
// server's verified certificate does not prove, or for any name when there
// is no server to prove one, is refused with an alert and shown no
// certificate — explicit and implicit, reachable and unreachable upstream.
func TestNoCertificateForUnprovenName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		opts   rigOpts
		reason string
	}{
		{"explicit", rigOpts{}, "unproven_name"},
		{"implicit", rigOpts{implicit: true}, "upstream_failed"},
		{"implicit unreachable", rigOpts{implicit: true, unreachable: true}, "upstream_unreachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rg := newRig(t, tc.opts)
			c := rg.dial()
			if !tc.opts.implicit {
				c.read()
				if r := c.cmd("AUTH TLS"); !strings.HasPrefix(r, "234") {
					t.Fatalf("AUTH: %q", r)
				}
			}
			shown, err := handshakeShown(c.c, "www.example.org")
			if err == nil {
				t.Fatal("handshake for an unproven name succeeded")
			}
			for _, crt := range shown {
				if crt.VerifyHostname("www.example.org") == nil {
					t.Fatalf("shown a certificate for the unproven name: %v", crt.DNSNames)
				}
			}
			if len(shown) != 0 {
				t.Fatalf("shown %d certificates; want none (an alert before the Certificate message)", len(shown))
			}
			waitCounter(t, rg.m.Refusals.WithLabelValues(tc.reason), 1)
		})
	}
	// The name the server proves still gets its leaf.
	rg := newRig(t, rigOpts{implicit: true})
	c := rg.dial()
	shown, err := handshakeShown(c.c, "files.test")
	if err != nil || len(shown) == 0 || shown[0].VerifyHostname("files.test") != nil {
		t.Fatalf("proven name: err %v, shown %d", err, len(shown))
	}
}

// waitCounter waits until c reaches want: the proxy counts after the
// client has seen the alert.
func waitCounter(t *testing.T, c prometheus.Counter, want float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(c) != want {
		if time.Now().After(deadline) {
			t.Fatalf("counter %v, want %v", testutil.ToFloat64(c), want)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
}

func TestGarbageAndStalledHandshakes(t *testing.T) {
	t.Parallel()
	rg := newRig(t, rigOpts{implicit: true, timeout: time.Second})
	c := rg.dial()
	io.WriteString(c.c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, err := io.ReadAll(c.r); err != nil && !strings.Contains(err.Error(), "reset") {
		t.Logf("read after garbage: %v", err)
	}
	stall := rg.dial()
	// A partial ClientHello, then nothing: the handshake times out.
	stall.c.Write([]byte{0x16, 0x03, 0x01, 0x00, 0x80, 0x01})
	start := time.Now()
	io.ReadAll(stall.r)
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("stalled handshake held for %v", el)
	}
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(rg.m.TLSHandshakeFails.WithLabelValues("client", "not_tls")) != 1 ||
		testutil.ToFloat64(rg.m.TLSHandshakeFails.WithLabelValues("client", "timeout")) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("not_tls %v timeout %v", testutil.ToFloat64(rg.m.TLSHandshakeFails.WithLabelValues("client", "not_tls")),
				testutil.ToFloat64(rg.m.TLSHandshakeFails.WithLabelValues("client", "timeout")))
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
}

func TestHostileAnnouncementInsideTLS(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, pasv, reason string }{
		{"third party", "203,0,113,9,195,80", "third_party_address"},
		{"port 22", "127,0,0,1,0,22", "privileged_port"},
		{"outside range", "127,0,0,1,234,96", "port_outside_range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rg := newRig(t, rigOpts{pasv: tc.pasv})
			c := rg.dial()
			c.read()
			c.cmd("AUTH TLS")
			if err := c.startTLS(rg.caPool); err != nil {
				t.Fatal(err)
			}
			c.cmd("USER a")
			c.cmd("PASS b")
			if r := c.cmd("PASV"); !strings.HasPrefix(r, "425") {
				t.Fatalf("PASV: %q, want 425", r)
			}
			if rg.tbl.count() != 0 {
				t.Fatal("pinhole opened")
			}
			if got := testutil.ToFloat64(rg.m.Refusals.WithLabelValues(tc.reason)); got != 1 {
				t.Fatalf("refusals{%s} = %v", tc.reason, got)
			}
			if r := c.cmd("PORT 203,0,113,9,195,80"); !strings.HasPrefix(r, "5") {
				t.Fatalf("bounce PORT: %q, want a 5xx from ftpsalg", r)
			}
			if rg.srv.saw("PORT") {
				t.Fatal("the bounce PORT reached the server")
			}
		})
	}
}

// TestCCCClearsBothLegs: after the server accepts CCC both legs exchange
// close_notify and carry clear text on the same connections; the FTP core
// keeps parsing, so a PASV afterwards still opens exactly its pinhole.
func TestCCCClearsBothLegs(t *testing.T) {
	t.Parallel()
	rg := newRig(t, rigOpts{})
	c := rg.dial()
	c.read()
	c.cmd("AUTH TLS")
	if err := c.startTLS(rg.caPool); err != nil {
		t.Fatal(err)
	}
	for _, step := range [][2]string{{"USER a", "331"}, {"PASS b", "230"}, {"PBSZ 0", "200"}, {"PROT C", "200"}, {"CCC", "200"}} {
		if r := c.cmd(step[0]); !strings.HasPrefix(r, step[1]) {
			t.Fatalf("%s: %q", step[0], r)
		}
	}
	if err := c.clearTLS(); err != nil {
		t.Fatalf("close_notify exchange: %v", err)
	}
	if r := c.cmd("PASV"); !strings.HasPrefix(r, "227") {
		t.Fatalf("PASV in clear text after CCC: %q", r)
	}
	if rg.tbl.count() != 1 {
		t.Fatalf("pinholes %v, want 1", rg.tbl.holes)
	}
	if r := c.cmd("QUIT"); !strings.HasPrefix(r, "221") {
		t.Fatalf("QUIT: %q", r)
	}
	if !rg.srv.saw("PASV") {
		t.Fatal("PASV after CCC did not reach the server")
	}
}

// TestCCCWithoutClientCloseNotify: like curl's default CCC mode, the client
// reads the proxy's close_notify but sends none of its own and goes on in
// clear text; the proxy must not wait for it.
func TestCCCWithoutClientCloseNotify(t *testing.T) {
	t.Parallel()
	rg := newRig(t, rigOpts{timeout: 5 * time.Second})
	c := rg.dial()
	c.read()
	c.cmd("AUTH TLS")
	if err := c.startTLS(rg.caPool); err != nil {
		t.Fatal(err)
	}
	c.cmd("USER a")
	c.cmd("PASS b")
	if r := c.cmd("CCC"); !strings.HasPrefix(r, "200") {
		t.Fatalf("CCC: %q", r)
	}
	if _, err := io.Copy(io.Discard, c.r); err != nil { // the proxy's close_notify
		t.Fatal(err)
	}
	_ = c.raw.SetDeadline(time.Now().Add(20 * time.Second))
	c.c, c.r = c.raw, bufio.NewReader(c.raw)
	start := time.Now()
	if r := c.cmd("PASV"); !strings.HasPrefix(r, "227") {
		t.Fatalf("PASV in clear text: %q", r)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("the proxy waited %v for a close_notify that never comes", el)
	}
}

// TestAuthAgainAfterCCC: a client that sends AUTH TLS again after CCC gets
// a new TLS session on both legs: the control connection's certificate
// callback runs the upstream handshake again rather than handing out the
// leaf kept for relayed data connections.
func TestAuthAgainAfterCCC(t *testing.T) {
	t.Parallel()
	rg := newRig(t, rigOpts{timeout: 5 * time.Second})
	c := rg.dial()
	c.read()
	c.cmd("AUTH TLS")
	if err := c.startTLS(rg.caPool); err != nil {
		t.Fatal(err)
	}
	c.cmd("USER a")
	c.cmd("PASS b")
	if r := c.cmd("CCC"); !strings.HasPrefix(r, "200") {
		t.Fatalf("CCC: %q", r)
	}
	if err := c.clearTLS(); err != nil {
		t.Fatalf("close_notify exchange: %v", err)
	}
	if r := c.cmd("AUTH TLS"); !strings.HasPrefix(r, "234") {
		t.Fatalf("AUTH TLS after CCC: %q", r)
	}
	if err := c.startTLS(rg.caPool); err != nil {
		t.Fatalf("second handshake: %v", err)
	}
	if r := c.cmd("PASV"); !strings.HasPrefix(r, "227") {
		t.Fatalf("PASV after the second AUTH: %q", r)
	}
	if r := c.cmd("QUIT"); !strings.HasPrefix(r, "221") {
		t.Fatalf("QUIT: %q", r)
	}
}

// TestCommandTimeouts: a client that trickles bytes without a line end is
// closed at the first command's deadline, one that goes quiet after a
// command at the idle timeout; each gets a 421 saying why and is counted.
// An implicit port's client that sends no ClientHello in time is closed
// too.
func TestCommandTimeouts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		opts   rigOpts
		send   string
		reason string
	}{
		{"trickle", rigOpts{firstCmd: 300 * time.Millisecond}, "US", "first_command_timeout"},
		{"idle", rigOpts{firstCmd: 5 * time.Second, idle: 300 * time.Millisecond}, "NOOP\r\n", "idle_timeout"},
		{"implicit, no ClientHello", rigOpts{implicit: true, firstCmd: 300 * time.Millisecond, timeout: 5 * time.Second}, "\x16", "first_command_timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rg := newRig(t, tc.opts)
			c := rg.dial()
			start := time.Now()
			if !tc.opts.implicit {
				c.read() // greeting
			}
			if _, err := io.WriteString(c.c, tc.send); err != nil {
				t.Fatal(err)
			}
			rest, _ := io.ReadAll(c.r) // until the gateway closes
			if !tc.opts.implicit && !strings.Contains(string(rest), "421 ") {
				t.Fatalf("read %q before the close, want a 421", rest)
			}
			if d := time.Since(start); d > 4*time.Second {
				t.Fatalf("closed after %v", d)
			}
			waitCounter(t, rg.m.Refusals.WithLabelValues(tc.reason), 1)
		})
	}
}
