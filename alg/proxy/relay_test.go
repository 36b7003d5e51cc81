package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ftpsalg/ftpsalg/alg/certs"
	"github.com/ftpsalg/ftpsalg/alg/policy"
	"github.com/ftpsalg/ftpsalg/metrics"
	"github.com/ftpsalg/ftpsalg/test/ftpc"
)

// reuseServer is a scripted explicit-FTPS server that, like vsftpd with
// require_ssl_reuse=YES, answers a protected data connection that did not
// resume the control connection's TLS session with 522. Its data
// listener is dln; PASV announces annPort (the relay listener's port in
// these tests, so that the proxy's expectation matches the connection the
// client makes to it).
type reuseServer struct {
	ln, dln   net.Listener
	cert      tls.Certificate
	annPort   uint16
	maxVer    uint16
	noTickets bool // TLS 1.2 servers that offer session IDs only
	payload   []byte

	mu       sync.Mutex
	uploads  map[string][]byte
	resumed  []bool // DidResume of each protected data connection
	dataFrom []netip.Addr
}

func (s *reuseServer) serve() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		go s.session(c)
	}
}

func (s *reuseServer) session(c net.Conn) {
	defer c.Close()
	// One config per session (vsftpd: one process per session): its
	// ticket keys resume this session's tickets only.
	cfg := &tls.Config{Certificates: []tls.Certificate{s.cert}, MinVersion: tls.VersionTLS12,
		MaxVersion: s.maxVer, SessionTicketsDisabled: s.noTickets}
	r := bufio.NewReader(c)
	fmt.Fprintf(c, "220 fake FTPS\r\n")
	protP := false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
		switch strings.ToUpper(verb) {
		case "AUTH":
			fmt.Fprintf(c, "234 Proceed with negotiation.\r\n")
			c = tls.Server(c, cfg)
			r = bufio.NewReader(c)
		case "USER":
			fmt.Fprintf(c, "331 Please specify the password.\r\n")
		case "PASS":
			fmt.Fprintf(c, "230 Login successful.\r\n")
		case "PBSZ", "TYPE":
			fmt.Fprintf(c, "200 ok.\r\n")
		case "PROT":
			protP = arg == "P"
			fmt.Fprintf(c, "200 PROT now %s.\r\n", arg)
		case "PASV":
			fmt.Fprintf(c, "227 Entering Passive Mode (127,0,0,1,%d,%d).\r\n", s.annPort>>8, s.annPort&0xff)
		case "RETR", "STOR":
			s.transfer(c, cfg, protP, strings.ToUpper(verb), arg)
		case "QUIT":
			fmt.Fprintf(c, "221 Goodbye.\r\n")
			return
		default:
			fmt.Fprintf(c, "500 Unknown command.\r\n")
		}
	}
}

func (s *reuseServer) transfer(c net.Conn, cfg *tls.Config, protP bool, verb, path string) {
	_ = s.dln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	dc, err := s.dln.Accept()
	if err != nil {
		fmt.Fprintf(c, "425 Failed to establish connection.\r\n")
		return
	}
	defer dc.Close()
	s.mu.Lock()
	s.dataFrom = append(s.dataFrom, addrPort(dc.RemoteAddr()).Addr())
	s.mu.Unlock()
	fmt.Fprintf(c, "150 Opening BINARY mode data connection.\r\n")
	var data net.Conn = dc
	if protP {
		tc := tls.Server(dc, cfg)
		_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
		err := tc.Handshake()
		s.mu.Lock()
		s.resumed = append(s.resumed, err == nil && tc.ConnectionState().DidResume)
		s.mu.Unlock()
		if err != nil || !tc.ConnectionState().DidResume {
			fmt.Fprintf(c, "522 SSL connection failed: session reuse required\r\n")
			return
		}
		_ = tc.SetDeadline(time.Time{})
		data = tc
	}
	switch verb {
	case "RETR":
		if _, err := data.Write(s.payload); err != nil {
			fmt.Fprintf(c, "426 Failure writing network stream.\r\n")
			return
		}
		if tc, ok := data.(*tls.Conn); ok {
			_ = tc.CloseWrite()
		}
		_ = dc.(*net.TCPConn).CloseWrite()
		_, _ = io.Copy(io.Discard, data) // until the client closes
	case "STOR":
		b, err := io.ReadAll(data)
		if err != nil {
			fmt.Fprintf(c, "426 Failure reading network stream.\r\n")
			return
		}
		s.mu.Lock()
		s.uploads[path] = b
		s.mu.Unlock()
	}
	fmt.Fprintf(c, "226 Transfer complete.\r\n")
}

type relayRig struct {
	t      *testing.T
	proxy  string
	relay  string // relay listener address
	caPool *x509.CertPool
	srv    *reuseServer
	tbl    *fakeTable
	m      *metrics.Metrics
	p      *Proxy
}

type relayOpts struct {
	requireClientReuse bool
	serverNoTickets    bool
	maxVersion         uint16 // both servers' (0: TLS 1.3)
	// passthrough: the server announces its own data listener, as the
	// kernel forwards a passthrough pinhole to it (PROT C data).
	passthrough bool
}

func newRelayRig(t *testing.T, o relayOpts) *relayRig {
	t.Helper()
	ca, err := certs.InitCA(t.TempDir(), certs.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	upCA, upKey, _ := issue(t, "upstream CA", nil, nil, true, nil, nil)
	_, _, srvCert := issue(t, "files.test", []net.IP{net.IPv4(127, 0, 0, 1)}, []string{"files.test"}, false, upCA, upKey)
	listen := func() net.Listener {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		return ln
	}
	sln, dln, pln, rln := listen(), listen(), listen(), listen()
	payload := make([]byte, 3<<20+17)
	_, _ = rand.Read(payload)
	ann := rln
	if o.passthrough {
		ann = dln
	}
	rs := &reuseServer{ln: sln, dln: dln, cert: srvCert, annPort: uint16(ann.Addr().(*net.TCPAddr).Port),
		maxVer: o.maxVersion, noTickets: o.serverNoTickets, payload: payload, uploads: map[string][]byte{}}
	go rs.serve()

	srv := policy.Server{Name: "fake", Addresses: []netip.Addr{netip.MustParseAddr("127.0.0.1")},
		ControlPorts: []uint16{uint16(pln.Addr().(*net.TCPAddr).Port)},
		PassiveMin:   1024, PassiveMax: 65535, Mode: policy.ModeMITM, ActiveMode: true,
		Clients: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		MITM: &policy.MITM{AllowAnonymous: true, UpstreamSource: policy.UpstreamGateway, Data: policy.DataRelay,
			TLS: policy.ServerTLS{MinVersion: tls.VersionTLS12, Verify: policy.VerifySystem, HandshakeTimeout: 5 * time.Second,
				RequireClientReuse: o.requireClientReuse}}}
	pol := &policy.Config{Pinholes: policy.Pinholes{Timeout: 5 * time.Second},
		Limits: policy.Limits{MaxFlows: 100, MaxLine: 1024}, Servers: []policy.Server{srv}}
	roots := x509.NewCertPool()
	roots.AddCert(upCA)
	tbl := &fakeTable{}
	m := metrics.NewDiscard()
	relayPort := rs.annPort
	p := New(Options{Gateway: newTestGateway(t, pol, tbl, m, nil), Leaf: certs.NewMinter(ca, 24*time.Hour, nil).Leaf, Roots: roots,
		// The "kernel": the control connection goes to the server's
		// control listener, the relay's data connection (to the
		// announced port) to its data listener.
		Dial: func(ctx context.Context, network string, _, raddr netip.AddrPort) (net.Conn, error) {
			var d net.Dialer
			if raddr.Port() == relayPort {
				return d.DialContext(ctx, network, dln.Addr().String())
			}
			return d.DialContext(ctx, network, sln.Addr().String())
		}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- p.Serve(ctx, pln) }()
	go func() { done <- p.ServeRelay(ctx, rln) }()
	t.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Errorf("Serve: %v", err)
			}
		}
	})
	return &relayRig{t: t, proxy: pln.Addr().String(), relay: rln.Addr().String(), caPool: ca.Pool(), srv: rs, tbl: tbl, m: m, p: p}
}

// login connects an FTPS client trusting the operator CA; cache nil gives
// it a session cache (it resumes), ftpc.NeverResume makes it never resume.
func (rg *relayRig) login(ctx context.Context, maxVer uint16, cache tls.ClientSessionCache, prot bool) *ftpc.Client {
	rg.t.Helper()
	c, err := ftpc.Dial(ctx, nil, nil, rg.proxy)
	if err != nil {
		rg.t.Fatal(err)
	}
	rg.t.Cleanup(func() { c.Close() })
	if err := c.AuthTLS(ctx, &tls.Config{RootCAs: rg.caPool, ServerName: "files.test", MaxVersion: maxVer, ClientSessionCache: cache}); err != nil {
		rg.t.Fatal(err)
	}
	if err := c.Login("alice", "secret"); err != nil {
		rg.t.Fatal(err)
	}
	if err := c.Protect(prot); err != nil {
		rg.t.Fatal(err)
	}
	return c
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// TestRelay runs protected and clear transfers through the relay against
// a server that requires session reuse, with clients that resume and that
// never resume, TLS 1.2 and 1.3.
func TestRelay(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		maxVer uint16
		cache  tls.ClientSessionCache
		prot   bool
	}{
		{"tls1.3 resuming client", tls.VersionTLS13, nil, true},
		{"tls1.2 resuming client", tls.VersionTLS12, nil, true},
		{"tls1.3 client that never resumes", tls.VersionTLS13, ftpc.NeverResume, true},
		{"tls1.2 client that never resumes", tls.VersionTLS12, ftpc.NeverResume, true},
		{"prot c", tls.VersionTLS13, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// Clear data (PROT C) is not relayed: it goes through a
			// pinhole the kernel forwards, here straight to the server.
			rg := newRelayRig(t, relayOpts{maxVersion: tc.maxVer, passthrough: !tc.prot})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c := rg.login(ctx, tc.maxVer, tc.cache, tc.prot)
			got, n, err := c.Retrieve(ctx, ftpc.PASV, "down.bin")
			if err != nil {
				t.Fatalf("download: %v", err)
			}
			if got != sum(rg.srv.payload) || n != int64(len(rg.srv.payload)) {
				t.Fatalf("download: %d bytes, sha256 mismatch", n)
			}
			up := bytes.Repeat([]byte("upload through the relay\n"), 40000)
			if _, _, err := c.Store(ctx, ftpc.PASV, "up.bin", bytes.NewReader(up)); err != nil {
				t.Fatalf("upload: %v", err)
			}
			rg.srv.mu.Lock()
			stored, resumed := rg.srv.uploads["up.bin"], rg.srv.resumed
			rg.srv.mu.Unlock()
			if !bytes.Equal(stored, up) {
				t.Fatalf("upload: server got %d bytes, want %d", len(stored), len(up))
			}
			if tc.prot {
				if len(resumed) != 2 || !resumed[0] || !resumed[1] {
					t.Fatalf("server saw resumption %v, want two resumed data connections", resumed)
				}
				ctl, _ := c.TLSState()
				if c.DataTLS.DidResume != (tc.cache == nil) {
					t.Errorf("client data connection resumed %v, want %v", c.DataTLS.DidResume, tc.cache == nil)
				}
				if !c.DataTLS.PeerCertificates[0].Equal(ctl.PeerCertificates[0]) {
					t.Error("the data connection's certificate differs from the control connection's")
				}
			}
			if err := c.Quit(); err != nil {
				t.Fatal(err)
			}
			m := rg.m
			rg.tbl.mu.Lock()
			holes := rg.tbl.holes
			rg.tbl.mu.Unlock()
			if !tc.prot {
				if len(holes) != 2 || holes[0].Relay || holes[1].Relay {
					t.Errorf("pinholes %v, want two forwarded (not relay) pinholes for PROT C data", holes)
				}
				if got := testutil.ToFloat64(m.RelayConnections.WithLabelValues(metrics.RelayOK)); got != 0 {
					t.Errorf("%v PROT C connections relayed, want 0", got)
				}
				return
			}
			waitFor(t, func() bool { return testutil.ToFloat64(m.RelayConnections.WithLabelValues(metrics.RelayOK)) == 2 })
			if got := testutil.ToFloat64(m.RelayBytes.WithLabelValues(metrics.DirServerToClient)); got != float64(len(rg.srv.payload)) {
				t.Errorf("relayed bytes to the client %v, want %d", got, len(rg.srv.payload))
			}
			if got := testutil.ToFloat64(m.RelayBytes.WithLabelValues(metrics.DirClientToServer)); got != float64(len(up)) {
				t.Errorf("relayed bytes to the server %v, want %d", got, len(up))
			}
			if got := testutil.ToFloat64(m.RelayHandshakes.WithLabelValues("upstream", "true")); got != 2 {
				t.Errorf("upstream resumed handshakes %v, want 2", got)
			}
			want := map[bool]string{true: "true", false: "false"}[tc.cache == nil]
			if got := testutil.ToFloat64(m.RelayHandshakes.WithLabelValues("client", want)); got != 2 {
				t.Errorf("client handshakes resumed=%s: %v, want 2", want, got)
			}
			if len(holes) != 2 || !holes[0].Relay {
				t.Errorf("pinholes %v, want two relay elements", holes)
			}
			waitFor(t, func() bool { return rg.p.Expectations() == 0 })
		})
	}
}

// TestRelayRefusals: a client that does not resume with
// require_client_reuse, and a server that offers no tickets, get a reply
// naming the cause; a connection no session announced is closed.
func TestRelayRefusals(t *testing.T) {
	t.Parallel()
	t.Run("client not resumed", func(t *testing.T) {
		t.Parallel()
		rg := newRelayRig(t, relayOpts{requireClientReuse: true})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c := rg.login(ctx, 0, ftpc.NeverResume, true)
		_, _, err := c.Retrieve(ctx, ftpc.PASV, "down.bin")
		if err == nil || !strings.Contains(err.Error(), "522 ftpsalg: data connection refused: it did not resume") {
			t.Fatalf("download without resumption: %v, want ftpsalg's 522", err)
		}
		// Counted when the relay ends, which may be after the reply.
		waitFor(t, func() bool {
			return testutil.ToFloat64(rg.m.RelayConnections.WithLabelValues(metrics.RelayClientNotResumed)) == 1
		})
		if got := testutil.ToFloat64(rg.m.Refusals.WithLabelValues("data_not_resumed")); got != 1 {
			t.Errorf("refusals{data_not_resumed} %v, want 1", got)
		}
		// A resuming client is served.
		c2 := rg.login(ctx, 0, nil, true)
		if _, _, err := c2.Retrieve(ctx, ftpc.PASV, "down.bin"); err != nil {
			t.Fatalf("resuming client: %v", err)
		}
	})
	t.Run("server without tickets", func(t *testing.T) {
		t.Parallel()
		rg := newRelayRig(t, relayOpts{serverNoTickets: true, maxVersion: tls.VersionTLS12})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c := rg.login(ctx, 0, nil, true)
		_, _, err := c.Retrieve(ctx, ftpc.PASV, "down.bin")
		if err == nil || !strings.Contains(err.Error(), "522 ftpsalg: the server requires TLS session reuse but issued no session ticket") {
			t.Fatalf("download: %v, want ftpsalg's 522 naming the session IDs", err)
		}
		if got := testutil.ToFloat64(rg.m.DataRefused.WithLabelValues("upstream_session_ids")); got != 1 {
			t.Errorf("data refusals{upstream_session_ids} %v, want 1", got)
		}
	})
	t.Run("unexpected connection", func(t *testing.T) {
		t.Parallel()
		rg := newRelayRig(t, relayOpts{})
		c, err := net.DialTimeout("tcp4", rg.relay, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatalf("read %d bytes from an unannounced relay connection", n)
		}
		waitFor(t, func() bool {
			return testutil.ToFloat64(rg.m.RelayConnections.WithLabelValues(metrics.RelayUnexpected)) == 1
		})
	})
}

// waitFor polls cond (a metric updated by another goroutine) for up to 5 s.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
}
