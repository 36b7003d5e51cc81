package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/test/ftpc"
	"github.com/ftpsalg/ftpsalg/test/harness"
	"github.com/ftpsalg/ftpsalg/test/lab"
)

// The mitm trust boundary (issue 14), on the real kernel against vsftpd.

// unprovenName is a name the lab server's certificate does not have.
const unprovenName = "www.example.org"

// shownTo runs a TLS client handshake on c asking for sni and returns
// what the gateway showed: every certificate it presented, whatever their
// names, and the handshake's error.
func shownTo(ctx context.Context, c net.Conn, sni string) ([]*x509.Certificate, error) {
	var shown []*x509.Certificate
	tc := tls.Client(c, &tls.Config{ServerName: sni, MinVersion: tls.VersionTLS12,
		InsecureSkipVerify: true, // record, the test judges
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			for _, der := range raw {
				if crt, err := x509.ParseCertificate(der); err == nil {
					shown = append(shown, crt)
				}
			}
			return nil
		}})
	return shown, tc.HandshakeContext(ctx)
}

// TestTrustNoCertificateForUnprovenName: a client asking (SNI) for a name
// the server's certificate does not prove is never shown a certificate for
// it — explicit and implicit FTPS, with the server reachable and not (a
// control port nothing listens on). The name the server proves still
// works.
func TestTrustNoCertificateForUnprovenName(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	ml := newMITMLab(t, mitmOpts{edit: func(p string) string {
		p = strings.Replace(p, "control_ports: [21]", "control_ports: [21, 2121]", 1)
		return strings.Replace(p, "implicit_tls_ports: [990]", "implicit_tls_ports: [990, 9990]", 1)
	}})
	for _, tc := range []struct {
		name     string
		port     uint16
		implicit bool
		reason   string // the refusal counted
	}{
		{"explicit reachable", 21, false, "unproven_name"},
		{"explicit unreachable", 2121, false, ""},
		{"implicit reachable", 990, true, "upstream_failed"},
		{"implicit unreachable", 9990, true, "upstream_unreachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, err := ml.l.Dial(ctx, lab.Client, "tcp4", netip.AddrPort{}, netip.AddrPortFrom(lab.ServerAddr4, tc.port))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(15 * time.Second))
			if !tc.implicit {
				r := bufio.NewReader(c)
				line, err := r.ReadString('\n')
				if err != nil {
					t.Fatal(err)
				}
				if tc.port == 2121 {
					// No server: the client is told so in clear text,
					// before any TLS.
					if !strings.HasPrefix(line, "421 ") {
						t.Fatalf("first line %q, want a 421", line)
					}
					if _, err := io.WriteString(c, "AUTH TLS\r\n"); err == nil {
						if line, err := r.ReadString('\n'); err == nil && strings.HasPrefix(line, "234") {
							t.Fatalf("AUTH after the 421 answered %q", line)
						}
					}
					return
				}
				if _, err := io.WriteString(c, "AUTH TLS\r\n"); err != nil {
					t.Fatal(err)
				}
				if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "234") {
					t.Fatalf("AUTH: %q %v", line, err)
				}
			}
			shown, err := shownTo(ctx, c, unprovenName)
			if err == nil {
				t.Fatal("handshake for an unproven name succeeded")
			}
			for _, crt := range shown {
				if crt.VerifyHostname(unprovenName) == nil {
					t.Fatalf("shown a certificate for %s: %v", unprovenName, crt.DNSNames)
				}
			}
			if len(shown) != 0 {
				t.Fatalf("shown %d certificates, want none: the handshake ends with an alert first", len(shown))
			}
			ml.d.WaitMetric(`ftpsalg_policy_refusals_total{reason="`+tc.reason+`"}`, 1)
		})
	}
	// The proven name: a Go client trusting only the operator CA logs in.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, implicit := range []bool{false, true} {
		if _, err := ml.goTLSClient(t, ctx, lab.ServerAddr4, implicit).List(ctx, ftpc.EPSV); err != nil {
			t.Fatalf("implicit %v: LIST with the proven name: %v", implicit, err)
		}
	}
}

// TestTrustTricklingConnections: 500 connections that trickle bytes
// without a line end are all closed at first_command_timeout, each
// counted, while a legitimate session works meanwhile.
func TestTrustTricklingConnections(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	const n, timeout = 500, 2 * time.Second
	ml := newMITMLab(t, mitmOpts{
		vsftpd: lab.VsftpdOptions{Extra: []string{"max_clients=1000", "max_per_ip=1000"}},
		edit: func(p string) string {
			return "limits:\n  first_command_timeout: 2s\n  max_sessions_per_client: 1000\n" + p
		}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	closed := make(chan time.Duration, n)
	errs := make(chan error, n)
	for range n {
		c, err := ml.l.Dial(ctx, lab.Client, "tcp4", netip.AddrPort{}, netip.AddrPortFrom(lab.ServerAddr4, 21))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		wg.Go(func() {
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			// Read until the gateway closes; meanwhile send one byte
			// of a command every 300ms, never its line end.
			done := make(chan struct{})
			go func() {
				defer close(done)
				_, err := io.Copy(io.Discard, c)
				if err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
					errs <- err
				}
				closed <- time.Since(start)
			}()
			tick := time.NewTicker(300 * time.Millisecond) // the trickle's pace, not synchronisation
			defer tick.Stop()
			for {
				select {
				case <-done:
					return
				case <-tick.C:
					_, _ = c.Write([]byte("U"))
				}
			}
		})
	}
	// A legitimate session meanwhile.
	if _, err := ml.goTLSClient(t, ctx, lab.ServerAddr4, false).List(ctx, ftpc.EPSV); err != nil {
		t.Fatalf("legitimate session during the trickle: %v", err)
	}
	wg.Wait()
	close(closed)
	close(errs)
	var last time.Duration
	for d := range closed {
		last = max(last, d)
	}
	for err := range errs {
		t.Errorf("trickling connection: %v", err)
	}
	t.Logf("%d trickling connections all closed %v after the first was opened (first_command_timeout %v)", n, last, timeout)
	if last > timeout+15*time.Second {
		t.Fatalf("the last trickling connection closed after %v", last)
	}
	ml.d.WaitMetric(`ftpsalg_policy_refusals_total{reason="first_command_timeout"}`, n)
}

// TestTrustPerClientCap: limits.max_sessions_per_client refuses the
// (cap+1)th session of one client address with a 421, and not a session
// from another address.
func TestTrustPerClientCap(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	ml := newMITMLab(t, mitmOpts{edit: func(p string) string {
		return "limits:\n  max_sessions_per_client: 3\n" + p
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range 3 {
		ml.goTLSClient(t, ctx, lab.ServerAddr4, false)
	}
	nd := harness.NSDialer{L: ml.l, NS: lab.Client}
	c, err := nd.DialContext(ctx, "tcp4", netip.AddrPortFrom(lab.ServerAddr4, 21).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	if !strings.HasPrefix(line, "421 ") {
		t.Fatalf("fourth session of one address got %q, want a 421", line)
	}
	ml.d.WaitMetric(`ftpsalg_policy_refusals_total{reason="client_limit"}`, 1)
	// Another address of the client network (its IPv6 one) is not
	// limited by the first's sessions.
	if _, err := ml.goTLSClient(t, ctx, lab.ServerAddr6, false).List(ctx, ftpc.EPSV); err != nil {
		t.Fatalf("session from another address: %v", err)
	}
}
