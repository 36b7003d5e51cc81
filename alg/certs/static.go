package certs

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"time"
)

// LoadStatic loads a static leaf certificate and its key (PEM files), shown
// to clients instead of a minted leaf for a server the operator owns (policy
// keys tls.certificate and tls.key). certFile may hold the chain after the
// leaf. The key file must not be accessible by group or others (a
// *KeyModeError), the key must match the certificate, and the certificate
// must be valid now.
func LoadStatic(certFile, keyFile string) (*tls.Certificate, error) {
	return loadStatic(certFile, keyFile, time.Now())
}

func loadStatic(certFile, keyFile string, now time.Time) (*tls.Certificate, error) {
	if err := CheckKeyFile(keyFile); err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("failed to load static certificate %s with key %s: %w", certFile, keyFile, err)
	}
	if cert.Leaf == nil {
		// LoadX509KeyPair fills Leaf since Go 1.23, unless
		// GODEBUG=x509keypairleaf=0.
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("failed to parse static certificate %s: %w", certFile, err)
		}
	}
	if err := checkValidity(certFile, cert.Leaf, now); err != nil {
		return nil, err
	}
	return &cert, nil
}
