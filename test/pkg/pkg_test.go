package pkg

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/test/ftpc"
	"github.com/ftpsalg/ftpsalg/test/harness"
	"github.com/ftpsalg/ftpsalg/test/lab"
)

// DebEnv names the package to test; by default the newest bin/*.deb.
const DebEnv = "FTPSALG_DEB"

// maxExposure is the highest `systemd-analyze security` exposure the
// shipped unit may have.
const maxExposure = 2.5

const (
	installedBin  = "/usr/sbin/ftpsalg"
	installedUnit = "/usr/lib/systemd/system/ftpsalg.service"
	conffile      = "/etc/ftpsalg/ftpsalg.yaml"
)

func debPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(DebEnv); p != "" {
		return p
	}
	ms, _ := filepath.Glob("../../bin/ftpsalg_*.deb")
	if len(ms) == 0 {
		t.Fatalf("no package: run `make deb` first (or set %s)", DebEnv)
	}
	slices.SortFunc(ms, func(a, b string) int {
		fa, _ := os.Stat(a)
		fb, _ := os.Stat(b)
		return fb.ModTime().Compare(fa.ModTime())
	})
	return ms[0]
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestPackage installs the package, checks and runs what it installed, and
// purges it.
func TestPackage(t *testing.T) {
	lab.RequirePrivileged(t)
	deb := debPath(t)
	if fi, err := os.Stat(deb); err == nil {
		t.Logf("package %s: %d bytes", deb, fi.Size())
	}

	// Contents and metadata, before installing anything.
	contents := run(t, "dpkg-deb", "-c", deb)
	for _, want := range []string{
		"./usr/sbin/ftpsalg", "./usr/lib/systemd/system/ftpsalg.service", "./etc/ftpsalg/ftpsalg.yaml",
		"./usr/share/man/man8/ftpsalg.8.gz", "./usr/share/man/man5/ftpsalg.yaml.5.gz",
		"./usr/share/doc/ftpsalg/copyright", "./usr/share/doc/ftpsalg/changelog.gz", "./usr/share/doc/ftpsalg/metrics.md",
	} {
		if !regexp.MustCompile(`(?m) ` + regexp.QuoteMeta(want) + `$`).MatchString(contents) {
			t.Errorf("package lacks %s:\n%s", want, contents)
		}
	}
	if !regexp.MustCompile(`(?m)^-rwxr-xr-x root/root .* \./usr/sbin/ftpsalg$`).MatchString(contents) {
		t.Errorf("/usr/sbin/ftpsalg is not root's and 0755:\n%s", contents)
	}
	info := run(t, "dpkg-deb", "-I", deb)
	for _, want := range []string{"Package: ftpsalg", "Architecture: amd64", "Depends: nftables", "postinst", "prerm", "postrm"} {
		if !strings.Contains(info, want) {
			t.Errorf("dpkg-deb -I lacks %q:\n%s", want, info)
		}
	}
	if conf := run(t, "dpkg-deb", "-f", deb, "Version"); !regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+`).MatchString(conf) {
		t.Errorf("version %q", conf)
	}
	ctl := t.TempDir()
	run(t, "dpkg-deb", "-e", deb, ctl)
	if b, err := os.ReadFile(filepath.Join(ctl, "conffiles")); err != nil || strings.TrimSpace(string(b)) != conffile {
		t.Errorf("conffiles %q (%v), want %s", b, err, conffile)
	}

	// Install, refusing to touch an ftpsalg someone else installed.
	if out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", "ftpsalg").Output(); err == nil && strings.Contains(string(out), "installed") {
		t.Fatalf("ftpsalg is already installed on this machine (%s); not touching it", out)
	}
	t.Cleanup(func() {
		out, err := exec.Command("dpkg", "--purge", "ftpsalg").CombinedOutput()
		if err != nil {
			t.Errorf("dpkg --purge: %v\n%s", err, out)
		}
		for _, p := range []string{installedBin, installedUnit, conffile, "/etc/systemd/system/multi-user.target.wants/ftpsalg.service"} {
			if _, err := os.Lstat(p); !os.IsNotExist(err) {
				t.Errorf("%s left after purge (%v)", p, err)
			}
		}
	})
	out := run(t, "dpkg", "-i", deb)
	if !strings.Contains(out, "edit /etc/ftpsalg/ftpsalg.yaml") {
		t.Errorf("postinst did not tell the operator what to do next:\n%s", out)
	}
	// Enabled (the symlink deb-systemd-helper makes), not started: nothing
	// of ftpsalg runs or exists in the kernel after installation.
	if _, err := os.Lstat("/etc/systemd/system/multi-user.target.wants/ftpsalg.service"); err != nil {
		t.Errorf("unit not enabled: %v", err)
	}

	ver := run(t, installedBin, "version")
	if !regexp.MustCompile(`^ftpsalg [0-9]+\.[0-9]+\.[0-9]+\S*\ncommit: [0-9a-f]{7,}\ngo: go1\.\S+\nbuilt: \d{4}-\d\d-\d\dT`).MatchString(ver) {
		t.Errorf("installed version output:\n%s", ver)
	}
	if out := run(t, installedBin, "check-config", conffile); out != conffile+": ok (1 servers)\n" {
		t.Errorf("check-config on the shipped conffile: %q", out)
	}
	if fi, err := os.Stat(conffile); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("conffile mode %v (%v)", fi.Mode(), err)
	}
	if out, err := exec.Command("file", installedBin).Output(); err == nil && !strings.Contains(string(out), "statically linked") {
		t.Errorf("installed binary is not static: %s", out)
	}

	// The shipped unit.
	run(t, "systemd-analyze", "verify", "--man=no", installedUnit)
	sec, _ := exec.Command("systemd-analyze", "security", "--offline=yes", installedUnit).CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for ftpsalg\.service: ([0-9.]+)`).FindSubmatch(sec)
	if m == nil {
		t.Fatalf("systemd-analyze security:\n%s", sec)
	}
	score, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("systemd-analyze security exposure: %.1f", score)
	if score > maxExposure {
		t.Errorf("exposure %.1f > %.1f:\n%s", score, maxExposure, sec)
	}

	// The installed binary in the lab: a passive download through it, and
	// the session in `ftpsalg status`.
	t.Run("lab", func(t *testing.T) {
		l := lab.New(t, lab.Options{})
		l.InstallGatewayFirewall(harness.CtMark)
		v := l.StartVsftpd(lab.VsftpdOptions{})
		want, err := v.CreateFile("down.bin", 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		d := harness.Start(t, l, installedBin, harness.Policy([]int{21}, "", ""))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := harness.Client(ctx, l, netip.AddrPortFrom(lab.ServerAddr4, 21), v.User, v.Password)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		sum, _, err := c.Retrieve(ctx, ftpc.PASV, "down.bin")
		if err != nil || sum != want {
			t.Fatalf("download through the installed binary: sha256 %s (%v), want %s\n%s", sum, err, want, d.Proc.Log())
		}
		st, err := l.Run(ctx, lab.Gateway, installedBin, "status", "--socket", harness.AdminSocket(l))
		if err != nil || !strings.Contains(string(st), "SESSIONS (1)") {
			t.Errorf("status: %v\n%s", err, st)
		}
		if got := d.Metrics()[`ftpsalg_pinholes_opened_total{data_mode="passive"}`]; got != 1 {
			t.Errorf("pinholes opened %v, want 1", got)
		}
		d.Stop()
	})
}
