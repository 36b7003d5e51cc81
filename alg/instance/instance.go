package instance

import (
	"errors"
	"fmt"
	"net"
	"syscall"
)

// ErrRunning reports that another process holds the lock.
var ErrRunning = errors.New("another ftpsalg instance is running")

// Name is the abstract socket name (ss shows it with a leading '@') for a
// table.
func Name(table string) string { return "@ftpsalg/" + table }

// Lock is held until Close or the end of the process.
type Lock struct {
	ln *net.UnixListener
}

// Acquire takes the lock for table in the calling thread's network
// namespace. When another process holds it, the error wraps ErrRunning and
// says how to find that process; Acquire changes nothing then.
func Acquire(table string) (*Lock, error) {
	name := Name(table)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: name, Net: "unix"})
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("%w for table inet %s in this network namespace: it holds the abstract socket %s "+
			"(find it with `ss -xlp | grep %s`); stop it first, or give this one another nftables.table",
			ErrRunning, table, name, name)
	}
	if err != nil {
		return nil, fmt.Errorf("failed to take the instance lock %s: %w", name, err)
	}
	return &Lock{ln: ln}, nil
}

// Close releases the lock.
func (l *Lock) Close() error {
	if err := l.ln.Close(); err != nil {
		return fmt.Errorf("failed to release the instance lock: %w", err)
	}
	return nil
}
