package lab

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// SelfSignedCert mints an ECDSA P-256 certificate for the server's
// addresses (IP SANs 198.51.100.2 and 2001:db8:5::2), valid for a day, and
// writes it and its key as PEM files in the lab directory. The certificate
// is its own CA: clients trust it with curl --cacert CERT or lftp
// "set ssl:ca-file CERT". Nothing is committed; every lab mints its own.
// It calls t.Fatalf on failure.
func (l *Lab) SelfSignedCert() (certFile, keyFile string) {
	l.t.Helper()
	certFile, keyFile, err := writeSelfSignedCert(l.dir, fmt.Sprintf("server-%d", l.nextSeq()))
	if err != nil {
		l.t.Fatalf("lab: %v", err)
	}
	return certFile, keyFile
}

func writeSelfSignedCert(dir, base string) (string, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("failed to generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return "", "", err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "ftpsalg lab server"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{ServerAddr4.AsSlice(), ServerAddr6.AsSlice()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", fmt.Errorf("failed to create certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", fmt.Errorf("failed to marshal key: %w", err)
	}
	certFile := filepath.Join(dir, base+".crt")
	keyFile := filepath.Join(dir, base+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}
