package main

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ftpsalg/ftpsalg/alg/certs"
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
