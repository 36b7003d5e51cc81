package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestInitLoadRoundTrip(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "etc", "ca")
	before := time.Now()
	ca, err := InitCA(dir, InitOptions{})
	if err != nil {
		t.Fatalf("InitCA: %v", err)
	}

	modes := map[string]fs.FileMode{dir: fs.ModeDir | 0o700, filepath.Join(dir, CertFile): 0o644, filepath.Join(dir, KeyFile): 0o600}
	for path, want := range modes {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode(); got != want {
			t.Errorf("%s: mode %v, want %v", path, got, want)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Errorf("directory holds %d entries, want ca.crt and ca.key only (no temporary files)", len(entries))
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := pem.Decode(keyPEM); b == nil || b.Type != "PRIVATE KEY" {
		t.Errorf("ca.key is not a PKCS #8 PEM block: %q", keyPEM)
	}

	c := ca.Cert
	if c.Subject.CommonName != DefaultCommonName {
		t.Errorf("CN %q, want %q", c.Subject.CommonName, DefaultCommonName)
	}
	if !c.BasicConstraintsValid || !c.IsCA || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("basic constraints: valid %v, CA %v, max path %d zero %v", c.BasicConstraintsValid, c.IsCA, c.MaxPathLen, c.MaxPathLenZero)
	}
	if c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("key usage %v", c.KeyUsage)
	}
	if len(c.SubjectKeyId) != 20 {
		t.Errorf("subject key id %x, want 20 bytes", c.SubjectKeyId)
	}
	if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key %T, want ECDSA P-256", c.PublicKey)
	}
	if life := c.NotAfter.Sub(before); life < DefaultCALifetime-time.Minute || life > DefaultCALifetime+time.Minute {
		t.Errorf("lifetime %v, want %v", life, DefaultCALifetime)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("not self-signed: %v", err)
	}

	loaded, err := LoadCA(dir)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	if !loaded.Cert.Equal(ca.Cert) {
		t.Error("LoadCA returned another certificate")
	}
	if !publicKeyEqual(loaded.key.Public(), ca.key.Public()) {
		t.Error("LoadCA returned another key")
	}
}

func TestInitOptions(t *testing.T) {
	t.Parallel()
	ca, err := InitCA(t.TempDir(), InitOptions{CommonName: "Example Corp FTP gateway CA", Lifetime: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if ca.Cert.Subject.CommonName != "Example Corp FTP gateway CA" {
		t.Errorf("CN %q", ca.Cert.Subject.CommonName)
	}
	if d := time.Until(ca.Cert.NotAfter); d > 48*time.Hour || d < 47*time.Hour {
		t.Errorf("expires in %v, want 48h", d)
	}
	if _, err := InitCA(t.TempDir(), InitOptions{Lifetime: -time.Hour}); err == nil {
		t.Error("InitCA with a negative lifetime succeeded")
	}
}

func TestInitRefusesOverwrite(t *testing.T) {
	t.Parallel()
	ca, dir := newCA(t)
	keyPath := filepath.Join(dir, KeyFile)
	keyBefore, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}

	_, err = InitCA(dir, InitOptions{})
	if !errors.Is(err, ErrExists) {
		t.Fatalf("second InitCA error = %v, want ErrExists", err)
	}
	if !strings.Contains(err.Error(), "refusing to overwrite "+keyPath) {
		t.Errorf("error %q does not name %s", err, keyPath)
	}
	if after, _ := os.ReadFile(keyPath); !bytes.Equal(after, keyBefore) {
		t.Error("refused InitCA changed ca.key")
	}

	forced, err := InitCA(dir, InitOptions{Force: true})
	if err != nil {
		t.Fatalf("InitCA with Force: %v", err)
	}
	if forced.Cert.Equal(ca.Cert) {
		t.Error("Force did not make a new CA")
	}
	loaded, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(forced.Cert) {
		t.Error("the directory does not hold the forced CA")
	}
}

func TestLoadCAKeyMode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		mode fs.FileMode
		want string // error, "" for none
	}{
		{0o600, ""},
		{0o400, ""},
		{0o640, "ca.key is readable by group or others (mode 0640): chmod 600 "},
		{0o604, "ca.key is readable by group or others (mode 0604): chmod 600 "},
		{0o620, "ca.key is accessible by group or others (mode 0620): chmod 600 "},
		{0o601, "ca.key is accessible by group or others (mode 0601): chmod 600 "},
	}
	for _, tc := range tests {
		t.Run(tc.mode.String(), func(t *testing.T) {
			t.Parallel()
			_, dir := newCA(t)
			keyPath := filepath.Join(dir, KeyFile)
			if err := os.Chmod(keyPath, tc.mode); err != nil {
				t.Fatal(err)
			}
			_, err := LoadCA(dir)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("LoadCA: %v", err)
				}
				return
			}
			want := filepath.Join(dir, tc.want) + keyPath
			if err == nil || err.Error() != want {
				t.Fatalf("LoadCA error = %v, want %s", err, want)
			}
			var kme *KeyModeError
			if !errors.As(err, &kme) || kme.Mode != tc.mode || kme.Path != keyPath {
				t.Errorf("error %#v is not a *KeyModeError for %s %v", err, keyPath, tc.mode)
			}
		})
	}
}

func TestLoadCAErrors(t *testing.T) {
	t.Parallel()
	other := newIssuer(t, "Other CA")
	leaf, leafKey := other.upstream(t)
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		now   time.Time // zero: now
		want  string    // substring of the error; DIR is replaced
	}{
		{"missing directory", func(t *testing.T, dir string) { os.RemoveAll(dir) },
			time.Time{}, "failed to check key file: stat DIR/ca.key: no such file or directory"},
		{"missing certificate", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, CertFile)) },
			time.Time{}, "failed to read certificate: open DIR/ca.crt: no such file or directory"},
		{"key of another certificate", func(t *testing.T, dir string) {
			writePEM(t, filepath.Join(dir, CertFile), "CERTIFICATE", other.cert.Raw, 0o644)
		}, time.Time{}, "DIR/ca.key does not match DIR/ca.crt: the key belongs to another certificate"},
		{"not a CA", func(t *testing.T, dir string) {
			writePEM(t, filepath.Join(dir, CertFile), "CERTIFICATE", leaf.Raw, 0o644)
			writeKey(t, filepath.Join(dir, KeyFile), leafKey, 0o600)
		}, time.Time{}, "DIR/ca.crt is not a CA certificate (basic constraints CA:TRUE missing)"},
		{"expired", func(*testing.T, string) {}, time.Now().Add(11 * 365 * 24 * time.Hour), "DIR/ca.crt expired at "},
		{"not yet valid", func(*testing.T, string) {}, time.Now().Add(-2 * time.Hour), "DIR/ca.crt is not valid before "},
		{"garbage certificate", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, CertFile), []byte("hello"), 0o644)
		}, time.Time{}, "DIR/ca.crt holds no PEM CERTIFICATE block"},
		{"garbage key", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, KeyFile), []byte("hello"), 0o600)
		}, time.Time{}, "DIR/ca.key holds no PEM private key block"},
		{"encrypted key", func(t *testing.T, dir string) {
			writePEM(t, filepath.Join(dir, KeyFile), "ENCRYPTED PRIVATE KEY", []byte{1}, 0o600)
		}, time.Time{}, "DIR/ca.key is encrypted"},
		{"key is a directory", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, KeyFile))
			os.Mkdir(filepath.Join(dir, KeyFile), 0o700)
		}, time.Time{}, "DIR/ca.key is not a regular file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, dir := newCA(t)
			tc.setup(t, dir)
			now := tc.now
			if now.IsZero() {
				now = time.Now()
			}
			_, err := loadCA(dir, now)
			want := strings.ReplaceAll(tc.want, "DIR", dir)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("loadCA error = %v, want it to contain %q", err, want)
			}
		})
	}
}

// TestLoadCABroughtElsewhere loads CAs made with other tools: an RSA key in
// PKCS #1 form, and an EC key in SEC 1 form after EC PARAMETERS, as
// `openssl ecparam -genkey` writes it.
func TestLoadCABroughtElsewhere(t *testing.T) {
	t.Parallel()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey := newKey(t)
	ecDER, err := x509.MarshalECPrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	prime256v1 := []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}
	tests := []struct {
		name    string
		key     crypto.Signer
		keyPEM  []byte
		wantSig x509.SignatureAlgorithm
	}{
		{"rsa pkcs1", rsaKey,
			pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}),
			x509.SHA256WithRSA},
		{"ec sec1", ecKey,
			append(pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: prime256v1}),
				pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER})...),
			x509.ECDSAWithSHA256},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			tmpl := &x509.Certificate{
				SerialNumber:          mustSerial(t),
				Subject:               pkix.Name{CommonName: "Example Corp CA"},
				NotBefore:             time.Now().Add(-time.Hour),
				NotAfter:              time.Now().Add(time.Hour),
				KeyUsage:              x509.KeyUsageCertSign,
				BasicConstraintsValid: true,
				IsCA:                  true,
			}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, tc.key.Public(), tc.key)
			if err != nil {
				t.Fatal(err)
			}
			writePEM(t, filepath.Join(dir, CertFile), "CERTIFICATE", der, 0o644)
			if err := os.WriteFile(filepath.Join(dir, KeyFile), tc.keyPEM, 0o600); err != nil {
				t.Fatal(err)
			}
			ca, err := LoadCA(dir)
			if err != nil {
				t.Fatalf("LoadCA: %v", err)
			}
			up, _ := newIssuer(t, "Upstream CA").upstream(t)
			leaf, err := NewMinter(ca, time.Hour, nil).Leaf(up)
			if err != nil {
				t.Fatalf("Leaf: %v", err)
			}
			if got := leaf.Leaf.SignatureAlgorithm; got != tc.wantSig {
				t.Errorf("leaf signed with %v, want %v", got, tc.wantSig)
			}
			if err := leaf.Leaf.CheckSignatureFrom(ca.Cert); err != nil {
				t.Errorf("leaf not signed by the CA: %v", err)
			}
		})
	}
}

func TestFingerprint(t *testing.T) {
	t.Parallel()
	c := &x509.Certificate{Raw: []byte("abc")}
	// SHA-256("abc"), FIPS 180-2 appendix B.1.
	want := "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
	if diff := cmp.Diff(want, Fingerprint(c)); diff != "" {
		t.Errorf("Fingerprint (-want +got):\n%s", diff)
	}
}

func TestLoadStatic(t *testing.T) {
	t.Parallel()
	is := newIssuer(t, "Example Server CA")
	cert, key := is.upstream(t)
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "ftp.crt"), filepath.Join(dir, "ftp.key")
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: is.cert.Raw})...)
	if err := os.WriteFile(certPath, chain, 0o644); err != nil {
		t.Fatal(err)
	}
	writeKey(t, keyPath, key, 0o600)

	got, err := LoadStatic(certPath, keyPath)
	if err != nil {
		t.Fatalf("LoadStatic: %v", err)
	}
	if !got.Leaf.Equal(cert) || len(got.Certificate) != 2 {
		t.Errorf("LoadStatic: leaf %v, chain of %d", got.Leaf.Subject, len(got.Certificate))
	}

	if _, err := loadStatic(certPath, keyPath, cert.NotAfter.Add(time.Second)); err == nil || !strings.Contains(err.Error(), certPath+" expired at ") {
		t.Errorf("expired: error %v", err)
	}

	writeKey(t, keyPath, newKey(t), 0o600)
	if _, err := LoadStatic(certPath, keyPath); err == nil || !strings.Contains(err.Error(), "private key does not match public key") {
		t.Errorf("mismatched key: error %v", err)
	}

	if err := os.Chmod(keyPath, 0o644); err != nil {
		t.Fatal(err)
	}
	var kme *KeyModeError
	if _, err := LoadStatic(certPath, keyPath); !errors.As(err, &kme) {
		t.Errorf("key mode 0644: error %v, want *KeyModeError", err)
	}
}
