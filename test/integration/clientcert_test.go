package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/test/ftpc"
	"github.com/ftpsalg/ftpsalg/test/harness"
	"github.com/ftpsalg/ftpsalg/test/lab"
)

// clientPKI mints, in the test, a client CA (written to dir for vsftpd's
// ca_certs_file) and a client certificate it issued.
func clientPKI(t *testing.T, dir string) (caFile string, cert tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "lab client CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTpl, caTpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "lab client"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile = filepath.Join(dir, "client-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	return caFile, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestClientCertificates: a server that requires a client certificate
// (vsftpd require_cert=YES, TLS 1.2) — through mitm mode the client gets
// a 431 naming the reason and the gateway logs and counts it (mitm cannot
// forward a client certificate); through opaque mode the client's own
// certificate reaches the server and the transfer works.
func TestClientCertificates(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	l := lab.New(t, lab.Options{})
	l.InstallGatewayFirewall(ctMark)
	pki := harness.NewPKI(t, l.Dir(), harness.PKIOptions{})
	clientCA, clientCert := clientPKI(t, l.Dir())
	v := l.StartVsftpd(lab.VsftpdOptions{
		OpenSSL: lab.OpenSSLMaxTLS12,
		TLS:     &lab.VsftpdTLS{CertFile: pki.ServerCert, KeyFile: pki.Server, ImplicitPort: 990},
		Extra:   []string{"require_cert=YES", "validate_cert=YES", "ca_certs_file=" + clientCA},
	})
	if _, err := v.CreateFile("down.bin", 64<<10); err != nil {
		t.Fatal(err)
	}
	want, _ := v.SHA256("down.bin")
	policy := fmt.Sprintf(`log:
  level: debug
mitm:
  ca_dir: %s
servers:
  - name: via-mitm
    addresses: [%s, "%s"]
    control_ports: [21]
    passive_ports: "%d-%d"
    mode: mitm
    clients: ["192.0.2.0/24", "2001:db8:c::/64"]
    tls:
      verify: ca
      ca_file: %s
  - name: via-opaque
    addresses: [%s, "%s"]
    control_ports: []
    implicit_tls_ports: [990]
    passive_ports: "%d-%d"
    mode: opaque
    clients: ["192.0.2.0/24", "2001:db8:c::/64"]
`, pki.CADir, lab.ServerAddr4, lab.ServerAddr6, lab.DefaultPasvMinPort, lab.DefaultPasvMaxPort, pki.CAFile,
		lab.ServerAddr4, lab.ServerAddr6, lab.DefaultPasvMinPort, lab.DefaultPasvMaxPort)
	d := startDaemon(t, l, policy)
	ml := &mitmLab{l: l, v: v, d: d, caDir: pki.CADir, caFile: pki.CAFile}
	conf := func() *tls.Config {
		pem, err := os.ReadFile(pki.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		return &tls.Config{ServerName: "files.lab", RootCAs: x509Pool(pem), Certificates: []tls.Certificate{clientCert}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("mitm refuses clearly", func(t *testing.T) {
		c, err := dialTLS(ctx, ml, lab.ServerAddr4, false, conf())
		if err == nil {
			c.Close()
			t.Fatal("mitm mode passed a server that requires a client certificate")
		}
		if !strings.Contains(err.Error(), "431") || !strings.Contains(err.Error(), "client certificate") {
			t.Fatalf("AUTH TLS: %v, want the 431 naming the client certificate", err)
		}
		d.WaitMetric(`ftpsalg_policy_refusals_total{reason="client_certificate_required"}`, 1)
	})
	t.Run("opaque works", func(t *testing.T) {
		c, err := dialTLS(ctx, ml, lab.ServerAddr4, true, conf())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Login(v.User, v.Password); err != nil {
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
	log := d.Proc.Log()
	for _, want := range []string{`"reason":"client_certificate_required"`, `use mode: opaque for this server`,
		`"server_name":"via-opaque"`, `"client_cert_requested":"yes"`} {
		if !strings.Contains(log, want) {
			t.Errorf("daemon log lacks %s", want)
		}
	}
	if t.Failed() {
		t.Log(tail(log))
	}
	d.Stop()
}
