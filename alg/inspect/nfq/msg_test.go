package nfq

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/sys/unix"
)

// The byte goldens are in little-endian host order (netlink headers and
// attribute headers are host order).
func requireLE(t testing.TB) {
	t.Helper()
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("BYTE GOLDENS NOT RUN: they are written in little-endian host order and this host is big-endian; the round-trip tests still run")
	}
}

// unhex decodes hex digits, ignoring white space and the annotations
// after two spaces on each line.
func unhex(s string) []byte {
	var digits strings.Builder
	for line := range strings.Lines(s) {
		line, _, _ = strings.Cut(strings.TrimSpace(line), "  ")
		digits.WriteString(strings.Join(strings.Fields(line), ""))
	}
	b, err := hex.DecodeString(digits.String())
	if err != nil {
		panic(err) // a broken golden in this file
	}
	return b
}

// The message libnetfilter_queue sends for
// `nfq_create_queue(4040); nfq_set_mode(COPY_PACKET, 65531);
// nfq_set_queue_maxlen(4096); nfq_set_queue_flags(FAIL_OPEN, FAIL_OPEN)`,
// as one message with an acknowledgement.
func TestAppendConfig(t *testing.T) {
	requireLE(t)
	got := appendConfig(nil, 1, 4040, MaxCopyRange, 4096, FlagFailOpen)
	want := unhex(`
		40000000 0203 0500 01000000 00000000  nlmsghdr: len 64, QUEUE<<8|CONFIG, REQUEST|ACK, seq 1
		00 00 0fc8                            nfgenmsg: AF_UNSPEC, v0, queue 4040 (be16)
		0800 0100 01 00 0000                  NFQA_CFG_CMD: BIND, pf 0
		0900 0200 0000fffb 02 000000          NFQA_CFG_PARAMS: copy_range 65531, COPY_PACKET, pad
		0800 0300 00001000                    NFQA_CFG_QUEUE_MAXLEN 4096
		0800 0400 00000001                    NFQA_CFG_MASK FAIL_OPEN
		0800 0500 00000001                    NFQA_CFG_FLAGS FAIL_OPEN`)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
	// Without a length the kernel default stays; flags 0 clear fail-open.
	got = appendConfig(nil, 2, 7, 100, 0, 0)
	want = unhex(`
		38000000 0203 0500 02000000 00000000
		00 00 0007
		0800 0100 01 00 0000
		0900 0200 00000064 02 000000
		0800 0400 00000001
		0800 0500 00000000`)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("config without length (-want +got):\n%s", diff)
	}
}

// nfq_set_verdict2(id, NF_ACCEPT, mark, len, buf) and nfq_set_verdict(id,
// NF_DROP, 0, NULL), concatenated as Flush sends them.
func TestAppendVerdict(t *testing.T) {
	requireLE(t)
	b := appendVerdict(nil, 7, 4040, 0x01020304, Accept, true, 0x10, []byte("abcde"))
	b = appendVerdict(b, 8, 4040, 9, Drop, false, 0, nil)
	want := unhex(`
		34000000 0103 0100 07000000 00000000  nlmsghdr: len 52, QUEUE<<8|VERDICT, REQUEST, seq 7
		00 00 0fc8
		0c00 0200 00000001 01020304           NFQA_VERDICT_HDR: NF_ACCEPT, id
		0800 0300 00000010                    NFQA_MARK 0x10
		0900 0a00 6162636465 000000           NFQA_PAYLOAD "abcde", pad
		20000000 0103 0100 08000000 00000000  len 32, seq 8
		00 00 0fc8
		0c00 0200 00000000 00000009           NF_DROP, id 9`)
	if diff := cmp.Diff(want, b); diff != "" {
		t.Errorf("verdicts (-want +got):\n%s", diff)
	}
}

// packetMsg builds an NFQNL_MSG_PACKET the way the kernel does; attrs are
// (type, value) pairs.
func packetMsg(attrs ...any) []byte {
	b := appendMsgHdr(nil, typePacket, 0, 0, 4040)
	for i := 0; i < len(attrs); i += 2 {
		v := attrs[i+1].([]byte)
		var off int
		b, off = appendAttr(b, uint16(attrs[i].(int)), len(v))
		copy(b[off:], v)
	}
	return endMsg(b, 0)
}

func errorMsg(errno unix.Errno, seq uint32) []byte {
	b := appendMsgHdr(nil, unix.NLMSG_ERROR, 0, 0, 0)[:nlmsgHdrLen]
	b = binary.NativeEndian.AppendUint32(b, uint32(-int32(errno)))
	// The refused message's header (NETLINK_CAP_ACK: no payload).
	b = appendMsgHdr(b, typeVerdict, unix.NLM_F_REQUEST, seq, 4040)[:nlmsgHdrLen+4+nlmsgHdrLen]
	return endMsg(b, 0)
}

var (
	pktHdr  = []byte{0, 0, 0, 42, 0x08, 0x00, 3} // id 42, ETH_P_IP, NF_INET_FORWARD
	ipBytes = []byte("\x45\x00\x00\x1c0123456789abcdefghijklmnopq")
)

func cases() []struct {
	name  string
	in    []byte
	pkts  []Packet
	kerrs []KernelError
	bad   int
} {
	two := append(packetMsg(attrPacketHdr, pktHdr, attrPayload, []byte("ab")),
		packetMsg(attrPacketHdr, []byte{0, 0, 0, 43, 0, 0, 1})...)
	return []struct {
		name  string
		in    []byte
		pkts  []Packet
		kerrs []KernelError
		bad   int
	}{
		{name: "full", in: packetMsg(attrPacketHdr, pktHdr, attrMark, []byte{0, 0, 1, 0},
			attrTimestamp, make([]byte, 16), attrPayload, ipBytes),
			pkts: []Packet{{ID: 42, Hook: 3, HasMark: true, Mark: 0x100, Payload: ipBytes}}},
		{name: "cap_len", in: packetMsg(attrPacketHdr, pktHdr, attrPayload, ipBytes[:8], attrCapLen, []byte{0, 0, 5, 0xdc}),
			pkts: []Packet{{ID: 42, Hook: 3, HasCapLen: true, CapLen: 1500, Payload: ipBytes[:8]}}},
		{name: "no payload", in: packetMsg(attrPacketHdr, pktHdr),
			pkts: []Packet{{ID: 42, Hook: 3}}},
		{name: "two messages", in: two,
			pkts: []Packet{{ID: 42, Hook: 3, Payload: []byte("ab")}, {ID: 43, Hook: 1}}},
		{name: "verdict error", in: errorMsg(unix.ENOENT, 9),
			kerrs: []KernelError{{Seq: 9, Type: typeVerdict, Errno: unix.ENOENT}}},
		{name: "ack", in: errorMsg(0, 9)},
		{name: "other type", in: endMsg(appendMsgHdr(nil, 0x0105, 0, 0, 0), 0)},
		{name: "empty", in: nil},
		{name: "no packet header", in: packetMsg(attrPayload, ipBytes), bad: 1},
		{name: "short packet header", in: packetMsg(attrPacketHdr, pktHdr[:6]), bad: 1},
		{name: "short mark", in: packetMsg(attrPacketHdr, pktHdr, attrMark, []byte{1}), bad: 1},
		{name: "short cap_len", in: packetMsg(attrPacketHdr, pktHdr, attrCapLen, []byte{1, 2}), bad: 1},
		{name: "short header", in: []byte{1, 2, 3}, bad: 1},
		{name: "length beyond data", in: packetMsg(attrPacketHdr, pktHdr)[:30], bad: 1},
		{name: "length below header", in: unhex("08000000 0003 0000 00000000 00000000"), bad: 1},
		{name: "attribute beyond message", in: func() []byte {
			b := packetMsg(attrPacketHdr, pktHdr)
			binary.NativeEndian.PutUint16(b[nlmsgHdrLen+nfgenLen:], 200)
			return b
		}(), bad: 1},
		{name: "attribute length below header", in: func() []byte {
			b := packetMsg(attrPacketHdr, pktHdr)
			binary.NativeEndian.PutUint16(b[nlmsgHdrLen+nfgenLen:], 2)
			return b
		}(), bad: 1},
		{name: "trailing attribute bytes", in: endMsg(append(packetMsg(attrPacketHdr, pktHdr), 1, 2), 0), bad: 1},
		{name: "short nfgenmsg", in: endMsg(appendMsgHdr(nil, typePacket, 0, 0, 0)[:nlmsgHdrLen+2], 0), bad: 1},
		{name: "short error", in: endMsg(append(appendMsgHdr(nil, unix.NLMSG_ERROR, 0, 0, 0)[:nlmsgHdrLen], 0, 0, 0, 0), 0), bad: 1},
		{name: "positive error code", in: func() []byte {
			b := errorMsg(0, 1)
			binary.NativeEndian.PutUint32(b[nlmsgHdrLen:], 5)
			return b
		}(), bad: 1},
		{name: "good then bad", in: append(packetMsg(attrPacketHdr, pktHdr), 0xff, 0xff),
			pkts: []Packet{{ID: 42, Hook: 3}}, bad: 1},
	}
}

const attrTimestamp = 4 // NFQA_TIMESTAMP: skipped

func TestDecode(t *testing.T) {
	requireLE(t)
	for _, tc := range cases() {
		t.Run(tc.name, func(t *testing.T) {
			pkts, kerrs, bad := decode(tc.in, nil, nil)
			if diff := cmp.Diff(tc.pkts, pkts, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("packets (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.kerrs, kerrs, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
			if bad != tc.bad {
				t.Errorf("malformed %d, want %d", bad, tc.bad)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	var p Packet
	err := parsePacket([]byte{0, 0}, &p)
	if !errors.Is(err, errMalformed) {
		t.Errorf("got %v, want errMalformed", err)
	}
	ke := KernelError{Seq: 3, Type: typeVerdict, Errno: unix.ENOENT}
	if !errors.Is(ke, unix.ENOENT) || !strings.Contains(ke.Error(), "seq 3") {
		t.Errorf("KernelError %v does not unwrap or name its sequence", ke)
	}
}

// The verdict message for a packet decodes back into what was asked for:
// the kernel reads the same attribute layout the packet messages use.
func TestVerdictRoundTrip(t *testing.T) {
	b := appendVerdict(nil, 1, 9, 77, Accept, true, 0xabc, ipBytes)
	h, body, rest, err := nextMsg(b)
	if err != nil || len(rest) != 0 || h.Type != typeVerdict {
		t.Fatalf("nextMsg: %+v %v rest %d", h, err, len(rest))
	}
	a := body[nfgenLen:]
	var got []uint16
	for len(a) > 0 {
		l := int(binary.NativeEndian.Uint16(a))
		got = append(got, binary.NativeEndian.Uint16(a[2:]))
		if l == attrHdrLen+len(ipBytes) && string(a[attrHdrLen:l]) != string(ipBytes) {
			t.Errorf("payload %q", a[attrHdrLen:l])
		}
		a = a[align4(l):]
	}
	if diff := cmp.Diff([]uint16{attrVerdictHdr, attrMark, attrPayload}, got); diff != "" {
		t.Errorf("attributes (-want +got):\n%s", diff)
	}
}

// FuzzDecode: received bytes of any shape give packets, errors or a count
// of malformed messages, never a panic; every payload lies inside the
// input, and well-formed inputs decode without complaint.
func FuzzDecode(f *testing.F) {
	for _, tc := range cases() {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		orig := string(in)
		pkts, kerrs, bad := decode(in, nil, nil)
		if string(in) != orig {
			t.Fatal("decode modified its input")
		}
		if bad < 0 || len(pkts)+len(kerrs)+bad > len(in)/nlmsgHdrLen+1 {
			t.Fatalf("%d packets, %d errors, %d malformed from %d bytes", len(pkts), len(kerrs), bad, len(in))
		}
		for _, p := range pkts {
			if p.Payload != nil && !inside(p.Payload, in) {
				t.Fatalf("payload of packet %d is not inside the input", p.ID)
			}
		}
		for _, ke := range kerrs {
			if ke.Errno == 0 {
				t.Fatal("an acknowledgement reported as error")
			}
		}
	})
}

func inside(sub, b []byte) bool {
	if len(sub) == 0 {
		return true
	}
	for i := 0; i+len(sub) <= len(b); i++ {
		if &b[i] == &sub[0] {
			return true
		}
	}
	return false
}
