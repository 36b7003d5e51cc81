package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/test/ftpc"
	"github.com/ftpsalg/ftpsalg/test/harness"
	"github.com/ftpsalg/ftpsalg/test/lab"
)

// opaquePolicy is a policy with the lab's vsftpd in opaque mode: servers
// are the YAML server items, each with the lab's addresses and passive
// range.
func opaquePolicy(servers ...string) string {
	var b strings.Builder
	b.WriteString("log:\n  level: debug\nservers:\n")
	for _, s := range servers {
		fmt.Fprintf(&b, `  - addresses: [%s, "%s"]
    passive_ports: "%d-%d"
    mode: opaque
    clients: ["192.0.2.0/24", "2001:db8:c::/64", "203.0.113.0/24", "2001:db8:3::/64"]
%s`, lab.ServerAddr4, lab.ServerAddr6, lab.DefaultPasvMinPort, lab.DefaultPasvMaxPort, s)
	}
	return b.String()
}

// opaqueLab is a lab whose FTPS server (explicit on 21, implicit on 990)
// ftpsalg does not decrypt; clients trust the operator CA that issued the
// server's certificate, as they would the server's own CA.
func newOpaqueLab(t *testing.T, vopts lab.VsftpdOptions, policy string) *mitmLab {
	t.Helper()
	l := lab.New(t, lab.Options{Other: true})
	l.InstallGatewayFirewall(ctMark)
	pki := harness.NewPKI(t, l.Dir(), harness.PKIOptions{})
	vopts.TLS = &lab.VsftpdTLS{CertFile: pki.ServerCert, KeyFile: pki.Server, ImplicitPort: 990}
	v := l.StartVsftpd(vopts)
	d := startDaemon(t, l, policy)
	return &mitmLab{l: l, v: v, d: d, caDir: pki.CADir, caFile: pki.CAFile}
}

// dialData reports whether a new TCP connection from ns reaches the
// server's passive port: refused (nothing listens) means the gateway let
// the SYN through; a timeout means it dropped it.
func dialData(ctx context.Context, ml *mitmLab, ns string, fam netip.Addr) (admitted bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	port := lab.DefaultPasvMaxPort // vsftpd picks ports from the range's start
	c, err := ml.l.Dial(ctx, ns, "tcp", netip.AddrPort{}, netip.AddrPortFrom(fam, uint16(port)))
	if err == nil {
		c.Close()
		return true, nil
	}
	var op *net.OpError
	switch {
	case errors.As(err, &op) && strings.Contains(err.Error(), "refused"):
		return true, nil
	case errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "timeout"):
		return false, nil
	}
	return false, err
}

// TestOpaque: FTPS that ftpsalg does not decrypt, explicit and implicit,
// curl, lftp and the Go client in passive mode, sha256-checked; while a
// client's TLS control connection lives, that client (and no other)
// reaches the server's passive range, and the range closes when the
// control connection ends. Every handshake is audited.
func TestOpaque(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	ml := newOpaqueLab(t, lab.VsftpdOptions{OpenSSL: lab.OpenSSLNoTLS13Tickets},
		opaquePolicy("    name: lab\n    control_ports: [21]\n    implicit_tls_ports: [990]\n"))
	l, v := ml.l, ml.v
	if _, err := v.CreateFile("down.bin", 1<<20); err != nil {
		t.Fatal(err)
	}
	want, _ := v.SHA256("down.bin")
	up, upSum, err := l.ClientFile("up.bin", 256<<10)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("transfers", func(t *testing.T) {
		n := 0
		for _, fam := range []netip.Addr{lab.ServerAddr4, lab.ServerAddr6} {
			for _, implicit := range []bool{false, true} {
				for _, mode := range []lab.Mode{lab.PASV, lab.EPSV} {
					if fam.Is6() && mode.IPv4Only() {
						continue
					}
					url := v.URL(fam, "down.bin")
					if implicit {
						url = v.ImplicitURL(fam, "down.bin")
					}
					name := fmt.Sprintf("%s/%s/%s", map[bool]string{false: "v4", true: "v6"}[fam.Is6()],
						map[bool]string{false: "explicit", true: "implicit"}[implicit], mode)
					t.Run(name+"/curl", func(t *testing.T) {
						ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
						defer cancel()
						tr, err := l.DownloadCurl(ctx, url, mode, ml.curlTLS()...)
						if err != nil {
							t.Fatalf("download: %v", err)
						}
						if tr.SHA256 != want {
							t.Fatal("download sha256 mismatch")
						}
					})
					t.Run(name+"/lftp", func(t *testing.T) {
						ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
						defer cancel()
						tr, err := l.DownloadLftp(ctx, url, mode, ml.lftpTLS()...)
						if err != nil {
							t.Fatalf("download: %v", err)
						}
						if tr.SHA256 != want {
							t.Fatal("download sha256 mismatch")
						}
					})
					t.Run(name+"/go", func(t *testing.T) {
						ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
						defer cancel()
						c := ml.goTLSClient(t, ctx, fam, implicit)
						sum, _, err := c.Retrieve(ctx, ftpc.Mode(mode.String()), "down.bin")
						if err != nil {
							t.Fatal(err)
						}
						if sum != want {
							t.Fatal("download sha256 mismatch")
						}
						f, err := os.Open(up)
						if err != nil {
							t.Fatal(err)
						}
						defer f.Close()
						remote := "up-" + strings.ReplaceAll(name, "/", "-") + ".bin"
						if _, _, err := c.Store(ctx, ftpc.Mode(mode.String()), remote, f); err != nil {
							t.Fatal(err)
						}
						if got, _ := v.SHA256(remote); got != upSum {
							t.Fatal("upload sha256 mismatch")
						}
					})
					n += 3
				}
			}
		}
		m := ml.d.Metrics()
		if got := m["ftpsalg_opaque_sessions_opened_total"]; got < float64(n) {
			t.Errorf("opaque sessions opened %v, want at least %d", got, n)
		}
		if got := m[`ftpsalg_opaque_tls_handshakes_total{result="ok"}`]; got < float64(n) {
			t.Errorf("handshakes ok %v, want at least %d", got, n)
		}
	})

	t.Run("only that client, only while it lives", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, fam := range []netip.Addr{lab.ServerAddr4, lab.ServerAddr6} {
			before := ml.d.Metrics()["ftpsalg_opaque_sessions_active"]
			if ok, err := dialData(ctx, ml, lab.Client, fam); err != nil || ok {
				t.Fatalf("%s: before any session the client reached the passive range (%v, %v)", fam, ok, err)
			}
			c := ml.goTLSClient(t, ctx, fam, false)
			if ok, err := dialData(ctx, ml, lab.Client, fam); err != nil || !ok {
				t.Fatalf("%s: during its session the client did not reach the passive range (%v, %v)", fam, ok, err)
			}
			if ok, err := dialData(ctx, ml, lab.Other, fam); err != nil || ok {
				t.Fatalf("%s: another client reached the passive range (%v, %v)", fam, ok, err)
			}
			if err := c.Quit(); err != nil {
				t.Fatal(err)
			}
			c.Close()
			ml.d.WaitMetric("ftpsalg_opaque_sessions_active", before)
			waitNoOpaque(t, ml)
			if ok, err := dialData(ctx, ml, lab.Client, fam); err != nil || ok {
				t.Fatalf("%s: after its session ended the client still reached the passive range (%v, %v)", fam, ok, err)
			}
		}
	})

	log := ml.d.Proc.Log()
	for _, want := range []string{`"msg":"tls handshake"`, `"sni":"files.lab"`, `"tls_version":"TLS 1.3"`,
		`"client_cert_requested":"unknown (encrypted in TLS 1.3)"`, `"msg":"opaque range opened"`, `"msg":"opaque range closed"`,
		`"mode":"opaque"`} {
		if !strings.Contains(log, want) {
			t.Errorf("daemon log lacks %s", want)
		}
	}
	if strings.Contains(log, v.Password) {
		t.Fatal("the password appears in the daemon's log")
	}
	ml.d.Stop()
}

// opaqueElements lists the opaque sets' elements as nft prints them.
func opaqueElements(t *testing.T, ml *mitmLab) string {
	t.Helper()
	var b strings.Builder
	for _, set := range []string{"opaque4", "opaque6"} {
		out, err := ml.l.Nft(lab.Gateway, "list", "set", "inet", "ftpsalg", set)
		if err != nil {
			t.Fatalf("nft list set %s: %v", set, err)
		}
		if i := strings.Index(out, "elements = {"); i >= 0 {
			b.WriteString(out[i:])
		}
	}
	return b.String()
}

// waitNoOpaque waits until the opaque sets are empty (the ledger's task
// deletes a session's elements after its end).
func waitNoOpaque(t *testing.T, ml *mitmLab) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for opaqueElements(t, ml) != "" {
		if time.Now().After(deadline) {
			t.Fatalf("opaque elements left:\n%s", opaqueElements(t, ml))
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
}

// dialTLS connects the Go client from the client namespace and starts TLS
// (AUTH TLS on 21, implicit on 990), returning the handshake's error.
func dialTLS(ctx context.Context, ml *mitmLab, fam netip.Addr, implicit bool, conf *tls.Config) (*ftpc.Client, error) {
	nd := harness.NSDialer{L: ml.l, NS: lab.Client}
	if implicit {
		return ftpc.DialTLS(ctx, nd, nd, netip.AddrPortFrom(fam, 990).String(), conf)
	}
	c, err := ftpc.Dial(ctx, nd, nd, netip.AddrPortFrom(fam, 21).String())
	if err != nil {
		return nil, err
	}
	if err := c.AuthTLS(ctx, conf); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// TestOpaqueTLSPolicy: a server that selects TLS 1.2 where the policy
// wants 1.3 is reset and logged, so is a client offering only CBC suites;
// a client that aborts the handshake is logged with its address; TLS 1.2
// where the policy allows it works and its audit line says that the
// server asked for a client certificate (visible in TLS 1.2 only).
func TestOpaqueTLSPolicy(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	ml := newOpaqueLab(t, lab.VsftpdOptions{OpenSSL: lab.OpenSSLMaxTLS12}, opaquePolicy(
		"    name: strict\n    control_ports: [21]\n    tls: {min_version: \"1.3\"}\n",
		"    name: lax\n    control_ports: []\n    implicit_tls_ports: [990]\n"))
	if _, err := ml.v.CreateFile("down.bin", 64<<10); err != nil {
		t.Fatal(err)
	}
	want, _ := ml.v.SHA256("down.bin")
	trusted := func() *tls.Config {
		c := &tls.Config{ServerName: "files.lab"}
		pem, err := os.ReadFile(ml.caFile)
		if err != nil {
			t.Fatal(err)
		}
		c.RootCAs = x509Pool(pem)
		return c
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("server below the minimum version", func(t *testing.T) {
		start := time.Now()
		c, err := dialTLS(ctx, ml, lab.ServerAddr4, false, trusted())
		if err == nil {
			c.Close()
			t.Fatal("a TLS 1.2 handshake passed a TLS 1.3 policy")
		}
		if !strings.Contains(err.Error(), "reset") {
			t.Errorf("the client was not reset: %v", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("the refusal took %s", d)
		}
		ml.d.WaitMetric(`ftpsalg_opaque_tls_refusals_total{reason="tls_version"}`, 1)
	})
	t.Run("client offering nothing acceptable", func(t *testing.T) {
		conf := trusted()
		conf.MaxVersion = tls.VersionTLS12
		conf.CipherSuites = []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}
		if c, err := dialTLS(ctx, ml, lab.ServerAddr4, true, conf); err == nil {
			c.Close()
			t.Fatal("a ClientHello with CBC suites only passed")
		}
		ml.d.WaitMetric(`ftpsalg_opaque_tls_refusals_total{reason="tls_client_offer"}`, 1)
	})
	t.Run("handshake failure", func(t *testing.T) {
		// The client does not trust the server: its alert ends the
		// handshake (in clear text: TLS 1.2, before its ChangeCipherSpec).
		if c, err := dialTLS(ctx, ml, lab.ServerAddr6, true, &tls.Config{ServerName: "files.lab"}); err == nil {
			c.Close()
			t.Fatal("an untrusted server passed")
		}
		ml.d.WaitMetric(`ftpsalg_opaque_tls_handshakes_total{result="alert"}`, 1)
	})
	t.Run("TLS 1.2 allowed", func(t *testing.T) {
		c, err := dialTLS(ctx, ml, lab.ServerAddr4, true, trusted())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Login(ml.v.User, ml.v.Password); err != nil {
			t.Fatal(err)
		}
		if err := c.Protect(true); err != nil {
			t.Fatal(err)
		}
		sum, _, err := c.Retrieve(ctx, ftpc.Mode("EPSV"), "down.bin")
		if err != nil || sum != want {
			t.Fatalf("download: %v (sha256 ok: %v)", err, sum == want)
		}
	})
	log := ml.d.Proc.Log()
	for _, want := range []string{
		`"reason":"tls_version","detail":"server selected TLS 1.2, below the minimum TLS 1.3"`,
		`"reason":"tls_client_offer"`,
		`"msg":"tls handshake failed","client":"[2001:db8:c::2]:`,
		`"result":"alert"`, `"alert_description":42`,
		// vsftpd asks every client for a certificate (SSL_VERIFY_PEER)
		// even when it does not require one: TLS 1.2 shows the request.
		`"tls_version":"TLS 1.2"`, `"client_cert_requested":"yes"`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("daemon log lacks %s", want)
		}
	}
	if t.Failed() {
		t.Log(tail(log))
	}
	ml.d.Stop()
}

func x509Pool(pem []byte) *x509.CertPool {
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(pem)
	return p
}

// TestOpaqueActive: active mode in opaque mode. The PORT/EPRT travel
// encrypted, so the server's data connections to its TLS client are
// admitted by the session's element for opaque.active_ports (here the
// client's ephemeral range, where its listeners are): the Go client and
// lftp, IPv4 and IPv6, explicit FTPS, sha256-checked. Without
// opaque.active_ports the same download fails (the server cannot connect
// back): the element is what admits it.
func TestOpaqueActive(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	ml := newOpaqueLab(t, lab.VsftpdOptions{OpenSSL: lab.OpenSSLNoTLS13Tickets},
		opaquePolicy("    name: lab\n    control_ports: [21]\n    implicit_tls_ports: [990]\n    opaque:\n      active_ports: \"32768-60999\"\n"))
	l, v := ml.l, ml.v
	if _, err := v.CreateFile("down.bin", 1<<20); err != nil {
		t.Fatal(err)
	}
	want, _ := v.SHA256("down.bin")
	for _, tc := range []struct {
		fam  netip.Addr
		mode lab.Mode
	}{{lab.ServerAddr4, lab.PORT}, {lab.ServerAddr6, lab.EPRT}} {
		t.Run(tc.mode.String()+"/go", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c := ml.goTLSClient(t, ctx, tc.fam, false)
			sum, _, err := c.Retrieve(ctx, ftpc.Mode(tc.mode.String()), "down.bin")
			if err != nil || sum != want {
				t.Fatalf("active download: %v (sha256 %s, want %s)", err, sum, want)
			}
		})
		t.Run(tc.mode.String()+"/lftp", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			tr, err := l.DownloadLftp(ctx, v.URL(tc.fam, "down.bin"), tc.mode, ml.lftpTLS()...)
			if err != nil || tr.SHA256 != want {
				t.Fatalf("active download: %v", err)
			}
		})
	}
}
