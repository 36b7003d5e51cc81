package nft

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/google/nftables"
)

var _ Table = (*Fake)(nil)

// Fake is an in-memory Table for unit tests. It keeps the same ruleset the
// Kernel would send, enforces the kernel's semantics (no table before Apply
// or after Delete, single-use pinholes, timeouts, source NAT only with mitm
// servers) and renders the same Dump text. Its clock is virtual: pinholes
// expire only when the test calls Advance. It is safe for concurrent use.
type Fake struct {
	mu       sync.Mutex
	now      time.Duration // virtual time since NewFake
	spec     Spec
	rs       *ruleset // nil while the table does not exist
	pinholes map[key]fakeElem
	// relays holds the relay elements (Pinhole.Relay); a key is in
	// pinholes or in relays, never both.
	relays map[key]fakeElem
	// snat holds the source NAT map elements. Like the kernel's, they are
	// not consumed by Use: they stay until they time out or are deleted.
	snat map[key]fakeElem
	// bans outlive Apply, as the kernel's do (carryBans).
	bans map[netip.Addr]fakeBan
	// opaque holds the opaque elements by key (Opaque.Key).
	opaque   map[Opaque]fakeOpaque
	failNext error
}

type fakeOpaque struct {
	o        Opaque
	deadline time.Duration
}

type fakeElem struct {
	p        Pinhole // with SNAT in snat, without in pinholes
	deadline time.Duration
}

// NewFake returns a Fake without a table, like a kernel before Apply.
func NewFake() *Fake {
	return &Fake{pinholes: map[key]fakeElem{}, relays: map[key]fakeElem{}, snat: map[key]fakeElem{},
		bans: map[netip.Addr]fakeBan{}, opaque: map[Opaque]fakeOpaque{}}
}

// Advance moves the virtual clock; pinholes whose timeout has elapsed are
// gone afterwards, as the kernel's set garbage collection would remove them.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now += d
	f.expire()
}

// Use simulates the first packet of a new TCP connection from src to
// dst:port crossing the forward hook: if a pinhole matches, it is consumed
// (deleted) and Use reports true, as the kernel rule marks and accepts the
// flow; otherwise the operator's ruleset decides and Use reports false.
func (f *Fake) Use(src, dst netip.Addr, port uint16) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rs == nil {
		return false
	}
	f.expire()
	k := key{src.Unmap(), dst.Unmap(), port}
	if _, ok := f.pinholes[k]; !ok {
		// An opaque session's range admits it, and stays.
		for o := range f.opaque {
			if o.Src == k.src && o.Dst == k.dst && port >= o.PortMin && port <= o.PortMax {
				return true
			}
		}
		return false
	}
	delete(f.pinholes, k)
	return true
}

// Divert simulates the first packet of a new TCP connection from src to
// dst:port reaching the prerouting hook with the relay listener up: if a
// relay element matches, it is consumed and Divert reports true, as the
// kernel rule assigns the connection to the relay listener; otherwise the
// connection is not diverted. Forwarded pinholes are Use's.
func (f *Fake) Divert(src, dst netip.Addr, port uint16) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rs == nil {
		return false
	}
	f.expire()
	k := key{src.Unmap(), dst.Unmap(), port}
	if _, ok := f.relays[k]; !ok {
		return false
	}
	delete(f.relays, k)
	return true
}

// FailNext makes the next Table call fail with err, without changing
// anything, to test the caller's error handling and resync.
func (f *Fake) FailNext(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNext = err
}

// Spec returns the last applied Spec (normalised) and whether the table
// exists.
func (f *Fake) Spec() (Spec, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.spec, f.rs != nil
}

func (f *Fake) expire() {
	expired := func(_ key, e fakeElem) bool { return e.deadline <= f.now }
	maps.DeleteFunc(f.pinholes, expired)
	maps.DeleteFunc(f.relays, expired)
	maps.DeleteFunc(f.snat, expired)
	maps.DeleteFunc(f.bans, func(_ netip.Addr, e fakeBan) bool { return e.deadline <= f.now })
	maps.DeleteFunc(f.opaque, func(_ Opaque, e fakeOpaque) bool { return e.deadline <= f.now })
}

// begin takes the lock and consumes an injected failure.
func (f *Fake) begin(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	if err := f.failNext; err != nil {
		f.failNext = nil
		f.mu.Unlock()
		return err
	}
	f.expire()
	return nil
}

// Apply implements Table.
func (f *Fake) Apply(ctx context.Context, s Spec) error {
	s, err := s.validate()
	if err != nil {
		return fmt.Errorf("nft: failed to apply table: %w", err)
	}
	if err := f.begin(ctx); err != nil {
		return fmt.Errorf("nft: failed to apply table %s: %w", s.Table, err)
	}
	defer f.mu.Unlock()
	f.spec = s
	f.rs = buildRuleset(s)
	clear(f.pinholes)
	clear(f.relays)
	clear(f.snat)
	if !s.Bans {
		clear(f.bans)
	}
	clear(f.opaque)
	return nil
}

// AddPinholes implements Table.
func (f *Fake) AddPinholes(ctx context.Context, p ...Pinhole) error {
	norm, err := normalizeAll(p, Pinhole.normalizeAdd)
	if err != nil {
		return fmt.Errorf("nft: failed to add pinholes: %w", err)
	}
	if err := f.begin(ctx); err != nil {
		return fmt.Errorf("nft: failed to add pinholes: %w", err)
	}
	defer f.mu.Unlock()
	if f.rs == nil {
		return fmt.Errorf("nft: failed to add pinholes: %w", ErrNoTable)
	}
	mitm := f.spec.hasMITM()
	if !mitm && (hasSNAT(norm) || hasDNAT(norm)) {
		return fmt.Errorf("nft: failed to add pinholes: %w", ErrNoMITM)
	}
	if !f.spec.hasRelay() && hasRelay(norm) {
		return fmt.Errorf("nft: failed to add pinholes: %w", ErrNoRelay)
	}
	// The batch as the kernel would end up with it, checked against the
	// capacity before anything changes.
	pinholes, relays, snat := maps.Clone(f.pinholes), maps.Clone(f.relays), maps.Clone(f.snat)
	for _, p := range norm {
		nat := p.SNAT
		p.SNAT = netip.Addr{}
		if p.Relay {
			delete(pinholes, p.key())
			relays[p.key()] = fakeElem{p: p, deadline: f.now + p.Timeout}
		} else {
			delete(relays, p.key())
			pinholes[p.key()] = fakeElem{p: p, deadline: f.now + p.Timeout}
		}
		if !mitm {
			continue
		}
		delete(snat, p.key())
		if nat.IsValid() {
			p.SNAT = nat
			snat[p.key()] = fakeElem{p: p, deadline: f.now + p.Timeout}
		}
	}
	if overCapacity(pinholes) || overCapacity(relays) || overCapacity(snat) {
		return fmt.Errorf("nft: failed to add pinholes: %w", ErrFull)
	}
	f.pinholes, f.relays, f.snat = pinholes, relays, snat
	return nil
}

// overCapacity reports whether a set or map of either family would hold
// more than MaxPinholes elements.
func overCapacity(m map[key]fakeElem) bool {
	var n4, n6 int
	for k := range m {
		if k.src.Is4() {
			n4++
		} else {
			n6++
		}
	}
	return n4 > MaxPinholes || n6 > MaxPinholes
}

// DeletePinholes implements Table.
func (f *Fake) DeletePinholes(ctx context.Context, p ...Pinhole) error {
	norm, err := normalizeAll(p, Pinhole.normalize)
	if err != nil {
		return fmt.Errorf("nft: failed to delete pinholes: %w", err)
	}
	if err := f.begin(ctx); err != nil {
		return fmt.Errorf("nft: failed to delete pinholes: %w", err)
	}
	defer f.mu.Unlock()
	if f.rs == nil {
		return fmt.Errorf("nft: failed to delete pinholes: %w", ErrNoTable)
	}
	for _, p := range norm {
		delete(f.pinholes, p.key())
		delete(f.relays, p.key())
		delete(f.snat, p.key())
	}
	return nil
}

// Pinholes implements Table.
func (f *Fake) Pinholes(ctx context.Context) ([]Element, error) {
	if err := f.begin(ctx); err != nil {
		return nil, fmt.Errorf("nft: failed to list pinholes: %w", err)
	}
	defer f.mu.Unlock()
	if f.rs == nil {
		return nil, fmt.Errorf("nft: failed to list pinholes: %w", ErrNoTable)
	}
	out := make([]Element, 0, len(f.pinholes)+len(f.relays))
	for k, e := range f.pinholes {
		p := e.p
		p.SNAT = f.snat[k].p.SNAT
		out = append(out, Element{Pinhole: p, Expires: e.deadline - f.now})
	}
	for _, e := range f.relays {
		out = append(out, Element{Pinhole: e.p, Expires: e.deadline - f.now})
	}
	sortElements(out)
	return out, nil
}

// Live implements Table.
func (f *Fake) Live(ctx context.Context, p ...Pinhole) ([]bool, error) {
	norm, err := normalizeAll(p, Pinhole.normalize)
	if err != nil {
		return nil, fmt.Errorf("nft: failed to look pinholes up: %w", err)
	}
	if err := f.begin(ctx); err != nil {
		return nil, fmt.Errorf("nft: failed to look pinholes up: %w", err)
	}
	defer f.mu.Unlock()
	if f.rs == nil {
		return nil, fmt.Errorf("nft: failed to look pinholes up: %w", ErrNoTable)
	}
	out := make([]bool, len(norm))
	for i, p := range norm {
		if p.Relay {
			_, out[i] = f.relays[p.key()]
		} else {
			e, ok := f.pinholes[p.key()]
			out[i] = ok && e.p.DNAT == p.DNAT
		}
	}
	return out, nil
}

// Delete implements Table.
func (f *Fake) Delete(ctx context.Context) error {
	if err := f.begin(ctx); err != nil {
		return fmt.Errorf("nft: failed to delete table: %w", err)
	}
	defer f.mu.Unlock()
	f.rs = nil
	clear(f.pinholes)
	clear(f.relays)
	clear(f.snat)
	clear(f.bans)
	clear(f.opaque)
	return nil
}

// Dump implements Table.
func (f *Fake) Dump(ctx context.Context) (string, error) {
	if err := f.begin(ctx); err != nil {
		return "", fmt.Errorf("nft: failed to dump table: %w", err)
	}
	defer f.mu.Unlock()
	if f.rs == nil {
		return "", fmt.Errorf("nft: failed to dump table: %w", ErrNoTable)
	}
	m := tableModel{name: f.rs.table.Name}
	for _, s := range f.rs.sets {
		elems := slices.Clone(f.rs.elems[s.Name])
		for _, e := range f.pinholes {
			fam := familyOf(e.p)
			switch {
			case e.p.DNAT.IsValid() && s.Name == fam.dnatPinholes:
				elems = append(elems, nftables.SetElement{Key: forwardKey(e.p), Timeout: e.p.Timeout})
			case e.p.DNAT.IsValid() && s.Name == fam.dnat:
				elems = append(elems, nftables.SetElement{Key: pinholeKey(e.p), Val: targetValue(e.p.DNAT), Timeout: e.p.Timeout})
			case !e.p.DNAT.IsValid() && s.Name == fam.pinholes:
				elems = append(elems, nftables.SetElement{Key: pinholeKey(e.p), Timeout: e.p.Timeout})
			}
		}
		for _, e := range f.relays {
			if s.Name == familyOf(e.p).relay {
				elems = append(elems, nftables.SetElement{Key: pinholeKey(e.p), Timeout: e.p.Timeout})
			}
		}
		for _, e := range f.snat {
			if s.Name == familyOf(e.p).snat {
				elems = append(elems, nftables.SetElement{Key: forwardKey(e.p), Val: e.p.SNAT.AsSlice(), Timeout: e.p.Timeout})
			}
		}
		for _, e := range f.bans {
			if e.b.Addr.Is4() && s.Name == setBanned4 || !e.b.Addr.Is4() && s.Name == setBanned6 {
				elems = append(elems, nftables.SetElement{Key: e.b.Addr.AsSlice(), Timeout: e.b.Timeout})
			}
		}
		for _, e := range f.opaque {
			if (s.Name == setOpaque4) == e.o.Src.Is4() && (s.Name == setOpaque4 || s.Name == setOpaque6) {
				elems = append(elems, opaqueElement(e.o, true))
			}
		}
		m.sets = append(m.sets, setModel{set: s, elems: elems})
	}
	m.chains = slices.Clone(f.rs.chains)
	return renderTable(m), nil
}

func familyOf(p Pinhole) family {
	if p.Src.Is4() {
		return ipv4
	}
	return ipv6
}

// normalizeAll validates every pinhole before anything changes, so a
// request is applied entirely or not at all, as a kernel transaction is.
func normalizeAll(p []Pinhole, norm func(Pinhole) (Pinhole, error)) ([]Pinhole, error) {
	out := make([]Pinhole, len(p))
	for i := range p {
		n, err := norm(p[i])
		if err != nil {
			return nil, err
		}
		out[i] = n
	}
	return out, nil
}

// AddOpaque implements the Kernel's AddOpaque: adds or refreshes.
func (f *Fake) AddOpaque(ctx context.Context, o ...Opaque) error {
	norm, err := normalizeOpaque(o, true)
	if err != nil {
		return fmt.Errorf("nft: failed to add opaque elements: %w", err)
	}
	if err := f.begin(ctx); err != nil {
		return fmt.Errorf("nft: failed to add opaque elements: %w", err)
	}
	defer f.mu.Unlock()
	if f.rs == nil {
		return fmt.Errorf("nft: failed to add opaque elements: %w", ErrNoTable)
	}
	if !f.spec.Opaque {
		return fmt.Errorf("nft: failed to add opaque elements: %w", ErrNoOpaque)
	}
	for _, e := range norm {
		f.opaque[e.Key()] = fakeOpaque{o: e, deadline: f.now + e.Timeout}
	}
	return nil
}

// DeleteOpaque implements the Kernel's DeleteOpaque.
func (f *Fake) DeleteOpaque(ctx context.Context, o ...Opaque) error {
	norm, err := normalizeOpaque(o, false)
	if err != nil {
		return fmt.Errorf("nft: failed to delete opaque elements: %w", err)
	}
	if err := f.begin(ctx); err != nil {
		return fmt.Errorf("nft: failed to delete opaque elements: %w", err)
	}
	defer f.mu.Unlock()
	if f.rs == nil {
		return fmt.Errorf("nft: failed to delete opaque elements: %w", ErrNoTable)
	}
	for _, e := range norm {
		delete(f.opaque, e.Key())
	}
	return nil
}

// Opaques implements the Kernel's Opaques.
func (f *Fake) Opaques(ctx context.Context) ([]OpaqueElement, error) {
	if err := f.begin(ctx); err != nil {
		return nil, fmt.Errorf("nft: failed to list opaque elements: %w", err)
	}
	defer f.mu.Unlock()
	if f.rs == nil {
		return nil, fmt.Errorf("nft: failed to list opaque elements: %w", ErrNoTable)
	}
	var out []OpaqueElement
	for _, e := range f.opaque {
		out = append(out, OpaqueElement{Opaque: e.o, Expires: e.deadline - f.now})
	}
	sortOpaque(out)
	return out, nil
}
