package inspect

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// TCP flags.
const (
	flagFIN = 0x01
	flagSYN = 0x02
	flagRST = 0x04
	flagACK = 0x10
)

// packet is a parsed IPv4 or IPv6 TCP segment. Payload aliases Raw, so an
// edit of Payload edits the packet; call fixChecksum after editing.
type packet struct {
	Raw      []byte
	V6       bool
	Src, Dst netip.AddrPort
	Seq, Ack uint32
	Flags    uint8
	tcpOff   int // offset of the TCP header in Raw
	Payload  []byte
}

var (
	errShort    = errors.New("packet truncated")
	errNotTCP   = errors.New("not TCP")
	errFragment = errors.New("IP fragment")
	errVersion  = errors.New("unknown IP version")
)

// parsePacket parses an IP packet as the kernel queues it (starting at the
// IP header). Fragments are refused: the control channel is never
// fragmented by sane peers, and reassembly belongs to the kernel.
func parsePacket(b []byte) (*packet, error) {
	p := new(packet)
	if err := p.parse(b); err != nil {
		return nil, err
	}
	return p, nil
}

// parse is parsePacket into p, which the caller may keep on its stack: the
// packet path's hot loop allocates nothing per packet.
func (p *packet) parse(b []byte) error {
	if len(b) < 1 {
		return errShort
	}
	*p = packet{Raw: b}
	var l4 int
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return errShort
		}
		ihl := int(b[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(b[2:4]))
		if ihl < 20 || total < ihl || total > len(b) {
			return fmt.Errorf("bad IPv4 header lengths (ihl %d, total %d, captured %d): %w", ihl, total, len(b), errShort)
		}
		if frag := binary.BigEndian.Uint16(b[6:8]); frag&0x3fff != 0 {
			return errFragment
		}
		if b[9] != 6 {
			return errNotTCP
		}
		p.Raw = b[:total]
		src, _ := netip.AddrFromSlice(b[12:16])
		dst, _ := netip.AddrFromSlice(b[16:20])
		p.Src, p.Dst = netip.AddrPortFrom(src, 0), netip.AddrPortFrom(dst, 0)
		l4 = ihl
	case 6:
		if len(b) < 40 {
			return errShort
		}
		plen := int(binary.BigEndian.Uint16(b[4:6]))
		if 40+plen > len(b) {
			return fmt.Errorf("bad IPv6 payload length %d: %w", plen, errShort)
		}
		p.Raw = b[:40+plen]
		p.V6 = true
		src, _ := netip.AddrFromSlice(b[8:24])
		dst, _ := netip.AddrFromSlice(b[24:40])
		p.Src, p.Dst = netip.AddrPortFrom(src, 0), netip.AddrPortFrom(dst, 0)
		next, off := b[6], 40
		for next != 6 {
			switch next {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if off+8 > len(p.Raw) {
					return errShort
				}
				next, off = p.Raw[off], off+8*(int(p.Raw[off+1])+1)
			case 44:
				return errFragment
			default:
				return errNotTCP
			}
		}
		l4 = off
	default:
		return errVersion
	}
	if l4+20 > len(p.Raw) {
		return errShort
	}
	t := p.Raw[l4:]
	doff := int(t[12]>>4) * 4
	if doff < 20 || doff > len(t) {
		return fmt.Errorf("bad TCP data offset %d: %w", doff, errShort)
	}
	p.Src = netip.AddrPortFrom(p.Src.Addr(), binary.BigEndian.Uint16(t[0:2]))
	p.Dst = netip.AddrPortFrom(p.Dst.Addr(), binary.BigEndian.Uint16(t[2:4]))
	p.Seq = binary.BigEndian.Uint32(t[4:8])
	p.Ack = binary.BigEndian.Uint32(t[8:12])
	p.Flags = t[13]
	p.tcpOff = l4
	p.Payload = t[doff:]
	return nil
}

// fixChecksum recomputes the TCP checksum over the pseudo-header and the
// segment. The kernel marks a mangled skb CHECKSUM_NONE and does not fix it.
func (p *packet) fixChecksum() {
	seg := p.Raw[p.tcpOff:]
	seg[16], seg[17] = 0, 0
	binary.BigEndian.PutUint16(seg[16:18], fold(p.tcpSum()))
}

// checksumOK reports whether the TCP checksum verifies.
func (p *packet) checksumOK() bool { return fold(p.tcpSum()) == 0 }

// tcpSum is the one's-complement sum of the pseudo-header (RFC 793, RFC
// 8200 §8.1) and the segment as it stands.
func (p *packet) tcpSum() uint32 {
	seg := p.Raw[p.tcpOff:]
	var sum uint32
	if p.V6 {
		sum = sumBytes(sum, p.Raw[8:40])
		sum += uint32(len(seg)>>16) + uint32(len(seg)&0xffff)
	} else {
		sum = sumBytes(sum, p.Raw[12:20])
		sum += uint32(len(seg))
	}
	return sumBytes(sum+6, seg)
}

func sumBytes(sum uint32, b []byte) uint32 {
	n := len(b) &^ 1
	for i := 0; i < n; i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)&1 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	return sum
}

func fold(sum uint32) uint16 {
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
