package main

import (
	"bytes"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ftpsalg/ftpsalg/alg/certs"
	"github.com/ftpsalg/ftpsalg/alg/policy"
)

// runCmd runs the ftpsalg command line with args and returns its exit
// status and output.
func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestCAInitAndShow(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "ca")

	code, out, errOut := runCmd(t, "ca", "init", "--dir", dir, "--cn", "Example Corp FTP CA")
	if code != 0 {
		t.Fatalf("ca init: exit %d, stderr %q", code, errOut)
	}
	for path, want := range map[string]fs.FileMode{
		dir:                                fs.ModeDir | 0o700,
		filepath.Join(dir, certs.CertFile): 0o644,
		filepath.Join(dir, certs.KeyFile):  0o600,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode(), want)
		}
	}
	cert, err := certs.ReadCertificate(filepath.Join(dir, certs.CertFile))
	if err != nil {
		t.Fatal(err)
	}
	fp := certs.Fingerprint(cert)
	for _, want := range []string{
		"certificate: " + filepath.Join(dir, certs.CertFile) + "\n",
		"SHA-256 fingerprint: " + fp + "\n",
		`created CA "Example Corp FTP CA"`,
		"next: add " + filepath.Join(dir, certs.CertFile) + " to the trust store",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("ca init output lacks %q:\n%s", want, out)
		}
	}

	code, out, errOut = runCmd(t, "ca", "show", "--dir", dir)
	if code != 0 {
		t.Fatalf("ca show: exit %d, stderr %q", code, errOut)
	}
	for _, want := range []string{"subject: CN=Example Corp FTP CA\n", "SHA-256 fingerprint: " + fp + "\n", "(mode 0600)", "status: ok\n", "days left)"} {
		if !strings.Contains(out, want) {
			t.Errorf("ca show output lacks %q:\n%s", want, out)
		}
	}

	// A second init refuses to overwrite the key.
	key, _ := os.ReadFile(filepath.Join(dir, certs.KeyFile))
	code, _, errOut = runCmd(t, "ca", "init", "--dir", dir)
	if code != 1 || !strings.Contains(errOut, "refusing to overwrite "+filepath.Join(dir, certs.KeyFile)) || !strings.Contains(errOut, "--force replaces it") {
		t.Errorf("second ca init: exit %d, stderr %q", code, errOut)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, certs.KeyFile)); !bytes.Equal(after, key) {
		t.Error("refused ca init changed the key")
	}
	code, out, errOut = runCmd(t, "ca", "init", "--dir", dir, "--force")
	if code != 0 || strings.Contains(out, fp) {
		t.Errorf("ca init --force: exit %d, stderr %q, same fingerprint %v", code, errOut, strings.Contains(out, fp))
	}

	// show refuses a key group can read, as the daemon would.
	if err := os.Chmod(filepath.Join(dir, certs.KeyFile), 0o640); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = runCmd(t, "ca", "show", "--dir", dir)
	wantErr := "ftpsalg ca show: the daemon would refuse this CA: " + filepath.Join(dir, certs.KeyFile) +
		" is readable by group or others (mode 0640): chmod 600 " + filepath.Join(dir, certs.KeyFile) + "\n"
	if code != 1 || errOut != wantErr || !strings.Contains(out, "(mode 0640)") {
		t.Errorf("ca show with key mode 0640: exit %d, stdout %q, stderr %q, want %q", code, out, errOut, wantErr)
	}
}

func TestCAErrors(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "none")
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args    []string
		code    int
		wantErr string // substring of stderr
	}{
		{[]string{"ca"}, 2, "usage: ftpsalg ca <command>"},
		{[]string{"ca", "renew"}, 2, `ftpsalg ca: unknown command "renew"`},
		{[]string{"ca", "init", "--bogus"}, 2, "flag provided but not defined: -bogus"},
		{[]string{"ca", "init", "--dir", missing, "extra"}, 2, `ftpsalg ca init: unexpected argument "extra"`},
		{[]string{"ca", "show", "--dir", missing}, 1, "ftpsalg ca show: failed to read certificate: open " + missing + "/ca.crt: no such file or directory"},
		{[]string{"ca", "init", "--dir", filepath.Join(notDir, "ca")}, 1, "ftpsalg ca init: failed to create CA directory: "},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Parallel()
			code, _, errOut := runCmd(t, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.wantErr) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, errOut, tc.code, tc.wantErr)
			}
		})
	}
	if code, out, _ := runCmd(t, "ca", "help"); code != 0 || !strings.Contains(out, "init [--dir DIR]") {
		t.Errorf("ca help: exit %d, %q", code, out)
	}
}

// constraintsPolicy is a policy with mitm servers (one named, one not, one
// with a static certificate), a published mitm server and an inspect
// server, its CA in caDir.
func constraintsPolicy(caDir string) string {
	return `mitm:
  ca_dir: ` + caDir + `
servers:
  - name: files
    mode: mitm
    addresses: [198.51.100.10, "2001:db8::10"]
    passive_ports: 40000-40999
    tls:
      server_name: Files.Example.com
  - name: partner
    mode: mitm
    addresses: [203.0.113.20]
    passive_ports: 41000-41999
  - name: published
    mode: mitm
    addresses: [198.51.100.30]
    public: [192.0.2.30]
    passive_ports: 42000-42999
    tls:
      server_name: ftp.example.net
  - name: owned
    mode: mitm
    addresses: [198.51.100.40]
    passive_ports: 43000-43999
    tls:
      verify: none
      certificate: /etc/ftpsalg/owned.crt
      key: /etc/ftpsalg/owned.key
  - name: plain
    mode: inspect
    addresses: [198.51.100.50]
    passive_ports: 44000-44999
`
}

func writePolicy(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ftpsalg.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCAInitConstrained(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "ca")
	code, out, errOut := runCmd(t, "ca", "init", "--dir", dir, "--permit-dns", "files.example.com,.Example.net",
		"--permit-ip", "198.51.100.0/24", "--permit-ip", "2001:db8::/32, 198.51.100.0/24")
	if code != 0 {
		t.Fatalf("ca init: exit %d, stderr %q", code, errOut)
	}
	want := "name constraints (critical):\n  permitted DNS: files.example.com, .example.net\n  permitted IP: 198.51.100.0/24, 2001:db8::/32\n"
	if !strings.Contains(out, want) {
		t.Errorf("ca init output lacks\n%s\n%s", want, out)
	}
	cert, err := certs.ReadCertificate(filepath.Join(dir, certs.CertFile))
	if err != nil {
		t.Fatal(err)
	}
	if nc := certs.ConstraintsOf(cert); !nc.Critical || len(nc.PermittedDNS) != 2 || len(nc.PermittedIPs) != 2 {
		t.Errorf("CA constraints %+v", nc)
	}
	code, out, errOut = runCmd(t, "ca", "show", "--dir", dir)
	if code != 0 || !strings.Contains(out, want) || !strings.Contains(out, "status: ok\n") {
		t.Errorf("ca show: exit %d, stderr %q, output lacks\n%s\n%s", code, errOut, want, out)
	}

	// One form only: the other is forbidden, and show says so.
	dnsOnly := filepath.Join(t.TempDir(), "ca")
	if code, _, errOut := runCmd(t, "ca", "init", "--dir", dnsOnly, "--permit-dns", "files.example.com"); code != 0 {
		t.Fatalf("ca init --permit-dns: exit %d, stderr %q", code, errOut)
	}
	_, out, _ = runCmd(t, "ca", "show", "--dir", dnsOnly)
	if want := "  permitted DNS: files.example.com\n  excluded IP: 0.0.0.0/0 (every address), ::/0 (every address)\n"; !strings.Contains(out, want) {
		t.Errorf("ca show of a DNS-only CA lacks\n%s\n%s", want, out)
	}

	// Unconstrained: show says so.
	plain := filepath.Join(t.TempDir(), "ca")
	_, out, _ = runCmd(t, "ca", "init", "--dir", plain)
	if want := "name constraints: none (unconstrained: it can sign for any name)\n"; !strings.Contains(out, want) {
		t.Errorf("ca init output lacks %q:\n%s", want, out)
	}
	_, out, _ = runCmd(t, "ca", "show", "--dir", plain)
	if want := "name constraints: none (unconstrained: it can sign for any name)\n"; !strings.Contains(out, want) {
		t.Errorf("ca show output lacks %q:\n%s", want, out)
	}

	for _, tc := range []struct {
		args    []string
		wantErr string
	}{
		{[]string{"--permit-dns", "*.example.com"}, `ftpsalg ca init: --permit-dns: DNS constraint "*.example.com" is a wildcard: write ".example.com"`},
		{[]string{"--permit-ip", "198.51.100.7/24"}, "ftpsalg ca init: --permit-ip: IP constraint \"198.51.100.7/24\" has host bits set: did you mean 198.51.100.0/24?"},
		{[]string{"--permit-ip", "files.example.com"}, "neither an address nor a prefix"},
		{[]string{"--force", "--reuse-key"}, "give one of them"},
	} {
		d := filepath.Join(t.TempDir(), "ca")
		code, _, errOut := runCmd(t, append([]string{"ca", "init", "--dir", d}, tc.args...)...)
		if code != 1 || !strings.Contains(errOut, tc.wantErr) {
			t.Errorf("ca init %v: exit %d, stderr %q; want exit 1 and %q", tc.args, code, errOut, tc.wantErr)
		}
		if _, err := os.Stat(filepath.Join(d, certs.KeyFile)); err == nil {
			t.Errorf("ca init %v wrote a key", tc.args)
		}
	}
}

func TestCAInitFromPolicy(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "ca")
	pol := writePolicy(t, constraintsPolicy(dir))
	// No --dir: the policy's mitm.ca_dir. --permit-dns adds to the policy's.
	code, out, errOut := runCmd(t, "ca", "init", "--from-policy", pol, "--permit-dns", "partner.example.org")
	if code != 0 {
		t.Fatalf("ca init --from-policy: exit %d, stderr %q", code, errOut)
	}
	want := "name constraints (critical):\n" +
		"  permitted DNS: partner.example.org, files.example.com, ftp.example.net\n" +
		"  permitted IP: 198.51.100.10/32, 2001:db8::10/128, 203.0.113.20/32, 198.51.100.30/32, 192.0.2.30/32\n"
	if !strings.Contains(out, want) || !strings.Contains(out, "certificate: "+filepath.Join(dir, certs.CertFile)+"\n") {
		t.Errorf("ca init --from-policy output lacks\n%s\nor the policy's ca_dir:\n%s", want, out)
	}
	wantNote := `ftpsalg ca init: note: server "partner" has no tls.server_name, so only its addresses are permitted for it;`
	if !strings.Contains(errOut, wantNote) || strings.Count(errOut, "note:") != 1 {
		t.Errorf("stderr %q; want one note, for partner", errOut)
	}
	// The CA so made serves the policy: check-config has nothing to say.
	code, out, errOut = runCmd(t, "check-config", "--skip-host-check", pol)
	if code != 0 || out != pol+": ok (5 servers)\n" || errOut != "" {
		t.Errorf("check-config: exit %d, stdout %q, stderr %q; want no warning", code, out, errOut)
	}

	// A policy without mitm servers gives nothing to permit.
	inspect := writePolicy(t, "servers:\n  - name: plain\n    mode: inspect\n    addresses: [198.51.100.50]\n")
	code, _, errOut = runCmd(t, "ca", "init", "--dir", filepath.Join(t.TempDir(), "ca"), "--from-policy", inspect)
	if code != 1 || !strings.Contains(errOut, "has no mitm server to take names and addresses from") {
		t.Errorf("ca init --from-policy without mitm servers: exit %d, stderr %q", code, errOut)
	}
	code, _, errOut = runCmd(t, "ca", "init", "--dir", filepath.Join(t.TempDir(), "ca"), "--from-policy", filepath.Join(t.TempDir(), "none.yaml"))
	if code != 1 || !strings.Contains(errOut, "failed to read policy") {
		t.Errorf("ca init --from-policy missing file: exit %d, stderr %q", code, errOut)
	}
}

// TestCAReuseKey: constraining a CA in use re-issues its certificate for
// the same key and subject.
func TestCAReuseKey(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "ca")
	if code, _, errOut := runCmd(t, "ca", "init", "--dir", dir, "--cn", "Example Corp FTP CA"); code != 0 {
		t.Fatalf("ca init: exit %d, stderr %q", code, errOut)
	}
	old, err := certs.ReadCertificate(filepath.Join(dir, certs.CertFile))
	if err != nil {
		t.Fatal(err)
	}
	key, _ := os.ReadFile(filepath.Join(dir, certs.KeyFile))

	code, out, errOut := runCmd(t, "ca", "init", "--dir", dir, "--reuse-key", "--permit-dns", ".example.com", "--permit-ip", "198.51.100.0/24")
	if code != 0 {
		t.Fatalf("ca init --reuse-key: exit %d, stderr %q", code, errOut)
	}
	for _, want := range []string{
		`re-issued, for the existing key, CA "Example Corp FTP CA"`,
		"replaces the certificate with SHA-256 fingerprint: " + certs.Fingerprint(old) + "\n",
		"  permitted DNS: .example.com\n",
		"next: replace the old ca.crt with ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("ca init --reuse-key output lacks %q:\n%s", want, out)
		}
	}
	if after, _ := os.ReadFile(filepath.Join(dir, certs.KeyFile)); !bytes.Equal(after, key) {
		t.Error("--reuse-key changed the key")
	}
	if fi, _ := os.Stat(filepath.Join(dir, certs.KeyFile)); fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v after --reuse-key", fi.Mode())
	}
	if code, out, _ := runCmd(t, "ca", "show", "--dir", dir); code != 0 || !strings.Contains(out, "subject: CN=Example Corp FTP CA\n") {
		t.Errorf("ca show after --reuse-key: exit %d\n%s", code, out)
	}
	code, _, errOut = runCmd(t, "ca", "init", "--dir", filepath.Join(t.TempDir(), "none"), "--reuse-key")
	if code != 1 || !strings.Contains(errOut, "failed to re-issue CA") {
		t.Errorf("--reuse-key without a CA: exit %d, stderr %q", code, errOut)
	}
	// The hint on an existing key mentions both ways on.
	_, _, errOut = runCmd(t, "ca", "init", "--dir", dir)
	if !strings.Contains(errOut, "--reuse-key re-issues the certificate for it") {
		t.Errorf("ca init on an existing CA: stderr %q", errOut)
	}
}

// TestCheckConfigConstraints: check-config warns (exit 0) about each mitm
// server name or address outside the CA's constraints, and notes a CA it
// cannot read.
func TestCheckConfigConstraints(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "ca")
	if code, _, errOut := runCmd(t, "ca", "init", "--dir", dir, "--permit-dns", "files.example.com", "--permit-ip", "198.51.100.0/24"); code != 0 {
		t.Fatalf("ca init: exit %d, stderr %q", code, errOut)
	}
	pol := writePolicy(t, constraintsPolicy(dir))
	code, out, errOut := runCmd(t, "check-config", "--skip-host-check", pol)
	want := pol + `: warning: server "files": address 2001:db8::10 is outside the operator CA's name constraints (permitted IP 198.51.100.0/24 only): clients would refuse a certificate minted for it` + "\n" +
		pol + `: warning: server "partner": address 203.0.113.20 is outside the operator CA's name constraints (permitted IP 198.51.100.0/24 only): clients would refuse a certificate minted for it` + "\n" +
		pol + `: warning: server "published": tls.server_name ftp.example.net is outside the operator CA's name constraints (permitted DNS files.example.com only): clients would refuse a certificate minted for it` + "\n" +
		pol + `: warning: server "published": public address 192.0.2.30 is outside the operator CA's name constraints (permitted IP 198.51.100.0/24 only): clients would refuse a certificate minted for it` + "\n"
	if code != 0 || out != pol+": ok (5 servers)\n" || errOut != want {
		t.Errorf("check-config: exit %d, stdout %q, stderr\n%s\nwant\n%s", code, out, errOut, want)
	}

	// A CA check-config cannot read is a note, not an error.
	missing := writePolicy(t, constraintsPolicy(filepath.Join(t.TempDir(), "none")))
	code, out, errOut = runCmd(t, "check-config", "--skip-host-check", missing)
	if code != 0 || out != missing+": ok (5 servers)\n" || !strings.HasPrefix(errOut, missing+": note: the operator CA was not checked against the mitm servers: failed to read certificate: ") {
		t.Errorf("check-config without the CA: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// No mitm server: the CA is not looked for.
	inspect := writePolicy(t, "servers:\n  - name: plain\n    mode: inspect\n    addresses: [198.51.100.50]\n")
	if code, _, errOut := runCmd(t, "check-config", "--skip-host-check", inspect); code != 0 || errOut != "" {
		t.Errorf("check-config inspect-only: exit %d, stderr %q", code, errOut)
	}
}

// TestLoadMITMWarnsOutsideConstraints: the daemon starts with a CA whose
// constraints leave out a server, and logs a warning naming the server,
// the name and the constraint.
func TestLoadMITMWarnsOutsideConstraints(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "ca")
	if code, _, errOut := runCmd(t, "ca", "init", "--dir", dir, "--permit-dns", "files.example.com", "--permit-ip", "198.51.100.0/24,2001:db8::/32,192.0.2.30"); code != 0 {
		t.Fatalf("ca init: exit %d, stderr %q", code, errOut)
	}
	cfg, err := policy.Parse("ftpsalg.yaml", []byte(constraintsPolicy(dir)))
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	// The static certificate files of "owned" do not exist (the server is
	// there for check-config and --from-policy, which skip it): drop it.
	cfg.Servers = slices.DeleteFunc(cfg.Servers, func(s policy.Server) bool { return s.Name == "owned" })
	if _, err := loadMITM(cfg, log); err != nil {
		t.Fatalf("loadMITM: %v", err)
	}
	got := logs.String()
	for _, want := range []string{
		`level=WARN msg="a mitm server's name or address is outside the operator CA's name constraints: clients would refuse a certificate minted for it" server_name=partner key=address name=203.0.113.20 constraint="permitted IP 198.51.100.0/24, 2001:db8::/32, 192.0.2.30/32 only"`,
		`server_name=published key=tls.server_name name=ftp.example.net constraint="permitted DNS files.example.com only"`,
		`msg="operator CA loaded"`,
		`name_constraints="permitted DNS: files.example.com; permitted IP: 198.51.100.0/24, 2001:db8::/32, 192.0.2.30/32"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("log lacks\n%s\n%s", want, got)
		}
	}
	if n := strings.Count(got, "outside the operator CA's name constraints"); n != 2 {
		t.Errorf("%d warnings, want 2:\n%s", n, got)
	}
}
