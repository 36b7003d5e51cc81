package integration

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/test/ftpc"
	"github.com/ftpsalg/ftpsalg/test/lab"
)

// relayPolicy is the server keys of a mitm server with the data relay.
const relayPolicy = "    data: relay\n"

// newRelayLab is newMITMLab with vsftpd in its default
// require_ssl_reuse=YES: a data connection that does not resume the
// control connection's TLS session is refused with 522.
func newRelayLab(t *testing.T, serverKeys string, vopts lab.VsftpdOptions) *mitmLab {
	t.Helper()
	vopts.TLS = &lab.VsftpdTLS{RequireSSLReuse: true}
	ml := newMITMLab(t, mitmOpts{server: serverKeys, vsftpd: vopts})
	t.Cleanup(func() {
		// Before the lab's cleanup kills the daemon (cleanups run last
		// registered first).
		if log := ml.d.Proc.Log(); strings.Contains(log, "DATA RACE") {
			t.Errorf("race detected in ftpsalg:\n%s", log)
		}
	})
	return ml
}

// TestRelayTransfers: FTPS through the data relay against vsftpd with
// require_ssl_reuse=YES, explicit and implicit, passive and active, IPv4
// and IPv6, with curl, lftp and a Go client; 1 MiB and 50 MiB,
// sha256-checked; PROT C; a TLS 1.2 client leg. Every data connection
// resumes the server's session and the server sees the real client.
func TestRelayTransfers(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	ml := newRelayLab(t, relayPolicy, lab.VsftpdOptions{})
	l, v := ml.l, ml.v
	want, err := v.CreateFile("down.bin", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	up, upSum, err := l.ClientFile("up.bin", 256<<10)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := ml.transferMatrix(t, want, up, upSum, true, func(t *testing.T, c *ftpc.Client) {
		// The client resumed its control session with ftpsalg and saw the
		// control connection's certificate again.
		ctl, _ := c.TLSState()
		if !c.DataTLS.DidResume || !c.DataTLS.PeerCertificates[0].Equal(ctl.PeerCertificates[0]) {
			t.Fatalf("data connection: resumed %v, same certificate %v", c.DataTLS.DidResume,
				c.DataTLS.PeerCertificates[0].Equal(ctl.PeerCertificates[0]))
		}
	})

	t.Run("50MiB", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		defer cancel()
		bigSum, err := v.CreateFile("big.bin", 50<<20)
		if err != nil {
			t.Fatal(err)
		}
		tr, err := l.DownloadCurl(ctx, v.URL(lab.ServerAddr4, "big.bin"), lab.EPSV, ml.curlTLS()...)
		if err != nil {
			t.Fatalf("download: %v", err)
		}
		if tr.SHA256 != bigSum {
			t.Fatal("50 MiB download sha256 mismatch")
		}
		t.Logf("50 MiB PROT P download through the relay (race-enabled daemon): %v", tr.Elapsed)
		if _, err := l.UploadCurl(ctx, v.URL(lab.ServerAddr6, "big-up.bin"), tr.Local, lab.EPSV, ml.curlTLS()...); err != nil {
			t.Fatalf("upload: %v", err)
		}
		if got, _ := v.SHA256("big-up.bin"); got != bigSum {
			t.Fatal("50 MiB upload sha256 mismatch")
		}
		os.Remove(tr.Local)
	})
	n += 2

	t.Run("PROT C", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		// --ftp-ssl-control: TLS on the control connection only.
		tr, err := l.DownloadCurl(ctx, v.URL(lab.ServerAddr4, "down.bin"), lab.PASV, "--cacert", ml.caFile, "--ftp-ssl-control")
		if err != nil {
			t.Fatalf("download: %v", err)
		}
		if tr.SHA256 != want || !strings.Contains(tr.Output, "PROT C") {
			t.Fatal("PROT C download: sha256 mismatch or no PROT C")
		}
		tr, err = l.DownloadLftp(ctx, v.URL(lab.ServerAddr6, "down.bin"), lab.EPRT, append(ml.lftpTLS(), "set ftp:ssl-protect-data no")...)
		if err != nil {
			t.Fatalf("download: %v", err)
		}
		if tr.SHA256 != want {
			t.Fatal("PROT C download: sha256 mismatch")
		}
	})
	// Clear data is not relayed: the kernel forwards it through a pinhole.

	t.Run("TLS 1.2 client", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		tr, err := l.DownloadCurl(ctx, v.URL(lab.ServerAddr4, "down.bin"), lab.EPSV, append(ml.curlTLS(), "--tls-max", "1.2")...)
		if err != nil {
			t.Fatalf("download: %v", err)
		}
		if tr.SHA256 != want {
			t.Fatal("download sha256 mismatch")
		}
	})
	n++

	// A relay is counted when both its ends have closed, which may be
	// just after the client is done.
	m := waitAtLeast(t, ml, `ftpsalg_relay_connections_total{result="ok"}`, float64(n))
	for k, v := range m {
		if strings.HasPrefix(k, "ftpsalg_relay_connections_total") && !strings.Contains(k, `"ok"`) && v != 0 {
			t.Errorf("%s = %v", k, v)
		}
		if strings.HasPrefix(k, "ftpsalg_mitm_data_refusals_total") && v != 0 {
			t.Errorf("%s = %v", k, v)
		}
	}
	if m[`ftpsalg_relay_tls_handshakes_total{leg="upstream",resumed="false"}`] != 0 || m[`ftpsalg_relay_tls_handshakes_total{leg="upstream",resumed="true"}`] == 0 {
		t.Errorf("upstream handshakes not all resumed: %v / %v", m[`ftpsalg_relay_tls_handshakes_total{leg="upstream",resumed="true"}`],
			m[`ftpsalg_relay_tls_handshakes_total{leg="upstream",resumed="false"}`])
	}
	if got := m[`ftpsalg_relay_bytes_total{direction="server_to_client"}`]; got < 50<<20 {
		t.Errorf("relayed bytes to clients %v, want at least 50 MiB", got)
	}
	if els := ml.d.PinholeElements(); els != "" {
		t.Fatalf("pinholes left open:\n%s", els)
	}
	if log := v.ProtocolLog(); !strings.Contains(log, `Client "192.0.2.2"`) && !strings.Contains(log, `Client "::ffff:192.0.2.2"`) {
		t.Fatalf("vsftpd did not see the client's address:\n%s", tail(log))
	}
	log := ml.d.Proc.Log()
	for _, want := range []string{`"msg":"data relayed"`, `"bytes_to_client":52428800`, `"bytes_to_server":52428800`,
		`"upstream_resumed":true`, `"client_resumed":true`, `"data_mode":"active"`} {
		if !strings.Contains(log, want) {
			t.Errorf("daemon log lacks %s", want)
		}
	}
	if strings.Contains(log, `"prot":"C"`) {
		t.Error("a PROT C data connection was relayed; clear data goes through forwarded pinholes")
	}
	ml.d.Stop()
}

// TestRelayUpstreamResumption: what the relay can resume upstream.
// vsftpd capped at TLS 1.2 issues session tickets: resumed. Without
// tickets (OpenSSL SSL_OP_NO_TICKET) TLS 1.2 offers session IDs only,
// which crypto/tls cannot resume: the client gets a reply naming that.
// TLS 1.3 without tickets still works (OpenSSL then issues stateful
// tickets).
func TestRelayUpstreamResumption(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	for _, tc := range []struct {
		name, openssl, version string
		ok                     bool
	}{
		{"tls1.2 tickets", lab.OpenSSLMaxTLS12, "TLS 1.2", true},
		{"tls1.2 session ids only", lab.OpenSSLMaxTLS12 + "\n" + lab.OpenSSLNoTickets, "TLS 1.2", false},
		{"tls1.3 without tickets", lab.OpenSSLNoTickets, "TLS 1.3", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ml := newRelayLab(t, relayPolicy, lab.VsftpdOptions{OpenSSL: tc.openssl})
			want, err := ml.v.CreateFile("f.bin", 100<<10)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if tc.ok {
				tr, err := ml.l.DownloadCurl(ctx, ml.v.URL(lab.ServerAddr4, "f.bin"), lab.EPSV, ml.curlTLS()...)
				if err != nil || tr.SHA256 != want {
					t.Fatalf("download: %v", err)
				}
				log := ml.d.Proc.Log()
				for _, want := range []string{`"upstream_tls_version":"` + tc.version + `"`, `"upstream_resumed":true`} {
					if !strings.Contains(log, want) {
						t.Errorf("daemon log lacks %s", want)
					}
				}
				return
			}
			// The Go client reads the reply after the (empty) transfer;
			// curl reports the short transfer (exit 18) and quits first.
			c := ml.goTLSClient(t, ctx, lab.ServerAddr4, false)
			if _, _, err := c.Retrieve(ctx, ftpc.EPSV, "f.bin"); err == nil ||
				!strings.Contains(err.Error(), "522 ftpsalg: the server requires TLS session reuse but issued no session ticket") {
				t.Fatalf("Go client: %v, want ftpsalg's 522 naming the cause", err)
			}
			ml.d.WaitMetric(`ftpsalg_mitm_data_refusals_total{reason="upstream_session_ids"}`, 1)
			if _, err := ml.l.DownloadCurl(ctx, ml.v.URL(lab.ServerAddr4, "f.bin"), lab.EPSV, ml.curlTLS()...); err == nil {
				t.Fatal("curl download worked against a server that offers session IDs only")
			}
			log := ml.d.Proc.Log()
			if !strings.Contains(log, `"upstream_tls_version":"`+tc.version+`"`) {
				t.Errorf("daemon log lacks upstream_tls_version %s", tc.version)
			}
			for _, want := range []string{`"msg":"relay: upstream data connection did not resume the control session"`,
				"issued no session ticket", `"msg":"data connection refused"`, `"reason":"upstream_session_ids"`} {
				if !strings.Contains(log, want) {
					t.Errorf("daemon log lacks %s", want)
				}
			}
		})
	}
}

// pythonRetr downloads a file with Python's ftplib, which never resumes
// the control session on data connections; it prints the SHA-256.
const pythonRetr = `
import ftplib, hashlib, ssl, sys
host, user, pw, ca, name = sys.argv[1:6]
ftp = ftplib.FTP_TLS(context=ssl.create_default_context(cafile=ca), timeout=20)
ftp.connect(host, 21)
ftp.login(user, pw)
ftp.prot_p()
h = hashlib.sha256()
ftp.retrbinary("RETR " + name, h.update)
print(h.hexdigest())
ftp.quit()
`

const python = "/usr/bin/python3"

// TestRelayClientReuse: clients that never resume (Python's ftplib, a Go
// client without a session cache) work through the relay, which resumes
// upstream for them; with tls.require_client_reuse they are refused with
// a reply naming the cause, a log line and a metric, while curl (which
// resumes) still works.
func TestRelayClientReuse(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	if _, err := os.Stat(python); err != nil {
		t.Skipf("TEST NOT RUN: %s not found (Debian package python3)", python)
	}
	for _, require := range []bool{false, true} {
		t.Run(fmt.Sprintf("require_client_reuse=%v", require), func(t *testing.T) {
			t.Parallel()
			keys := relayPolicy
			if require {
				keys = "      require_client_reuse: true\n" + relayPolicy
			}
			ml := newRelayLab(t, keys, lab.VsftpdOptions{})
			want, err := ml.v.CreateFile("f.bin", 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			for _, fam := range []netip.Addr{lab.ServerAddr4, lab.ServerAddr6} {
				out, err := ml.l.Run(ctx, lab.Client, python, "-c", pythonRetr, fam.String(), ml.v.User, ml.v.Password, ml.caFile, "f.bin")
				switch {
				case !require && (err != nil || strings.TrimSpace(string(out)) != want):
					t.Fatalf("ftplib over %s: %v\n%s", fam, err, out)
				case require && (err == nil || !strings.Contains(string(out), "522 ftpsalg: data connection refused: it did not resume the control connection's TLS session")):
					t.Fatalf("ftplib over %s with require_client_reuse: %v, want ftpsalg's 522", fam, err)
				}
			}
			// A Go client without a session cache.
			c := ml.goTLSClientWith(t, ctx, lab.ServerAddr4, false, func(c *tls.Config) { c.ClientSessionCache = ftpc.NeverResume })
			sum, _, err := c.Retrieve(ctx, ftpc.EPSV, "f.bin")
			switch {
			case !require && (err != nil || sum != want):
				t.Fatalf("Go client that never resumes: %v", err)
			case require && (err == nil || !strings.Contains(err.Error(), "522 ftpsalg: data connection refused")):
				t.Fatalf("Go client that never resumes, with require_client_reuse: %v, want ftpsalg's 522", err)
			}
			// curl resumes, and is served either way.
			tr, err := ml.l.DownloadCurl(ctx, ml.v.URL(lab.ServerAddr4, "f.bin"), lab.EPSV, ml.curlTLS()...)
			if err != nil || tr.SHA256 != want {
				t.Fatalf("curl: %v", err)
			}
			m := ml.d.Metrics()
			if require {
				ml.d.WaitMetric(`ftpsalg_relay_connections_total{result="client_not_resumed"}`, 3)
				if got := m[`ftpsalg_policy_refusals_total{reason="data_not_resumed"}`]; got != 3 {
					t.Errorf("refusals{data_not_resumed} = %v, want 3", got)
				}
				log := ml.d.Proc.Log()
				for _, want := range []string{`"msg":"relay refused"`, `"result":"client_not_resumed"`, `"msg":"data connection refused"`} {
					if !strings.Contains(log, want) {
						t.Errorf("daemon log lacks %s", want)
					}
				}
				return
			}
			if got := m[`ftpsalg_relay_tls_handshakes_total{leg="client",resumed="false"}`]; got != 3 {
				t.Errorf("non-resumed client handshakes %v, want 3", got)
			}
			if got := m[`ftpsalg_relay_tls_handshakes_total{leg="upstream",resumed="true"}`]; got != 4 {
				t.Errorf("resumed upstream handshakes %v, want 4", got)
			}
		})
	}
}

// TestRelaySingleUse: the relay element admits exactly the announced
// client, once: a connection from another address of the client host is
// not diverted (the firewall drops it) and does not use it up, and a
// second connection after the first is dropped. IPv4 and IPv6.
func TestRelaySingleUse(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	ml := newRelayLab(t, relayPolicy, lab.VsftpdOptions{})
	l := ml.l
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	other4, other6 := netip.MustParseAddr("192.0.2.3"), netip.MustParseAddr("2001:db8:c::3")
	if _, err := l.Run(ctx, lab.Client, "ip", "addr", "add", other4.String()+"/24", "dev", lab.HostLink); err != nil {
		t.Fatal(err)
	}
	// Deprecated (preferred_lft 0), so that the client's connections do
	// not pick it as their source.
	if _, err := l.Run(ctx, lab.Client, "ip", "-6", "addr", "add", other6.String()+"/64", "dev", lab.HostLink, "nodad", "preferred_lft", "0"); err != nil {
		t.Fatal(err)
	}
	if _, err := ml.v.CreateFile("a.txt", 10); err != nil {
		t.Fatal(err)
	}
	blocked := func(t *testing.T, from netip.Addr, to netip.AddrPort) {
		t.Helper()
		dctx, dcancel := context.WithTimeout(ctx, time.Second)
		defer dcancel()
		c, err := l.Dial(dctx, lab.Client, "tcp", netip.AddrPortFrom(from, 0), to)
		if err == nil {
			c.Close()
			t.Fatalf("connection from %s to %s was let through", from, to)
		}
	}
	for _, tc := range []struct {
		server, client, other netip.Addr
	}{
		{lab.ServerAddr4, lab.ClientAddr4, other4},
		{lab.ServerAddr6, lab.ClientAddr6, other6},
	} {
		t.Run(tc.server.String(), func(t *testing.T) {
			// PROT P (goTLSClient's): only TLS data connections are
			// relayed.
			c := ml.goTLSClient(t, ctx, tc.server, false)
			rep, err := c.Cmd("EPSV")
			if err != nil || rep.Code != 229 {
				t.Fatalf("EPSV: %v %v", rep, err)
			}
			port, err := ftpc.ParseEPSV(rep.Text)
			if err != nil {
				t.Fatal(err)
			}
			target := netip.AddrPortFrom(tc.server, port)
			blocked(t, tc.other, target)
			dc, err := l.Dial(ctx, lab.Client, "tcp", netip.AddrPortFrom(tc.client, 0), target)
			if err != nil {
				t.Fatalf("the announced connection: %v", err)
			}
			defer dc.Close()
			blocked(t, tc.client, target)
			if err := c.Raw([]byte("NLST\r\n")); err != nil {
				t.Fatal(err)
			}
			// TLS on the data connection, as the client's own data
			// connections do (the final reply comes after the data).
			_ = dc.SetDeadline(time.Now().Add(10 * time.Second))
			sdc, err := c.Secure(ctx, dc)
			if err != nil {
				t.Fatal(err)
			}
			list, err := io.ReadAll(sdc)
			sdc.Close() // close_notify: vsftpd answers 226 once the data connection's TLS is shut down
			if err != nil || !strings.Contains(string(list), "a.txt") {
				t.Fatalf("listing over the relayed connection: %q %v", list, err)
			}
			if rep, err := c.Read(); err != nil || rep.Code != 226 {
				t.Fatalf("after NLST: %v %v", rep, err)
			}
			c.Quit()
		})
	}
	ml.d.WaitMetric(`ftpsalg_relay_connections_total{result="ok"}`, 2)
	if got := ml.d.Metrics()[`ftpsalg_relay_connections_total{result="unexpected"}`]; got != 0 {
		t.Errorf("unexpected relay connections %v, want 0 (the kernel diverts only the announced one)", got)
	}
}

// TestPassthroughReuseRefused: in passthrough mode (the default) the same
// server refuses the client's data connection, which cannot resume a
// session the server knows; the refusal is logged with the hint and
// counted.
func TestPassthroughReuseRefused(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	ml := newRelayLab(t, "", lab.VsftpdOptions{})
	if _, err := ml.v.CreateFile("f.bin", 10<<10); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := ml.goTLSClient(t, ctx, lab.ServerAddr4, false)
	if _, _, err := c.Retrieve(ctx, ftpc.EPSV, "f.bin"); err == nil || !strings.Contains(err.Error(), "522 SSL connection failed: session reuse required") {
		t.Fatalf("passthrough download with the Go client: %v, want vsftpd's 522", err)
	}
	ml.d.WaitMetric(`ftpsalg_mitm_data_refusals_total{reason="tls_session_reuse"}`, 1)
	var ce *lab.CommandError
	if _, err := ml.l.DownloadCurl(ctx, ml.v.URL(lab.ServerAddr4, "f.bin"), lab.EPSV, ml.curlTLS()...); err == nil || !errors.As(err, &ce) {
		t.Fatalf("passthrough download with curl: %v, want a failure", err)
	}
	log := ml.d.Proc.Log()
	for _, want := range []string{`"msg":"server refused a data connection: it requires TLS session reuse"`, `set data: relay for this server`} {
		if !strings.Contains(log, want) {
			t.Errorf("daemon log lacks %s", want)
		}
	}
	if m := ml.d.Metrics(); m[`ftpsalg_relay_connections_total{result="ok"}`] != 0 {
		t.Error("passthrough relayed a connection")
	}
}

// waitAtLeast polls the daemon's metrics until key reaches min (15 s at
// most) and returns the last scrape.
func waitAtLeast(t *testing.T, ml *mitmLab, key string, min float64) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		m := ml.d.Metrics()
		if m[key] >= min {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("metric %s = %v, want at least %v", key, m[key], min)
		}
		time.Sleep(100 * time.Millisecond) // poll interval
	}
}
