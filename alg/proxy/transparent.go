package proxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// transparent sets IP_TRANSPARENT (and IPV6_TRANSPARENT) so that a
// listener accepts connections TPROXY diverted to it and a dialer may bind
// a non-local source address. It needs CAP_NET_ADMIN.
func transparent(network, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		if network == "tcp6" {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
			return
		}
		serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// ListenTransparent opens the TPROXY listener for one address family
// ("tcp4" or "tcp6") on port.
func ListenTransparent(ctx context.Context, network string, port uint16) (net.Listener, error) {
	addr := netip.AddrPortFrom(netip.IPv4Unspecified(), port)
	if network == "tcp6" {
		addr = netip.AddrPortFrom(netip.IPv6Unspecified(), port)
	}
	lc := net.ListenConfig{Control: transparent}
	ln, err := lc.Listen(ctx, network, addr.String())
	if err != nil {
		return nil, fmt.Errorf("failed to open the transparent listener on %s: %w", addr, err)
	}
	return ln, nil
}

// DialTransparent connects to raddr from laddr (port 0: any), which may be
// an address the host does not own (the client's, when the upstream leg is
// transparent). An invalid laddr dials from the host's own address.
func DialTransparent(ctx context.Context, network string, laddr, raddr netip.AddrPort) (net.Conn, error) {
	d := net.Dialer{}
	if laddr.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(laddr)
		d.Control = transparent
	}
	return d.DialContext(ctx, network, raddr.String())
}
