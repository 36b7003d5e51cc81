package sdnotify

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// listen opens a unixgram socket the test owns, as systemd would.
func listen(t *testing.T) (*net.UnixConn, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, path
}

func recv(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4096)
	n, err := c.Read(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(b[:n])
}

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// TestSequence: the daemon's sequence (start, reload, stop) arrives as one
// datagram per state change, in order.
func TestSequence(t *testing.T) {
	t.Parallel()
	c, path := listen(t)
	n := New(env(map[string]string{"NOTIFY_SOCKET": path}))
	if !n.Enabled() || n.Watchdog != 0 {
		t.Fatalf("Enabled %v, Watchdog %v", n.Enabled(), n.Watchdog)
	}
	if err := n.Ready("running\n2 servers"); err != nil {
		t.Fatal(err)
	}
	if got, want := recv(t, c), "READY=1\nSTATUS=running 2 servers\n"; got != want {
		t.Errorf("ready: %q, want %q", got, want)
	}
	before := monotonicUsec()
	if err := n.Reloading(); err != nil {
		t.Fatal(err)
	}
	got := recv(t, c)
	rest, ok := strings.CutPrefix(got, "RELOADING=1\nMONOTONIC_USEC=")
	if !ok {
		t.Fatalf("reloading: %q", got)
	}
	us, err := strconv.ParseInt(strings.TrimSuffix(rest, "\n"), 10, 64)
	if err != nil || us < before || us > monotonicUsec() {
		t.Errorf("reloading: MONOTONIC_USEC %q not between %d and now (%v)", rest, before, err)
	}
	if err := n.Stopping(); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, c); got != "STOPPING=1\n" {
		t.Errorf("stopping: %q", got)
	}
}

// TestWatchdog: half of WATCHDOG_USEC; keep-alives while alive, none when
// alive fails; the watchdog belongs to another process when WATCHDOG_PID
// says so.
func TestWatchdog(t *testing.T) {
	t.Parallel()
	c, path := listen(t)
	n := New(env(map[string]string{"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "40000", "WATCHDOG_PID": strconv.Itoa(os.Getpid())}))
	if n.Watchdog != 20*time.Millisecond {
		t.Fatalf("Watchdog %v, want 20ms", n.Watchdog)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	healthy := make(chan bool, 1)
	healthy <- false
	go func() {
		defer close(done)
		n.RunWatchdog(ctx, func() error {
			select {
			case ok := <-healthy:
				if !ok {
					return context.Canceled // unhealthy once: no keep-alive this tick
				}
			default:
			}
			return nil
		})
	}()
	for range 2 {
		if got := recv(t, c); got != "WATCHDOG=1\n" {
			t.Errorf("watchdog: %q", got)
		}
	}
	cancel()
	<-done

	other := New(env(map[string]string{"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "40000", "WATCHDOG_PID": "1"}))
	if other.Watchdog != 0 {
		t.Errorf("WATCHDOG_PID of another process: Watchdog %v, want 0", other.Watchdog)
	}
}

// TestDisabled: without NOTIFY_SOCKET every call is a no-op.
func TestDisabled(t *testing.T) {
	t.Parallel()
	n := New(env(nil))
	if n.Enabled() {
		t.Fatal("Enabled without NOTIFY_SOCKET")
	}
	if err := n.Ready("x"); err != nil {
		t.Fatal(err)
	}
	n.RunWatchdog(t.Context(), nil) // returns at once
}

// TestAbstract: "@name" is an abstract socket.
func TestAbstract(t *testing.T) {
	t.Parallel()
	name := "@ftpsalg-sdnotify-test-" + strconv.Itoa(os.Getpid())
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := New(env(map[string]string{"NOTIFY_SOCKET": name})).Status("hello"); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, c); got != "STATUS=hello\n" {
		t.Errorf("got %q", got)
	}
}
