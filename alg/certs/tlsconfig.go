package certs

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"

	"github.com/ftpsalg/ftpsalg/alg/policy"
)

// tls12CipherSuites are the TLS 1.2 suites ftpsalg offers and accepts on
// both legs: ECDHE key exchange (forward secrecy) with an AEAD cipher. CBC
// suites (Lucky Thirteen and padding-oracle history), RSA key exchange (no
// forward secrecy) and 3DES/RC4 are left out. TLS 1.3 suites are not
// configurable in crypto/tls and are all AEAD.
var tls12CipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// curvePreferences are the key exchange groups, most preferred first:
// the hybrid post-quantum X25519MLKEM768 (TLS 1.3 only; crypto/tls's own
// default), then X25519, P-256 and P-384 for peers without it.
var curvePreferences = []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256, tls.CurveP384}

// upstreamSessionCacheSize bounds the TLS sessions kept per upstream
// config. One control connection's data connections resume its session, so
// a few dozen covers the connections of one config in flight.
const upstreamSessionCacheSize = 64

// ServerConfig returns the TLS configuration of the client-facing leg: the
// certificate comes from getCert (a minted or static leaf), the lowest
// version is minVersion (anything below TLS 1.2 is raised to it), TLS 1.2
// uses ECDHE with AEAD suites only, and session tickets are on (crypto/tls
// rotates their keys), so that a client can resume the control connection's
// session on its data connections, as FTPS servers such as vsftpd
// (require_ssl_reuse) require of clients. crypto/tls servers never
// renegotiate.
func ServerConfig(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error), minVersion uint16) *tls.Config {
	return &tls.Config{
		GetCertificate:   getCert,
		MinVersion:       max(minVersion, tls.VersionTLS12),
		CipherSuites:     slices.Clone(tls12CipherSuites),
		CurvePreferences: slices.Clone(curvePreferences),
	}
}

// UntrustedError reports an upstream certificate that failed verification.
type UntrustedError struct {
	// Target is the name or address the certificate was verified for.
	Target string
	Err    error
}

func (e *UntrustedError) Error() string {
	return fmt.Sprintf("upstream certificate for %s is not trusted: %v", e.Target, e.Err)
}

func (e *UntrustedError) Unwrap() error { return e.Err }

// UpstreamConfig returns the TLS configuration of the server-facing leg for
// a server with policy p. serverName is the SNI the client sent (empty when
// it sent none) and serverIP the address the client connected to.
//
// The SNI sent upstream is serverName, else p.ServerName, else none. The
// certificate is verified for that name; with neither, for serverIP as an
// IP SAN. Verification follows p.Verify:
//   - system: the system's roots, or roots when not nil (for tests);
//   - ca: the CAs in p.CAFile only (read now; an unreadable file or one
//     without certificates is an error);
//   - pin: the leaf's SubjectPublicKeyInfo SHA-256 must equal one of
//     p.PinSHA256 (compared in constant time); issuer, names and validity
//     are not checked;
//   - none: anything is accepted.
//
// A failed verification ends the handshake with an *UntrustedError, such as
// "upstream certificate for 198.51.100.2 is not trusted: x509: ...".
// Versions and suites are as for ServerConfig, renegotiation is refused,
// and the config has its own session cache so that data connections
// dialled with it can resume the control connection's session. crypto/tls
// keys that cache by ServerName, or by the remote address when there is
// none: with no SNI, data connections (other ports) do not find the
// control connection's session unless the caller keys the cache itself.
func UpstreamConfig(p policy.ServerTLS, serverName string, serverIP netip.Addr, roots *x509.CertPool) (*tls.Config, error) {
	sni := serverName
	if sni == "" {
		sni = p.ServerName
	}
	target := sni
	if target == "" {
		if !serverIP.IsValid() {
			return nil, errors.New("failed to configure upstream TLS: no server name and no server address to verify the certificate against")
		}
		target = serverIP.Unmap().WithZone("").String()
	}
	cfg := &tls.Config{
		ServerName:         sni,
		MinVersion:         max(p.MinVersion, tls.VersionTLS12),
		CipherSuites:       slices.Clone(tls12CipherSuites),
		CurvePreferences:   slices.Clone(curvePreferences),
		Renegotiation:      tls.RenegotiateNever,
		ClientSessionCache: tls.NewLRUClientSessionCache(upstreamSessionCacheSize),
		// Verification is VerifyConnection's, which crypto/tls runs on
		// every handshake, resumptions included; it names the server in
		// its errors.
		InsecureSkipVerify: true,
	}
	switch p.Verify {
	case policy.VerifySystem:
		cfg.VerifyConnection = verifyChain(target, roots)
	case policy.VerifyCA:
		pool, err := loadPool(p.CAFile)
		if err != nil {
			return nil, err
		}
		cfg.VerifyConnection = verifyChain(target, pool)
	case policy.VerifyPin:
		if len(p.PinSHA256) == 0 {
			return nil, errors.New("failed to configure upstream TLS: verify pin without pins")
		}
		cfg.VerifyConnection = verifyPins(target, slices.Clone(p.PinSHA256))
	case policy.VerifyNone:
	default:
		return nil, fmt.Errorf("failed to configure upstream TLS: unknown verify mode %v", p.Verify)
	}
	return cfg, nil
}

// verifyChain verifies the peer's chain against roots (nil: the system's)
// for target, a DNS name or an IP address.
func verifyChain(target string, roots *x509.CertPool) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return &UntrustedError{Target: target, Err: errors.New("no certificate")}
		}
		opts := x509.VerifyOptions{
			DNSName:       target,
			Roots:         roots,
			Intermediates: x509.NewCertPool(),
		}
		for _, c := range cs.PeerCertificates[1:] {
			opts.Intermediates.AddCert(c)
		}
		if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
			return &UntrustedError{Target: target, Err: err}
		}
		return nil
	}
}

// verifyPins checks the peer leaf's public key against pins.
func verifyPins(target string, pins [][]byte) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return &UntrustedError{Target: target, Err: errors.New("no certificate")}
		}
		sum := sha256.Sum256(cs.PeerCertificates[0].RawSubjectPublicKeyInfo)
		match := 0
		for _, pin := range pins {
			// Every pin is compared, in constant time.
			match |= subtle.ConstantTimeCompare(sum[:], pin)
		}
		if match != 1 {
			return &UntrustedError{Target: target, Err: fmt.Errorf(
				"its public key (pin_sha256 %s) is not pinned", base64.StdEncoding.EncodeToString(sum[:]))}
		}
		return nil
	}
}

// loadPool reads a PEM file of CA certificates.
func loadPool(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("failed to load ca_file %s: no PEM certificates in it", path)
	}
	return pool, nil
}
