package conntrack

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// nla is a netlink attribute: header in host order, payload padded to 4.
func nla(typ uint16, payload ...[]byte) []byte {
	var body []byte
	for _, p := range payload {
		body = append(body, p...)
	}
	b := make([]byte, 4, 4+len(body)+3)
	binary.NativeEndian.PutUint16(b[0:], uint16(4+len(body)))
	binary.NativeEndian.PutUint16(b[2:], typ)
	b = append(b, body...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

// event builds a ctnetlink event as the kernel lays it out: nlmsghdr,
// nfgenmsg, then the original tuple (and, with zone, a CTA_TUPLE_ZONE in
// it), then the reply tuple and the status.
func event(src, dst netip.AddrPort, proto uint8, zone bool) []byte {
	family := uint8(unix.AF_INET)
	sa, da := uint16(ctaIPv4Src), uint16(ctaIPv4Dst)
	if src.Addr().Is6() {
		family, sa, da = unix.AF_INET6, ctaIPv6Src, ctaIPv6Dst
	}
	tuple := func(s, d netip.AddrPort) []byte {
		parts := [][]byte{
			nla(ctaTupleIP|nlaFNested, nla(sa, s.Addr().AsSlice()), nla(da, d.Addr().AsSlice())),
			nla(ctaTupleProto|nlaFNested, nla(ctaProtoNum, []byte{proto}), nla(ctaProtoSrcPort, be16(s.Port())), nla(ctaProtoDstPort, be16(d.Port()))),
		}
		if zone {
			// CTA_TUPLE_ZONE goes first when the kernel writes it
			// (a layout the filter does not place).
			parts = append([][]byte{nla(3, be16(7))}, parts...)
		}
		return nla(ctaTupleOrig|nlaFNested, parts...)
	}
	body := []byte{family, 0, 0, 0}
	body = append(body, tuple(src, dst)...)
	body = append(body, nla(2|nlaFNested, tuple(dst, src)[4:])...)
	body = append(body, nla(3, []byte{0, 0, 0, 0x0e})...)
	msg := make([]byte, 16, 16+len(body))
	binary.NativeEndian.PutUint32(msg[0:], uint32(16+len(body)))
	binary.NativeEndian.PutUint16(msg[4:], 1<<8) // IPCTNL_MSG_CT_NEW of NFNL_SUBSYS_CTNETLINK
	return append(msg, body...)
}

func TestEventFilter(t *testing.T) {
	client4, server4 := netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("198.51.100.2")
	client6, server6 := netip.MustParseAddr("2001:db8:c::2"), netip.MustParseAddr("2001:db8:5::2")
	ap := netip.AddrPortFrom
	tests := []struct {
		name  string
		ports []uint16
		msg   []byte
		pass  bool
	}{
		{"IPv4 TCP to a control port", []uint16{21, 990}, event(ap(client4, 40000), ap(server4, 21), unix.IPPROTO_TCP, false), true},
		{"IPv4 TCP to the other control port", []uint16{21, 990}, event(ap(client4, 40000), ap(server4, 990), unix.IPPROTO_TCP, false), true},
		{"IPv4 TCP to another port", []uint16{21, 990}, event(ap(client4, 40000), ap(server4, 8080), unix.IPPROTO_TCP, false), false},
		{"IPv4 TCP from a control port (not the original destination)", []uint16{21}, event(ap(server4, 21), ap(client4, 40000), unix.IPPROTO_TCP, false), false},
		{"IPv4 UDP to a control port", []uint16{21}, event(ap(client4, 40000), ap(server4, 21), unix.IPPROTO_UDP, false), false},
		{"IPv6 TCP to a control port", []uint16{21}, event(ap(client6, 40000), ap(server6, 21), unix.IPPROTO_TCP, false), true},
		{"IPv6 TCP to another port", []uint16{21}, event(ap(client6, 40000), ap(server6, 443), unix.IPPROTO_TCP, false), false},
		{"no ports: nothing wanted", nil, event(ap(client4, 40000), ap(server4, 21), unix.IPPROTO_TCP, false), false},
		{"a zone in the tuple: unknown layout passes", []uint16{21}, event(ap(client4, 40000), ap(server4, 8080), unix.IPPROTO_TCP, true), true},
		{"another family passes", []uint16{21}, func() []byte {
			m := event(ap(client4, 40000), ap(server4, 8080), unix.IPPROTO_TCP, false)
			m[offFamily] = unix.AF_BRIDGE
			return m
		}(), true},
		{"a short message passes (the kernel's out-of-bounds load drops it)", []uint16{21}, event(ap(client4, 40000), ap(server4, 21), unix.IPPROTO_TCP, false)[:40], false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := eventFilter(tc.ports)
			if err != nil {
				t.Fatal(err)
			}
			prog, ok := bpf.Disassemble(raw)
			if !ok {
				t.Fatal("the filter does not disassemble")
			}
			vm, err := bpf.NewVM(prog)
			if err != nil {
				t.Fatal(err)
			}
			n, err := vm.Run(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			if got := n > 0; got != tc.pass {
				t.Errorf("passed %v (%d bytes), want %v", got, n, tc.pass)
			}
		})
	}
}

func TestEventFilterPorts(t *testing.T) {
	ports := make([]uint16, maxFilterPorts)
	for i := range ports {
		ports[i] = uint16(2000 + i)
	}
	raw, err := eventFilter(ports)
	if err != nil {
		t.Fatalf("%d ports: %v", len(ports), err)
	}
	prog, _ := bpf.Disassemble(raw)
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []uint16{2000, 2099} {
		for _, a := range []netip.Addr{netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("2001:db8:c::2")} {
			dst := netip.MustParseAddr("198.51.100.2")
			if a.Is6() {
				dst = netip.MustParseAddr("2001:db8:5::2")
			}
			if n, _ := vm.Run(event(netip.AddrPortFrom(a, 40000), netip.AddrPortFrom(dst, p), unix.IPPROTO_TCP, false)); n == 0 {
				t.Errorf("port %d from %v dropped", p, a)
			}
		}
	}
	if _, err := eventFilter(append(ports, 1)); err == nil {
		t.Errorf("%d ports: no error", len(ports)+1)
	}
}
