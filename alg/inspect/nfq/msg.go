package nfq

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Wire constants from <linux/netfilter/nfnetlink_queue.h> and
// <linux/netfilter/nfnetlink.h>. Netlink headers and attribute headers are
// in host byte order; nfnetlink payloads (ids, marks, lengths) in network
// byte order.
const (
	subsysQueue = unix.NFNL_SUBSYS_QUEUE

	msgPacket  = 0 // NFQNL_MSG_PACKET: kernel -> us
	msgVerdict = 1 // NFQNL_MSG_VERDICT
	msgConfig  = 2 // NFQNL_MSG_CONFIG

	typePacket  = subsysQueue<<8 | msgPacket
	typeVerdict = subsysQueue<<8 | msgVerdict
	typeConfig  = subsysQueue<<8 | msgConfig

	// enum nfqnl_attr_type
	attrPacketHdr  = 1  // NFQA_PACKET_HDR: struct nfqnl_msg_packet_hdr (7 bytes)
	attrVerdictHdr = 2  // NFQA_VERDICT_HDR: struct nfqnl_msg_verdict_hdr (8 bytes)
	attrMark       = 3  // NFQA_MARK: be32
	attrPayload    = 10 // NFQA_PAYLOAD
	attrCapLen     = 13 // NFQA_CAP_LEN: be32, the packet's length when the copy is shorter

	// enum nfqnl_attr_config
	attrCfgCmd    = 1 // NFQA_CFG_CMD: struct nfqnl_msg_config_cmd (4 bytes)
	attrCfgParams = 2 // NFQA_CFG_PARAMS: struct nfqnl_msg_config_params (5 bytes)
	attrCfgMaxLen = 3 // NFQA_CFG_QUEUE_MAXLEN: be32
	attrCfgMask   = 4 // NFQA_CFG_MASK: be32
	attrCfgFlags  = 5 // NFQA_CFG_FLAGS: be32

	cfgCmdBind = 1 // NFQNL_CFG_CMD_BIND
	copyPacket = 2 // NFQNL_COPY_PACKET

	// FlagFailOpen (NFQA_CFG_F_FAIL_OPEN) makes the kernel accept packets
	// it cannot queue because the queue is full.
	FlagFailOpen = 1

	// MaxCopyRange is the most payload bytes the kernel copies per packet
	// (NFQNL_MAX_COPY_RANGE = 0xffff - NLA_HDRLEN).
	MaxCopyRange = 0xffff - 4

	nlmsgHdrLen = unix.SizeofNlMsghdr // 16
	nfgenLen    = 4                   // struct nfgenmsg
	attrHdrLen  = unix.SizeofNlAttr   // 4
	nlaTypeMask = 0x3fff              // without NLA_F_NESTED, NLA_F_NET_BYTEORDER
)

// Verdicts (NF_DROP, NF_ACCEPT, NF_REPEAT from <linux/netfilter.h>).
const (
	Drop   uint32 = 0
	Accept uint32 = 1
	Repeat uint32 = 4
)

// Packet is one queued packet. Payload aliases the Conn's receive buffer:
// it is valid, and may be edited in place, until the next Read.
type Packet struct {
	ID      uint32
	Hook    uint8
	HasMark bool
	Mark    uint32
	// CapLen is the packet's full length when the kernel copied less than
	// all of it (HasCapLen); such a copy can be neither inspected nor
	// re-injected.
	HasCapLen bool
	CapLen    uint32
	Payload   []byte // nil when the message carried no payload attribute
}

// Truncated reports whether the kernel copied only part of the packet.
func (p *Packet) Truncated() bool {
	return p.HasCapLen && int(p.CapLen) != len(p.Payload)
}

// KernelError is a netlink error answer (struct nlmsgerr) to one of our
// messages, e.g. a verdict for a packet id the kernel no longer holds.
type KernelError struct {
	Seq   uint32 // sequence number of the message it answers
	Type  uint16 // its message type
	Errno unix.Errno
}

func (e KernelError) Error() string {
	return fmt.Sprintf("nfq: kernel refused message %#x (seq %d): %v", e.Type, e.Seq, e.Errno)
}

func (e KernelError) Unwrap() error { return e.Errno }

var errMalformed = errors.New("nfq: malformed netlink message")

func align4(n int) int { return (n + 3) &^ 3 }

// nextMsg splits the first netlink message off b. body is what follows
// the netlink header.
func nextMsg(b []byte) (h unix.NlMsghdr, body, rest []byte, err error) {
	if len(b) < nlmsgHdrLen {
		return h, nil, nil, fmt.Errorf("%w: %d bytes left, header needs %d", errMalformed, len(b), nlmsgHdrLen)
	}
	h.Len = binary.NativeEndian.Uint32(b[0:])
	h.Type = binary.NativeEndian.Uint16(b[4:])
	h.Flags = binary.NativeEndian.Uint16(b[6:])
	h.Seq = binary.NativeEndian.Uint32(b[8:])
	h.Pid = binary.NativeEndian.Uint32(b[12:])
	if h.Len < nlmsgHdrLen || uint64(h.Len) > uint64(len(b)) {
		return h, nil, nil, fmt.Errorf("%w: length %d, %d bytes left", errMalformed, h.Len, len(b))
	}
	body = b[nlmsgHdrLen:h.Len]
	next := min(align4(int(h.Len)), len(b))
	return h, body, b[next:], nil
}

// parseError decodes the body of an NLMSG_ERROR message. errno 0 is an
// acknowledgement.
func parseError(body []byte) (KernelError, error) {
	// int error; struct nlmsghdr msg (at least its header, even with
	// NETLINK_CAP_ACK).
	if len(body) < 4+nlmsgHdrLen {
		return KernelError{}, fmt.Errorf("%w: error message of %d bytes", errMalformed, len(body))
	}
	code := int32(binary.NativeEndian.Uint32(body[0:]))
	if code > 0 {
		return KernelError{}, fmt.Errorf("%w: positive error code %d", errMalformed, code)
	}
	return KernelError{
		Errno: unix.Errno(-code),
		Type:  binary.NativeEndian.Uint16(body[4+4:]),
		Seq:   binary.NativeEndian.Uint32(body[4+8:]),
	}, nil
}

// parsePacket decodes the body of an NFQNL_MSG_PACKET message into p,
// without copying: p.Payload points into body.
func parsePacket(body []byte, p *Packet) error {
	*p = Packet{}
	if len(body) < nfgenLen {
		return fmt.Errorf("%w: packet message of %d bytes", errMalformed, len(body))
	}
	b := body[nfgenLen:]
	seenHdr := false
	for len(b) > 0 {
		if len(b) < attrHdrLen {
			return fmt.Errorf("%w: %d trailing bytes", errMalformed, len(b))
		}
		l := int(binary.NativeEndian.Uint16(b[0:]))
		typ := binary.NativeEndian.Uint16(b[2:]) & nlaTypeMask
		if l < attrHdrLen || l > len(b) {
			return fmt.Errorf("%w: attribute %d of length %d, %d bytes left", errMalformed, typ, l, len(b))
		}
		v := b[attrHdrLen:l]
		switch typ {
		case attrPacketHdr:
			// __be32 packet_id; __be16 hw_protocol; __u8 hook (packed)
			if len(v) < 7 {
				return fmt.Errorf("%w: packet header of %d bytes", errMalformed, len(v))
			}
			p.ID = binary.BigEndian.Uint32(v)
			p.Hook = v[6]
			seenHdr = true
		case attrMark:
			if len(v) < 4 {
				return fmt.Errorf("%w: mark of %d bytes", errMalformed, len(v))
			}
			p.Mark, p.HasMark = binary.BigEndian.Uint32(v), true
		case attrCapLen:
			if len(v) < 4 {
				return fmt.Errorf("%w: cap_len of %d bytes", errMalformed, len(v))
			}
			p.CapLen, p.HasCapLen = binary.BigEndian.Uint32(v), true
		case attrPayload:
			p.Payload = v[:len(v):len(v)]
		}
		b = b[min(align4(l), len(b)):]
	}
	if !seenHdr {
		return fmt.Errorf("%w: packet message without a packet header", errMalformed)
	}
	return nil
}

// appendMsgHdr appends a netlink header and an nfgenmsg for queue num;
// the length is patched by endMsg.
func appendMsgHdr(b []byte, typ, flags uint16, seq uint32, queue uint16) []byte {
	b = binary.NativeEndian.AppendUint32(b, 0)
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, flags)
	b = binary.NativeEndian.AppendUint32(b, seq)
	b = binary.NativeEndian.AppendUint32(b, 0) // to the kernel
	// nfgenmsg: family AF_UNSPEC, version NFNETLINK_V0, res_id = queue (be16)
	b = append(b, unix.AF_UNSPEC, unix.NFNETLINK_V0)
	return binary.BigEndian.AppendUint16(b, queue)
}

func endMsg(b []byte, start int) []byte {
	binary.NativeEndian.PutUint32(b[start:], uint32(len(b)-start))
	return b
}

// appendAttr appends one attribute of n value bytes and returns the
// buffer and the value's offset; the value is zero until written.
func appendAttr(b []byte, typ uint16, n int) ([]byte, int) {
	b = binary.NativeEndian.AppendUint16(b, uint16(attrHdrLen+n))
	b = binary.NativeEndian.AppendUint16(b, typ)
	off := len(b)
	b = append(b, make([]byte, align4(n))...)
	return b, off
}

func appendAttrBE32(b []byte, typ uint16, v uint32) []byte {
	b, off := appendAttr(b, typ, 4)
	binary.BigEndian.PutUint32(b[off:], v)
	return b
}

// appendConfig appends the one NFQNL_MSG_CONFIG message that binds queue
// num and sets copy mode and range, the queue length and the flags. The
// kernel checks the flags before it binds, so an unsupported flag leaves
// no binding behind.
func appendConfig(b []byte, seq uint32, num uint16, copyRange, maxLen, flags uint32) []byte {
	start := len(b)
	b = appendMsgHdr(b, typeConfig, unix.NLM_F_REQUEST|unix.NLM_F_ACK, seq, num)
	// struct nfqnl_msg_config_cmd { __u8 command; __u8 _pad; __be16 pf; }
	b, off := appendAttr(b, attrCfgCmd, 4)
	b[off] = cfgCmdBind
	// struct nfqnl_msg_config_params { __be32 copy_range; __u8 copy_mode; } (packed)
	b, off = appendAttr(b, attrCfgParams, 5)
	binary.BigEndian.PutUint32(b[off:], copyRange)
	b[off+4] = copyPacket
	if maxLen > 0 {
		b = appendAttrBE32(b, attrCfgMaxLen, maxLen)
	}
	// The mask says which flags this message sets: all we know, so a
	// flag left over from an earlier binding is cleared.
	b = appendAttrBE32(b, attrCfgMask, FlagFailOpen)
	b = appendAttrBE32(b, attrCfgFlags, flags)
	return endMsg(b, start)
}

// appendVerdict appends one NFQNL_MSG_VERDICT message: verdict for packet
// id, with the packet mark set to mark when setMark, and the packet
// replaced by payload when it is not nil. No acknowledgement is asked for:
// the kernel answers only failures.
func appendVerdict(b []byte, seq uint32, queue uint16, id, verdict uint32, setMark bool, mark uint32, payload []byte) []byte {
	start := len(b)
	b = appendMsgHdr(b, typeVerdict, unix.NLM_F_REQUEST, seq, queue)
	// struct nfqnl_msg_verdict_hdr { __be32 verdict; __be32 id; }
	b, off := appendAttr(b, attrVerdictHdr, 8)
	binary.BigEndian.PutUint32(b[off:], verdict)
	binary.BigEndian.PutUint32(b[off+4:], id)
	if setMark {
		b = appendAttrBE32(b, attrMark, mark)
	}
	if payload != nil {
		b = binary.NativeEndian.AppendUint16(b, uint16(attrHdrLen+len(payload)))
		b = binary.NativeEndian.AppendUint16(b, attrPayload)
		b = append(b, payload...)
		b = append(b, make([]byte, align4(len(payload))-len(payload))...)
	}
	return endMsg(b, start)
}

// decode appends the packets and the error answers of one received
// datagram (one or more netlink messages) to pkts and kerrs, and counts
// the messages it could not decode. Acknowledgements (errno 0) and other
// message types are skipped.
func decode(b []byte, pkts []Packet, kerrs []KernelError) ([]Packet, []KernelError, int) {
	bad := 0
	for len(b) > 0 {
		h, body, rest, err := nextMsg(b)
		if err != nil {
			return pkts, kerrs, bad + 1
		}
		b = rest
		switch h.Type {
		case typePacket:
			pkts = append(pkts, Packet{})
			if parsePacket(body, &pkts[len(pkts)-1]) != nil {
				pkts = pkts[:len(pkts)-1]
				bad++
			}
		case unix.NLMSG_ERROR:
			ke, err := parseError(body)
			switch {
			case err != nil:
				bad++
			case ke.Errno != 0:
				kerrs = append(kerrs, ke)
			}
		}
	}
	return pkts, kerrs, bad
}
