// Package sdnotify speaks systemd's service notification protocol
// (sd_notify(3)): datagrams of newline-separated KEY=VALUE assignments sent
// to the Unix socket named by $NOTIFY_SOCKET. It needs no cgo and no
// library: the protocol is one sendto per state change.
//
// A Notifier made from an environment without NOTIFY_SOCKET (not started
// by systemd, or Type= other than notify) does nothing, so callers need no
// conditionals.
package sdnotify

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Notifier sends state changes to the service manager.
type Notifier struct {
	addr *net.UnixAddr // nil: notifications are dropped
	// Watchdog is the interval at which WATCHDOG=1 must be sent (half of
	// WATCHDOG_USEC, as sd_watchdog_enabled(3) recommends); 0 when the
	// watchdog is off or meant for another process (WATCHDOG_PID).
	Watchdog time.Duration
}

// New reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID through getenv
// (os.Getenv in the daemon). An abstract socket is written "@name".
func New(getenv func(string) string) *Notifier {
	n := &Notifier{}
	if s := getenv("NOTIFY_SOCKET"); s != "" && (s[0] == '/' || s[0] == '@') {
		n.addr = &net.UnixAddr{Name: s, Net: "unixgram"}
	}
	if pid := getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return n
	}
	if us, err := strconv.ParseUint(getenv("WATCHDOG_USEC"), 10, 63); err == nil && us > 0 {
		n.Watchdog = time.Duration(us) * time.Microsecond / 2
	}
	return n
}

// Enabled reports whether a service manager listens.
func (n *Notifier) Enabled() bool { return n.addr != nil }

// Notify sends one datagram holding the assignments, e.g. "READY=1",
// "STATUS=running". Newlines inside a value would start a new assignment,
// so they are replaced by spaces.
func (n *Notifier) Notify(assignments ...string) error {
	if n.addr == nil {
		return nil
	}
	for i, a := range assignments {
		k, v, _ := strings.Cut(a, "=")
		assignments[i] = k + "=" + strings.ReplaceAll(v, "\n", " ")
	}
	c, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sdnotify: failed to connect to %s: %w", n.addr.Name, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(strings.Join(assignments, "\n") + "\n")); err != nil {
		return fmt.Errorf("sdnotify: failed to notify %s: %w", n.addr.Name, err)
	}
	return nil
}

// Ready says start-up is complete, with a status line.
func (n *Notifier) Ready(status string) error {
	return n.Notify("READY=1", "STATUS="+status)
}

// Reloading says a reload began. MONOTONIC_USEC (CLOCK_MONOTONIC, as
// systemd ≥ 253 requires with Type=notify-reload) lets the manager tell
// this reload from an earlier one; older managers ignore it.
func (n *Notifier) Reloading() error {
	return n.Notify("RELOADING=1", "MONOTONIC_USEC="+strconv.FormatInt(monotonicUsec(), 10))
}

// Stopping says shutdown began.
func (n *Notifier) Stopping() error { return n.Notify("STOPPING=1") }

// Status sets the free-form status line `systemctl status` shows.
func (n *Notifier) Status(status string) error { return n.Notify("STATUS=" + status) }

// RunWatchdog sends WATCHDOG=1 every n.Watchdog until ctx is done; it
// returns at once when the watchdog is off. alive is asked before each
// keep-alive: when it returns an error the keep-alive is skipped, so a
// wedged daemon is restarted by the manager.
func (n *Notifier) RunWatchdog(ctx context.Context, alive func() error) {
	if n.addr == nil || n.Watchdog <= 0 {
		return
	}
	t := time.NewTicker(n.Watchdog)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if alive != nil && alive() != nil {
				continue
			}
			_ = n.Notify("WATCHDOG=1") // a lost datagram is the next tick's to make up
		}
	}
}

func monotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Sec*1e6 + ts.Nsec/1e3
}
