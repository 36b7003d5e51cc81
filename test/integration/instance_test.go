package integration

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/test/harness"
	"github.com/ftpsalg/ftpsalg/test/lab"
)

// reCounters matches counter values and element expiry times, which move
// on their own.
var reCounters = regexp.MustCompile(`counter packets \d+ bytes \d+| expires [0-9dhms]+`)

// kernelState is what a second instance must leave alone: the table, and
// the policy routing of both families.
func kernelState(t *testing.T, l *lab.Lab) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{
		{"nft", "list", "table", "inet", "ftpsalg"},
		{"ip", "-4", "rule", "list"}, {"ip", "-6", "rule", "list"},
		{"ip", "-4", "route", "list", "table", "all"}, {"ip", "-6", "route", "list", "table", "all"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := l.Run(ctx, lab.Gateway, args[0], args[1:]...)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		out = []byte(reCounters.ReplaceAllStringFunc(string(out), func(m string) string {
			if strings.HasPrefix(m, "counter") {
				return "counter"
			}
			return ""
		}))
		b.WriteString("# " + strings.Join(args, " ") + "\n" + string(out))
	}
	return b.String()
}

// secondInstance starts a second daemon with the first one's policy in the
// same gateway namespace and checks that it exits non-zero with the clear
// message, leaving the first one's table and routing as they were.
func secondInstance(t *testing.T, l *lab.Lab, d *harness.Daemon) {
	t.Helper()
	before := kernelState(t, l)
	p := l.Start(lab.Gateway, d.Bin, "run", "--config", d.Config)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.Wait(ctx); err == nil || lab.ExitCode(err) != 1 {
		t.Fatalf("second instance: %v (want exit status 1)\n%s", err, p.Log())
	}
	for _, want := range []string{"another ftpsalg instance is running for table inet ftpsalg", "ss -xlp | grep @ftpsalg/ftpsalg"} {
		if !strings.Contains(p.Log(), want) {
			t.Errorf("second instance's output lacks %q:\n%s", want, p.Log())
		}
	}
	if after := kernelState(t, l); after != before {
		t.Errorf("the second instance changed the kernel state:\n--- before\n%s--- after\n%s", before, after)
	}
	select {
	case <-d.Proc.Done():
		t.Fatalf("the first instance exited: %v\n%s", d.Proc.Err(), d.Proc.Log())
	default:
	}
}

// TestSecondInstanceInspect: a second daemon exits at once and the first
// one's queue still works (a passive transfer through an inspected server).
func TestSecondInstanceInspect(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	l := lab.New(t, lab.Options{})
	l.InstallGatewayFirewall(ctMark)
	v := l.StartVsftpd(lab.VsftpdOptions{})
	if _, err := v.CreateFile("f.bin", 256<<10); err != nil {
		t.Fatal(err)
	}
	want, err := v.SHA256("f.bin")
	if err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, l, policyFor([]int{21}, "", ""))
	secondInstance(t, l, d)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tr, err := l.DownloadCurl(ctx, v.URL(lab.ServerAddr4, "f.bin"), lab.PASV)
	if err != nil {
		t.Fatalf("transfer after the second instance: %v\n%s", err, d.Proc.Log())
	}
	if tr.SHA256 != want {
		t.Fatalf("sha256 %s, want %s", tr.SHA256, want)
	}
	d.Stop()
}

// TestSecondInstanceMITM: the same with mitm servers, where the first
// instance also holds policy routing and transparent listeners.
func TestSecondInstanceMITM(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	ml := newMITMLab(t, mitmOpts{})
	if _, err := ml.v.CreateFile("f.bin", 256<<10); err != nil {
		t.Fatal(err)
	}
	want, err := ml.v.SHA256("f.bin")
	if err != nil {
		t.Fatal(err)
	}
	secondInstance(t, ml.l, ml.d)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tr, err := ml.l.DownloadCurl(ctx, ml.v.URL(lab.ServerAddr4, "f.bin"), lab.PASV, ml.curlTLS()...)
	if err != nil {
		t.Fatalf("transfer after the second instance: %v\n%s", err, ml.d.Proc.Log())
	}
	if tr.SHA256 != want {
		t.Fatalf("sha256 %s, want %s", tr.SHA256, want)
	}
	ml.d.Stop()
}
