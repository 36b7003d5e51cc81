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
// upstream connection leaves from the gateway, without a clients entry):
// the policy's default nat_ports, above Linux's ephemeral range.
var DefaultActiveRange = Range{Min: 61000, Max: 61999}

// Ports reserves ports on the gateway's own addresses for translated data
// connections. A translation is "initiator connects to addr:port, which
// leads to target". A port is taken for a new translation when a live
// reservation of the same initiator holds it for another target, or when
// Probe says a local socket uses it. The same initiator may hold one port
// for one target at a time, different initiators may share it: the
// kernel's translation maps are keyed by initiator too. Reserving a port
// the same initiator holds for the same target shares it (two sessions of
// one client announced the same server port in turn); a reservation ends
// when every holder has released it or its lifetime has passed.
type Ports struct {
	// Probe reports whether a local socket already holds ap (a listener of
	// the gateway itself). Nil means no probe. BindProbe is the real one.
	Probe func(ap netip.AddrPort) bool
	// Now defaults to time.Now.
	Now func() time.Time

	mu   sync.Mutex
	held map[Reservation]held
}

// Reservation names one reserved port: its initiator and the gateway
// address and port the initiator connects to.
type Reservation struct {
	Initiator netip.Addr
	At        netip.AddrPort
}

type held struct {
	target netip.AddrPort
	end    time.Time
	refs   int // holders that have not released it
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

// Reserve reserves a port on addr for initiator's connections to target,
// for ttl: want if it is in r and free, otherwise a free port of r chosen
// at random (so that ports are not predictable from one session to the
// next). It reports whether the port differs from want.
func (p *Ports) Reserve(initiator, addr netip.Addr, want uint16, target netip.AddrPort, r Range, ttl time.Duration) (res Reservation, moved bool, err error) {
	if r.Min == 0 || r.Min > r.Max {
		return Reservation{}, false, fmt.Errorf("invalid port range %s", r)
	}
	initiator, addr = initiator.Unmap(), addr.Unmap()
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if p.held == nil {
		p.held = map[Reservation]held{}
	}
	free := func(port uint16) bool {
		k := Reservation{initiator, netip.AddrPortFrom(addr, port)}
		if h, ok := p.held[k]; ok && now.Before(h.end) {
			return h.target == target // shared, not probed: it is ours
		}
		delete(p.held, k)
		return p.Probe == nil || !p.Probe(k.At)
	}
	take := func(port uint16) Reservation {
		k := Reservation{initiator, netip.AddrPortFrom(addr, port)}
		h := p.held[k]
		h.target, h.refs = target, h.refs+1
		if end := now.Add(ttl); end.After(h.end) {
			h.end = end
		}
		p.held[k] = h
		return k
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
	return Reservation{}, false, fmt.Errorf("%w %s on %s", ErrExhausted, r, addr)
}

// Release gives up one hold of a reservation (no-op if none); the port is
// free again when no holder is left.
func (p *Ports) Release(res Reservation) {
	p.mu.Lock()
	defer p.mu.Unlock()
	h, ok := p.held[res]
	if !ok {
		return
	}
	if h.refs--; h.refs <= 0 {
		delete(p.held, res)
		return
	}
	p.held[res] = h
}

// Held returns the number of live reservations.
func (p *Ports) Held() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	n := 0
	for k, h := range p.held {
		if now.Before(h.end) {
			n++
		} else {
			delete(p.held, k)
		}
	}
	return n
}
