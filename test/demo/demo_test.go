package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/test/lab"
)

// TestDemoEmbedded runs `make demo`'s program the way a fresh machine
// without vsftpd or curl would: embedded Go server and client.
func TestDemoEmbedded(t *testing.T) {
	lab.RequirePrivileged(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "ftpsalg")
	demo := filepath.Join(dir, "demo")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	for _, b := range [][]string{{"-o", bin, "../../cmd/ftpsalg"}, {"-o", demo, "."}} {
		if out, err := exec.CommandContext(ctx, "go", append([]string{"build"}, b...)...).CombinedOutput(); err != nil {
			t.Fatalf("build: %v\n%s", err, out)
		}
	}
	cmd := exec.CommandContext(ctx, demo, "--bin", bin, "--embedded")
	// As on a fresh machine: no nft, conntrack, vsftpd or lftp on the PATH
	// (all live in /usr/sbin or are not installed there by default).
	cmd.Env = append(os.Environ(), "PATH=/usr/local/go/bin:/usr/bin:/bin")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out)
	}
	for _, want := range []string{"via go client", "demo: ok", "reason=third_party_address", "pinhole used",
		"FTPS through mitm mode", "implicit", "tls started", "client_tls_version=TLS 1.3",
		"NAT: the same server published", "227 Entering Passive Mode (192,0,2,1,"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "FAILED") {
		t.Errorf("demo reported a failure:\n%s", out)
	}
}
