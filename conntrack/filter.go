package conntrack

import (
	"encoding/binary"
	"fmt"
	"slices"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// A conntrack event (IPCTNL_MSG_CT_NEW or _DELETE on the event groups)
// starts with the original tuple at fixed offsets, as the kernel's
// ctnetlink_conntrack_event writes it:
//
//	0   nlmsghdr (16)          16  nfgenmsg (4): family at 16
//	20  CTA_TUPLE_ORIG nest    24  CTA_TUPLE_IP nest
//	28  CTA_IP_V4_SRC (4+4)    36  CTA_IP_V4_DST (4+4)
//	44  CTA_TUPLE_PROTO nest   48  CTA_PROTO_NUM (4+1, padded to 8)
//	56  CTA_PROTO_SRC_PORT     64  CTA_PROTO_DST_PORT (4+2): port at 68
//
// and for IPv6 the addresses take 4+16 each, so the protocol nest is at 68,
// the protocol number at 76 and the destination port at 92. The filter
// checks every attribute header on the way (length and type, in the
// host's byte order), so a layout it does not know (a conntrack zone in
// the tuple, another kernel) passes the event to userspace, which
// decodes it anyway: the filter only ever saves work, it never loses an
// event the handler wants.
// maxFilterPorts is the most control ports the event filter checks.
const maxFilterPorts = 100

const (
	offFamily = 16
	offOrig   = 20
	offIP     = 24

	// ctnetlink attribute types (linux/netfilter/nfnetlink_conntrack.h).
	ctaTupleOrig    = 1
	ctaTupleIP      = 1
	ctaTupleProto   = 2
	ctaIPv4Src      = 1
	ctaIPv4Dst      = 2
	ctaIPv6Src      = 3
	ctaIPv6Dst      = 4
	ctaProtoNum     = 1
	ctaProtoSrcPort = 2
	ctaProtoDstPort = 3
	nlaFNested      = 0x8000
)

// tupleLayout is where one family's original tuple puts its fields.
type tupleLayout struct {
	family  uint8
	addrLen int // 4 or 16
}

func (t tupleLayout) offProto() int { return offIP + 4 + 2*(4+t.addrLen) }
func (t tupleLayout) offNum() int   { return t.offProto() + 4 }
func (t tupleLayout) offSport() int { return t.offNum() + 8 }
func (t tupleLayout) offDport() int { return t.offSport() + 8 }

// attrWord is an attribute header (nla_len, nla_type) as a classic BPF
// word load reads it: the header is in the host's byte order, a load is
// big-endian.
func attrWord(length, typ uint16) uint32 {
	var b [4]byte
	binary.NativeEndian.PutUint16(b[0:], length)
	binary.NativeEndian.PutUint16(b[2:], typ)
	return binary.BigEndian.Uint32(b[:])
}

// eventFilter assembles a socket filter for a ctnetlink event socket that
// passes the events of TCP connections to one of ports (original
// direction) and events of a layout it does not know, and drops the rest.
// With no ports every TCP and UDP event of a known layout is dropped.
func eventFilter(ports []uint16) ([]bpf.RawInstruction, error) {
	ports = slices.Compact(slices.Sorted(slices.Values(ports)))
	if len(ports) > maxFilterPorts {
		// Jump offsets are 8 bits (the IPv4 block jumps over the IPv6 one);
		// a policy with this many control ports
		// gets no filter (every event reaches userspace).
		return nil, fmt.Errorf("conntrack: %d control ports are more than the event filter holds (%d)", len(ports), maxFilterPorts)
	}
	const (
		pass = 0xffffffff
		drop = 0
	)
	var prog []bpf.Instruction
	// One block per family, each ending in the port checks; labels are
	// resolved below, by index.
	type fix struct {
		at         int
		trueLabel  string
		falseLabel string
	}
	var fixes []fix
	labels := map[string]int{}
	jump := func(ins bpf.JumpIf, t, f string) {
		fixes = append(fixes, fix{at: len(prog), trueLabel: t, falseLabel: f})
		prog = append(prog, ins)
	}
	prog = append(prog, bpf.LoadAbsolute{Off: offFamily, Size: 1})
	jump(bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.AF_INET}, "v4", "")
	jump(bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.AF_INET6}, "v6", "pass")
	for _, t := range []tupleLayout{{family: unix.AF_INET, addrLen: 4}, {family: unix.AF_INET6, addrLen: 16}} {
		name := "v4"
		src, dst := uint16(ctaIPv4Src), uint16(ctaIPv4Dst)
		if t.family == unix.AF_INET6 {
			name, src, dst = "v6", ctaIPv6Src, ctaIPv6Dst
		}
		labels[name] = len(prog)
		ipLen := uint16(4 + 2*(4+t.addrLen))
		checks := []struct {
			off  int
			word uint32
		}{
			{offOrig, 0}, // type only: its length depends on optional attributes
			{offIP, attrWord(ipLen, ctaTupleIP|nlaFNested)},
			{offIP + 4, attrWord(uint16(4+t.addrLen), src)},
			{offIP + 4 + 4 + t.addrLen, attrWord(uint16(4+t.addrLen), dst)},
			{t.offProto(), attrWord(4+8+8+8, ctaTupleProto|nlaFNested)},
			{t.offNum(), attrWord(5, ctaProtoNum)},
			{t.offSport(), attrWord(6, ctaProtoSrcPort)},
			{t.offDport(), attrWord(6, ctaProtoDstPort)},
		}
		for _, c := range checks {
			if c.off == offOrig {
				// The nest's type is the low half of the word's host
				// order: load the two bytes that hold it.
				var b [2]byte
				binary.NativeEndian.PutUint16(b[:], ctaTupleOrig|nlaFNested)
				prog = append(prog, bpf.LoadAbsolute{Off: offOrig + 2, Size: 2})
				jump(bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(binary.BigEndian.Uint16(b[:]))}, "", "pass")
				continue
			}
			prog = append(prog, bpf.LoadAbsolute{Off: uint32(c.off), Size: 4})
			jump(bpf.JumpIf{Cond: bpf.JumpEqual, Val: c.word}, "", "pass")
		}
		prog = append(prog, bpf.LoadAbsolute{Off: uint32(t.offNum() + 4), Size: 1})
		jump(bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.IPPROTO_TCP}, "", "drop")
		prog = append(prog, bpf.LoadAbsolute{Off: uint32(t.offDport() + 4), Size: 2})
		for _, p := range ports {
			jump(bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(p)}, "pass", "")
		}
		prog = append(prog, bpf.RetConstant{Val: drop})
	}
	labels["pass"] = len(prog)
	prog = append(prog, bpf.RetConstant{Val: pass})
	labels["drop"] = len(prog)
	prog = append(prog, bpf.RetConstant{Val: drop})
	for _, f := range fixes {
		j := prog[f.at].(bpf.JumpIf)
		rel := func(label string) (uint8, error) {
			if label == "" {
				return 0, nil
			}
			d := labels[label] - f.at - 1
			if d < 0 || d > 255 {
				return 0, fmt.Errorf("conntrack: event filter jump of %d", d)
			}
			return uint8(d), nil
		}
		var err error
		if j.SkipTrue, err = rel(f.trueLabel); err != nil {
			return nil, err
		}
		if j.SkipFalse, err = rel(f.falseLabel); err != nil {
			return nil, err
		}
		prog[f.at] = j
	}
	return bpf.Assemble(prog)
}
