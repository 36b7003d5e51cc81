package inspect

import (
	"encoding/binary"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// A refused TLS handshake (opaque mode) is reset both ways, failing
// closed:
//
//   - the packet that showed the refusal (a ClientHello or ServerHello) is
//     not released: its verdict carries it rewritten into a bare RST with
//     its own sequence number, which is exactly what its receiver expects
//     next (the engine releases a direction's bytes in order only);
//   - its sender gets a RST from the receiver's address with the packet's
//     acknowledgment number as sequence number — the sender's next
//     expected byte — injected by the Injector (a raw socket);
//   - the flow stays tracked and blocked until it ends: every later
//     packet with payload is dropped, so nothing of the refused handshake
//     gets through even if a RST is lost.
//
// Both RSTs are exact (RFC 5961 §3.2 accepts them without a challenge),
// and conntrack sees them pass and closes the entry.

// Injector sends a locally built IP packet (the reverse RST of a reset).
type Injector interface {
	Inject(pkt []byte) error
}

// toRST rewrites p in place into a bare RST to its destination: its own
// source, destination and sequence number, no options, no payload. It
// returns the new packet (a prefix of p.Raw).
func (p *packet) toRST() []byte {
	t := p.Raw[p.tcpOff:]
	binary.BigEndian.PutUint32(t[8:12], 0)
	t[12] = 5 << 4
	t[13] = flagRST
	t[14], t[15], t[18], t[19] = 0, 0, 0, 0
	p.Raw = p.Raw[:p.tcpOff+20]
	p.Payload = nil
	p.setIPLength()
	p.fixChecksum()
	return p.Raw
}

// reverseRST returns a new bare RST from p's destination to p's source
// with p's acknowledgment number as sequence number.
func (p *packet) reverseRST() []byte {
	var r packet
	if p.V6 {
		r.Raw = make([]byte, 40+20)
		r.Raw[0] = 6 << 4
		r.Raw[6], r.Raw[7] = 6, 64
		copy(r.Raw[8:24], p.Raw[24:40])
		copy(r.Raw[24:40], p.Raw[8:24])
		r.tcpOff, r.V6 = 40, true
	} else {
		r.Raw = make([]byte, 20+20)
		r.Raw[0] = 0x45
		r.Raw[8], r.Raw[9] = 64, 6
		copy(r.Raw[12:16], p.Raw[16:20])
		copy(r.Raw[16:20], p.Raw[12:16])
		r.tcpOff = 20
	}
	t := r.Raw[r.tcpOff:]
	binary.BigEndian.PutUint16(t[0:2], p.Dst.Port())
	binary.BigEndian.PutUint16(t[2:4], p.Src.Port())
	binary.BigEndian.PutUint32(t[4:8], p.Ack)
	t[12] = 5 << 4
	t[13] = flagRST
	r.setIPLength()
	r.fixChecksum()
	return r.Raw
}

// setIPLength writes the IP length fields for len(p.Raw) and, for IPv4,
// the header checksum.
func (p *packet) setIPLength() {
	if p.V6 {
		binary.BigEndian.PutUint16(p.Raw[4:6], uint16(len(p.Raw)-40))
		return
	}
	binary.BigEndian.PutUint16(p.Raw[2:4], uint16(len(p.Raw)))
	ihl := int(p.Raw[0]&0x0f) * 4
	p.Raw[10], p.Raw[11] = 0, 0
	binary.BigEndian.PutUint16(p.Raw[10:12], fold(sumBytes(0, p.Raw[:ihl])))
}

// RawInjector sends packets through raw sockets (IPPROTO_RAW: the packet
// carries its IP header) of the network namespace it was opened in. It
// needs CAP_NET_RAW.
type RawInjector struct {
	mu     sync.Mutex
	fd4    int
	fd6    int
	opened bool
	err    error
}

// Inject implements Injector.
func (r *RawInjector) Inject(pkt []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.opened {
		r.opened = true
		r.fd4, r.err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		if r.err == nil {
			r.fd6, r.err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		}
		if r.err != nil {
			r.err = fmt.Errorf("failed to open a raw socket: %w", r.err)
		}
	}
	if r.err != nil {
		return r.err
	}
	var p packet
	if err := p.parse(pkt); err != nil {
		return fmt.Errorf("failed to inject a packet: %w", err)
	}
	var err error
	if p.V6 {
		err = unix.Sendto(r.fd6, pkt, 0, &unix.SockaddrInet6{Addr: p.Dst.Addr().As16()})
	} else {
		err = unix.Sendto(r.fd4, pkt, 0, &unix.SockaddrInet4{Addr: p.Dst.Addr().As4()})
	}
	if err != nil {
		return fmt.Errorf("failed to inject a packet to %s: %w", p.Dst, err)
	}
	return nil
}

// Close closes the sockets.
func (r *RawInjector) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.opened && r.err == nil {
		unix.Close(r.fd4)
		unix.Close(r.fd6)
	}
	r.opened, r.err = true, fmt.Errorf("injector closed")
	return nil
}
