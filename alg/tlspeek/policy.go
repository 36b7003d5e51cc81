package tlspeek

import (
	"crypto/tls"
	"fmt"
	"slices"
)

// Refusal reasons of Check*: a bounded set, used as metric labels.
const (
	// ReasonVersion: the server selected a version below the minimum.
	ReasonVersion = "tls_version"
	// ReasonSuite: the server selected a suite that is not AEAD with
	// (EC)DHE key exchange.
	ReasonSuite = "tls_suite"
	// ReasonClientOffer: the ClientHello offers no acceptable version or
	// no acceptable suite.
	ReasonClientOffer = "tls_client_offer"
)

// dheAEAD are TLS 1.2 suites with finite-field DHE and an AEAD that
// crypto/tls does not implement (so they are not in its lists).
var dheAEAD = []uint16{
	0x009E, 0x009F, // TLS_DHE_RSA_WITH_AES_{128,256}_GCM_SHA{256,384}
	0xCCAA,         // TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256
	0xC09E, 0xC09F, // TLS_DHE_RSA_WITH_AES_{128,256}_CCM
	0xC0AC, 0xC0AD, // TLS_ECDHE_ECDSA_WITH_AES_{128,256}_CCM
}

// AcceptableSuite reports whether suite s gives forward secrecy and
// authenticated encryption: every TLS 1.3 suite (RFC 8446 §B.4: AEAD only;
// the key exchange is (EC)DHE unless a PSK is used alone), and TLS 1.2
// suites with ECDHE or DHE and AES-GCM, AES-CCM or ChaCha20-Poly1305.
func AcceptableSuite(s uint16) bool {
	if s >= 0x1301 && s <= 0x1305 {
		return true
	}
	switch s {
	case tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256:
		return true
	}
	return slices.Contains(dheAEAD, s)
}

// SuiteName names a suite for logs (its IANA name when crypto/tls knows
// it, else hexadecimal).
func SuiteName(s uint16) string {
	n := tls.CipherSuiteName(s)
	if n == "" {
		return fmt.Sprintf("0x%04X", s)
	}
	return n
}

// VersionName names a version for logs ("TLS 1.2").
func VersionName(v uint16) string {
	if v == 0x0300 {
		return "SSL 3.0"
	}
	return tls.VersionName(v)
}

// CheckClientHello returns a refusal reason and a detail when ch offers no
// version at or above min (a crypto/tls version number) or no acceptable
// suite; "" when it may proceed.
func CheckClientHello(ch *ClientHello, min uint16) (reason, detail string) {
	if !slices.ContainsFunc(ch.Versions, func(v uint16) bool { return v >= min && v <= VersionTLS13 }) {
		return ReasonClientOffer, fmt.Sprintf("no version offered at or above %s", VersionName(min))
	}
	if !slices.ContainsFunc(ch.Suites, AcceptableSuite) {
		return ReasonClientOffer, "no AEAD cipher suite with (EC)DHE offered"
	}
	return "", ""
}

// CheckServerHello returns a refusal reason and a detail when sh selects a
// version below min or a suite AcceptableSuite refuses; "" when the
// handshake may proceed. A HelloRetryRequest is judged like a ServerHello.
func CheckServerHello(sh *ServerHello, min uint16) (reason, detail string) {
	if sh.Version < min {
		return ReasonVersion, fmt.Sprintf("server selected %s, below the minimum %s", VersionName(sh.Version), VersionName(min))
	}
	if !AcceptableSuite(sh.Suite) {
		return ReasonSuite, fmt.Sprintf("server selected %s, not AEAD with (EC)DHE", SuiteName(sh.Suite))
	}
	return "", ""
}
