package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/ftpsalg/ftpsalg/alg/netns"
)

// InNS runs fn on a goroutine locked to an OS thread that has been switched
// into namespace ns with setns(2), and waits for it.
//
// Sockets created inside fn belong to ns for their whole life and may be
// used from any goroutine after fn returns: that is how to get a listener
// or a connection in a namespace. Goroutines started inside fn do not
// inherit the namespace (they run on other threads), nor does anything
// that creates its socket later on another goroutine (e.g. net.Dialer with
// several addresses racing, or a resolver); pass literal addresses.
//
// The thread is switched back afterwards; if that fails it is left locked
// so that the runtime discards it when the goroutine ends. A panic in fn is
// re-raised in the caller.
func (l *Lab) InNS(ns string, fn func() error) error {
	return inNetNS(l.NetNSPath(ns), fn)
}

func inNetNS(path string, fn func() error) error {
	target, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("failed to open %s: %w", path, err)
	}
	defer unix.Close(target)
	if err := netns.Do(target, fn); err != nil {
		return fmt.Errorf("in %s: %w", path, err)
	}
	return nil
}

// Listen creates a listener in ns; address must hold a literal IP (or be
// empty) and a port, e.g. "[::]:21" or "198.51.100.2:0".
func (l *Lab) Listen(ns, network, address string) (net.Listener, error) {
	var ln net.Listener
	err := l.InNS(ns, func() error {
		var err error
		ln, err = net.Listen(network, address)
		return err
	})
	return ln, err
}

// ListenAndClose is Listen with a server that closes every connection it
// accepts at once, until the listener is closed: a peer for tests that
// need connections through the gateway and nothing on them.
func (l *Lab) ListenAndClose(ns, network, address string) (net.Listener, error) {
	ln, err := l.Listen(ns, network, address)
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln, nil
}

// ListenFunc returns a function with the signature of
// net.ListenConfig.Listen that creates listeners in ns (for
// labftpd.Config.Listen).
func (l *Lab) ListenFunc(ns string) func(ctx context.Context, network, address string) (net.Listener, error) {
	return func(ctx context.Context, network, address string) (net.Listener, error) {
		var ln net.Listener
		err := l.InNS(ns, func() error {
			var lc net.ListenConfig
			var err error
			ln, err = lc.Listen(ctx, network, address)
			return err
		})
		return ln, err
	}
}

// Dial connects from ns to raddr, from laddr when it is valid (port 0 for
// any). The connect runs on the namespace's thread, bounded by ctx.
func (l *Lab) Dial(ctx context.Context, ns, network string, laddr, raddr netip.AddrPort) (net.Conn, error) {
	var c net.Conn
	err := l.InNS(ns, func() error {
		d := net.Dialer{}
		if laddr.IsValid() {
			d.LocalAddr = net.TCPAddrFromAddrPort(laddr)
		}
		var err error
		c, err = d.DialContext(ctx, network, raddr.String())
		return err
	})
	return c, err
}

// DialFunc returns Dial bound to ns (for labftpd.Config.Dial).
func (l *Lab) DialFunc(ns string) func(ctx context.Context, network string, laddr, raddr netip.AddrPort) (net.Conn, error) {
	return func(ctx context.Context, network string, laddr, raddr netip.AddrPort) (net.Conn, error) {
		return l.Dial(ctx, ns, network, laddr, raddr)
	}
}
