package proxy

import (
	"encoding/binary"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// originalDst returns the destination the client asked for, before any
// destination NAT: conntrack's original tuple for the accepted socket
// (SO_ORIGINAL_DST, IP6T_SO_ORIGINAL_DST), the kernel's own answer to
// "where was this connection going", read synchronously from the socket
// with no netlink round trip. ok is false when conntrack has no entry (no
// rule in the namespace needs conntrack) or the call fails; the caller
// then takes the socket's local address, which equals the original
// destination for a connection nobody translated.
func originalDst(c net.Conn) (netip.AddrPort, bool) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return netip.AddrPort{}, false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, false
	}
	local := addrPort(c.LocalAddr())
	var out netip.AddrPort
	cerr := rc.Control(func(fd uintptr) {
		if local.Addr().Is4() {
			out, ok = origDst4(int(fd))
		} else {
			out, ok = origDst6(int(fd))
		}
	})
	if cerr != nil || !ok {
		return netip.AddrPort{}, false
	}
	return out, true
}

// soOriginalDst is SO_ORIGINAL_DST (linux/netfilter_ipv4.h) and
// IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/ip6_tables.h): both 80.
const soOriginalDst = 80

func origDst4(fd int) (netip.AddrPort, bool) {
	var sa unix.RawSockaddrInet4
	l := uint32(unsafe.Sizeof(sa))
	if err := getsockopt(fd, unix.SOL_IP, soOriginalDst, unsafe.Pointer(&sa), &l); err != nil {
		return netip.AddrPort{}, false
	}
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port), true
}

func origDst6(fd int) (netip.AddrPort, bool) {
	var sa unix.RawSockaddrInet6
	l := uint32(unsafe.Sizeof(sa))
	if err := getsockopt(fd, unix.SOL_IPV6, soOriginalDst, unsafe.Pointer(&sa), &l); err != nil {
		return netip.AddrPort{}, false
	}
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port), true
}

func getsockopt(fd, level, name int, val unsafe.Pointer, l *uint32) error {
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(name),
		uintptr(val), uintptr(unsafe.Pointer(l)), 0)
	if e != 0 {
		return e
	}
	return nil
}
