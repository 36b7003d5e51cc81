package certs

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// Only documentation names and addresses (RFC 2606, RFC 5737, RFC 3849).
var testPermit = Permitted{
	DNS: []string{"files.example.com", ".example.net"},
	IPs: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8::/32")},
}

var oidNameConstraints = asn1.ObjectIdentifier{2, 5, 29, 30}

// newConstrainedCA initialises a CA restricted to permit in a new
// temporary directory.
func newConstrainedCA(t testing.TB, permit Permitted) (*CA, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := InitCA(dir, InitOptions{Permit: permit})
	if err != nil {
		t.Fatalf("InitCA: %v", err)
	}
	return ca, dir
}

// signLeaf signs a server leaf for dns and ips with the CA's key directly,
// bypassing the Minter's constraint check: a stand-in for a leaf made with
// a stolen CA key. Like the Minter's, a leaf without DNS names has no
// common name (OpenSSL and GnuTLS would check it against the DNS
// constraints).
func signLeaf(t testing.TB, ca *CA, dns []string, ips []net.IP) *x509.Certificate {
	t.Helper()
	key := newKey(t)
	var subject pkix.Name
	if len(dns) > 0 {
		subject.CommonName = "leaf"
	}
	tmpl := &x509.Certificate{
		SerialNumber:          mustSerial(t),
		Subject:               subject,
		DNSNames:              dns,
		IPAddresses:           ips,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return mustParse(t, der)
}

func TestInitConstrained(t *testing.T) {
	t.Parallel()
	ca, dir := newConstrainedCA(t, testPermit)
	loaded, err := LoadCA(dir)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	var critical, found bool
	for _, e := range loaded.Cert.Extensions {
		if e.Id.Equal(oidNameConstraints) {
			found, critical = true, e.Critical
		}
	}
	if !found || !critical {
		t.Fatalf("name constraints extension: present %v, critical %v; want a critical one", found, critical)
	}
	want := NameConstraints{PermittedDNS: testPermit.DNS, PermittedIPs: testPermit.IPs, Critical: true}
	if diff := cmp.Diff(want, ConstraintsOf(loaded.Cert), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("constraints (-want +got):\n%s", diff)
	}
	wantLines := []string{"permitted DNS: files.example.com, .example.net", "permitted IP: 198.51.100.0/24, 2001:db8::/32"}
	if diff := cmp.Diff(wantLines, ConstraintsOf(ca.Cert).Describe()); diff != "" {
		t.Errorf("Describe (-want +got):\n%s", diff)
	}
	if nc := ConstraintsOf(newCAUnconstrained(t).Cert); !nc.IsZero() || nc.Describe() != nil {
		t.Errorf("unconstrained CA: %+v", nc)
	}
}

func newCAUnconstrained(t testing.TB) *CA {
	ca, _ := newCA(t)
	return ca
}

// TestInitConstrainedOneForm: constraining one name form forbids the
// other altogether.
func TestInitConstrainedOneForm(t *testing.T) {
	t.Parallel()
	dnsOnly, dnsDir := newConstrainedCA(t, Permitted{DNS: []string{"files.example.com"}})
	if diff := cmp.Diff([]string{"permitted DNS: files.example.com", "excluded IP: 0.0.0.0/0 (every address), ::/0 (every address)"},
		ConstraintsOf(dnsOnly.Cert).Describe()); diff != "" {
		t.Errorf("DNS only (-want +got):\n%s", diff)
	}
	ipOnly, ipDir := newConstrainedCA(t, Permitted{IPs: []netip.Prefix{netip.MustParsePrefix("198.51.100.2/32")}})
	if diff := cmp.Diff([]string{`excluded DNS: "" (every name)`, "permitted IP: 198.51.100.2/32"},
		ConstraintsOf(ipOnly.Cert).Describe()); diff != "" {
		t.Errorf("IP only (-want +got):\n%s", diff)
	}
	// What clients do with it: crypto/x509, OpenSSL and GnuTLS refuse
	// the other form.
	for _, tc := range []struct {
		name string
		ca   *CA
		dir  string
		dns  []string
		ips  []net.IP
		ok   bool
	}{
		{"DNS-only CA, leaf with an address", dnsOnly, dnsDir, []string{"files.example.com"}, []net.IP{upstreamIP4}, false},
		{"DNS-only CA, leaf for its name", dnsOnly, dnsDir, []string{"files.example.com"}, nil, true},
		{"IP-only CA, leaf with a name", ipOnly, ipDir, []string{"files.example.com"}, []net.IP{upstreamIP4}, false},
		{"IP-only CA, leaf for its address", ipOnly, ipDir, nil, []net.IP{upstreamIP4}, true},
	} {
		leaf := signLeaf(t, tc.ca, tc.dns, tc.ips)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: tc.ca.Pool()}); (err == nil) != tc.ok {
			t.Errorf("%s: crypto/x509: %v; want ok %v", tc.name, err, tc.ok)
		}
		externalVerify(t, filepath.Join(tc.dir, CertFile), tc.name, leaf, tc.ok)
	}
}

func TestParseConstraints(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in, want, err string
	}{
		{"files.example.com", "files.example.com", ""},
		{"Files.Example.COM", "files.example.com", ""},
		{".example.com", ".example.com", ""},
		{"*.example.com", "", `write ".example.com" for the names below example.com`},
		{"example.com.", "", "not a DNS name"},
		{"", "", "not a DNS name"},
		{".", "", "not a DNS name"},
		{"ex ample.com", "", "not a DNS name"},
		{"198.51.100.2", "", "is an IP address"},
	} {
		got, err := ParseDNSConstraint(tc.in)
		if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("ParseDNSConstraint(%q) = %q, %v; want %q, error containing %q", tc.in, got, err, tc.want, tc.err)
		}
	}
	for _, tc := range []struct {
		in, want, err string
	}{
		{"198.51.100.0/24", "198.51.100.0/24", ""},
		{"198.51.100.7", "198.51.100.7/32", ""},
		{"2001:db8::2", "2001:db8::2/128", ""},
		{"2001:db8::/32", "2001:db8::/32", ""},
		{"::ffff:198.51.100.7", "198.51.100.7/32", ""},
		{"198.51.100.7/24", "", "did you mean 198.51.100.0/24?"},
		{"::ffff:198.51.100.0/120", "", "IPv4-mapped"},
		{"files.example.com", "", "neither an address nor a prefix"},
		{"fe80::1%eth0", "", "zone"},
	} {
		got, err := ParseIPConstraint(tc.in)
		gs := ""
		if got.IsValid() {
			gs = got.String()
		}
		if gs != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("ParseIPConstraint(%q) = %q, %v; want %q, error containing %q", tc.in, gs, err, tc.want, tc.err)
		}
	}
	if _, err := InitCA(filepath.Join(t.TempDir(), "ca"), InitOptions{Permit: Permitted{DNS: []string{"*.example.com"}}}); err == nil {
		t.Error("InitCA accepted a wildcard constraint")
	}
	if _, err := InitCA(filepath.Join(t.TempDir(), "ca"), InitOptions{Permit: Permitted{IPs: []netip.Prefix{netip.MustParsePrefix("198.51.100.7/24")}}}); err == nil {
		t.Error("InitCA accepted an unmasked prefix")
	}
}

// constraintCases are names and addresses against testPermit: whether a
// client enforcing name constraints accepts a leaf for each.
var constraintCases = []struct {
	name string
	ok   bool
}{
	{"files.example.com", true},
	{"FILES.example.com", true},
	{"a.files.example.com", true},
	{"*.files.example.com", true},
	{"example.com", false},
	{"other.example.com", false},
	{"evilfiles.example.com", false},
	{"www.example.org", false},
	{"example.net", false}, // ".example.net": the names below only
	{"ftp.example.net", true},
	{"a.b.example.net", true},
	{"*.example.net", true},
	{"198.51.100.2", true},
	{"198.51.100.255", true},
	{"203.0.113.5", false},
	{"2001:db8::2", true},
	{"2001:db9::2", false},
	{"::ffff:198.51.100.2", true}, // crypto/x509 writes it as 198.51.100.2
	{"::ffff:203.0.113.5", false},
	{"::198.51.100.2", false}, // IPv4-compatible: an IPv6 address
}

// TestCheckAgreesWithX509: NameConstraints.CheckDNS and CheckIP decide as
// crypto/x509 does for a leaf signed with the CA's key.
func TestCheckAgreesWithX509(t *testing.T) {
	t.Parallel()
	ca, _ := newConstrainedCA(t, testPermit)
	nc := ConstraintsOf(ca.Cert)
	for _, tc := range constraintCases {
		var leaf *x509.Certificate
		var err error
		if a, perr := netip.ParseAddr(tc.name); perr == nil {
			err = nc.CheckIP(a)
			leaf = signLeaf(t, ca, nil, []net.IP{a.AsSlice()})
		} else {
			err = nc.CheckDNS(tc.name)
			leaf = signLeaf(t, ca, []string{tc.name}, nil)
		}
		if (err == nil) != tc.ok {
			t.Errorf("check %s: %v; want ok %v", tc.name, err, tc.ok)
		}
		if err != nil && (!errors.Is(err, ErrOutsideConstraints) || !strings.Contains(err.Error(), "permitted")) {
			t.Errorf("check %s: error %q does not match ErrOutsideConstraints or name the constraint", tc.name, err)
		}
		_, verr := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool()})
		if (verr == nil) != tc.ok {
			t.Errorf("crypto/x509 on a leaf for %s: %v; want ok %v", tc.name, verr, tc.ok)
		}
	}
}

// TestClientRefusesLeafOutsideConstraints: a leaf for a name outside the
// CA's constraints, signed with the CA's key (as by a thief; the Minter
// would refuse), is refused by clients: crypto/x509, a crypto/tls
// handshake, and OpenSSL and GnuTLS when they are installed. A leaf for a name inside
// is accepted by the same clients.
func TestClientRefusesLeafOutsideConstraints(t *testing.T) {
	t.Parallel()
	ca, dir := newConstrainedCA(t, testPermit)
	outside := signLeaf(t, ca, []string{"www.example.org"}, nil)
	outsideIP := signLeaf(t, ca, nil, []net.IP{net.ParseIP("203.0.113.5").To4()})
	inside := signLeaf(t, ca, []string{"files.example.com"}, []net.IP{upstreamIP4, upstreamIP6})

	if _, err := outside.Verify(x509.VerifyOptions{DNSName: "www.example.org", Roots: ca.Pool()}); err == nil ||
		!strings.Contains(err.Error(), "not permitted") {
		t.Errorf("crypto/x509 on a leaf for www.example.org: %v; want a name constraint error", err)
	}
	if _, err := outsideIP.Verify(x509.VerifyOptions{DNSName: "203.0.113.5", Roots: ca.Pool()}); err == nil ||
		!strings.Contains(err.Error(), "not permitted") {
		t.Errorf("crypto/x509 on a leaf for 203.0.113.5: %v; want a name constraint error", err)
	}
	for _, name := range []string{"files.example.com", "198.51.100.2", "2001:db8::2"} {
		if _, err := inside.Verify(x509.VerifyOptions{DNSName: name, Roots: ca.Pool()}); err != nil {
			t.Errorf("crypto/x509 on a leaf for %s: %v", name, err)
		}
	}

	// A TLS handshake: the client trusting the CA aborts.
	leafKey := newKey(t)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: mustSerial(t), Subject: pkix.Name{CommonName: "www.example.org"}, DNSNames: []string{"www.example.org"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca.Cert, leafKey.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	server := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der, ca.Cert.Raw}, PrivateKey: leafKey}}}
	client := &tls.Config{RootCAs: ca.Pool(), ServerName: "www.example.org"}
	if _, cerr, _ := handshake(t, server, client); cerr == nil || !strings.Contains(cerr.Error(), "not permitted") {
		t.Errorf("TLS client shown a leaf outside the constraints: %v; want a name constraint error", cerr)
	}

	// OpenSSL and GnuTLS (curl and lftp verify with one or the other).
	for _, tc := range []struct {
		name string
		leaf *x509.Certificate
		ok   bool
	}{{"outside-dns", outside, false}, {"outside-ip", outsideIP, false}, {"inside", inside, true}} {
		externalVerify(t, filepath.Join(dir, CertFile), tc.name, tc.leaf, tc.ok)
	}
}

// externalVerify checks that `openssl verify` (OpenSSL: curl, Python) and,
// when installed, `certtool --verify` (GnuTLS: lftp and curl-gnutls on
// Debian) accept leaf under the CA in caFile exactly when ok, refusing it
// for a name constraint. A tool that is missing is logged loudly and not
// checked.
func externalVerify(t *testing.T, caFile, name string, leaf *x509.Certificate, ok bool) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "leaf.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tool := range []struct {
		bin     string
		args    []string
		refusal string // in the output of a refusal for a name constraint
	}{
		{"openssl", []string{"verify", "-purpose", "sslserver", "-CAfile", caFile, path}, "subtree violation"},
		{"certtool", []string{"--verify", "--load-ca-certificate", caFile, "--infile", path}, "violates the signer's constraints"},
	} {
		bin, err := exec.LookPath(tool.bin)
		if err != nil {
			t.Logf("SKIPPED the %s sub-check for %s: no %s binary in PATH (crypto/x509 was checked)", tool.bin, name, tool.bin)
			continue
		}
		out, err := exec.Command(bin, tool.args...).CombinedOutput()
		switch {
		case ok && err != nil:
			t.Errorf("%s refused %s, inside the constraints: %v\n%s", tool.bin, name, err, out)
		case !ok && (err == nil || !strings.Contains(string(out), tool.refusal)):
			t.Errorf("%s on %s: %v\n%s\nwant a refusal for the name constraints (%q)", tool.bin, name, err, out, tool.refusal)
		}
	}
}

// TestMinterRefusesOutsideConstraints: the Minter mints no leaf with a name
// its CA may not sign for, and says which.
func TestMinterRefusesOutsideConstraints(t *testing.T) {
	t.Parallel()
	ca, dir := newConstrainedCA(t, testPermit)
	is := newIssuer(t, "Public CA")
	m := NewMinter(ca, 24*time.Hour, nil)

	// Inside: ftp.example.net, *.files.example.com and both addresses.
	good, _ := is.issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "ftp.example.net"},
		DNSNames: []string{"ftp.example.net", "*.files.example.com"}, IPAddresses: []net.IP{upstreamIP4, upstreamIP6}})
	leaf, err := m.Leaf(good)
	if err != nil {
		t.Fatalf("Leaf inside the constraints: %v", err)
	}
	if _, err := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: "a.files.example.com", Roots: ca.Pool()}); err != nil {
		t.Errorf("minted leaf does not verify: %v", err)
	}

	// The usual upstream certificate names ftp.example.com: outside.
	bad, _ := is.upstream(t)
	_, err = m.Leaf(bad)
	if !errors.Is(err, ErrOutsideConstraints) {
		t.Fatalf("Leaf outside the constraints: %v; want ErrOutsideConstraints", err)
	}
	var ce *ConstraintError
	if !errors.As(err, &ce) || ce.Name != "ftp.example.com" {
		t.Errorf("error %v: want a *ConstraintError for ftp.example.com first", err)
	}
	want := `refusing to mint leaf for "ftp.example.com": DNS name ftp.example.com is outside the CA's name constraints (permitted DNS files.example.com, .example.net only)`
	if !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), "files.example.com is outside") {
		t.Errorf("error\n%q\nwant prefix\n%q\nand *.files.example.com not named", err, want)
	}

	// An address outside.
	ipBad, _ := is.issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "ftp.example.net"},
		DNSNames: []string{"ftp.example.net"}, IPAddresses: []net.IP{net.ParseIP("203.0.113.5").To4()}})
	if _, err := m.Leaf(ipBad); !errors.Is(err, ErrOutsideConstraints) || !strings.Contains(err.Error(), "IP address 203.0.113.5") {
		t.Errorf("Leaf with 203.0.113.5: %v; want it refused by address", err)
	}
	// Only an address: the leaf has no common name, which OpenSSL and
	// GnuTLS would check against the DNS constraints.
	for _, cn := range []string{"www.example.org", "198.51.100.2", "FTP server"} {
		up, _ := is.issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: cn}, IPAddresses: []net.IP{upstreamIP4}})
		leaf, err := m.Leaf(up)
		if err != nil {
			t.Errorf("Leaf for an address, common name %q: %v", cn, err)
			continue
		}
		if leaf.Leaf.Subject.String() != "" {
			t.Errorf("leaf for an address has subject %q; want none", leaf.Leaf.Subject)
		}
		if _, err := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: "198.51.100.2", Roots: ca.Pool()}); err != nil {
			t.Errorf("leaf for an address, upstream common name %q: %v", cn, err)
		}
		externalVerify(t, filepath.Join(dir, CertFile), "leaf for an address, upstream common name "+cn, leaf.Leaf, true)
	}
	if n := m.mints.Load(); n != 4 {
		t.Errorf("%d leaves minted, want 4 (refusals mint nothing)", n)
	}
}

// TestReissueWithConstraints: ca init --reuse-key re-issues the CA
// certificate for the same key and subject with constraints; leaves minted
// before still verify under it, and the key file is untouched.
func TestReissueWithConstraints(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "ca")
	old, err := InitCA(dir, InitOptions{CommonName: "Example Corp FTP CA"})
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(dir, KeyFile)
	keyBefore, _ := os.ReadFile(keyPath)
	is := newIssuer(t, "Public CA")
	up, _ := is.issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "files.example.com"}, DNSNames: []string{"files.example.com"}})
	oldLeaf, err := NewMinter(old, time.Hour, nil).Leaf(up)
	if err != nil {
		t.Fatal(err)
	}

	ca, err := InitCA(dir, InitOptions{ReuseKey: true, Permit: testPermit})
	if err != nil {
		t.Fatalf("InitCA --reuse-key: %v", err)
	}
	if keyAfter, _ := os.ReadFile(keyPath); !bytes.Equal(keyBefore, keyAfter) {
		t.Error("re-issuing changed the key")
	}
	if fi, err := os.Stat(keyPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode after re-issuing: %v, %v", fi.Mode(), err)
	}
	loaded, err := LoadCA(dir)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	if !bytes.Equal(loaded.Cert.RawSubject, old.Cert.RawSubject) || !bytes.Equal(loaded.Cert.SubjectKeyId, old.Cert.SubjectKeyId) {
		t.Errorf("subject %s, key id %x; want the old %s, %x", loaded.Cert.Subject, loaded.Cert.SubjectKeyId, old.Cert.Subject, old.Cert.SubjectKeyId)
	}
	if bytes.Equal(loaded.Cert.Raw, old.Cert.Raw) || ConstraintsOf(loaded.Cert).IsZero() {
		t.Error("the certificate was not re-issued with constraints")
	}
	if _, err := oldLeaf.Leaf.Verify(x509.VerifyOptions{DNSName: "files.example.com", Roots: ca.Pool()}); err != nil {
		t.Errorf("a leaf minted before does not verify under the re-issued CA: %v", err)
	}
	// The new constraints bind the old key: a leaf outside is refused
	// under the new certificate though it verifies under the old one.
	outside := signLeaf(t, ca, []string{"www.example.org"}, nil)
	if _, err := outside.Verify(x509.VerifyOptions{Roots: ca.Pool()}); err == nil {
		t.Error("leaf outside verifies under the re-issued CA")
	}
	if _, err := outside.Verify(x509.VerifyOptions{Roots: old.Pool()}); err != nil {
		t.Errorf("leaf outside does not verify under the old CA (the reason clients must replace it): %v", err)
	}

	// A new common name when asked; constraints removed when not given.
	ca, err = InitCA(dir, InitOptions{ReuseKey: true, CommonName: "Example Corp FTP CA 2"})
	if err != nil || ca.Cert.Subject.CommonName != "Example Corp FTP CA 2" || !ConstraintsOf(ca.Cert).IsZero() {
		t.Errorf("re-issue with a new name: %v, %v", err, ca.Cert.Subject)
	}

	// Refusals.
	if _, err := InitCA(dir, InitOptions{ReuseKey: true, Force: true}); err == nil {
		t.Error("ReuseKey with Force accepted")
	}
	if _, err := InitCA(filepath.Join(t.TempDir(), "none"), InitOptions{ReuseKey: true}); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("ReuseKey without a key: %v", err)
	}
	other, _ := newCA(t)
	if err := os.WriteFile(filepath.Join(dir, CertFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other.Cert.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := InitCA(dir, InitOptions{ReuseKey: true}); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("ReuseKey with another CA's certificate: %v", err)
	}
	if err := os.Chmod(keyPath, 0o644); err != nil {
		t.Fatal(err)
	}
	var kme *KeyModeError
	if _, err := InitCA(dir, InitOptions{ReuseKey: true}); !errors.As(err, &kme) {
		t.Errorf("ReuseKey with a world-readable key: %v; want a *KeyModeError", err)
	}
}
