// Package nat holds what ftpsalg needs to translate FTP announcements
// across a NAT gateway: the reservation of gateway ports that replace
// announced ones, and the pure functions that build the rewritten lines.
// It does no packet or socket I/O of its own except the optional bind
// probe a Ports is given.
package nat

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"
)

// ErrExhausted is returned when every port of a range is reserved or in use.
var ErrExhausted = errors.New("no free port in the range")

// Range is an inclusive port range.
type Range struct{ Min, Max uint16 }

// Contains reports whether p is in r.
func (r Range) Contains(p uint16) bool { return p >= r.Min && p <= r.Max }

// String formats r as "min-max".
func (r Range) String() string { return fmt.Sprintf("%d-%d", r.Min, r.Max) }

// DefaultActiveRange is where active-mode (PORT/EPRT) translations reserve
// gateway ports when the policy names no range (a mitm server whose
// upstream connection leaves from the gateway, without a clients entry).
var DefaultActiveRange = Range{Min: 50000, Max: 50999}

// Ports reserves ports on the gateway's own addresses for translated data
// connections. A port is free when no live reservation holds it and, if
// Probe is set, Probe says no local socket uses it. Reservations end with
// Release or when their lifetime passes, whichever is first.
//
// A reservation is per address and port, whoever the initiator: one public
// port leads to one inside endpoint at a time, which keeps the audit trail
// and the kernel maps unambiguous.
type Ports struct {
	// Probe reports whether a local socket already holds ap (a listener of
	// the gateway itself). Nil means no probe. BindProbe is the real one.
	Probe func(ap netip.AddrPort) bool
	// Now defaults to time.Now.
	Now func() time.Time

	mu   sync.Mutex
	held map[netip.AddrPort]time.Time // reservation → end of life
}

// BindProbe reports whether ap is in use by a local socket: it tries to
// bind a TCP listener there and closes it at once.
func BindProbe(ap netip.AddrPort) bool {
	ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(ap))
	if err != nil {
		return true
	}
	ln.Close()
	return false
}

func (p *Ports) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

// Reserve reserves a port on addr for ttl: want if it is in r and free,
// otherwise a free port of r chosen at random (so that ports are not
// predictable from one session to the next). It reports whether the port
// differs from want.
func (p *Ports) Reserve(addr netip.Addr, want uint16, r Range, ttl time.Duration) (port uint16, moved bool, err error) {
	if r.Min == 0 || r.Min > r.Max {
		return 0, false, fmt.Errorf("invalid port range %s", r)
	}
	addr = addr.Unmap()
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if p.held == nil {
		p.held = map[netip.AddrPort]time.Time{}
	}
	free := func(port uint16) bool {
		ap := netip.AddrPortFrom(addr, port)
		if end, ok := p.held[ap]; ok {
			if now.Before(end) {
				return false
			}
			delete(p.held, ap)
		}
		return p.Probe == nil || !p.Probe(ap)
	}
	take := func(port uint16) uint16 {
		p.held[netip.AddrPortFrom(addr, port)] = now.Add(ttl)
		return port
	}
	if r.Contains(want) && free(want) {
		return take(want), false, nil
	}
	// Start at a random offset and walk the range once.
	n := int(r.Max) - int(r.Min) + 1
	start := rand.IntN(n)
	for i := range n {
		port := r.Min + uint16((start+i)%n)
		if port != want && free(port) {
			return take(port), true, nil
		}
	}
	return 0, false, fmt.Errorf("%w %s on %s", ErrExhausted, r, addr)
}

// Release ends the reservation of ap (no-op if none).
func (p *Ports) Release(ap netip.AddrPort) {
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	p.mu.Lock()
	delete(p.held, ap)
	p.mu.Unlock()
}

// Held returns the number of live reservations.
func (p *Ports) Held() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	n := 0
	for ap, end := range p.held {
		if now.Before(end) {
			n++
		} else {
			delete(p.held, ap)
		}
	}
	return n
}
