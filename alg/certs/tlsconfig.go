package certs

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

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
// a server with policy p: NewUpstream(p, roots).Config(serverName,
// serverIP), for callers that verify one connection. The proxy keeps one
// Upstream per server, so that the CA file is read once and a chain it
// verified is not verified again on every control session.
func UpstreamConfig(p policy.ServerTLS, serverName string, serverIP netip.Addr, roots *x509.CertPool) (*tls.Config, error) {
	u, err := NewUpstream(p, roots)
	if err != nil {
		return nil, err
	}
	return u.Config(serverName, serverIP)
}

// Upstream verifies the certificates of one server under one policy, for
// all its sessions. It reads the policy's CA file once (a changed file
// takes effect with the policy's reload, which makes a new Upstream) and
// remembers the chains it verified, so that the next handshake with the
// same chain for the same name — a resumed session's above all: crypto/tls
// hands VerifyConnection the certificates stored with the session — does
// not build and check the chain again.
//
// A remembered verification is exact: it is keyed by the name or address
// verified and by every certificate the server sent (SHA-256 of their
// DER), it holds only against this Upstream's roots, and it expires at the
// earliest NotAfter of the chain that verified it, and at the latest
// verifyMemoTTL after the verification. The server's signature over each
// handshake (CertificateVerify) is checked by crypto/tls on every full
// handshake regardless; a resumed handshake proves the server holds the
// session's secret instead.
type Upstream struct {
	p     policy.ServerTLS
	roots *x509.CertPool // VerifySystem: nil means the system's; VerifyCA: the ca_file's
	pins  [][]byte

	// Now is the clock of the memo's expiry (nil: time.Now); tests set it.
	Now func() time.Time

	mu       sync.Mutex
	memo     map[[sha256.Size]byte]time.Time // verified chain → valid until
	verified int                             // chains built and checked (tests)
}

// Bounds of the memo of verified chains: a server sends one chain (two
// during a certificate rollover), so a few dozen entries cover the names
// and addresses one server is reached by.
const (
	verifyMemoTTL  = 10 * time.Minute
	verifyMemoSize = 64
)

// NewUpstream returns the verifier of one server's certificates for policy
// p. roots replaces the system's roots in VerifySystem mode (for tests;
// nil means the system's). The ca_file of VerifyCA is read now: an
// unreadable file or one without certificates is an error.
func NewUpstream(p policy.ServerTLS, roots *x509.CertPool) (*Upstream, error) {
	u := &Upstream{p: p, memo: map[[sha256.Size]byte]time.Time{}}
	switch p.Verify {
	case policy.VerifySystem:
		u.roots = roots
	case policy.VerifyCA:
		pool, err := loadPool(p.CAFile)
		if err != nil {
			return nil, err
		}
		u.roots = pool
	case policy.VerifyPin:
		if len(p.PinSHA256) == 0 {
			return nil, errors.New("failed to configure upstream TLS: verify pin without pins")
		}
		u.pins = slices.Clone(p.PinSHA256)
	case policy.VerifyNone:
	default:
		return nil, fmt.Errorf("failed to configure upstream TLS: unknown verify mode %v", p.Verify)
	}
	return u, nil
}

// Config returns the TLS configuration of one connection to the server.
// serverName is the SNI the client sent (empty when it sent none) and
// serverIP the address the client connected to.
//
// The SNI sent upstream is serverName, else the policy's server_name, else
// none. The certificate is verified for that name; with neither, for
// serverIP as an IP SAN. Verification follows the policy's verify mode:
//   - system: the system's roots (or the roots given to NewUpstream);
//   - ca: the CAs in ca_file only;
//   - pin: the leaf's SubjectPublicKeyInfo SHA-256 must equal one of
//     pin_sha256 (compared in constant time); issuer, names and validity
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
func (u *Upstream) Config(serverName string, serverIP netip.Addr) (*tls.Config, error) {
	sni := serverName
	if sni == "" {
		sni = u.p.ServerName
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
		MinVersion:         max(u.p.MinVersion, tls.VersionTLS12),
		CipherSuites:       slices.Clone(tls12CipherSuites),
		CurvePreferences:   slices.Clone(curvePreferences),
		Renegotiation:      tls.RenegotiateNever,
		ClientSessionCache: tls.NewLRUClientSessionCache(upstreamSessionCacheSize),
		// Verification is VerifyConnection's, which crypto/tls runs on
		// every handshake, resumptions included; it names the server in
		// its errors.
		InsecureSkipVerify: true,
	}
	switch u.p.Verify {
	case policy.VerifySystem, policy.VerifyCA:
		cfg.VerifyConnection = func(cs tls.ConnectionState) error { return u.verifyChain(target, cs) }
	case policy.VerifyPin:
		cfg.VerifyConnection = verifyPins(target, u.pins)
	}
	return cfg, nil
}

// verifyChain verifies the peer's chain against u's roots for target, a
// DNS name or an IP address, unless it verified the same chain for the
// same target before and that verification still holds.
func (u *Upstream) verifyChain(target string, cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return &UntrustedError{Target: target, Err: errors.New("no certificate")}
	}
	key := chainKey(target, cs.PeerCertificates)
	now := u.now()
	u.mu.Lock()
	until, ok := u.memo[key]
	u.mu.Unlock()
	if ok && now.Before(until) {
		return nil
	}
	opts := x509.VerifyOptions{
		DNSName:       target,
		Roots:         u.roots,
		Intermediates: x509.NewCertPool(),
		CurrentTime:   now,
	}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	chains, err := cs.PeerCertificates[0].Verify(opts)
	u.mu.Lock()
	u.verified++
	u.mu.Unlock()
	if err != nil {
		return &UntrustedError{Target: target, Err: err}
	}
	until = now.Add(verifyMemoTTL)
	for _, c := range chains[0] {
		if c.NotAfter.Before(until) {
			until = c.NotAfter
		}
	}
	u.mu.Lock()
	if len(u.memo) >= verifyMemoSize {
		for k, t := range u.memo {
			if !now.Before(t) {
				delete(u.memo, k)
			}
		}
		if len(u.memo) >= verifyMemoSize {
			clear(u.memo)
		}
	}
	u.memo[key] = until
	u.mu.Unlock()
	return nil
}

func (u *Upstream) now() time.Time {
	if u.Now != nil {
		return u.Now()
	}
	return time.Now()
}

// chainKey names a verification: the target and every certificate sent,
// each length-prefixed so that no two inputs share a digest's input.
func chainKey(target string, chain []*x509.Certificate) [sha256.Size]byte {
	h := sha256.New()
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(target)))
	h.Write(n[:])
	h.Write([]byte(target))
	for _, c := range chain {
		binary.BigEndian.PutUint32(n[:], uint32(len(c.Raw)))
		h.Write(n[:])
		h.Write(c.Raw)
	}
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
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
