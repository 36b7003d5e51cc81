package labftpd

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// testServerName is the DNS name in the test leaf; clients verify it, and
// it keys their session caches, so data connections can resume.
const testServerName = "labftpd.test"

// testPKI mints a throwaway CA and a leaf it signs for testServerName,
// 127.0.0.1 and ::1. The client config trusts only that CA and caches
// sessions.
func testPKI(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "labftpd test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: testServerName},
		DNSNames:     []string{testServerName},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leaf, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	server = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{leaf}, PrivateKey: key}},
		MinVersion:   tls.VersionTLS12,
	}
	client = &tls.Config{
		RootCAs:            pool,
		ServerName:         testServerName,
		ClientSessionCache: tls.NewLRUClientSessionCache(8),
	}
	return server, client
}

// authTLS sends AUTH TLS and runs the client handshake over under (the
// raw connection when nil).
func (c *ftpClient) authTLS(conf *tls.Config, under net.Conn) *tls.Conn {
	c.t.Helper()
	c.expect(234, "AUTH TLS")
	if under == nil {
		under = c.raw
	}
	tc := tls.Client(under, conf)
	tc.SetDeadline(time.Now().Add(testTimeout))
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("control TLS handshake: %v", err)
	}
	c.conn, c.r = tc, bufio.NewReader(tc)
	return tc
}

// protP sends PBSZ 0 and PROT P; data connections then use TLS with conf.
func (c *ftpClient) protP(conf *tls.Config) {
	c.t.Helper()
	if got := c.expect(200, "PBSZ 0"); got != "PBSZ=0" {
		c.t.Errorf("PBSZ 0: got %q", got)
	}
	c.expect(200, "PROT P")
	c.dataTLS = conf
}

// ccc sends CCC and exchanges close_notify on tc, whose reads must go
// through a recordReader (over hold) so that they stop at the server's
// close_notify. The client's close_notify, unless notify is false (curl's
// passive CCC mode), and next leave in one write, so the server reads
// them in one segment.
func (c *ftpClient) ccc(tc *tls.Conn, hold *holdConn, notify bool, next string) {
	c.t.Helper()
	c.expect(200, "CCC")
	if notify {
		hold.hold()
		if err := tc.CloseWrite(); err != nil {
			c.t.Fatalf("close_notify: %v", err)
		}
		if err := hold.release(next); err != nil {
			c.t.Fatalf("write after close_notify: %v", err)
		}
	}
	tc.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := io.Copy(io.Discard, tc); err != nil {
		c.t.Fatalf("waiting for the server's close_notify: %v", err)
	}
	if !notify {
		if err := hold.release(next); err != nil {
			c.t.Fatalf("write after CCC: %v", err)
		}
	}
	c.conn, c.r = c.raw, bufio.NewReader(c.raw)
}

// holdConn reads one TLS record at a time from its connection and, while
// holding, keeps what is written instead of sending it.
type holdConn struct {
	net.Conn
	rr      *recordReader
	holding bool
	held    []byte
}

func newHoldConn(c net.Conn) *holdConn {
	return &holdConn{Conn: c, rr: &recordReader{r: c}}
}

func (h *holdConn) Read(b []byte) (int, error) { return h.rr.Read(b) }

func (h *holdConn) Write(b []byte) (int, error) {
	if h.holding {
		h.held = append(h.held, b...)
		return len(b), nil
	}
	return h.Conn.Write(b)
}

func (h *holdConn) hold() { h.holding = true }

// release sends what was held followed by more in one write.
func (h *holdConn) release(more string) error {
	h.holding = false
	h.Conn.SetWriteDeadline(time.Now().Add(testTimeout))
	_, err := h.Conn.Write(append(h.held, more...))
	h.held = nil
	return err
}

// dialImplicit connects to an implicit-TLS server and reads the greeting.
func dialImplicit(t testing.TB, addr string, conf *tls.Config) *ftpClient {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatalf("failed to dial %s: %v", addr, err)
	}
	t.Cleanup(func() { raw.Close() })
	tc := tls.Client(raw, conf)
	c := &ftpClient{t: t, conn: tc, r: bufio.NewReader(tc), raw: raw}
	if code, msg := c.read(); code != 220 {
		t.Fatalf("greeting: got %d %q, want 220", code, msg)
	}
	return c
}

// expectClosed fails unless the server ends the control connection.
func (c *ftpClient) expectClosed(what string) {
	c.t.Helper()
	if code, msg, err := c.readErr(); err == nil {
		c.t.Errorf("%s: got %d %q, want the connection closed", what, code, msg)
	}
}

// loggedPanic returns a logger and a function reporting whether any
// session panicked.
func loggedPanic() (*slog.Logger, func() string) {
	var buf bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&buf, &mu}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return logger, func() string {
		mu.Lock()
		defer mu.Unlock()
		if strings.Contains(buf.String(), "session panic") {
			return buf.String()
		}
		return ""
	}
}

func TestFTPSExplicit(t *testing.T) {
	t.Parallel()
	hosts := []string{"127.0.0.1"}
	if haveIPv6Loopback() {
		hosts = append(hosts, "::1")
	}
	type variant struct {
		host, mode string
		version    uint16
	}
	var variants []variant
	for _, host := range hosts {
		for _, mode := range []string{"PASV", "EPSV", "PORT", "EPRT"} {
			if strings.Contains(host, ":") && (mode == "PASV" || mode == "PORT") {
				continue // RFC 959 commands carry IPv4 only
			}
			variants = append(variants, variant{host, mode, tls.VersionTLS13})
		}
	}
	variants = append(variants, variant{"127.0.0.1", "EPSV", tls.VersionTLS12}, variant{"127.0.0.1", "PORT", tls.VersionTLS12})
	for _, v := range variants {
		t.Run(fmt.Sprintf("%s/%s/%s", v.host, v.mode, tls.VersionName(v.version)), func(t *testing.T) {
			t.Parallel()
			srvConf, cliConf := testPKI(t)
			cliConf.MinVersion, cliConf.MaxVersion = v.version, v.version
			dir := t.TempDir()
			logger, panicked := loggedPanic()
			c := dialFTP(t, serve(t, New(Config{User: "u", Password: "p", Root: dir, TLS: srvConf, Logger: logger}), v.host))
			if got := c.expect(211, "FEAT"); !strings.Contains(got, "\n AUTH TLS\n") || !strings.Contains(got, "\n PBSZ\n") || !strings.Contains(got, "\n PROT\n") {
				t.Errorf("FEAT: got %q", got)
			}
			tc := c.authTLS(cliConf, nil)
			if got := tc.ConnectionState().Version; got != v.version {
				t.Errorf("control TLS version %s, want %s", tls.VersionName(got), tls.VersionName(v.version))
			}
			c.protP(cliConf)
			c.login("u", "p")
			c.expect(200, "TYPE I")
			want := randomBytes(t, 300<<10+7)
			c.stor(v.mode, "up.bin", want)
			if got, err := os.ReadFile(filepath.Join(dir, "up.bin")); err != nil || sum(got) != sum(want) {
				t.Fatalf("stored file: sha256 %s (err %v), want %s", sum(got), err, sum(want))
			}
			got := c.retr(v.mode, "up.bin")
			if sum(got) != sum(want) {
				t.Fatalf("download: sha256 %s, want %s", sum(got), sum(want))
			}
			if st := c.dataState; st.Version != v.version || !st.DidResume {
				t.Errorf("data connection: %s, resumed %v; want %s, resumed (session tickets on by default)",
					tls.VersionName(st.Version), st.DidResume, tls.VersionName(v.version))
			}
			if list := string(c.download(v.mode, "LIST")); !strings.Contains(list, "up.bin") {
				t.Errorf("LIST: got %q", list)
			}
			c.expect(221, "QUIT")
			// The server ends TLS with close_notify: a clean EOF.
			if _, _, err := c.readErr(); err != io.EOF {
				t.Errorf("after QUIT: got %v, want EOF", err)
			}
			if logs := panicked(); logs != "" {
				t.Errorf("session panicked:\n%s", logs)
			}
		})
	}
}

func TestFTPSImplicit(t *testing.T) {
	t.Parallel()
	srvConf, cliConf := testPKI(t)
	srv := New(Config{User: "u", Password: "p", TLS: srvConf, ImplicitTLS: true, RequireTLS: true})
	c := dialImplicit(t, serve(t, srv, "127.0.0.1"), cliConf)
	c.expect(503, "AUTH TLS")
	c.protP(cliConf)
	c.login("u", "p")
	want := randomBytes(t, 100<<10+3)
	c.stor("EPSV", "f", want)
	if got := c.retr("PASV", "f"); sum(got) != sum(want) {
		t.Fatalf("download: sha256 %s, want %s", sum(got), sum(want))
	}
	// PROT C: the data connection is clear text again.
	c.expect(200, "PROT C")
	c.dataTLS = nil
	if got := c.retr("EPRT", "f"); sum(got) != sum(want) {
		t.Fatalf("clear download: sha256 %s, want %s", sum(got), sum(want))
	}
	c.expect(221, "QUIT")
}

func TestFTPSImplicitNeedsTLS(t *testing.T) {
	t.Parallel()
	for _, cfg := range []Config{{ImplicitTLS: true}, {RequireTLS: true}} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if err := New(cfg).Serve(ln); err == nil || !strings.Contains(err.Error(), "needs Config.TLS") {
			t.Errorf("Serve(%+v): got %v", cfg, err)
		}
	}
}

func TestFTPSProtClear(t *testing.T) {
	t.Parallel()
	srvConf, cliConf := testPKI(t)
	want := randomBytes(t, 64<<10)
	c := dialFTP(t, serve(t, New(Config{TLS: srvConf, Files: map[string][]byte{"f": want}}), "127.0.0.1"))
	c.authTLS(cliConf, nil)
	c.login("u", "p")
	// The default is PROT C (RFC 4217 §9).
	if got := c.retr("EPSV", "f"); sum(got) != sum(want) {
		t.Fatalf("default PROT C: sha256 %s, want %s", sum(got), sum(want))
	}
	c.expect(200, "PROT C")
	c.stor("PORT", "g", want)
	c.protP(cliConf)
	if got := c.retr("PASV", "g"); sum(got) != sum(want) || c.dataState.Version == 0 {
		t.Fatalf("PROT P: sha256 %s, want %s (TLS %x)", sum(got), sum(want), c.dataState.Version)
	}
	c.expect(200, "PROT C")
	c.dataTLS = nil
	if got := c.retr("EPRT", "g"); sum(got) != sum(want) {
		t.Fatalf("PROT C again: sha256 %s, want %s", sum(got), sum(want))
	}
}

func TestFTPSCommands(t *testing.T) {
	t.Parallel()
	t.Run("no TLS configured", func(t *testing.T) {
		t.Parallel()
		c := dialFTP(t, serve(t, New(Config{}), "127.0.0.1"))
		if got := c.expect(211, "FEAT"); strings.Contains(got, "AUTH") {
			t.Errorf("FEAT without TLS: got %q", got)
		}
		for _, cmd := range []string{"AUTH TLS", "PBSZ 0", "PROT P", "CCC"} {
			c.expect(530, "%s", cmd) // unknown before login, as before
		}
		c.login("u", "p")
		for _, cmd := range []string{"AUTH TLS", "AUTH SSL", "PBSZ 0", "PROT P", "PROT C", "CCC"} {
			c.expect(502, "%s", cmd)
		}
	})
	t.Run("TLS configured", func(t *testing.T) {
		t.Parallel()
		srvConf, cliConf := testPKI(t)
		c := dialFTP(t, serve(t, New(Config{TLS: srvConf}), "127.0.0.1"))
		c.expect(504, "AUTH KERBEROS_V4")
		c.expect(504, "AUTH")
		c.expect(503, "PBSZ 0")
		c.expect(503, "PROT P")
		c.expect(200, "PROT C")
		c.expect(533, "CCC")
		c.expect(536, "PROT S")
		c.expect(504, "PROT X")
		c.login("u", "p") // RequireTLS is off
		c.expect(234, "auth ssl")
		tc := tls.Client(c.raw, cliConf)
		tc.SetDeadline(time.Now().Add(testTimeout))
		if err := tc.Handshake(); err != nil {
			t.Fatalf("handshake after AUTH SSL: %v", err)
		}
		c.conn, c.r = tc, bufio.NewReader(tc)
		c.expect(257, "PWD") // still logged in
		c.expect(503, "AUTH TLS")
		c.expect(503, "AUTH SSL")
		for _, arg := range []string{"", "x", "-1", "+1", "99999999999", "0x10"} {
			c.expect(501, "PBSZ %s", arg)
		}
		if got := c.expect(200, "PBSZ 1024"); got != "PBSZ=0" {
			t.Errorf("PBSZ 1024: got %q, want PBSZ=0", got)
		}
		c.expect(536, "PROT E")
		c.expect(536, "PROT S")
		c.expect(504, "PROT")
		c.expect(504, "PROT PP")
		c.expect(200, "prot p")
		c.expect(200, "PROT C")
		c.expect(221, "QUIT")
	})
}

func TestFTPSRequireTLS(t *testing.T) {
	t.Parallel()
	srvConf, cliConf := testPKI(t)
	c := dialFTP(t, serve(t, New(Config{User: "u", Password: "p", TLS: srvConf, RequireTLS: true}), "127.0.0.1"))
	c.expect(530, "USER u")
	c.expect(530, "PASS p")
	c.expect(530, "PWD")
	c.expect(211, "FEAT")
	hold := newHoldConn(c.raw)
	tc := c.authTLS(cliConf, hold)
	c.login("u", "p")
	c.ccc(tc, hold, true, "")
	c.expect(257, "PWD") // the login survives CCC
	c.expect(530, "USER u")
	c.expect(530, "PASS p")
	c.expect(533, "CCC")
	c.expect(503, "AUTH TLS")
	c.expect(221, "QUIT")
}

func TestFTPSCCC(t *testing.T) {
	t.Parallel()
	for _, v := range []struct {
		version uint16
		notify  bool
	}{{tls.VersionTLS12, true}, {tls.VersionTLS13, true}, {tls.VersionTLS12, false}, {tls.VersionTLS13, false}} {
		version := v.version
		t.Run(fmt.Sprintf("%s/client_close_notify=%v", tls.VersionName(version), v.notify), func(t *testing.T) {
			t.Parallel()
			srvConf, cliConf := testPKI(t)
			cliConf.MinVersion, cliConf.MaxVersion = version, version
			want := randomBytes(t, 50<<10)
			logger, panicked := loggedPanic()
			srv := New(Config{User: "u", Password: "p", TLS: srvConf, Files: map[string][]byte{"f": want}, Logger: logger})
			c := dialFTP(t, serve(t, srv, "127.0.0.1"))
			hold := newHoldConn(c.raw)
			tc := c.authTLS(cliConf, hold)
			c.protP(cliConf)
			c.login("u", "p")
			// The clear-text NOOP leaves in the same segment as the
			// client's close_notify, if any.
			c.ccc(tc, hold, v.notify, "NOOP\r\n")
			if code, msg := c.read(); code != 200 {
				t.Fatalf("NOOP after CCC: got %d %q", code, msg)
			}
			c.expect(257, "PWD")
			// PROT P still holds for data connections (RFC 4217 §12.3).
			if got := c.retr("EPSV", "f"); sum(got) != sum(want) || c.dataState.Version != version {
				t.Fatalf("download after CCC: sha256 %s, want %s (TLS %x)", sum(got), sum(want), c.dataState.Version)
			}
			c.expect(503, "AUTH TLS")
			c.expect(533, "CCC")
			c.expect(221, "QUIT")
			if _, _, err := c.readErr(); err != io.EOF {
				t.Errorf("after QUIT: got %v, want EOF", err)
			}
			if logs := panicked(); logs != "" {
				t.Errorf("session panicked:\n%s", logs)
			}
		})
	}
}

// pipelineConn sends a command line in front of its first write and
// consumes one reply line before its first read: AUTH and the ClientHello
// in one segment, which the server's line reader reads ahead.
type pipelineConn struct {
	net.Conn
	prefix   string
	wantCode string
	replied  bool
}

func (p *pipelineConn) Write(b []byte) (int, error) {
	if p.prefix != "" {
		pre := p.prefix
		p.prefix = ""
		if _, err := p.Conn.Write(append([]byte(pre), b...)); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	return p.Conn.Write(b)
}

func (p *pipelineConn) Read(b []byte) (int, error) {
	if !p.replied {
		p.replied = true
		var line []byte
		one := make([]byte, 1)
		for !bytes.HasSuffix(line, []byte("\n")) {
			if _, err := p.Conn.Read(one); err != nil {
				return 0, err
			}
			line = append(line, one[0])
		}
		if !strings.HasPrefix(string(line), p.wantCode+" ") {
			return 0, fmt.Errorf("reply %q, want %s", line, p.wantCode)
		}
	}
	return p.Conn.Read(b)
}

func TestFTPSAuthPipelined(t *testing.T) {
	t.Parallel()
	srvConf, cliConf := testPKI(t)
	c := dialFTP(t, serve(t, New(Config{TLS: srvConf}), "127.0.0.1"))
	pc := &pipelineConn{Conn: c.raw, prefix: "AUTH TLS\r\n", wantCode: "234"}
	tc := tls.Client(pc, cliConf)
	tc.SetDeadline(time.Now().Add(testTimeout))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake sent with AUTH: %v", err)
	}
	c.conn, c.r = tc, bufio.NewReader(tc)
	c.login("u", "p")
	c.expect(257, "PWD")
}

func TestFTPSGarbageHandshake(t *testing.T) {
	t.Parallel()
	srvConf, cliConf := testPKI(t)
	const shortTimeout = 300 * time.Millisecond
	garbage := map[string][]byte{
		"HTTP":             []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"random":           randomBytes(t, 2000),
		"bad ClientHello":  append([]byte{0x16, 0x03, 0x01, 0x00, 0x40}, randomBytes(t, 0x40)...),
		"SSLv2 hello":      {0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10},
		"huge record":      {0x16, 0x03, 0x01, 0xff, 0xff, 0x01},
		"silent":           nil,
		"short header":     {0x16, 0x03},
		"zero-length data": {0x17, 0x03, 0x03, 0x00, 0x00},
	}
	for _, implicit := range []bool{false, true} {
		for name, b := range garbage {
			t.Run(fmt.Sprintf("implicit=%v/%s", implicit, name), func(t *testing.T) {
				t.Parallel()
				logger, panicked := loggedPanic()
				srv := New(Config{TLS: srvConf, ImplicitTLS: implicit, DataTimeout: shortTimeout, Logger: logger})
				addr := serve(t, srv, "127.0.0.1")
				var c *ftpClient
				if implicit {
					conn, err := net.DialTimeout("tcp", addr, testTimeout)
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { conn.Close() })
					c = &ftpClient{t: t, conn: conn, r: bufio.NewReader(conn), raw: conn}
				} else {
					c = dialFTP(t, addr)
					c.expect(234, "AUTH TLS")
				}
				start := time.Now()
				c.raw.SetWriteDeadline(time.Now().Add(testTimeout))
				c.raw.Write(b)
				c.expectClosed("after garbage")
				if d := time.Since(start); d > shortTimeout+2*time.Second {
					t.Errorf("connection closed after %v", d)
				}
				if logs := panicked(); logs != "" {
					t.Errorf("session panicked:\n%s", logs)
				}
			})
		}
	}
	t.Run("data connection", func(t *testing.T) {
		t.Parallel()
		logger, panicked := loggedPanic()
		srv := New(Config{TLS: srvConf, DataTimeout: shortTimeout, Logger: logger, Files: map[string][]byte{"f": []byte("secret")}})
		c := dialFTP(t, serve(t, srv, "127.0.0.1"))
		c.authTLS(cliConf, nil)
		c.protP(cliConf)
		c.login("u", "p")
		for name, b := range garbage {
			data := c.prepareData("EPSV")
			c.send("RETR f")
			conn := data()
			conn.SetWriteDeadline(time.Now().Add(testTimeout))
			conn.Write(b)
			if code, msg := c.read(); code != 150 {
				t.Fatalf("%s: RETR got %d %q, want 150", name, code, msg)
			}
			if code, msg := c.read(); code != 425 {
				t.Fatalf("%s: after garbage on the data connection: got %d %q, want 425", name, code, msg)
			}
			conn.SetReadDeadline(time.Now().Add(testTimeout))
			if got, _ := io.ReadAll(conn); bytes.Contains(got, []byte("secret")) {
				t.Fatalf("%s: clear text sent on a PROT P data connection", name)
			}
		}
		c.expect(200, "NOOP")
		if logs := panicked(); logs != "" {
			t.Errorf("session panicked:\n%s", logs)
		}
	})
}

// TestRecordReader checks that no Read crosses a TLS record boundary and
// that the bytes after the last record are left in the source.
func TestRecordReader(t *testing.T) {
	t.Parallel()
	var stream []byte
	var ends []int // offsets where records end
	for _, n := range []int{0, 1, 5, 300, 16384 + 256, 0, 2} {
		stream = append(stream, 0x17, 0x03, 0x03, byte(n>>8), byte(n))
		stream = append(stream, randomBytes(t, n)...)
		ends = append(ends, len(stream))
	}
	total := len(stream)
	stream = append(stream, "CLEAR TEXT"...)
	for _, chunk := range []int{1, 3, 7, 64 << 10} {
		src := bytes.NewReader(stream)
		rr := &recordReader{r: &chunkReader{r: src, n: chunk}}
		pos := 0
		buf := make([]byte, 32<<10)
		for pos < total {
			n, err := rr.Read(buf)
			if err != nil {
				t.Fatalf("chunk %d: Read at %d: %v", chunk, pos, err)
			}
			if !bytes.Equal(buf[:n], stream[pos:pos+n]) {
				t.Fatalf("chunk %d: wrong bytes at %d", chunk, pos)
			}
			for _, end := range ends {
				if pos < end && pos+n > end {
					t.Fatalf("chunk %d: Read [%d,%d) crosses the record end %d", chunk, pos, pos+n, end)
				}
			}
			pos += n
		}
		if rest, _ := io.ReadAll(src); string(rest) != "CLEAR TEXT" {
			t.Fatalf("chunk %d: left %q in the source, want the clear text", chunk, rest)
		}
	}
	// A truncated record is an error of the source, passed on.
	rr := &recordReader{r: bytes.NewReader([]byte{0x17, 0x03, 0x03, 0x00, 0x09, 1, 2})}
	if _, err := io.ReadAll(rr); err != nil {
		t.Fatalf("truncated record: ReadAll returned %v, want nil at EOF", err)
	}
	if n, err := rr.Read(make([]byte, 8)); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("after EOF: got %d, %v", n, err)
	}
}

// chunkReader returns at most n bytes per Read.
type chunkReader struct {
	r io.Reader
	n int
}

func (c *chunkReader) Read(b []byte) (int, error) { return c.r.Read(b[:min(len(b), c.n)]) }
