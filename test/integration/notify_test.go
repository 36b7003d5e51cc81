package integration

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/test/harness"
	"github.com/ftpsalg/ftpsalg/test/lab"
)

// TestNotify: the daemon speaks sd_notify to a socket the test owns, as
// systemd would: READY=1 once up, RELOADING=1 then READY=1 with a STATUS
// saying whether the reload was accepted (refused, then accepted), and
// STOPPING=1 on SIGTERM.
func TestNotify(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	l := lab.New(t, lab.Options{})
	sock := filepath.Join(l.Dir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	recv := func() string {
		t.Helper()
		_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		b := make([]byte, 4096)
		n, err := conn.Read(b)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		return string(b[:n])
	}
	policy := harness.Policy([]int{21}, "", "admin: {socket: "+harness.AdminSocket(l)+"}")
	path := filepath.Join(l.Dir(), "policy.yaml")
	if err := os.WriteFile(path, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := l.Exec(lab.Gateway, binary, "run", path)
	cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+sock)
	logFile, err := os.Create(filepath.Join(l.Dir(), "ftpsalg-notify.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	log := logReader(logFile.Name())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	waited := false
	defer func() {
		if !waited {
			_ = cmd.Process.Kill()
			<-exited
		}
	}()

	if got := recv(); got != "READY=1\nSTATUS=running: policy accepted\n" {
		t.Fatalf("start: %q\n%s", got, log.String())
	}
	reload := func(doc string) (string, string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		return recv(), recv()
	}
	first, second := reload("servers: []\n")
	if !strings.HasPrefix(first, "RELOADING=1\nMONOTONIC_USEC=") ||
		!strings.HasPrefix(second, "READY=1\nSTATUS=running: reload refused, previous policy kept: ") {
		t.Errorf("refused reload: %q, %q", first, second)
	}
	first, second = reload(policy)
	if !strings.HasPrefix(first, "RELOADING=1\n") || second != "READY=1\nSTATUS=running: policy accepted\n" {
		t.Errorf("accepted reload: %q, %q", first, second)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got := recv(); got != "STOPPING=1\n" {
		t.Errorf("stop: %q", got)
	}
	select {
	case err := <-exited:
		waited = true
		if err != nil {
			t.Errorf("exit: %v\n%s", err, log.String())
		}
	case <-time.After(15 * time.Second):
		t.Errorf("no exit after SIGTERM\n%s", log.String())
	}
}

// logReader reads a log file the daemon writes.
type logReader string

func (r logReader) String() string {
	b, _ := os.ReadFile(string(r))
	return string(b)
}
