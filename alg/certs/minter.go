package certs

import (
	"container/list"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// defaultCacheSize bounds the leaves a Minter keeps. A gateway protects
	// a handful of servers, each with one certificate (two during a
	// renewal), times the SNI names clients use that the certificate does
	// not cover: 1024 is far more than that, and at well under 2 KiB a
	// leaf it bounds the cache to about 2 MiB.
	defaultCacheSize = 1024

	// backdate is how far before now a leaf's validity starts, so that a
	// client whose clock runs a few minutes slow accepts it.
	backdate = 5 * time.Minute

	// refreshDivisor: a cached leaf is replaced once less than 1/10 of its
	// validity is left, so that a client never receives one about to
	// expire.
	refreshDivisor = 10
)

// hostnameRE matches a DNS name that may go in a certificate's SAN: labels
// of letters, digits, '-' and '_', optionally a leading "*." wildcard.
var hostnameRE = regexp.MustCompile(`^(\*\.)?[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$`)

// Minter mints the leaf certificates ftpsalg shows clients in mitm mode:
// for each upstream (real server) certificate, a copy of its names signed by
// the operator's CA. Leaves are cached, so that a handshake normally does
// not mint. A Minter is safe for concurrent use.
type Minter struct {
	ca       *CA
	nc       NameConstraints // the CA's, checked before each mint
	lifetime time.Duration
	now      func() time.Time

	mu       sync.Mutex
	entries  map[leafKey]*list.Element // values are *entry
	lru      *list.List                // front: most recently used
	capacity int
	inflight map[leafKey]*mintCall

	// mints counts leaves minted, for tests and benchmarks.
	mints atomic.Uint64
}

// leafKey identifies a leaf: the upstream certificate it copies and the
// name it adds, if any.
type leafKey struct {
	digest [sha256.Size]byte // of the upstream certificate's DER
}

type entry struct {
	key       leafKey
	cert      *tls.Certificate
	refreshAt time.Time
}

// mintCall is a mint in progress; concurrent Leaf calls for the same key
// wait for it instead of minting again.
type mintCall struct {
	done chan struct{}
	cert *tls.Certificate
	err  error
}

// NewMinter returns a Minter that signs with ca. Leaves are valid for
// lifetime at most (and never past the upstream certificate's NotAfter).
// now is the clock; nil means time.Now. lifetime must be positive.
func NewMinter(ca *CA, lifetime time.Duration, now func() time.Time) *Minter {
	if lifetime <= 0 {
		panic(fmt.Sprintf("certs: NewMinter with lifetime %v", lifetime))
	}
	if now == nil {
		now = time.Now
	}
	return &Minter{
		ca:       ca,
		nc:       ConstraintsOf(ca.Cert),
		lifetime: lifetime,
		now:      now,
		entries:  make(map[leafKey]*list.Element),
		lru:      list.New(),
		capacity: defaultCacheSize,
		inflight: make(map[leafKey]*mintCall),
	}
}

// Leaf returns a leaf certificate for upstream, the certificate the real
// server presented. The leaf has upstream's subject common name and its
// DNS and IP subject alternative names — those and no others: a leaf never
// names what the server's certificate did not (the caller refuses a client
// that asks for another name; alg/proxy). When upstream has no SANs at all,
// its common name becomes one (clients following RFC 6125 ignore a common
// name beside SANs, and many ignore it always).
//
// The leaf is valid from five minutes ago until the earlier of now plus the
// lifetime and upstream's NotAfter; an expired upstream certificate is an
// error. When the CA has name constraints and a name of the leaf is
// outside them, no leaf is minted: the error names each such name and
// matches ErrOutsideConstraints (errors.Is). When the CA constrains DNS
// names and the leaf has none, its subject is empty: clients would check a
// common name against the DNS constraints. Its chain is the leaf and the CA certificate. Each leaf has its own
// ECDSA P-256 key.
//
// Leaves are cached by upstream certificate (its DER; for a certificate
// made by the caller without DER, its common name, SANs and NotAfter), in
// a bounded LRU. A cached leaf is returned until less than a tenth of its validity is
// left; then it is minted again. The same *tls.Certificate is returned for
// every hit; callers must not modify it.
func (m *Minter) Leaf(upstream *x509.Certificate) (*tls.Certificate, error) {
	if upstream == nil {
		return nil, errors.New("failed to mint leaf: no upstream certificate")
	}
	k := leafKey{digest: digest(upstream)}
	now := m.now()

	m.mu.Lock()
	if el, ok := m.entries[k]; ok {
		e := el.Value.(*entry)
		if now.Before(e.refreshAt) {
			m.lru.MoveToFront(el)
			m.mu.Unlock()
			return e.cert, nil
		}
	}
	if c, ok := m.inflight[k]; ok {
		m.mu.Unlock()
		<-c.done
		return c.cert, c.err
	}
	c := &mintCall{done: make(chan struct{})}
	m.inflight[k] = c
	m.mu.Unlock()

	c.cert, c.err = m.mint(upstream, now)

	m.mu.Lock()
	delete(m.inflight, k)
	if c.err == nil {
		m.store(k, c.cert)
	}
	m.mu.Unlock()
	close(c.done)
	return c.cert, c.err
}

// store caches cert under k, evicting the least recently used leaf when
// the cache is full. m.mu is held.
func (m *Minter) store(k leafKey, cert *tls.Certificate) {
	lifetime := cert.Leaf.NotAfter.Sub(cert.Leaf.NotBefore)
	e := &entry{key: k, cert: cert, refreshAt: cert.Leaf.NotAfter.Add(-lifetime / refreshDivisor)}
	if el, ok := m.entries[k]; ok {
		el.Value = e
		m.lru.MoveToFront(el)
		return
	}
	m.entries[k] = m.lru.PushFront(e)
	for m.lru.Len() > m.capacity {
		oldest := m.lru.Back()
		m.lru.Remove(oldest)
		delete(m.entries, oldest.Value.(*entry).key)
	}
}

// mint creates a leaf for upstream.
func (m *Minter) mint(upstream *x509.Certificate, now time.Time) (*tls.Certificate, error) {
	if !now.Before(upstream.NotAfter) {
		return nil, fmt.Errorf("upstream certificate %q expired at %s: no leaf is minted for an expired certificate",
			upstream.Subject.CommonName, upstream.NotAfter.UTC().Format(time.RFC3339))
	}
	notAfter := now.Add(m.lifetime)
	if upstream.NotAfter.Before(notAfter) {
		notAfter = upstream.NotAfter
	}
	dns, ips := leafNames(upstream)
	// A leaf the CA's name constraints forbid would be refused by every
	// client that enforces them; refusing here says why in the log.
	if err := m.nc.checkLeaf(dns, ips); err != nil {
		return nil, fmt.Errorf("refusing to mint leaf for %q: %w", upstream.Subject.CommonName, err)
	}
	subject := pkix.Name{CommonName: upstream.Subject.CommonName}
	if len(dns) == 0 && m.nc.constrainsDNS() {
		// Without DNS names, GnuTLS checks any common name, and OpenSSL
		// one like "198.51.100.2", against the DNS constraints, and
		// would refuse the leaf. The names are in the SANs; the subject
		// stays empty (RFC 5280 section 4.1.2.6 allows it, and
		// crypto/x509 then marks the SAN extension critical).
		subject = pkix.Name{}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("failed to generate leaf key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      subject,
		DNSNames:     dns,
		IPAddresses:  ips,
		NotBefore:    now.Add(-backdate),
		NotAfter:     notAfter,
		// ECDSA keys sign (ECDHE); they never encipher keys.
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, m.ca.Cert, key.Public(), m.ca.key)
	if err != nil {
		return nil, fmt.Errorf("failed to mint leaf for %q: %w", upstream.Subject.CommonName, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("failed to parse minted leaf: %w", err)
	}
	m.mints.Add(1)
	return &tls.Certificate{
		Certificate: [][]byte{der, m.ca.Cert.Raw},
		PrivateKey:  key,
		Leaf:        leaf,
	}, nil
}

// digest identifies upstream for the cache: the SHA-256 of its DER, or for
// a certificate without DER (a template the caller made, such as a
// placeholder when there is no upstream) of what a leaf copies from it.
func digest(upstream *x509.Certificate) [sha256.Size]byte {
	if len(upstream.Raw) > 0 {
		return sha256.Sum256(upstream.Raw)
	}
	h := sha256.New()
	fmt.Fprintf(h, "template\x00%q\x00%d\x00", upstream.Subject.CommonName, upstream.NotAfter.UnixNano())
	for _, n := range upstream.DNSNames {
		fmt.Fprintf(h, "dns %q\x00", n)
	}
	for _, ip := range upstream.IPAddresses {
		fmt.Fprintf(h, "ip %s\x00", ip)
	}
	var d [sha256.Size]byte
	h.Sum(d[:0])
	return d
}

// leafNames returns the DNS and IP SANs a leaf copies from upstream: its
// SANs, or its common name when it has none.
func leafNames(upstream *x509.Certificate) ([]string, []net.IP) {
	dns := slices.Clone(upstream.DNSNames)
	ips := slices.Clone(upstream.IPAddresses)
	if len(dns) > 0 || len(ips) > 0 || len(upstream.URIs) > 0 || len(upstream.EmailAddresses) > 0 {
		return dns, ips
	}
	cn := upstream.Subject.CommonName
	if ip := net.ParseIP(cn); ip != nil {
		return nil, []net.IP{ip}
	}
	if cn = strings.ToLower(cn); hostnameRE.MatchString(cn) {
		return []string{cn}, nil
	}
	return nil, nil
}
