package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// File names inside a CA directory.
const (
	// CertFile is the CA certificate (PEM), mode 0644: it is public and is
	// what clients are given to trust.
	CertFile = "ca.crt"
	// KeyFile is the CA private key (PKCS #8 PEM), mode 0600.
	KeyFile = "ca.key"
)

// Defaults of InitOptions.
const (
	// DefaultCommonName is the CA's subject common name. Clients show it in
	// certificate details, so it says what the CA is.
	DefaultCommonName = "ftpsalg operator CA"
	// DefaultCALifetime is ten years: distributing a CA to every client is
	// work, so it should rarely be repeated; docs/tls.md describes
	// rotating it earlier.
	DefaultCALifetime = 10 * 365 * 24 * time.Hour
)

// ErrExists is returned (wrapped) by InitCA when the directory already holds
// a CA key and InitOptions.Force is not set.
var ErrExists = errors.New("a CA key already exists")

// CA is the operator's certificate authority: the certificate clients trust
// and the key that signs the leaves ftpsalg shows them.
type CA struct {
	// Cert is the CA certificate.
	Cert *x509.Certificate
	// key signs leaves; it never leaves the package.
	key crypto.Signer
}

// InitOptions are the settings of a new CA. The zero value gives the
// defaults.
type InitOptions struct {
	// CommonName is the subject CN; DefaultCommonName when empty.
	CommonName string
	// Lifetime is how long the CA is valid; DefaultCALifetime when zero.
	Lifetime time.Duration
	// Force replaces an existing CA key. Clients that trust the old CA stop
	// trusting the leaves signed by the new one.
	Force bool
	// Permit restricts the CA to these DNS names and IP ranges with a
	// critical name constraints extension; the zero value leaves it
	// unconstrained.
	Permit Permitted
	// ReuseKey keeps the existing ca.key and re-issues only ca.crt: a new
	// self-signed certificate for the same key, with the existing subject
	// (unless CommonName is set), a new validity and Permit. This is how
	// an existing CA gains (or loses) constraints: leaves chain to either
	// certificate, and clients enforce the constraints once they trust the
	// new ca.crt instead of the old one. Not with Force.
	ReuseKey bool
}

// InitCA creates a CA in dir: an ECDSA P-256 key and a self-signed
// certificate that may sign leaf certificates only (path length 0). dir is
// created with mode 0700 when missing. ca.crt (0644) and ca.key (0600) are
// each written to a temporary file and renamed into place, so a crash never
// leaves a half-written file. An existing ca.key is never overwritten unless
// opts.Force is set: the error then wraps ErrExists and names the file.
// With opts.Permit the certificate carries critical name constraints (see
// Permitted); with opts.ReuseKey the existing key is kept (see
// InitOptions).
func InitCA(dir string, opts InitOptions) (*CA, error) {
	if err := opts.Permit.validate(); err != nil {
		return nil, fmt.Errorf("failed to create CA: %w", err)
	}
	if opts.ReuseKey {
		if opts.Force {
			return nil, errors.New("failed to create CA: reusing the key and forcing a new one contradict each other")
		}
		return reissueCA(dir, opts)
	}
	cn := opts.CommonName
	if cn == "" {
		cn = DefaultCommonName
	}
	lifetime := opts.Lifetime
	if lifetime == 0 {
		lifetime = DefaultCALifetime
	}
	if lifetime < 0 {
		return nil, fmt.Errorf("failed to create CA: negative lifetime %v", lifetime)
	}
	keyPath := filepath.Join(dir, KeyFile)
	if !opts.Force {
		// Checked early for a clear error before any work; the link below
		// closes the race with a concurrent init.
		if _, err := os.Lstat(keyPath); err == nil {
			return nil, existsError(keyPath)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("failed to create CA directory: %w", err)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("failed to generate CA key: %w", err)
	}
	der, cert, err := selfSign(key, &x509.Certificate{Subject: pkix.Name{CommonName: cn}}, lifetime, opts.Permit)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("failed to encode CA key: %w", err)
	}

	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := writeAtomic(keyPath, keyPEM, 0o600, opts.Force); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, existsError(keyPath)
		}
		return nil, fmt.Errorf("failed to write CA key: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := writeAtomic(filepath.Join(dir, CertFile), certPEM, 0o644, true); err != nil {
		if !opts.Force {
			// The key is ours and useless without its certificate: do not
			// leave it to block the next attempt.
			os.Remove(keyPath)
		}
		return nil, fmt.Errorf("failed to write CA certificate: %w", err)
	}
	return &CA{Cert: cert, key: key}, nil
}

// selfSign makes the CA certificate for key: the subject of subj (its raw
// encoding when it has one, so that a re-issued certificate keeps the
// exact name leaves were issued under), valid from an hour ago for
// lifetime, constrained to permit.
func selfSign(key crypto.Signer, subj *x509.Certificate, lifetime time.Duration, permit Permitted) ([]byte, *x509.Certificate, error) {
	skid, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	nc := permit.constraints()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      subj.Subject,
		RawSubject:   subj.RawSubject,
		// An hour back: clients whose clocks run a little slow accept a CA
		// made moments ago.
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// Leaves only: a stolen leaf key cannot sign further certificates,
		// and neither can an intermediate nobody made.
		MaxPathLen:     0,
		MaxPathLenZero: true,
		SubjectKeyId:   skid,
		// Critical (RFC 5280 section 4.2.1.10 says MUST): a client that
		// cannot enforce the constraints refuses the CA instead of
		// trusting it for every name.
		PermittedDNSDomainsCritical: nc.Critical,
		PermittedDNSDomains:         nc.PermittedDNS,
		ExcludedDNSDomains:          nc.ExcludedDNS,
		PermittedIPRanges:           ipNets(nc.PermittedIPs),
		ExcludedIPRanges:            ipNets(nc.ExcludedIPs),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to parse new CA certificate: %w", err)
	}
	return der, cert, nil
}

// reissueCA re-issues ca.crt in dir for the existing ca.key (InitOptions.ReuseKey).
func reissueCA(dir string, opts InitOptions) (*CA, error) {
	lifetime := opts.Lifetime
	if lifetime == 0 {
		lifetime = DefaultCALifetime
	}
	if lifetime < 0 {
		return nil, fmt.Errorf("failed to re-issue CA: negative lifetime %v", lifetime)
	}
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	if err := CheckKeyFile(keyPath); err != nil {
		return nil, fmt.Errorf("failed to re-issue CA: %w", err)
	}
	key, err := readKey(keyPath)
	if err != nil {
		return nil, fmt.Errorf("failed to re-issue CA: %w", err)
	}
	old, err := readCert(certPath)
	if err != nil {
		return nil, fmt.Errorf("failed to re-issue CA (the subject is taken from the existing certificate): %w", err)
	}
	if !publicKeyEqual(old.PublicKey, key.Public()) {
		return nil, fmt.Errorf("failed to re-issue CA: %s does not match %s: the key belongs to another certificate", keyPath, certPath)
	}
	subj := &x509.Certificate{Subject: old.Subject, RawSubject: old.RawSubject}
	if opts.CommonName != "" {
		subj = &x509.Certificate{Subject: pkix.Name{CommonName: opts.CommonName}}
	}
	der, cert, err := selfSign(key, subj, lifetime, opts.Permit)
	if err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := writeAtomic(certPath, certPEM, 0o644, true); err != nil {
		return nil, fmt.Errorf("failed to write CA certificate: %w", err)
	}
	return &CA{Cert: cert, key: key}, nil
}

func existsError(keyPath string) error {
	return fmt.Errorf("refusing to overwrite %s: %w (replacing it makes clients distrust every leaf until they trust the new ca.crt)", keyPath, ErrExists)
}

// LoadCA reads the CA in dir. It refuses a key file that group or others
// may access (a *KeyModeError), a key that does not match the certificate,
// a certificate that is not a CA, and a CA that is expired or not yet
// valid. The key may be PKCS #8, SEC 1 (EC) or PKCS #1 (RSA) PEM, so an
// operator may bring a CA made elsewhere.
func LoadCA(dir string) (*CA, error) {
	return loadCA(dir, time.Now())
}

func loadCA(dir string, now time.Time) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	if err := CheckKeyFile(keyPath); err != nil {
		return nil, err
	}
	key, err := readKey(keyPath)
	if err != nil {
		return nil, err
	}
	cert, err := readCert(certPath)
	if err != nil {
		return nil, err
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, fmt.Errorf("%s is not a CA certificate (basic constraints CA:TRUE missing)", certPath)
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("%s may not sign certificates (key usage lacks certificate signing)", certPath)
	}
	if !publicKeyEqual(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("%s does not match %s: the key belongs to another certificate", keyPath, certPath)
	}
	if err := checkValidity(certPath, cert, now); err != nil {
		return nil, err
	}
	return &CA{Cert: cert, key: key}, nil
}

// KeyModeError reports a private key file that group or others may access.
type KeyModeError struct {
	Path string
	Mode fs.FileMode
}

func (e *KeyModeError) Error() string {
	what := "readable"
	if e.Mode&0o044 == 0 {
		what = "accessible"
	}
	return fmt.Sprintf("%s is %s by group or others (mode %04o): chmod 600 %s", e.Path, what, uint32(e.Mode.Perm()), e.Path)
}

// CheckKeyFile checks that the private key file at path exists and that
// only its owner may access it (no group or other permission bits). A
// violation is a *KeyModeError. Ownership is not checked: the daemon runs
// as root, which may read any file.
func CheckKeyFile(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("failed to check key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return &KeyModeError{Path: path, Mode: fi.Mode().Perm()}
	}
	return nil
}

// Pool returns a pool holding only the CA certificate, as a client that
// trusts the CA has it.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Fingerprint returns the SHA-256 of cert's DER encoding as colon-separated
// upper-case hex, the form `openssl x509 -fingerprint -sha256` prints and
// certificate dialogs show.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	var b strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(h[i : i+2])
	}
	return b.String()
}

// ReadCertificate reads the first certificate of a PEM file, such as a CA
// directory's ca.crt.
func ReadCertificate(path string) (*x509.Certificate, error) {
	return readCert(path)
}

// readCert reads the first certificate of a PEM file.
func readCert(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read certificate: %w", err)
	}
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, fmt.Errorf("%s holds no PEM CERTIFICATE block", path)
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("failed to parse certificate in %s: %w", path, err)
		}
		return cert, nil
	}
}

// readKey reads a private key PEM file.
func readKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read key: %w", err)
	}
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, fmt.Errorf("%s holds no PEM private key block", path)
		}
		if _, encrypted := b.Headers["Proc-Type"]; encrypted || b.Type == "ENCRYPTED PRIVATE KEY" {
			return nil, fmt.Errorf("%s is encrypted: the daemon starts unattended, so the key must be stored unencrypted (mode 0600)", path)
		}
		var key any
		switch b.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		default:
			continue // e.g. "EC PARAMETERS" before the key
		}
		if err != nil {
			return nil, fmt.Errorf("failed to parse key in %s: %w", path, err)
		}
		switch k := key.(type) {
		case *ecdsa.PrivateKey, *rsa.PrivateKey, ed25519.PrivateKey:
			return k.(crypto.Signer), nil
		}
		return nil, fmt.Errorf("%s: unsupported key type %T", path, key)
	}
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// checkValidity refuses a certificate outside its validity period at now.
func checkValidity(path string, cert *x509.Certificate, now time.Time) error {
	const layout = time.RFC3339
	switch {
	case now.After(cert.NotAfter):
		return fmt.Errorf("%s expired at %s", path, cert.NotAfter.UTC().Format(layout))
	case now.Before(cert.NotBefore):
		return fmt.Errorf("%s is not valid before %s (is the clock right?)", path, cert.NotBefore.UTC().Format(layout))
	}
	return nil
}

// subjectKeyID is the leftmost 160 bits of the SHA-256 of the public key's
// subjectPublicKey bits (RFC 7093 section 2, method 1).
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("failed to encode public key: %w", err)
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, fmt.Errorf("failed to decode public key: %w", err)
	}
	sum := sha256.Sum256(spki.PublicKey.Bytes)
	return sum[:20], nil
}

// randomSerial returns a random positive 128-bit serial number (RFC 5280
// section 4.1.2.2 allows up to 20 octets; CA/Browser Forum practice is at
// least 64 random bits).
func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("failed to generate serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil // never zero
}

// writeAtomic writes data to path through a temporary file in the same
// directory, synced, then renamed (replace) or hard-linked (no replace, so
// an existing file is an fs.ErrExist error even under a race). The
// directory is synced so that the new name survives a crash.
func writeAtomic(path string, data []byte, perm fs.FileMode, replace bool) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if replace {
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
	} else {
		if err := os.Link(tmp, path); err != nil {
			return err
		}
		os.Remove(tmp)
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
