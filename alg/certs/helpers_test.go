package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Only documentation names and addresses (RFC 2606, RFC 5737, RFC 3849).
var (
	upstreamIP4 = net.ParseIP("198.51.100.2").To4()
	upstreamIP6 = net.ParseIP("2001:db8::2")
)

// issuer is a CA made in memory by a test, standing in for the public CA
// that issued a real server's certificate.
type issuer struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newIssuer(t testing.TB, cn string) *issuer {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          mustSerial(t),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return &issuer{cert: mustParse(t, der), key: key}
}

// issue signs tmpl (serial and validity filled in when unset) for a new key.
func (is *issuer) issue(t testing.TB, tmpl *x509.Certificate) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key := newKey(t)
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber = mustSerial(t)
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(90 * 24 * time.Hour)
	}
	if tmpl.ExtKeyUsage == nil {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, is.cert, key.Public(), is.key)
	if err != nil {
		t.Fatal(err)
	}
	return mustParse(t, der), key
}

// upstream issues the usual test server certificate: ftp.example.com and a
// wildcard, one IPv4 and one IPv6 address.
func (is *issuer) upstream(t testing.TB) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	return is.issue(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "ftp.example.com", Organization: []string{"Example"}},
		DNSNames:    []string{"ftp.example.com", "*.files.example.com"},
		IPAddresses: []net.IP{upstreamIP4, upstreamIP6},
	})
}

func (is *issuer) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(is.cert)
	return p
}

// tlsCert pairs a certificate issued by is with its key and is's
// certificate, as a server presents them.
func (is *issuer) tlsCert(cert *x509.Certificate, key *ecdsa.PrivateKey) tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{cert.Raw, is.cert.Raw}, PrivateKey: key, Leaf: cert}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func mustSerial(t testing.TB) *big.Int {
	t.Helper()
	n, err := randomSerial()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func mustParse(t testing.TB, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newCA initialises a CA in a new temporary directory.
func newCA(t testing.TB) (*CA, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := InitCA(dir, InitOptions{})
	if err != nil {
		t.Fatalf("InitCA: %v", err)
	}
	return ca, dir
}

func writePEM(t testing.TB, path, typ string, der []byte, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil { // umask
		t.Fatal(err)
	}
}

func writeKey(t testing.TB, path string, key *ecdsa.PrivateKey, perm os.FileMode) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, path, "PRIVATE KEY", der, perm)
}

// handshake runs a TLS handshake between a server and a client config over
// net.Pipe, with a deadline, and returns the client's state and both
// errors. After a successful handshake the server sends a byte and the
// client reads it, so that the client also processes TLS 1.3 session
// tickets.
func handshake(t testing.TB, server, client *tls.Config) (tls.ConnectionState, error, error) {
	t.Helper()
	sc, cc := net.Pipe()
	deadline := time.Now().Add(10 * time.Second)
	for _, c := range []net.Conn{sc, cc} {
		if err := c.SetDeadline(deadline); err != nil {
			t.Fatal(err)
		}
	}
	// The pipes are closed without close_notify: on a synchronous pipe
	// that alert would wait for a reader that is gone.
	defer sc.Close()
	defer cc.Close()
	srv, cli := tls.Server(sc, server), tls.Client(cc, client)
	serverErr := make(chan error, 1)
	go func() {
		err := srv.Handshake()
		if err != nil {
			sc.Close() // unblock a client waiting for a flight
		} else {
			_, err = srv.Write([]byte{'x'})
		}
		serverErr <- err
	}()
	clientErr := cli.Handshake()
	if clientErr != nil {
		cc.Close() // unblock a server waiting for a flight
	} else if _, err := io.ReadFull(cli, make([]byte, 1)); err != nil {
		clientErr = err
	}
	return cli.ConnectionState(), clientErr, <-serverErr
}
