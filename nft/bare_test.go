package nft

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ftpsalg/ftpsalg/alg/inspect/nfq"
)

// segment is a hand-made TCP segment for TestKernelQueueBare.
type segment struct {
	name     string
	src, dst netip.AddrPort
	flags    byte
	doff     int    // TCP header length in 32-bit words (options are NOPs)
	byte12   byte   // low nibble of TCP byte 12 (reserved bits, AE)
	payload  int    // bytes of payload
	ipOpts   bool   // IPv4: one 4-byte IP option (NOPs); IPv6: a destination options header
	queued   bool   // whether the queue rules must queue it
	seq      uint32 // set by the test: identifies the segment at the queue
	fromServ bool   // sent from the server's namespace
}

// raw builds the IP packet of s, TCP checksum included (the IPv4 header
// checksum is the kernel's with IP_HDRINCL).
func (s segment) raw() []byte {
	tcp := make([]byte, 4*s.doff+s.payload)
	binary.BigEndian.PutUint16(tcp[0:], s.src.Port())
	binary.BigEndian.PutUint16(tcp[2:], s.dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], s.seq)
	binary.BigEndian.PutUint32(tcp[8:], 1)
	tcp[12] = byte(s.doff<<4) | s.byte12
	tcp[13] = s.flags
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	for i := 20; i < 4*s.doff; i++ {
		tcp[i] = 1 // NOP
	}
	for i := 4 * s.doff; i < len(tcp); i++ {
		tcp[i] = 'x'
	}
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(s.src.Addr().AsSlice())
	add(s.dst.Addr().AsSlice())
	sum += unix.IPPROTO_TCP + uint32(len(tcp))
	add(tcp)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(tcp[16:], ^uint16(sum))

	if s.src.Addr().Is4() {
		hl := 20
		if s.ipOpts {
			hl = 24
		}
		ip := make([]byte, hl, hl+len(tcp))
		ip[0] = 0x40 | byte(hl/4)
		binary.BigEndian.PutUint16(ip[2:], uint16(hl+len(tcp)))
		ip[8], ip[9] = 64, unix.IPPROTO_TCP
		copy(ip[12:], s.src.Addr().AsSlice())
		copy(ip[16:], s.dst.Addr().AsSlice())
		for i := 20; i < hl; i++ {
			ip[i] = 1 // NOP
		}
		return append(ip, tcp...)
	}
	var ext []byte
	next := byte(unix.IPPROTO_TCP)
	if s.ipOpts {
		ext = []byte{unix.IPPROTO_TCP, 0, 1, 4, 0, 0, 0, 0} // PadN
		next = unix.IPPROTO_DSTOPTS
	}
	ip := make([]byte, 40, 40+len(ext)+len(tcp))
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(len(ext)+len(tcp)))
	ip[6], ip[7] = next, 64
	copy(ip[8:], s.src.Addr().AsSlice())
	copy(ip[24:], s.dst.Addr().AsSlice())
	return append(append(ip, ext...), tcp...)
}

// sendRaw sends pkt from ns through a raw socket (header included).
func sendRaw(ns *netns, pkt []byte, dst netip.Addr) error {
	return ns.do(func() error {
		fam := unix.AF_INET6
		if dst.Is4() {
			fam = unix.AF_INET
		}
		fd, err := unix.Socket(fam, unix.SOCK_RAW, unix.IPPROTO_RAW)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		var sa unix.Sockaddr
		if dst.Is4() {
			sa = &unix.SockaddrInet4{Addr: dst.As4()}
		} else {
			sa = &unix.SockaddrInet6{Addr: dst.As16()}
		}
		return unix.Sendto(fd, pkt, 0, sa)
	})
}

// TestKernelQueueBare checks the queue rules' payload test against the
// kernel with real segments crossing the gateway: segments with payload,
// and SYN, FIN and RST, are queued; bare segments (pure ACKs, window
// updates) are not; bare segments the sets do not recognise (IP options,
// IPv6 extension headers) are queued, never the other way round.
func TestKernelQueueBare(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	ctx := ctxT(t)
	k := newKernel(t, l.gw)
	kind, err := ProbeQueue(ctx, WithNetNS(l.gw.fd()))
	if err != nil {
		t.Fatal(err)
	}
	spec := testSpec(kind)
	if err := k.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}

	seen := make(chan uint32, 64)
	nf, err := nfq.Open(nfq.Config{Queue: spec.Queue, MaxLen: 64, NetNS: l.gw.fd()})
	if err != nil {
		t.Fatal(err)
	}
	qctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	defer func() {
		cancel()
		<-done
		nf.Close()
	}()
	go func() {
		defer close(done)
		for {
			b, err := nf.Read(qctx)
			if err != nil {
				if qctx.Err() != nil {
					return
				}
				continue
			}
			for _, a := range b.Packets {
				if a.Payload == nil {
					continue
				}
				p := a.Payload
				l4 := 20
				if p[0]>>4 == 4 {
					l4 = int(p[0]&0x0f) * 4
				} else if l4 = 40; p[6] != unix.IPPROTO_TCP {
					l4 = 48 // the test's one destination options header
				}
				seen <- binary.BigEndian.Uint32(p[l4+4:])
				_ = nf.Verdict(a.ID, nfq.Drop, false, 0, nil)
			}
			_ = nf.Flush()
		}
	}()

	cli4 := netip.MustParseAddrPort(labClient4 + ":40000")
	srv4 := netip.MustParseAddrPort(labServer4 + ":21")
	cli6 := netip.MustParseAddrPort("[" + labClient6 + "]:40000")
	srv6 := netip.MustParseAddrPort("[" + labServer6 + "]:21")
	const ack, psh, fin, syn, rst, urg, ece, cwr = 0x10, 0x08, 0x01, 0x02, 0x04, 0x20, 0x40, 0x80
	cases := []segment{
		{name: "v4 pure ACK", src: cli4, dst: srv4, flags: ack, doff: 5},
		{name: "v4 pure ACK with timestamps", src: cli4, dst: srv4, flags: ack, doff: 8},
		{name: "v4 pure ACK, 40 bytes of options", src: cli4, dst: srv4, flags: ack, doff: 15},
		{name: "v4 pure ACK with ECE, CWR, URG", src: cli4, dst: srv4, flags: ack | ece | cwr | urg, doff: 5},
		{name: "v4 pure ACK with AE and reserved bits", src: cli4, dst: srv4, flags: ack, doff: 5, byte12: 0x0f},
		{name: "v4 server's pure ACK", src: srv4, dst: cli4, flags: ack, doff: 8, fromServ: true},
		{name: "v4 one byte", src: cli4, dst: srv4, flags: ack | psh, doff: 5, payload: 1, queued: true},
		{name: "v4 one byte without PSH", src: cli4, dst: srv4, flags: ack, doff: 8, payload: 1, queued: true},
		{name: "v4 one byte after 40 bytes of options", src: cli4, dst: srv4, flags: ack, doff: 15, payload: 1, queued: true},
		{name: "v4 four bytes, doff 5", src: cli4, dst: srv4, flags: ack, doff: 5, payload: 4, queued: true},
		{name: "v4 server's line", src: srv4, dst: cli4, flags: ack | psh, doff: 8, payload: 20, queued: true, fromServ: true},
		{name: "v4 FIN", src: cli4, dst: srv4, flags: ack | fin, doff: 8, queued: true},
		{name: "v4 RST", src: cli4, dst: srv4, flags: rst, doff: 5, queued: true},
		{name: "v4 SYN", src: cli4, dst: srv4, flags: syn, doff: 10, queued: true},
		{name: "v4 server's SYN-ACK", src: srv4, dst: cli4, flags: syn | ack, doff: 10, queued: true, fromServ: true},
		{name: "v4 pure ACK with IP options (not recognised)", src: cli4, dst: srv4, flags: ack, doff: 5, ipOpts: true, queued: true},
		{name: "v4 pure ACK to another port", src: cli4, dst: netip.AddrPortFrom(srv4.Addr(), 2121), flags: ack, doff: 5},
		{name: "v6 pure ACK", src: cli6, dst: srv6, flags: ack, doff: 5},
		{name: "v6 pure ACK with timestamps", src: cli6, dst: srv6, flags: ack, doff: 8},
		{name: "v6 server's pure ACK", src: srv6, dst: cli6, flags: ack, doff: 15, fromServ: true},
		{name: "v6 one byte", src: cli6, dst: srv6, flags: ack, doff: 5, payload: 1, queued: true},
		{name: "v6 one byte after 40 bytes of options", src: cli6, dst: srv6, flags: ack, doff: 15, payload: 1, queued: true},
		{name: "v6 server's line", src: srv6, dst: cli6, flags: ack | psh, doff: 8, payload: 20, queued: true, fromServ: true},
		{name: "v6 FIN", src: cli6, dst: srv6, flags: ack | fin, doff: 8, queued: true},
		{name: "v6 RST", src: cli6, dst: srv6, flags: rst | ack, doff: 5, queued: true},
		{name: "v6 SYN", src: cli6, dst: srv6, flags: syn, doff: 10, queued: true},
		{name: "v6 pure ACK after an extension header (not recognised)", src: cli6, dst: srv6, flags: ack, doff: 5, ipOpts: true, queued: true},
	}
	send := func(s segment) {
		t.Helper()
		ns := l.client
		if s.fromServ {
			ns = l.server
		}
		if err := sendRaw(ns, s.raw(), s.dst.Addr()); err != nil {
			t.Fatalf("%s: failed to send: %v", s.name, err)
		}
	}
	// Each case is followed by a sentinel that is queued: once the
	// sentinel arrives, the case had its chance (one sender, one path).
	got := map[uint32]bool{}
	wait := func(seq uint32) error {
		for {
			select {
			case s := <-seen:
				got[s] = true
				if s == seq {
					return nil
				}
			case <-ctx.Done():
				return fmt.Errorf("segment %d never reached the queue", seq)
			}
		}
	}
	for i, c := range cases {
		c.seq = uint32(1000 + 2*i)
		send(c)
		sentinel := segment{name: "sentinel", src: c.src, dst: c.dst, flags: ack | psh, doff: 5, payload: 1,
			seq: c.seq + 1, fromServ: c.fromServ}
		if c.dst.Port() != srv4.Port() && c.src.Port() != srv4.Port() {
			sentinel.dst = srv4
		}
		send(sentinel)
		if err := wait(sentinel.seq); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if c.queued && !got[c.seq] {
			if err := wait(c.seq); err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
		}
		if got[c.seq] != c.queued {
			t.Errorf("%s: queued %v, want %v", c.name, got[c.seq], c.queued)
		}
	}
}
