package certs

import (
	"crypto/ecdsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestLeafVerifies(t *testing.T) {
	t.Parallel()
	ca, _ := newCA(t)
	up, _ := newIssuer(t, "Public CA").upstream(t)
	m := NewMinter(ca, 24*time.Hour, nil)

	leaf, err := m.Leaf(up)
	if err != nil {
		t.Fatalf("Leaf: %v", err)
	}
	l := leaf.Leaf
	for _, name := range []string{"ftp.example.com", "a.files.example.com", "198.51.100.2", "2001:db8::2"} {
		opts := x509.VerifyOptions{DNSName: name, Roots: ca.Pool()}
		if _, err := l.Verify(opts); err != nil {
			t.Errorf("leaf does not verify for %s against the CA: %v", name, err)
		}
	}
	if _, err := l.Verify(x509.VerifyOptions{DNSName: "other.example.com", Roots: ca.Pool()}); err == nil {
		t.Error("leaf verifies for a name the upstream certificate does not have")
	}
	if _, err := l.Verify(x509.VerifyOptions{DNSName: "ftp.example.com", Roots: x509.NewCertPool()}); err == nil {
		t.Error("leaf verifies without the CA")
	}

	if diff := cmp.Diff(pkix.Name{CommonName: "ftp.example.com"}.String(), l.Subject.String()); diff != "" {
		t.Errorf("subject (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, l.ExtKeyUsage); diff != "" {
		t.Errorf("extended key usage (-want +got):\n%s", diff)
	}
	if l.IsCA || l.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("leaf: CA %v, key usage %v", l.IsCA, l.KeyUsage)
	}
	if string(l.AuthorityKeyId) != string(ca.Cert.SubjectKeyId) {
		t.Errorf("authority key id %x, want the CA's %x", l.AuthorityKeyId, ca.Cert.SubjectKeyId)
	}
	if len(leaf.Certificate) != 2 || string(leaf.Certificate[1]) != string(ca.Cert.Raw) {
		t.Errorf("chain of %d certificates, want the leaf and the CA", len(leaf.Certificate))
	}
	if _, ok := leaf.PrivateKey.(*ecdsa.PrivateKey); !ok {
		t.Errorf("private key %T", leaf.PrivateKey)
	}
	if d := time.Since(l.NotBefore); d < backdate-time.Minute || d > backdate+time.Minute {
		t.Errorf("NotBefore %v ago, want %v", d, backdate)
	}
	if d := time.Until(l.NotAfter); d < 23*time.Hour || d > 24*time.Hour {
		t.Errorf("NotAfter in %v, want 24h", d)
	}
}

func TestLeafNames(t *testing.T) {
	t.Parallel()
	ca, _ := newCA(t)
	is := newIssuer(t, "Public CA")
	up, _ := is.upstream(t)
	cnOnly, _ := is.issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "Legacy.Example.com"}})
	cnIP, _ := is.issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "198.51.100.7"}})
	cnText, _ := is.issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "FTP server"}})
	ip := func(s string) net.IP {
		a := net.ParseIP(s)
		if v4 := a.To4(); v4 != nil {
			return v4
		}
		return a
	}
	// The leaf names what the upstream certificate names, and nothing a
	// client asked for beyond it (alg/proxy refuses such a client).
	tests := []struct {
		name     string
		upstream *x509.Certificate
		wantDNS  []string
		wantIP   []net.IP
	}{
		{"SANs", up, []string{"ftp.example.com", "*.files.example.com"}, []net.IP{ip("198.51.100.2"), ip("2001:db8::2")}},
		{"common name only", cnOnly, []string{"legacy.example.com"}, nil},
		{"common name address", cnIP, nil, []net.IP{ip("198.51.100.7")}},
		{"common name not a name", cnText, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			leaf, err := NewMinter(ca, time.Hour, nil).Leaf(tc.upstream)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.wantDNS, leaf.Leaf.DNSNames); diff != "" {
				t.Errorf("DNS names (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantIP, leaf.Leaf.IPAddresses); diff != "" {
				t.Errorf("IP addresses (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLeafCache(t *testing.T) {
	t.Parallel()
	ca, _ := newCA(t)
	is := newIssuer(t, "Public CA")
	up, _ := is.upstream(t)
	renewed, _ := is.upstream(t) // the same names, another certificate
	clk := &clock{now: time.Now()}
	m := NewMinter(ca, 10*time.Hour, clk.Now)

	first, err := m.Leaf(up)
	if err != nil {
		t.Fatal(err)
	}
	for _, sni := range []string{"", "ftp.example.com", "x.files.example.com"} {
		again, err := m.Leaf(up)
		if err != nil {
			t.Fatal(err)
		}
		if again != first {
			t.Errorf("Leaf(up, %q) minted a new leaf, want the cached one", sni)
		}
	}
	if got := m.mints.Load(); got != 1 {
		t.Errorf("%d mints after cache hits, want 1", got)
	}

	next, _ := m.Leaf(renewed)
	if next == first || m.mints.Load() != 2 {
		t.Errorf("another certificate: %d mints, want 2 distinct leaves", m.mints.Load())
	}

	// Refresh once less than a tenth of the validity (5m backdate + 10h,
	// so 60.5m) is left: after 8h59.5m.
	clk.Advance(8*time.Hour + 59*time.Minute)
	if again, _ := m.Leaf(up); again != first {
		t.Error("minted again with more than a tenth of the validity left")
	}
	clk.Advance(time.Minute)
	refreshed, err := m.Leaf(up)
	if err != nil {
		t.Fatal(err)
	}
	if refreshed == first || m.mints.Load() != 3 {
		t.Errorf("not refreshed with %v left (%d mints)", first.Leaf.NotAfter.Sub(clk.Now()), m.mints.Load())
	}
	if again, _ := m.Leaf(up); again != refreshed {
		t.Error("the refreshed leaf is not cached")
	}
}

// TestLeafTemplate mints from certificates without DER, as a caller makes
// them when there is no upstream certificate: each gets its own leaf.
func TestLeafTemplate(t *testing.T) {
	t.Parallel()
	ca, _ := newCA(t)
	m := NewMinter(ca, time.Hour, nil)
	notAfter := time.Now().Add(time.Hour)
	a := &x509.Certificate{Subject: pkix.Name{CommonName: "a.example.com"}, DNSNames: []string{"a.example.com"}, NotAfter: notAfter}
	b := &x509.Certificate{Subject: pkix.Name{CommonName: "b.example.com"}, DNSNames: []string{"b.example.com"}, NotAfter: notAfter}
	ip := &x509.Certificate{IPAddresses: []net.IP{upstreamIP4}, NotAfter: notAfter}
	la, err := m.Leaf(a)
	if err != nil {
		t.Fatal(err)
	}
	lb, _ := m.Leaf(b)
	lip, _ := m.Leaf(ip)
	if la == lb || la == lip || lb == lip {
		t.Fatal("templates with different names share a leaf")
	}
	if diff := cmp.Diff([]string{"b.example.com"}, lb.Leaf.DNSNames); diff != "" {
		t.Errorf("DNS names (-want +got):\n%s", diff)
	}
	again, _ := m.Leaf(&x509.Certificate{Subject: pkix.Name{CommonName: "a.example.com"}, DNSNames: []string{"a.example.com"}, NotAfter: notAfter})
	if again != la || m.mints.Load() != 3 {
		t.Errorf("an equal template was minted again (%d mints)", m.mints.Load())
	}
}

func TestLeafCacheEviction(t *testing.T) {
	t.Parallel()
	ca, _ := newCA(t)
	is := newIssuer(t, "Public CA")
	m := NewMinter(ca, time.Hour, nil)
	m.capacity = 2
	a, _ := is.upstream(t)
	b, _ := is.upstream(t)
	c, _ := is.upstream(t)
	la, _ := m.Leaf(a)
	m.Leaf(b)
	m.Leaf(a) // a is now the most recently used
	m.Leaf(c) // evicts b
	if got, _ := m.Leaf(a); got != la {
		t.Error("recently used leaf was evicted")
	}
	if m.mints.Load() != 3 {
		t.Fatalf("%d mints, want 3", m.mints.Load())
	}
	m.Leaf(b)
	if m.mints.Load() != 4 {
		t.Error("evicted leaf was not minted again")
	}
	if m.lru.Len() != 2 || len(m.entries) != 2 {
		t.Errorf("cache holds %d (%d), want 2", m.lru.Len(), len(m.entries))
	}
}

func TestLeafCappedByUpstream(t *testing.T) {
	t.Parallel()
	ca, _ := newCA(t)
	is := newIssuer(t, "Public CA")
	now := time.Now()
	soon := now.Add(2 * time.Hour).Truncate(time.Second)
	up, _ := is.issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "ftp.example.com"}, DNSNames: []string{"ftp.example.com"}, NotAfter: soon})
	m := NewMinter(ca, 24*time.Hour, func() time.Time { return now })
	leaf, err := m.Leaf(up)
	if err != nil {
		t.Fatal(err)
	}
	if !leaf.Leaf.NotAfter.Equal(soon) {
		t.Errorf("NotAfter %v, want the upstream's %v", leaf.Leaf.NotAfter, soon)
	}

	late := NewMinter(ca, 24*time.Hour, func() time.Time { return soon })
	_, err = late.Leaf(up)
	if err == nil || !strings.Contains(err.Error(), `upstream certificate "ftp.example.com" expired at `) {
		t.Errorf("expired upstream: error %v", err)
	}
	if late.mints.Load() != 0 || late.lru.Len() != 0 {
		t.Error("an expired upstream was minted or cached")
	}
	if _, err := late.Leaf(nil); err == nil {
		t.Error("Leaf(nil) succeeded")
	}
}

// TestLeafConcurrent runs Leaf from many goroutines (go test -race): each
// distinct upstream certificate is minted exactly once.
func TestLeafConcurrent(t *testing.T) {
	t.Parallel()
	ca, _ := newCA(t)
	is := newIssuer(t, "Public CA")
	ups := make([]*x509.Certificate, 8)
	for i := range ups {
		ups[i], _ = is.upstream(t)
	}
	m := NewMinter(ca, time.Hour, nil)
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			for i := range 4 * len(ups) {
				up := ups[(g+i)%len(ups)]
				leaf, err := m.Leaf(up)
				if err != nil {
					t.Error(err)
					return
				}
				if leaf.Leaf.Subject.CommonName != up.Subject.CommonName {
					t.Errorf("leaf for %q", leaf.Leaf.Subject.CommonName)
				}
			}
		})
	}
	wg.Wait()
	if got := m.mints.Load(); got != uint64(len(ups)) {
		t.Errorf("%d mints for %d upstream certificates", got, len(ups))
	}
}

func BenchmarkMint(b *testing.B) {
	ca, _ := newCA(b)
	up, _ := newIssuer(b, "Public CA").upstream(b)
	m := NewMinter(ca, 24*time.Hour, nil)
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.mint(up, now); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLeafCached(b *testing.B) {
	ca, _ := newCA(b)
	up, _ := newIssuer(b, "Public CA").upstream(b)
	m := NewMinter(ca, 24*time.Hour, nil)
	if _, err := m.Leaf(up); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := m.Leaf(up); err != nil {
				b.Error(err)
				return
			}
		}
	})
	if m.mints.Load() != 1 {
		b.Errorf("%d mints", m.mints.Load())
	}
}
