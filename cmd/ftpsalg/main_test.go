package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
)

func TestVersion(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"version", "--version", "-v"} {
		code, out, _ := runCmd(t, arg)
		want := fmt.Sprintf("ftpsalg %s\ncommit: %s\ngo: %s\nbuilt: %s\n", version, commit, runtime.Version(), buildDate)
		if code != 0 || out != want {
			t.Errorf("%s: exit %d, output %q", arg, code, out)
		}
	}
}

func TestUsage(t *testing.T) {
	t.Parallel()
	if code, _, errOut := runCmd(t); code != 2 || !strings.Contains(errOut, "usage: ftpsalg") {
		t.Errorf("no command: exit %d, stderr %q", code, errOut)
	}
	if code, _, errOut := runCmd(t, "frobnicate"); code != 2 || !strings.Contains(errOut, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: exit %d, stderr %q", code, errOut)
	}
	if code, out, _ := runCmd(t, "help"); code != 0 || !strings.Contains(out, "ca init|show") {
		t.Errorf("help: exit %d, output %q", code, out)
	}
}

func TestCheckConfig(t *testing.T) {
	t.Parallel()
	for name, servers := range map[string]int{"minimal.yaml": 1, "full.yaml": 3} {
		path := filepath.Join("..", "..", "examples", name)
		code, out, errOut := runCmd(t, "check-config", "--config", path)
		if want := fmt.Sprintf("%s: ok (%d servers)\n", path, servers); code != 0 || out != want {
			t.Errorf("check-config %s: exit %d, stdout %q, stderr %q; want %q", name, code, out, errOut, want)
		}
	}

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	policy := "servers:\n  - name: ftp\n    mode: bogus\n    addresses: [192.0.2.10]\n"
	if err := os.WriteFile(bad, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCmd(t, "check-config", "--config", bad)
	want := bad + `:3: servers[0].mode: "bogus" is not a mode; use inspect, mitm or opaque` + "\n"
	if code != 1 || out != "" || errOut != want {
		t.Errorf("check-config bad: exit %d, stdout %q, stderr %q; want %q", code, out, errOut, want)
	}

	// A NAT policy names gateway addresses this host does not have: refused
	// with the address named, unless told it is for another machine.
	nat := filepath.Join("..", "..", "examples", "nat.yaml")
	code, out, errOut = runCmd(t, "check-config", "--config", nat)
	if code != 1 || out != "" || !strings.Contains(errOut, `server "files": public address 192.0.2.1`) ||
		!strings.Contains(errOut, `clients "office": nat address 198.51.100.1`) || !strings.Contains(errOut, "--skip-host-check") {
		t.Errorf("check-config nat.yaml: exit %d, stdout %q, stderr %q; want the missing addresses named", code, out, errOut)
	}
	code, out, errOut = runCmd(t, "check-config", "--skip-host-check", "--config", nat)
	if want := nat + ": ok (2 servers)\n"; code != 0 || out != want {
		t.Errorf("check-config --skip-host-check nat.yaml: exit %d, stdout %q, stderr %q; want %q", code, out, errOut, want)
	}

	// A queue range is named in the summary.
	ranged := filepath.Join(t.TempDir(), "ranged.yaml")
	if err := os.WriteFile(ranged, []byte("queue: {number: 100-103}\n"+
		"servers:\n  - name: ftp\n    mode: inspect\n    addresses: [198.51.100.2]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = runCmd(t, "check-config", "--skip-host-check", "--config", ranged)
	if want := ranged + ": ok (1 servers, queues 100-103)\n"; code != 0 || out != want {
		t.Errorf("check-config ranged: exit %d, stdout %q, stderr %q; want %q", code, out, errOut, want)
	}

	code, _, errOut = runCmd(t, "check-config", "--config", filepath.Join(t.TempDir(), "missing.yaml"))
	if code != 1 || !strings.HasPrefix(errOut, "failed to read policy: ") {
		t.Errorf("check-config missing: exit %d, stderr %q", code, errOut)
	}
}

// TestSubcommandHelp: --help and -h exit 0 with the usage and a
// description on stdout.
func TestSubcommandHelp(t *testing.T) {
	t.Parallel()
	for _, sub := range [][]string{{"run"}, {"check-config"}, {"status"}, {"ca", "init"}, {"ca", "show"}} {
		for _, h := range []string{"--help", "-h"} {
			code, out, errOut := runCmd(t, append(sub, h)...)
			if code != 0 || !strings.HasPrefix(out, "usage: ftpsalg "+strings.Join(sub, " ")) || !strings.Contains(out, "flags:\n") || errOut != "" {
				t.Errorf("%v %s: exit %d, stdout %q, stderr %q", sub, h, code, out, errOut)
			}
		}
	}
}

// TestPositionalConfig: the one positional argument is the policy file;
// more, or one that contradicts --config, is an error, never ignored.
func TestPositionalConfig(t *testing.T) {
	t.Parallel()
	minimal := filepath.Join("..", "..", "examples", "minimal.yaml")
	full := filepath.Join("..", "..", "examples", "full.yaml")
	for _, tc := range []struct {
		args     []string
		code     int
		out, err string
	}{
		{[]string{"check-config", minimal}, 0, minimal + ": ok (1 servers)\n", ""},
		{[]string{"check-config", full, "--skip-host-check"}, 0, full + ": ok (3 servers)\n", ""},
		{[]string{"check-config", "--config", minimal, minimal}, 0, minimal + ": ok (1 servers)\n", ""},
		{[]string{"check-config", minimal, full}, 2, "", "one policy file at most"},
		{[]string{"check-config", "--config", minimal, full}, 2, "", "two policy files"},
		{[]string{"run", minimal, full}, 2, "", "one policy file at most"},
		{[]string{"ca", "show", "extra"}, 2, "", `unexpected argument "extra"`},
	} {
		code, out, errOut := runCmd(t, tc.args...)
		if code != tc.code || out != tc.out || !strings.Contains(errOut, tc.err) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr containing %q", tc.args, code, out, errOut, tc.code, tc.out, tc.err)
		}
	}
}

func TestStopAttrsHint(t *testing.T) {
	t.Parallel()
	perm := fmt.Errorf("nft: failed to probe: %w", syscall.EPERM)
	if a := stopAttrs(perm); len(a) != 4 || !strings.Contains(a[3].(string), "CAP_NET_ADMIN") {
		t.Errorf("EPERM: %v", a)
	}
	if a := stopAttrs(errors.New("other")); len(a) != 2 {
		t.Errorf("other error: %v", a)
	}
}
