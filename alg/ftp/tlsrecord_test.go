package ftp

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// recordingConn keeps a copy of everything written through it: the bytes
// one peer puts on the wire.
type recordingConn struct {
	net.Conn
	wire bytes.Buffer
}

func (c *recordingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.wire.Write(b[:n])
	return n, err
}

// testCertificate mints a self-signed certificate for ftp.example.com.
func testCertificate(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("failed to generate key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		DNSNames:              []string{"ftp.example.com"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("failed to create certificate: %v", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("failed to parse certificate: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

// tlsTranscript runs an FTPS control connection from the TLS handshake that
// follows "234" to the CCC exchange and both close_notify alerts, and
// returns the bytes each side sent.
func tlsTranscript(t *testing.T, version uint16) (fromClient, fromServer []byte) {
	t.Helper()
	cert, pool := testCertificate(t)
	c, s := net.Pipe()
	deadline := time.Now().Add(10 * time.Second)
	for _, conn := range []net.Conn{c, s} {
		if err := conn.SetDeadline(deadline); err != nil {
			t.Fatalf("failed to set deadline: %v", err)
		}
	}
	cw, sw := &recordingConn{Conn: c}, &recordingConn{Conn: s}
	client := tls.Client(cw, &tls.Config{ServerName: "ftp.example.com", RootCAs: pool, MinVersion: version, MaxVersion: version})
	server := tls.Server(sw, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: version, MaxVersion: version, SessionTicketsDisabled: true})

	// exchange reads one command and answers it.
	exchange := func(conn *tls.Conn, want, answer string) error {
		buf := make([]byte, len(want))
		if _, err := io.ReadFull(conn, buf); err != nil {
			return err
		}
		if string(buf) != want {
			return errors.New("unexpected command " + string(buf))
		}
		_, err := conn.Write([]byte(answer))
		return err
	}
	// finish sends close_notify and reads the peer's.
	finish := func(conn *tls.Conn, first bool) error {
		if first {
			if err := conn.CloseWrite(); err != nil {
				return err
			}
		}
		if _, err := io.Copy(io.Discard, conn); err != nil {
			return err
		}
		if !first {
			return conn.CloseWrite()
		}
		return nil
	}

	var wg sync.WaitGroup
	var serverErr error
	wg.Go(func() {
		serverErr = func() error {
			if err := server.Handshake(); err != nil {
				return err
			}
			if err := exchange(server, "PBSZ 0\r\n", "200 PBSZ=0\r\n"); err != nil {
				return err
			}
			if err := exchange(server, "CCC\r\n", "200 Clearing control channel\r\n"); err != nil {
				return err
			}
			return finish(server, true)
		}()
	})
	clientErr := func() error {
		if err := client.Handshake(); err != nil {
			return err
		}
		for _, cmd := range []string{"PBSZ 0\r\n", "CCC\r\n"} {
			if _, err := client.Write([]byte(cmd)); err != nil {
				return err
			}
			buf := make([]byte, 64)
			if _, err := client.Read(buf); err != nil {
				return err
			}
		}
		return finish(client, false)
	}()
	wg.Wait()
	if clientErr != nil || serverErr != nil {
		t.Fatalf("TLS exchange failed: client: %v, server: %v", clientErr, serverErr)
	}
	return cw.wire.Bytes(), sw.wire.Bytes()
}

// feedChunks feeds p in chunks of the given sizes (cycled).
func feedChunks(sess *Session, dir Direction, p []byte, sizes []int) []Decision {
	var out []Decision
	for i := 0; len(p) > 0; i++ {
		n := min(sizes[i%len(sizes)], len(p))
		out = append(out, sess.Feed(dir, p[:n])...)
		p = p[n:]
	}
	return out
}

func TestSessionInspectTLS(t *testing.T) {
	t.Parallel()
	for _, v := range []struct {
		name    string
		version uint16
	}{{"TLS 1.2", tls.VersionTLS12}, {"TLS 1.3", tls.VersionTLS13}} {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			c2s, s2c := tlsTranscript(t, v.version)
			for _, sizes := range [][]int{{1 << 20}, {1}, {3, 7, 1, 200}} {
				sess := NewSession(baseConfig())
				runSteps(t, sess, []step{
					greet(),
					cl("AUTH TLS\r\n", cmdD("AUTH", "TLS")),
					sv("234 Proceed with negotiation.\r\n", replyD("AUTH", 234, "Proceed with negotiation."), tlsStartedD()),
				})
				if !sess.Encrypted(FromClient) || !sess.Encrypted(FromServer) {
					t.Fatal("Encrypted() = false after 234")
				}
				if got := feedChunks(sess, FromClient, c2s, sizes); len(got) != 0 {
					t.Errorf("chunks %v: client TLS bytes gave decisions %+v", sizes, got)
				}
				if got := feedChunks(sess, FromServer, s2c, sizes); len(got) != 0 {
					t.Errorf("chunks %v: server TLS bytes gave decisions %+v", sizes, got)
				}
				if !sess.Encrypted(FromClient) || !sess.Encrypted(FromServer) {
					t.Fatal("Encrypted() = false inside TLS")
				}
				cStart := uint64(len("AUTH TLS\r\n") + len(c2s))
				sStart := uint64(len("220 ready\r\n") + len("234 Proceed with negotiation.\r\n") + len(s2c))
				runSteps(t, sess, []step{
					cl("PASV\r\n", Decision{Action: ActionTLSCleared, Line: LineRef{Start: cStart}}, cmdD("PASV", "")),
					sv("227 Entering Passive Mode (198,51,100,2,195,80).\r\n",
						Decision{Action: ActionTLSCleared, Line: LineRef{Start: sStart}},
						passiveD("PASV", 227, 50000),
						replyD("PASV", 227, "Entering Passive Mode (198,51,100,2,195,80).")),
				})
				if sess.Encrypted(FromClient) || sess.Encrypted(FromServer) {
					t.Error("Encrypted() = true after clear text returned")
				}
			}
		})
	}
}

func TestSessionImplicitTLS(t *testing.T) {
	t.Parallel()
	c2s, s2c := tlsTranscript(t, tls.VersionTLS13)
	sess := NewSession(baseConfig())
	sess.StartImplicitTLS()
	runSteps(t, sess, []step{
		{dir: FromClient, data: string(c2s)},
		{dir: FromServer, data: string(s2c)},
		cl("EPSV\r\n", Decision{Action: ActionTLSCleared, Line: LineRef{Start: uint64(len(c2s))}}, cmdD("EPSV", "")),
		sv("229 Entering Extended Passive Mode (|||50000|)\r\n",
			Decision{Action: ActionTLSCleared, Line: LineRef{Start: uint64(len(s2c))}},
			passiveD("EPSV", 229, 50000),
			replyD("EPSV", 229, "Entering Extended Passive Mode (|||50000|)")),
	})

	decrypting := baseConfig()
	decrypting.TransportDecrypts = true
	sess = NewSession(decrypting)
	sess.StartImplicitTLS()
	if !sess.Encrypted(FromClient) || !sess.Encrypted(FromServer) {
		t.Error("Encrypted() = false after StartImplicitTLS")
	}
	runSteps(t, sess, []step{
		sv("220 ready\r\n", replyD("", 220, "ready")),
	})
}

// TestSessionInspectTLSClearTextReturns covers the ways clear text can come
// back in inspect mode: a peer that never starts TLS, and a record header
// that turns out not to be one.
func TestSessionInspectTLSClearTextReturns(t *testing.T) {
	t.Parallel()
	c2s, _ := tlsTranscript(t, tls.VersionTLS12)
	hello := c2s[:tlsHeaderLen+(int(c2s[3])<<8|int(c2s[4]))] // the ClientHello record
	const authLen = uint64(len("AUTH TLS\r\n"))
	tests := []struct {
		name  string
		steps []step
	}{
		{
			name: "client speaks clear text instead of TLS",
			steps: []step{
				cl("PORT 203,0,113,9,0,25\r\n",
					Decision{Action: ActionTLSCleared, Line: LineRef{Start: authLen}},
					cmdD("PORT", "203,0,113,9,0,25"),
					refuseCmdD("PORT", 534, ReasonThirdParty, "XXXX 203,0,113,9,0,25\r\n")),
			},
		},
		{
			name: "bad version after a valid record",
			steps: []step{
				{dir: FromClient, data: string(hello)},
				// A plausible content type (22, handshake), then a version
				// byte that is not 3: not TLS, parsed from the header on.
				cl(string([]byte{22, 9})+"NOOP\r\n",
					Decision{Action: ActionTLSCleared, Line: LineRef{Start: authLen + uint64(len(hello))}},
					cmdD("", ""),
					refuseCmdD("", 500, ReasonMalformed, "XXXXXX\r\n")),
			},
		},
		{
			name: "oversized record length",
			steps: []step{
				// Type, version, then a length of at least 0xff00.
				{dir: FromClient, data: string(hello[:3])},
				cl("\xff\r\nNOOP\r\n",
					Decision{Action: ActionTLSCleared, Line: LineRef{Start: authLen}},
					Decision{Action: ActionCommand, Line: LineRef{Start: authLen, Len: 6}},
					Decision{Action: ActionRefuse, Line: LineRef{Start: authLen, Len: 6}, Reason: ReasonMalformed,
						Reply: "500 ftpsalg: command refused: malformed\r\n", Replacement: []byte("XXXX\r\n")},
					cmdD("NOOP", "")),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sess := NewSession(baseConfig())
			runSteps(t, sess, append([]step{
				greet(),
				cl("AUTH TLS\r\n", cmdD("AUTH", "TLS")),
				sv("234 AUTH TLS successful\r\n", replyD("AUTH", 234, "AUTH TLS successful"), tlsStartedD()),
			}, tt.steps...), ignoreDetail)
		})
	}
}

func TestRecordTracker(t *testing.T) {
	t.Parallel()
	c2s, s2c := tlsTranscript(t, tls.VersionTLS13)
	for _, wire := range [][]byte{c2s, s2c} {
		var tr recordTracker
		n, clear := tr.consume(wire)
		if clear || n != len(wire) || tr.n != 0 || tr.body != 0 {
			t.Errorf("consume(transcript) = %d, %v with %d header bytes and %d body bytes left, want %d, false at a record boundary",
				n, clear, tr.n, tr.body, len(wire))
		}
		n, clear = tr.consume([]byte("220 ok\r\n"))
		if diff := cmp.Diff([]any{0, true}, []any{n, clear}); diff != "" {
			t.Errorf("consume(clear text) mismatch (-want +got):\n%s", diff)
		}
	}
}
