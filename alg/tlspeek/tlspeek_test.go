package tlspeek

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// chunk is bytes one side wrote, in the order the connection carried them.
type chunk struct {
	dir Direction
	b   []byte
}

// recorder is a net.Conn that records what its side writes.
type recorder struct {
	net.Conn
	dir Direction
	mu  *sync.Mutex
	log *[]chunk
}

func (r recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	*r.log = append(*r.log, chunk{r.dir, append([]byte(nil), p...)})
	r.mu.Unlock()
	return r.Conn.Write(p)
}

func testCert(t testing.TB) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ftp.example.com"},
		DNSNames: []string{"ftp.example.com"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// handshake runs a crypto/tls client and server over a loopback TCP
// connection (a TLS 1.3 server writes its tickets while the client writes
// its Finished, which an unbuffered net.Pipe deadlocks on) and returns
// the bytes each wrote, in order, with the two sides' errors. After a
// successful handshake the client writes one application record, as an
// FTPS client sends its first command.
func handshake(t testing.TB, cc, sc *tls.Config) ([]chunk, error, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var log []chunk
	deadline := time.Now().Add(10 * time.Second)
	_ = a.SetDeadline(deadline)
	_ = b.SetDeadline(deadline)
	client := tls.Client(recorder{a, FromClient, &mu, &log}, cc)
	server := tls.Server(recorder{b, FromServer, &mu, &log}, sc)
	serr := make(chan error, 1)
	go func() {
		err := server.Handshake()
		if err == nil {
			buf := make([]byte, 64)
			if _, err = server.Read(buf); err == nil {
				_, err = server.Write([]byte("331 password\r\n"))
			}
		}
		b.Close()
		serr <- err
	}()
	cerr := client.Handshake()
	if cerr == nil {
		werr := make(chan error, 1)
		go func() { _, err := client.Write([]byte("USER anonymous\r\n")); werr <- err }()
		buf := make([]byte, 64)
		_, cerr = client.Read(buf)
		if err := <-werr; cerr == nil {
			cerr = err
		}
	}
	if cerr != nil {
		a.Close()
	}
	se := <-serr
	a.Close()
	return log, cerr, se
}

// feed gives the chunks to a Handshake, split every n bytes (0: whole).
func feed(h *Handshake, log []chunk, n int) []Event {
	var out []Event
	for _, c := range log {
		b := c.b
		for len(b) > 0 {
			k := len(b)
			if n > 0 {
				k = min(n, k)
			}
			out = h.Feed(out, c.dir, b[:k])
			b = b[k:]
		}
	}
	return out
}

func kinds(ev []Event) []string {
	var out []string
	for _, e := range ev {
		out = append(out, e.Kind.String())
	}
	return out
}

func TestHandshakes(t *testing.T) {
	t.Parallel()
	cert := testCert(t)
	pool := x509.NewCertPool()
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	pool.AddCert(leaf)
	client := func(max uint16) *tls.Config {
		return &tls.Config{ServerName: "ftp.example.com", RootCAs: pool, MaxVersion: max, NextProtos: []string{"ftp"}}
	}
	server := func(min uint16) *tls.Config {
		return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: min, NextProtos: []string{"ftp"}}
	}
	tests := []struct {
		name     string
		cc, sc   *tls.Config
		want     []string
		version  uint16
		certReq  bool
		clientOK bool
	}{
		{name: "tls13", cc: client(0), sc: server(0), version: VersionTLS13,
			want: []string{"client_hello", "server_hello", "complete"}},
		{name: "tls12", cc: client(tls.VersionTLS12), sc: server(0), version: VersionTLS12,
			want: []string{"client_hello", "server_hello", "complete"}},
		{name: "tls12 client certificate requested", cc: client(tls.VersionTLS12),
			sc:      func() *tls.Config { c := server(0); c.ClientAuth = tls.RequestClientCert; return c }(),
			version: VersionTLS12, certReq: true,
			want: []string{"client_hello", "server_hello", "certificate_request", "complete"}},
		{name: "tls13 client certificate requested (encrypted: not seen)", cc: client(0),
			sc:      func() *tls.Config { c := server(0); c.ClientAuth = tls.RequestClientCert; return c }(),
			version: VersionTLS13, want: []string{"client_hello", "server_hello", "complete"}},
		{name: "version refused by the server", cc: client(tls.VersionTLS12), sc: server(tls.VersionTLS13),
			want: []string{"client_hello", "alert"}},
		{name: "untrusted certificate (tls12: clear alert)", cc: &tls.Config{ServerName: "ftp.example.com", MaxVersion: tls.VersionTLS12},
			sc: server(0), version: VersionTLS12, want: []string{"client_hello", "server_hello", "alert"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			log, _, _ := handshake(t, tc.cc, tc.sc)
			for _, split := range []int{0, 1, 7} {
				var h Handshake
				ev := feed(&h, log, split)
				if diff := cmp.Diff(tc.want, kinds(ev)); diff != "" {
					t.Fatalf("split %d: events (-want +got):\n%s", split, diff)
				}
				ch := h.Client()
				if ch == nil || ch.SNI != "ftp.example.com" || !cmp.Equal(ch.ALPN, tc.cc.NextProtos) {
					t.Fatalf("client hello %+v", ch)
				}
				if tc.version != 0 {
					sh := h.Server()
					if sh.Version != tc.version || !AcceptableSuite(sh.Suite) {
						t.Errorf("server hello %+v", sh)
					}
					if r, d := CheckServerHello(sh, VersionTLS12); r != "" {
						t.Errorf("refused: %s %s", r, d)
					}
				}
			}
		})
	}
}

func TestAlertDescription(t *testing.T) {
	t.Parallel()
	cert := testCert(t)
	log, _, _ := handshake(t, &tls.Config{MaxVersion: tls.VersionTLS12, ServerName: "x"},
		&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
	var h Handshake
	ev := feed(&h, log, 0)
	last := ev[len(ev)-1]
	// protocol_version (70), fatal (2), from the server, in clear text.
	want := Event{Kind: EventAlert, Dir: FromServer, Level: 2, Description: 70}
	if diff := cmp.Diff(want, last); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	if r, _ := CheckClientHello(h.Client(), VersionTLS13); r != ReasonClientOffer {
		t.Fatalf("a TLS 1.2-only ClientHello against a TLS 1.3 minimum: %q", r)
	}
}

func TestResumption(t *testing.T) {
	t.Parallel()
	cert := testCert(t)
	for _, max := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cache := tls.NewLRUClientSessionCache(4)
		cc := &tls.Config{InsecureSkipVerify: true, ServerName: "ftp.example.com", MaxVersion: max, ClientSessionCache: cache}
		sc := &tls.Config{Certificates: []tls.Certificate{cert}}
		var resumed []bool
		for range 2 {
			log, cerr, serr := handshake(t, cc, sc)
			if cerr != nil || serr != nil {
				t.Fatalf("handshake: %v %v", cerr, serr)
			}
			var h Handshake
			feed(&h, log, 0)
			resumed = append(resumed, h.Server().Resumed(h.Client()))
		}
		if !cmp.Equal(resumed, []bool{false, true}) {
			t.Errorf("%s: resumed = %v, want [false true]", VersionName(max), resumed)
		}
	}
}

func TestPolicy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		sh   ServerHello
		want string
	}{
		{ServerHello{Version: VersionTLS13, Suite: tls.TLS_AES_128_GCM_SHA256}, ""},
		{ServerHello{Version: VersionTLS12, Suite: tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}, ""},
		{ServerHello{Version: VersionTLS12, Suite: 0x009E}, ""},
		{ServerHello{Version: VersionTLS12, Suite: tls.TLS_RSA_WITH_AES_128_GCM_SHA256}, ReasonSuite},
		{ServerHello{Version: VersionTLS12, Suite: tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA}, ReasonSuite},
		{ServerHello{Version: VersionTLS11, Suite: tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA}, ReasonVersion},
	}
	for _, tc := range tests {
		if got, _ := CheckServerHello(&tc.sh, VersionTLS12); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.sh, got, tc.want)
		}
	}
	if got, _ := CheckServerHello(&ServerHello{Version: VersionTLS12, Suite: tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}, VersionTLS13); got != ReasonVersion {
		t.Errorf("TLS 1.2 against a TLS 1.3 minimum: %q", got)
	}
	ch := &ClientHello{Versions: []uint16{VersionTLS12}, Suites: []uint16{tls.TLS_RSA_WITH_AES_128_CBC_SHA}}
	if got, _ := CheckClientHello(ch, VersionTLS12); got != ReasonClientOffer {
		t.Errorf("no acceptable suite: %q", got)
	}
}

func TestMalformed(t *testing.T) {
	t.Parallel()
	var h Handshake
	ev := h.Feed(nil, FromClient, []byte("USER anonymous\r\n"))
	if len(ev) != 1 || ev[0].Kind != EventMalformed || !errors.Is(ev[0].Err, ErrMalformed) || !h.Done() {
		t.Fatalf("%+v", ev)
	}
}
