package inspect

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/ftpsalg/ftpsalg/nft"
)

// mkPacket builds an IPv4 or IPv6 TCP segment with a valid checksum.
func mkPacket(src, dst netip.AddrPort, seq, ack uint32, flags uint8, payload string) []byte {
	tcp := make([]byte, 20+len(payload))
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], ack)
	tcp[12] = 5 << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	copy(tcp[20:], payload)
	var b []byte
	if src.Addr().Is4() {
		b = make([]byte, 20, 20+len(tcp))
		b[0] = 0x45
		binary.BigEndian.PutUint16(b[2:], uint16(20+len(tcp)))
		b[8] = 64
		b[9] = 6
		s, d := src.Addr().As4(), dst.Addr().As4()
		copy(b[12:], s[:])
		copy(b[16:], d[:])
		binary.BigEndian.PutUint16(b[10:], fold(sumBytes(0, b[:20])))
	} else {
		b = make([]byte, 40, 40+len(tcp))
		b[0] = 0x60
		binary.BigEndian.PutUint16(b[4:], uint16(len(tcp)))
		b[6] = 6
		b[7] = 64
		s, d := src.Addr().As16(), dst.Addr().As16()
		copy(b[8:], s[:])
		copy(b[24:], d[:])
	}
	b = append(b, tcp...)
	p, err := parsePacket(b)
	if err != nil {
		panic(err)
	}
	p.fixChecksum()
	return b
}

// fakeTable is an in-memory pinhole set with expiry driven by a clock.
type fakeTable struct {
	mu      sync.Mutex
	now     func() time.Time
	holes   map[nft.Pinhole]time.Time // key has Timeout zeroed
	adds    int
	fail    int // fail this many AddPinholes calls
	deleted []nft.Pinhole
}

func newFakeTable(now func() time.Time) *fakeTable {
	return &fakeTable{now: now, holes: map[nft.Pinhole]time.Time{}}
}

var errInjected = errors.New("injected failure")

func (t *fakeTable) AddPinholes(_ context.Context, ps ...nft.Pinhole) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.fail > 0 {
		t.fail--
		return errInjected
	}
	for _, p := range ps {
		t.adds++
		to := p.Timeout
		p.Timeout = 0
		t.holes[p] = t.now().Add(to)
	}
	return nil
}

func (t *fakeTable) DeletePinholes(_ context.Context, ps ...nft.Pinhole) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range ps {
		p.Timeout = 0
		delete(t.holes, p)
		t.deleted = append(t.deleted, p)
	}
	return nil
}

func (t *fakeTable) Pinholes(context.Context) ([]nft.Element, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []nft.Element
	for p, exp := range t.holes {
		if left := exp.Sub(t.now()); left > 0 {
			out = append(out, nft.Element{Pinhole: p, Expires: left})
		}
	}
	return out, nil
}

func (t *fakeTable) Apply(context.Context, nft.Spec) error { return nil }

func (t *fakeTable) Live(_ context.Context, ps ...nft.Pinhole) ([]bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]bool, len(ps))
	for i, p := range ps {
		p.Timeout = 0
		exp, ok := t.holes[p]
		out[i] = ok && t.now().Before(exp)
	}
	return out, nil
}

// use consumes a pinhole as the kernel's rule does for a new connection.
func (t *fakeTable) use(p nft.Pinhole) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	exp, ok := t.holes[p]
	if !ok || !t.now().Before(exp) {
		return false
	}
	delete(t.holes, p)
	return true
}

func (t *fakeTable) has(p nft.Pinhole) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.holes[p]
	return ok
}
