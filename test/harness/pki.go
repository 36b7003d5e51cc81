package harness

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/certs"
	"github.com/ftpsalg/ftpsalg/test/lab"
)

// PKI is the lab's certificates for mitm mode: the operator CA (which
// clients trust) and the FTPS server's certificate. The operator owns the
// server, so by default its certificate comes from the same CA: clients
// trusting only that CA then verify both the control channel (the leaf
// ftpsalg mints) and passthrough data connections (the server's own).
type PKI struct {
	CADir, CAFile      string
	ServerCert, Server string // server certificate and key files
	Pool               *x509.CertPool
}

// PKIOptions vary NewPKI.
type PKIOptions struct {
	Untrusted bool // the server's certificate comes from a CA ftpsalg does not trust
	WrongName bool // the server's certificate names another host
	// ExtraIPs are added to the server certificate's names: a published
	// server's certificate names the public address clients connect to.
	ExtraIPs []netip.Addr
}

// NewPKI creates the CA under dir and issues the server certificate.
func NewPKI(t lab.TB, dir string, o PKIOptions) *PKI {
	t.Helper()
	caDir := filepath.Join(dir, "ca")
	ca, err := certs.InitCA(caDir, certs.InitOptions{CommonName: "lab operator CA"})
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	issuer := ca
	if o.Untrusted {
		if issuer, err = certs.InitCA(filepath.Join(dir, "rogue"), certs.InitOptions{CommonName: "rogue CA"}); err != nil {
			t.Fatalf("harness: %v", err)
		}
	}
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: "files.lab"}, DNSNames: []string{"files.lab"},
		IPAddresses: []net.IP{lab.ServerAddr4.AsSlice(), lab.ServerAddr6.AsSlice()}, NotAfter: time.Now().Add(48 * time.Hour)}
	for _, a := range o.ExtraIPs {
		tmpl.IPAddresses = append(tmpl.IPAddresses, a.AsSlice())
	}
	if o.WrongName {
		tmpl.Subject.CommonName, tmpl.DNSNames, tmpl.IPAddresses = "elsewhere.lab", []string{"elsewhere.lab"}, []net.IP{lab.OtherAddr4.AsSlice()}
	}
	leaf, err := certs.NewMinter(issuer, 24*time.Hour, nil).Leaf(tmpl, "")
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	p := &PKI{CADir: caDir, CAFile: filepath.Join(caDir, certs.CertFile), Pool: ca.Pool()}
	p.ServerCert, p.Server = writeLeaf(t, dir, leaf)
	return p
}

func writeLeaf(t lab.TB, dir string, c *tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	var cb []byte
	for _, der := range c.Certificate {
		cb = append(cb, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	certFile, keyFile = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	if err := os.WriteFile(certFile, cb, 0o644); err != nil {
		t.Fatalf("harness: %v", err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		t.Fatalf("harness: %v", err)
	}
	return certFile, keyFile
}

// ClientTLS is the TLS configuration of a client that trusts only the
// operator CA.
func (p *PKI) ClientTLS() *tls.Config {
	return &tls.Config{RootCAs: p.Pool, ServerName: "files.lab", MinVersion: tls.VersionTLS12}
}

// MITMPolicy returns a policy with the lab server in mitm mode (explicit
// on 21, implicit on 990), verified against the operator CA, with extra
// YAML lines appended to the server (after its tls block) and level as the
// log level.
func (p *PKI) MITMPolicy(level, extra string) string {
	return fmt.Sprintf(`log:
  level: %s
mitm:
  ca_dir: %s
servers:
  - name: lab
    addresses: [%s, "%s"]
    control_ports: [21]
    implicit_tls_ports: [990]
    passive_ports: "%d-%d"
    mode: mitm
    clients: ["192.0.2.0/24", "2001:db8:c::/64"]
    tls:
      verify: ca
      ca_file: %s
%s`, level, p.CADir, lab.ServerAddr4, lab.ServerAddr6, lab.DefaultPasvMinPort, lab.DefaultPasvMaxPort, p.CAFile, extra)
}
