package harness

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
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
	// ServerName is the server's tls.server_name in MITMPolicy; empty
	// leaves it out.
	ServerName string
}

// PKIOptions vary NewPKI.
type PKIOptions struct {
	Untrusted bool // the server's certificate comes from a CA ftpsalg does not trust
	WrongName bool // the server's certificate names another host
	// ExtraIPs are added to the server certificate's names: a published
	// server's certificate names the public address clients connect to.
	ExtraIPs []netip.Addr
	// ConstrainWith, when set, is the ftpsalg binary: the operator CA is
	// then made as an operator would constrain it, by `ftpsalg ca init
	// --from-policy` on MITMPolicy's policy, with tls.server_name files.lab
	// so that the CA may sign for that name and the server's two
	// addresses only.
	ConstrainWith string
}

// NewPKI creates the CA under dir and issues the server certificate.
func NewPKI(t lab.TB, dir string, o PKIOptions) *PKI {
	t.Helper()
	caDir := filepath.Join(dir, "ca")
	p := &PKI{CADir: caDir, CAFile: filepath.Join(caDir, certs.CertFile)}
	var ca *certs.CA
	var err error
	if o.ConstrainWith != "" {
		p.ServerName = "files.lab"
		ca, err = constrainedCA(p, dir, o.ConstrainWith)
	} else {
		ca, err = certs.InitCA(caDir, certs.InitOptions{CommonName: "lab operator CA"})
	}
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	p.Pool = ca.Pool()
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
	leaf, err := certs.NewMinter(issuer, 24*time.Hour, nil).Leaf(tmpl)
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	p.ServerCert, p.Server = writeLeaf(t, dir, leaf)
	return p
}

// constrainedCA makes p's CA with `bin ca init --from-policy` on p's
// policy (the CA directory is the policy's mitm.ca_dir) and loads it.
func constrainedCA(p *PKI, dir, bin string) (*certs.CA, error) {
	pol := filepath.Join(dir, "ca-policy.yaml")
	if err := os.WriteFile(pol, []byte(p.MITMPolicy("info", "")), 0o600); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "ca", "init", "--cn", "lab operator CA", "--from-policy", pol).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ftpsalg ca init --from-policy: %w\n%s", err, out)
	}
	return certs.LoadCA(p.CADir)
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
// log level; with tls.server_name when p.ServerName is set.
func (p *PKI) MITMPolicy(level, extra string) string {
	serverName := ""
	if p.ServerName != "" {
		serverName = "      server_name: " + p.ServerName + "\n"
	}
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
%s%s`, level, p.CADir, lab.ServerAddr4, lab.ServerAddr6, lab.DefaultPasvMinPort, lab.DefaultPasvMaxPort, p.CAFile, serverName, extra)
}
