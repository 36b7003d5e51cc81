package certs

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ftpsalg/ftpsalg/alg/policy"
)

// TestServerConfigHandshake runs real handshakes between ServerConfig with
// a minted leaf and a client that trusts only the operator's CA.
func TestServerConfigHandshake(t *testing.T) {
	t.Parallel()
	ca, _ := newCA(t)
	up, _ := newIssuer(t, "Public CA").upstream(t)
	m := NewMinter(ca, time.Hour, nil)
	getCert := func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		return m.Leaf(up)
	}
	tests := []struct {
		name        string
		min         uint16
		clientMax   uint16
		serverName  string
		wantVersion uint16
	}{
		{"TLS 1.3 by name", tls.VersionTLS12, 0, "ftp.example.com", tls.VersionTLS13},
		{"TLS 1.2 by name", tls.VersionTLS12, tls.VersionTLS12, "ftp.example.com", tls.VersionTLS12},
		{"TLS 1.3 by wildcard name", tls.VersionTLS13, 0, "a.files.example.com", tls.VersionTLS13},
		{"by address, no SNI", tls.VersionTLS12, 0, "198.51.100.2", tls.VersionTLS13},
		{"by IPv6 address, TLS 1.2", tls.VersionTLS12, tls.VersionTLS12, "2001:db8::2", tls.VersionTLS12},
	}
	t.Run("group", func(t *testing.T) {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				client := &tls.Config{RootCAs: ca.Pool(), ServerName: tc.serverName, MaxVersion: tc.clientMax}
				st, cerr, serr := handshake(t, ServerConfig(getCert, tc.min), client)
				if cerr != nil || serr != nil {
					t.Fatalf("handshake: client %v, server %v", cerr, serr)
				}
				if st.Version != tc.wantVersion {
					t.Errorf("version %s, want %s", tls.VersionName(st.Version), tls.VersionName(tc.wantVersion))
				}
				if st.Version == tls.VersionTLS12 && !slices.Contains(tls12CipherSuites, st.CipherSuite) {
					t.Errorf("TLS 1.2 suite %s is not ECDHE+AEAD", tls.CipherSuiteName(st.CipherSuite))
				}
				if !st.PeerCertificates[0].Equal(mustLeaf(t, m, up)) {
					t.Error("the client did not get the cached minted leaf")
				}
			})
		}
	})
	if got := m.mints.Load(); got != 1 {
		t.Errorf("%d mints for one upstream certificate and covered names", got)
	}
}

func mustLeaf(t *testing.T, m *Minter, up *x509.Certificate) *x509.Certificate {
	t.Helper()
	l, err := m.Leaf(up)
	if err != nil {
		t.Fatal(err)
	}
	return l.Leaf
}

// TestServerConfigRefuses checks the client-facing policy: no TLS below
// 1.2 and no TLS 1.2 suite without ECDHE and AEAD.
func TestServerConfigRefuses(t *testing.T) {
	t.Parallel()
	ca, _ := newCA(t)
	up, _ := newIssuer(t, "Public CA").upstream(t)
	leaf, err := NewMinter(ca, time.Hour, nil).Leaf(up)
	if err != nil {
		t.Fatal(err)
	}
	getCert := func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return leaf, nil }
	const (
		badVersion = "tls: client offered only unsupported versions"
		badSuite   = "tls: no cipher suite supported by both client and server"
	)
	tests := []struct {
		name   string
		min    uint16
		client *tls.Config
		want   string // the server's error
	}{
		{"TLS 1.1", 0, &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}, badVersion},
		{"TLS 1.0 with a raised minimum", tls.VersionTLS10, &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10}, badVersion},
		{"TLS 1.2 CBC", tls.VersionTLS12, &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
		}}, badSuite},
		{"TLS 1.2 RSA key exchange", tls.VersionTLS12, &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{
			tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
		}}, badSuite},
		{"TLS 1.2 against a 1.3 minimum", tls.VersionTLS13, &tls.Config{MaxVersion: tls.VersionTLS12}, badVersion},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.client.RootCAs = ca.Pool()
			tc.client.ServerName = "ftp.example.com"
			_, cerr, serr := handshake(t, ServerConfig(getCert, tc.min), tc.client)
			if cerr == nil || serr == nil {
				t.Fatalf("handshake succeeded: client %v, server %v", cerr, serr)
			}
			if !strings.HasPrefix(serr.Error(), tc.want) {
				t.Errorf("server error %q, want %q", serr, tc.want)
			}
		})
	}
}

func TestServerConfigFields(t *testing.T) {
	t.Parallel()
	cfg := ServerConfig(nil, 0)
	if cfg.MinVersion != tls.VersionTLS12 || cfg.SessionTicketsDisabled {
		t.Errorf("min version %x, tickets disabled %v", cfg.MinVersion, cfg.SessionTicketsDisabled)
	}
	if diff := cmp.Diff([]tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256, tls.CurveP384}, cfg.CurvePreferences); diff != "" {
		t.Errorf("curves (-want +got):\n%s", diff)
	}
	for _, id := range cfg.CipherSuites {
		name := tls.CipherSuiteName(id)
		if !strings.HasPrefix(name, "TLS_ECDHE_") || !(strings.Contains(name, "_GCM_") || strings.Contains(name, "CHACHA20_POLY1305")) {
			t.Errorf("suite %s is not ECDHE with AEAD", name)
		}
	}
	if len(cfg.CipherSuites) != 6 {
		t.Errorf("%d suites, want 6", len(cfg.CipherSuites))
	}
}

// upstreamFixture is a real server's side: its certificate from a public CA
// (stand-in), and the files an operator would configure.
type upstreamFixture struct {
	is      *issuer
	cert    tls.Certificate
	caFile  string // the issuer's certificate, PEM
	badCA   string // an unrelated CA, PEM
	pin     []byte // SHA-256 of the server's SubjectPublicKeyInfo
	otherPK []byte // a pin of another key
}

func newUpstreamFixture(t *testing.T) *upstreamFixture {
	t.Helper()
	is := newIssuer(t, "Public CA")
	leaf, key := is.upstream(t)
	dir := t.TempDir()
	f := &upstreamFixture{is: is, cert: is.tlsCert(leaf, key)}
	f.caFile = filepath.Join(dir, "upstream-ca.pem")
	writePEM(t, f.caFile, "CERTIFICATE", is.cert.Raw, 0o644)
	f.badCA = filepath.Join(dir, "other-ca.pem")
	writePEM(t, f.badCA, "CERTIFICATE", newIssuer(t, "Other CA").cert.Raw, 0o644)
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	f.pin = sum[:]
	other := sha256.Sum256(is.cert.RawSubjectPublicKeyInfo)
	f.otherPK = other[:]
	return f
}

// server is a plain crypto/tls server, as a real FTPS server would be; it
// records the SNI it received.
func (f *upstreamFixture) server(maxVersion uint16, suites []uint16, sni *string) *tls.Config {
	return &tls.Config{
		MaxVersion:   maxVersion,
		CipherSuites: suites,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if sni != nil {
				*sni = hello.ServerName
			}
			return &f.cert, nil
		},
	}
}

func TestUpstreamConfig(t *testing.T) {
	t.Parallel()
	f := newUpstreamFixture(t)
	addr := netip.MustParseAddr("198.51.100.2")
	system := policy.ServerTLS{MinVersion: tls.VersionTLS12, Verify: policy.VerifySystem}
	withCA := func(file string) policy.ServerTLS {
		return policy.ServerTLS{MinVersion: tls.VersionTLS12, Verify: policy.VerifyCA, CAFile: file}
	}
	pins := func(p ...[]byte) policy.ServerTLS {
		return policy.ServerTLS{MinVersion: tls.VersionTLS12, Verify: policy.VerifyPin, PinSHA256: p}
	}
	named := system
	named.ServerName = "ftp.example.com"
	none := policy.ServerTLS{Verify: policy.VerifyNone}
	v13 := system
	v13.MinVersion = tls.VersionTLS13
	pinB64 := base64.StdEncoding.EncodeToString(f.pin)

	tests := []struct {
		name      string
		p         policy.ServerTLS
		sni       string
		ip        netip.Addr
		roots     *x509.CertPool
		serverMax uint16
		suites    []uint16
		wantErr   string // the client's error; "" for success
		untrusted bool   // the error is an *UntrustedError
	}{
		{name: "system roots by SNI", p: system, sni: "ftp.example.com", ip: addr, roots: f.is.pool()},
		{name: "system roots by wildcard", p: system, sni: "x.files.example.com", ip: addr, roots: f.is.pool()},
		{name: "system roots, wrong name", p: system, sni: "other.example.com", ip: addr, roots: f.is.pool(),
			wantErr: "upstream certificate for other.example.com is not trusted: x509: certificate is valid for ftp.example.com, *.files.example.com, not other.example.com", untrusted: true},
		{name: "system roots by address", p: system, ip: addr, roots: f.is.pool()},
		{name: "system roots by IPv4-mapped address", p: system, ip: netip.MustParseAddr("::ffff:198.51.100.2"), roots: f.is.pool()},
		{name: "system roots by IPv6 address", p: system, ip: netip.MustParseAddr("2001:db8::2"), roots: f.is.pool()},
		{name: "system roots, wrong address", p: system, ip: netip.MustParseAddr("198.51.100.3"), roots: f.is.pool(),
			wantErr: "upstream certificate for 198.51.100.3 is not trusted: x509: certificate is valid for 198.51.100.2, 2001:db8::2, not 198.51.100.3", untrusted: true},
		{name: "server_name when the client sent no SNI", p: named, ip: netip.MustParseAddr("198.51.100.3"), roots: f.is.pool()},
		{name: "the client's SNI before server_name", p: named, sni: "other.example.com", ip: addr, roots: f.is.pool(),
			wantErr: "upstream certificate for other.example.com is not trusted: x509: certificate is valid for", untrusted: true},
		{name: "real system roots do not know the test CA", p: system, sni: "ftp.example.com", ip: addr,
			wantErr: "upstream certificate for ftp.example.com is not trusted: x509: ", untrusted: true},
		{name: "ca file", p: withCA(f.caFile), sni: "ftp.example.com", ip: addr, roots: x509.NewCertPool()},
		{name: "ca file by address", p: withCA(f.caFile), ip: addr},
		{name: "ca file of another CA", p: withCA(f.badCA), sni: "ftp.example.com", ip: addr, roots: f.is.pool(),
			wantErr: "upstream certificate for ftp.example.com is not trusted: x509: certificate signed by unknown authority", untrusted: true},
		{name: "ca file, wrong name", p: withCA(f.caFile), sni: "other.example.com", ip: addr,
			wantErr: "upstream certificate for other.example.com is not trusted: x509: certificate is valid for", untrusted: true},
		{name: "pin", p: pins(f.otherPK, f.pin), sni: "other.example.com", ip: addr},
		{name: "pin by address", p: pins(f.pin), ip: netip.MustParseAddr("192.0.2.99")},
		{name: "wrong pin", p: pins(f.otherPK), sni: "ftp.example.com", ip: addr,
			wantErr: "upstream certificate for ftp.example.com is not trusted: its public key (pin_sha256 " + pinB64 + ") is not pinned", untrusted: true},
		{name: "none", p: none, sni: "other.example.com", ip: addr},
		{name: "TLS 1.3 minimum against a TLS 1.2 server", p: v13, sni: "ftp.example.com", ip: addr, roots: f.is.pool(), serverMax: tls.VersionTLS12,
			wantErr: "protocol version"},
		{name: "TLS 1.2 server", p: system, sni: "ftp.example.com", ip: addr, roots: f.is.pool(), serverMax: tls.VersionTLS12},
		{name: "TLS 1.2 server with CBC suites only", p: none, sni: "ftp.example.com", ip: addr, serverMax: tls.VersionTLS12,
			suites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}, wantErr: "handshake failure"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := UpstreamConfig(tc.p, tc.sni, tc.ip, tc.roots)
			if err != nil {
				t.Fatalf("UpstreamConfig: %v", err)
			}
			var gotSNI string
			_, cerr, _ := handshake(t, f.server(tc.serverMax, tc.suites, &gotSNI), cfg)
			if tc.wantErr == "" {
				if cerr != nil {
					t.Fatalf("handshake: %v", cerr)
				}
				wantSNI := tc.sni // the client's, else server_name, else none
				if wantSNI == "" {
					wantSNI = tc.p.ServerName
				}
				if gotSNI != wantSNI {
					t.Errorf("server received SNI %q, want %q", gotSNI, wantSNI)
				}
				return
			}
			if cerr == nil || !strings.Contains(cerr.Error(), tc.wantErr) {
				t.Fatalf("handshake error = %v, want it to contain %q", cerr, tc.wantErr)
			}
			var ue *UntrustedError
			if errors.As(cerr, &ue) != tc.untrusted {
				t.Errorf("error %v: *UntrustedError %v, want %v", cerr, !tc.untrusted, tc.untrusted)
			}
		})
	}
}

// TestUpstreamConfigPinIgnoresValidity: a pinned key is trusted even in a
// self-signed, expired certificate, as operators of old servers need.
func TestUpstreamConfigPinIgnoresValidity(t *testing.T) {
	t.Parallel()
	self := newIssuer(t, "old-ftp")
	old, key := self.issue(t, &x509.Certificate{
		Subject:   pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-48 * time.Hour),
		NotAfter:  time.Now().Add(-24 * time.Hour),
	})
	cert := tls.Certificate{Certificate: [][]byte{old.Raw}, PrivateKey: key}
	sum := sha256.Sum256(old.RawSubjectPublicKeyInfo)
	cfg, err := UpstreamConfig(policy.ServerTLS{Verify: policy.VerifyPin, PinSHA256: [][]byte{sum[:]}}, "", netip.MustParseAddr("198.51.100.2"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, cerr, serr := handshake(t, &tls.Config{Certificates: []tls.Certificate{cert}}, cfg); cerr != nil || serr != nil {
		t.Errorf("handshake: client %v, server %v", cerr, serr)
	}
}

// TestUpstreamConfigResumes checks that a session is resumed with the same
// config, and that verification still runs on resumption.
func TestUpstreamConfigResumes(t *testing.T) {
	t.Parallel()
	f := newUpstreamFixture(t)
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			t.Parallel()
			cfg, err := UpstreamConfig(policy.ServerTLS{MinVersion: tls.VersionTLS12, Verify: policy.VerifySystem}, "ftp.example.com", netip.Addr{}, f.is.pool())
			if err != nil {
				t.Fatal(err)
			}
			verified := 0
			verify := cfg.VerifyConnection
			cfg.VerifyConnection = func(cs tls.ConnectionState) error {
				verified++
				return verify(cs)
			}
			srv := f.server(version, nil, nil)
			for i, wantResumed := range []bool{false, true} {
				st, cerr, serr := handshake(t, srv, cfg)
				if cerr != nil || serr != nil {
					t.Fatalf("handshake %d: client %v, server %v", i, cerr, serr)
				}
				if st.DidResume != wantResumed {
					t.Errorf("handshake %d: resumed %v, want %v", i, st.DidResume, wantResumed)
				}
			}
			if verified != 2 {
				t.Errorf("verified %d times, want on both handshakes", verified)
			}
		})
	}
}

func TestUpstreamConfigFields(t *testing.T) {
	t.Parallel()
	cfg, err := UpstreamConfig(policy.ServerTLS{MinVersion: tls.VersionTLS13, Verify: policy.VerifyNone}, "", netip.MustParseAddr("2001:db8::2"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinVersion != tls.VersionTLS13 || cfg.Renegotiation != tls.RenegotiateNever || cfg.ClientSessionCache == nil || cfg.ServerName != "" {
		t.Errorf("min %x, renegotiation %v, session cache %v, server name %q", cfg.MinVersion, cfg.Renegotiation, cfg.ClientSessionCache, cfg.ServerName)
	}
	if cfg.VerifyConnection != nil {
		t.Error("verify none has a VerifyConnection")
	}
	if diff := cmp.Diff(tls12CipherSuites, cfg.CipherSuites); diff != "" {
		t.Errorf("suites (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(curvePreferences, cfg.CurvePreferences); diff != "" {
		t.Errorf("curves (-want +got):\n%s", diff)
	}
}

func TestUpstreamConfigErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddr("198.51.100.2")
	tests := []struct {
		name string
		p    policy.ServerTLS
		ip   netip.Addr
		want string
	}{
		{"missing ca_file", policy.ServerTLS{Verify: policy.VerifyCA, CAFile: filepath.Join(dir, "missing.pem")}, addr,
			"failed to read ca_file: open " + filepath.Join(dir, "missing.pem") + ": no such file or directory"},
		{"ca_file without certificates", policy.ServerTLS{Verify: policy.VerifyCA, CAFile: empty}, addr,
			"failed to load ca_file " + empty + ": no PEM certificates in it"},
		{"nothing to verify against", policy.ServerTLS{Verify: policy.VerifySystem}, netip.Addr{},
			"failed to configure upstream TLS: no server name and no server address to verify the certificate against"},
		{"pin without pins", policy.ServerTLS{Verify: policy.VerifyPin}, addr, "failed to configure upstream TLS: verify pin without pins"},
		{"unknown verify mode", policy.ServerTLS{}, addr, "failed to configure upstream TLS: unknown verify mode VerifyMode(0)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := UpstreamConfig(tc.p, "", tc.ip, nil)
			if err == nil || err.Error() != tc.want {
				t.Errorf("UpstreamConfig error = %v, want %s", err, tc.want)
			}
		})
	}
}

// TestUpstreamRemembersChains: one Upstream verifies a chain once for a
// target and then takes its word for it, on later sessions' handshakes
// (full or resumed), until the memo's time is up or the chain expires; a
// different target, or a chain that fails, is always verified.
func TestUpstreamRemembersChains(t *testing.T) {
	t.Parallel()
	f := newUpstreamFixture(t)
	now := time.Now()
	// A leaf that expires in 5 minutes, before the memo's 10.
	leaf, key := f.is.issue(t, &x509.Certificate{
		Subject:   pkix.Name{CommonName: "short.example.com"},
		DNSNames:  []string{"short.example.com"},
		NotBefore: now.Add(-time.Hour),
		NotAfter:  now.Add(5 * time.Minute),
	})
	short := f.is.tlsCert(leaf, key)
	u, err := NewUpstream(policy.ServerTLS{MinVersion: tls.VersionTLS12, Verify: policy.VerifySystem}, f.is.pool())
	if err != nil {
		t.Fatal(err)
	}
	clock := now
	u.Now = func() time.Time { return clock }
	srv := f.server(0, nil, nil)
	shortSrv := &tls.Config{Certificates: []tls.Certificate{short}}

	steps := []struct {
		name     string
		at       time.Duration // clock offset from now
		srv      *tls.Config
		sni      string
		wantErr  string
		verified int // u.verified after the step
	}{
		{name: "first session verifies", srv: srv, sni: "ftp.example.com", verified: 1},
		{name: "second session, same chain and name: remembered", at: time.Minute, srv: srv, sni: "ftp.example.com", verified: 1},
		{name: "another name is verified, and fails", at: time.Minute, srv: srv, sni: "other.example.com", wantErr: "not trusted", verified: 2},
		{name: "a name the chain proves, verified once", at: time.Minute, srv: srv, sni: "a.files.example.com", verified: 3},
		{name: "after the memo's time, verified again", at: 11 * time.Minute, srv: srv, sni: "ftp.example.com", verified: 4},
		{name: "short-lived chain verifies", srv: shortSrv, sni: "short.example.com", verified: 5},
		{name: "short-lived chain remembered while valid", at: 4 * time.Minute, srv: shortSrv, sni: "short.example.com", verified: 5},
		{name: "short-lived chain past NotAfter: verified again, expired", at: 6 * time.Minute, srv: shortSrv, sni: "short.example.com", wantErr: "expired", verified: 6},
	}
	for _, st := range steps {
		clock = now.Add(st.at)
		cfg, err := u.Config(st.sni, netip.Addr{})
		if err != nil {
			t.Fatal(err)
		}
		_, cerr, _ := handshake(t, st.srv, cfg)
		switch {
		case st.wantErr == "" && cerr != nil:
			t.Errorf("%s: handshake: %v", st.name, cerr)
		case st.wantErr != "" && (cerr == nil || !strings.Contains(cerr.Error(), st.wantErr)):
			t.Errorf("%s: handshake error %v, want %q", st.name, cerr, st.wantErr)
		}
		u.mu.Lock()
		got := u.verified
		u.mu.Unlock()
		if got != st.verified {
			t.Errorf("%s: %d chains verified, want %d", st.name, got, st.verified)
		}
	}
}

// TestUpstreamReadsCAFileOnce: the ca_file is read when the Upstream is
// made (a policy load), not on every session; a new Upstream (a reload)
// reads it again.
func TestUpstreamReadsCAFileOnce(t *testing.T) {
	t.Parallel()
	f := newUpstreamFixture(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	writePEM(t, caFile, "CERTIFICATE", f.is.cert.Raw, 0o644)
	p := policy.ServerTLS{MinVersion: tls.VersionTLS12, Verify: policy.VerifyCA, CAFile: caFile}
	u, err := NewUpstream(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(caFile); err != nil {
		t.Fatal(err)
	}
	cfg, err := u.Config("ftp.example.com", netip.Addr{})
	if err != nil {
		t.Fatalf("Config after the file went: %v", err)
	}
	if _, cerr, _ := handshake(t, f.server(0, nil, nil), cfg); cerr != nil {
		t.Errorf("handshake: %v", cerr)
	}
	if _, err := NewUpstream(p, nil); err == nil || !strings.Contains(err.Error(), "ca_file") {
		t.Errorf("NewUpstream without the file: %v, want a ca_file error", err)
	}
}
