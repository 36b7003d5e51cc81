package integration

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/test/harness"
	"github.com/ftpsalg/ftpsalg/test/lab"
)

// TestNATRelay: FTPS through both NAT layouts with the data relay, against
// vsftpd in its default require_ssl_reuse=YES (issue 10): the relay
// element is keyed by the tuple the initiator uses (the public address
// and port for a published server's passive connections, the NAT address
// and gateway port for a masqueraded client's active ones) and the relay
// connects onward to the translation's target, from the address the other
// peer knows.
//
// Matrix (natTransfers with FTPS, one lab per layout, shared by its
// subtests): curl in both passive modes, trusting and ignoring the 227
// address; lftp in PASV, EPSV, PORT; the Go client in PASV, EPSV, PORT,
// EPRT, each a download and an upload, sha256-checked; IPv6 EPSV routed;
// NAT66 EPSV (published); implicit FTPS with curl in both passive modes.
// Every data connection is relayed and resumes the server's session; no
// client is ever told the server's private address (published) and the
// server never sees a private client address (masqueraded).
func TestNATRelay(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	for _, layout := range []natLayout{published, masqueraded} {
		t.Run(string(layout), func(t *testing.T) {
			t.Parallel()
			l, v, d, tls := natMITMLab(t, layout, true, "    data: relay\n")
			natTransfers(t, l, d, v, layout, tls)
			natImplicit(t, l, d, v, layout, tls)
			natFtplib(t, l, v, layout, tls)
			m := waitAtLeast(t, &mitmLab{l: l, v: v, d: d}, `ftpsalg_relay_connections_total{result="ok"}`, 10)
			for k, val := range m {
				if strings.HasPrefix(k, "ftpsalg_relay_connections_total") && !strings.Contains(k, `"ok"`) && val != 0 {
					t.Errorf("%s = %v", k, val)
				}
				if strings.HasPrefix(k, "ftpsalg_mitm_data_refusals_total") && val != 0 {
					t.Errorf("%s = %v", k, val)
				}
			}
			if m[`ftpsalg_relay_tls_handshakes_total{leg="upstream",resumed="false"}`] != 0 {
				t.Errorf("%v upstream data handshakes did not resume", m[`ftpsalg_relay_tls_handshakes_total{leg="upstream",resumed="false"}`])
			}
			natNoPrivateLeak(t, v, layout)
		})
	}
}

// natMITMLab starts a lab for a mitm server through a NAT layout: vsftpd
// with FTPS (explicit on 21, implicit on 990; require_ssl_reuse as given)
// and the daemon with the layout's keys and serverKeys.
func natMITMLab(t *testing.T, layout natLayout, reuse bool, serverKeys string) (*lab.Lab, *lab.Vsftpd, *harness.Daemon, *natTLS) {
	t.Helper()
	return natLab(t, layout, reuse, natServerYAML(layout)+serverKeys, natTopYAML(layout), "")
}

// natLab is natMITMLab with the policy's NAT keys given (serverKeys,
// topKeys) and, when operator is not empty, the operator's own NAT
// ruleset (an nft script) loaded in the gateway before the daemon starts.
func natLab(t *testing.T, layout natLayout, reuse bool, serverKeys, topKeys, operator string) (*lab.Lab, *lab.Vsftpd, *harness.Daemon, *natTLS) {
	t.Helper()
	l := lab.New(t, lab.Options{})
	l.InstallGatewayFirewall(ctMark)
	pki := harness.NewPKI(t, l.Dir(), harness.PKIOptions{ExtraIPs: []netip.Addr{natPublic, natPublic6}})
	v := l.StartVsftpd(lab.VsftpdOptions{TLS: &lab.VsftpdTLS{CertFile: pki.ServerCert, KeyFile: pki.Server,
		ImplicitPort: 990, RequireSSLReuse: reuse}})
	if operator != "" {
		if err := l.NftScript(lab.Gateway, operator); err != nil {
			t.Fatalf("operator ruleset: %v", err)
		}
	}
	pol := pki.MITMPolicy("debug", "    active_mode: true\n"+serverKeys) + topKeys
	d := startDaemon(t, l, pol)
	t.Cleanup(func() {
		if log := d.Proc.Log(); strings.Contains(log, "DATA RACE") {
			t.Errorf("race detected in ftpsalg:\n%s", log)
		}
	})
	cutRoutes(t, l, layout)
	return l, v, d, &natTLS{pki: pki,
		curl: []string{"--cacert", pki.CAFile, "--ssl-reqd"},
		lftp: []string{"set ftp:ssl-allow yes", "set ftp:ssl-force yes", "set ftp:ssl-protect-data yes",
			"set ssl:ca-file " + pki.CAFile, "set ssl:check-hostname no"}}
}

// natImplicit downloads over implicit FTPS (990) through the layout with
// curl in both passive modes.
func natImplicit(t *testing.T, l *lab.Lab, d *harness.Daemon, v *lab.Vsftpd, layout natLayout, tls *natTLS) {
	t.Helper()
	for _, mode := range []lab.Mode{lab.PASV, lab.EPSV} {
		t.Run("implicit/"+mode.String(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			tr, err := l.DownloadCurl(ctx, v.ImplicitURL(natTarget(layout), "down.bin"), mode, "--cacert", tls.pki.CAFile)
			if err != nil {
				out := ""
				if tr != nil {
					out = tr.Output
				}
				t.Fatalf("implicit FTPS download: %v\n%s\n%s", err, out, d.Proc.Log())
			}
			if want, _ := v.SHA256("down.bin"); tr.SHA256 != want {
				t.Fatalf("sha256 %s, want %s", tr.SHA256, want)
			}
		})
	}
}

// natNoPrivateLeak checks vsftpd's protocol log: in the masqueraded
// layout the server saw only the NAT address (never the private client
// network 192.0.2.0/24 on IPv4).
func natNoPrivateLeak(t *testing.T, v *lab.Vsftpd, layout natLayout) {
	t.Helper()
	if layout != masqueraded {
		return
	}
	log := v.ProtocolLog()
	if strings.Contains(log, `Client "192.0.2.`) || strings.Contains(log, `Client "::ffff:192.0.2.`) ||
		strings.Contains(log, "PORT 192,0,2,") || strings.Contains(log, "|1|192.0.2.") {
		t.Fatalf("the server saw a private client address:\n%s", tail(log))
	}
}

// ftplibScript drives Python's stock ftplib (FTP_TLS, which never resumes
// the control session on data connections) through passive and active
// mode: a download checked against its sha256, and an upload read back
// and checked. Arguments: host user password cafile name sha256.
const ftplibScript = `
import ftplib, hashlib, io, ssl, sys
host, user, pw, ca, name, want = sys.argv[1:7]
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False
up = bytes(range(256)) * 400
for pasv in (True, False):
    f = ftplib.FTP_TLS(context=ctx, timeout=20)
    f.connect(host, 21)
    f.login(user, pw)
    f.prot_p()
    f.set_pasv(pasv)
    h = hashlib.sha256()
    f.retrbinary("RETR " + name, h.update)
    if h.hexdigest() != want:
        sys.exit("download sha256 mismatch, passive=%s" % pasv)
    f.storbinary("STOR py-%d.bin" % pasv, io.BytesIO(up))
    back = hashlib.sha256()
    f.retrbinary("RETR py-%d.bin" % pasv, back.update)
    if back.hexdigest() != hashlib.sha256(up).hexdigest():
        sys.exit("upload sha256 mismatch, passive=%s" % pasv)
    f.quit()
print("ftplib ok")
`

// natFtplib runs ftplibScript from the client through the layout.
func natFtplib(t *testing.T, l *lab.Lab, v *lab.Vsftpd, layout natLayout, tls *natTLS) {
	t.Helper()
	want, err := v.CreateFile("py.bin", 256<<10)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := l.Run(ctx, lab.Client, "python3", "-c", ftplibScript, natTarget(layout).String(),
		v.User, v.Password, tls.pki.CAFile, "py.bin", want)
	if err != nil || !strings.Contains(string(out), "ftplib ok") {
		t.Fatalf("python ftplib through the %s layout: %v\n%s", layout, err, out)
	}
}
