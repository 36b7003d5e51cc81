package nft

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Names of the opaque-mode sets (docs/opaque.md), only in tables with
// Spec.Opaque.
const (
	setOpaque4 = "opaque4"
	setOpaque6 = "opaque6"
)

// ErrNoOpaque reports an opaque element for a table without the opaque
// sets (Spec.Opaque false).
var ErrNoOpaque = errors.New("opaque elements need a table with opaque servers")

// Opaque admits every new TCP connection from Src to Dst on a port from
// PortMin to PortMax until Timeout elapses: an opaque-mode session's data
// connections (client . server . passive range, or server . client .
// active range). Unlike a Pinhole it is not consumed by a connection; its
// owner refreshes it while the control connection lives and deletes it
// when it ends.
type Opaque struct {
	Src, Dst         netip.Addr
	PortMin, PortMax uint16
	Timeout          time.Duration
}

// String formats the element as nft does.
func (o Opaque) String() string {
	return fmt.Sprintf("%s . %s . %d-%d", o.Src, o.Dst, o.PortMin, o.PortMax)
}

// Key returns o without its timeout: what identifies the element.
func (o Opaque) Key() Opaque {
	return Opaque{Src: o.Src.Unmap(), Dst: o.Dst.Unmap(), PortMin: o.PortMin, PortMax: o.PortMax}
}

func (o Opaque) normalize(add bool) (Opaque, error) {
	t := o.Timeout
	o = o.Key()
	o.Timeout = t
	switch {
	case !o.Src.IsValid() || !o.Dst.IsValid():
		return o, fmt.Errorf("opaque element %s: invalid address", o)
	case o.Src.Is4() != o.Dst.Is4():
		return o, fmt.Errorf("opaque element %s: mixed address families", o)
	case o.PortMin == 0 || o.PortMin > o.PortMax:
		return o, fmt.Errorf("opaque element %s: bad port range", o)
	case add && (o.Timeout < time.Second || o.Timeout > maxTimeout):
		return o, fmt.Errorf("opaque element %s: timeout %s outside 1s..%s", o, o.Timeout, maxTimeout)
	}
	return o, nil
}

// opaqueSets returns the opaque set definitions, also the templates for
// element updates (HasTimeout, as for pinholeSets). They are concatenated
// interval sets: the port is a range. The packet path never updates them
// (a dynset into an interval set is refused), only the daemon.
func opaqueSets(t *nftables.Table) (v4, v6 *nftables.Set) {
	mk := func(name string, typ nftables.SetDatatype) *nftables.Set {
		return &nftables.Set{
			Table: t, Name: name, KeyType: typ, Concatenation: true, Interval: true,
			HasTimeout: true, Size: MaxPinholes,
			Comment: "opaque-mode TLS sessions: initiator . target . target port range",
		}
	}
	return mk(setOpaque4, typePinholes4), mk(setOpaque6, typePinholes6)
}

// opaqueRules are the forward rules of the opaque sets: a new connection
// within a live session's range is accepted and marked like a pinholed
// one, and the element stays.
func opaqueRules(s Spec, add func(string, ...expr.Any)) {
	for _, f := range []family{ipv4, ipv6} {
		name := setOpaque4
		if f.nfproto != ipv4.nfproto {
			name = setOpaque6
		}
		add("data "+f.name+": new connection within a live opaque session's range, marks the flow",
			cat(ctStateNew(), f.match(), matchTCP(), f.pinholeKey(), lookup(name),
				ctMarkOr(s.CtMark), counter(), accept())...)
	}
}

// opaqueElement is the kernel element of o: the key from the range's
// first port, KeyEnd to its last.
func opaqueElement(o Opaque, timeout bool) nftables.SetElement {
	e := nftables.SetElement{
		Key:    appendPort(appendAddr(appendAddr(make([]byte, 0, 36), o.Src), o.Dst), o.PortMin),
		KeyEnd: appendPort(appendAddr(appendAddr(make([]byte, 0, 36), o.Src), o.Dst), o.PortMax),
	}
	if timeout {
		e.Timeout = o.Timeout
	}
	return e
}

func splitOpaque(os []Opaque, timeout bool) (v4, v6 []nftables.SetElement) {
	for _, o := range os {
		if o.Src.Is4() {
			v4 = append(v4, opaqueElement(o, timeout))
		} else {
			v6 = append(v6, opaqueElement(o, timeout))
		}
	}
	return v4, v6
}

func normalizeOpaque(os []Opaque, add bool) ([]Opaque, error) {
	out := make([]Opaque, 0, len(os))
	seen := map[Opaque]int{}
	for _, o := range os {
		n, err := o.normalize(add)
		if err != nil {
			return nil, err
		}
		if i, dup := seen[n.Key()]; dup {
			out[i] = n // the last of equal keys wins
			continue
		}
		seen[n.Key()] = len(out)
		out = append(out, n)
	}
	return out, nil
}

// AddOpaque adds opaque elements in one transaction, or refreshes the
// timeout of those already there: each is destroyed and added again in
// the same transaction, so a refresh never leaves a gap and never depends
// on whether the kernel updates the timeout of a re-added interval.
func (k *Kernel) AddOpaque(ctx context.Context, o ...Opaque) error {
	norm, err := normalizeOpaque(o, true)
	if err != nil {
		return fmt.Errorf("nft: failed to add opaque elements: %w", err)
	}
	if len(norm) == 0 {
		return nil
	}
	tpl, err := k.templates()
	if err != nil {
		return fmt.Errorf("nft: failed to add opaque elements: %w", err)
	}
	if tpl.opaque4 == nil {
		return fmt.Errorf("nft: failed to add opaque elements: %w", ErrNoOpaque)
	}
	keys4, keys6 := splitOpaque(norm, false)
	el4, el6 := splitOpaque(norm, true)
	// Destroy and add in one transaction: the refresh of a live element's
	// timeout (an interval element is not updated in place).
	return k.commitOps(ctx, "add opaque elements", destroyOp(tpl.opaque4, keys4), addOp(tpl.opaque4, el4),
		destroyOp(tpl.opaque6, keys6), addOp(tpl.opaque6, el6))
}

// DeleteOpaque removes opaque elements in one transaction; missing ones
// are not an error.
func (k *Kernel) DeleteOpaque(ctx context.Context, o ...Opaque) error {
	norm, err := normalizeOpaque(o, false)
	if err != nil {
		return fmt.Errorf("nft: failed to delete opaque elements: %w", err)
	}
	if len(norm) == 0 {
		return nil
	}
	tpl, err := k.templates()
	if err != nil {
		return fmt.Errorf("nft: failed to delete opaque elements: %w", err)
	}
	if tpl.opaque4 == nil {
		return nil
	}
	keys4, keys6 := splitOpaque(norm, false)
	return k.commitOps(ctx, "delete opaque elements", destroyOp(tpl.opaque4, keys4), destroyOp(tpl.opaque6, keys6))
}

// OpaqueElement is an opaque element as the kernel holds it.
type OpaqueElement struct {
	Opaque
	Expires time.Duration
}

// Opaques lists the opaque elements, sorted.
func (k *Kernel) Opaques(ctx context.Context) ([]OpaqueElement, error) {
	tpl, err := k.templates()
	if err != nil {
		return nil, fmt.Errorf("nft: failed to list opaque elements: %w", err)
	}
	if tpl.opaque4 == nil {
		return nil, nil
	}
	var out []OpaqueElement
	err = k.doRead(ctx, func(c *nftables.Conn) error {
		for _, s := range []*nftables.Set{tpl.opaque4, tpl.opaque6} {
			els, err := c.GetSetElements(s)
			if err != nil {
				return err
			}
			for _, e := range els {
				if e.IntervalEnd || len(e.KeyEnd) == 0 {
					continue
				}
				p, ok := decodePinholeKey(e.Key)
				q, ok2 := decodePinholeKey(e.KeyEnd)
				if !ok || !ok2 {
					continue
				}
				out = append(out, OpaqueElement{Opaque: Opaque{Src: p.Src, Dst: p.Dst, PortMin: p.DstPort, PortMax: q.DstPort, Timeout: e.Timeout}, Expires: e.Expires})
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("nft: failed to list opaque elements: %w", classify(err))
	}
	sortOpaque(out)
	return out, nil
}

func sortOpaque(out []OpaqueElement) {
	slices.SortFunc(out, func(a, b OpaqueElement) int {
		return cmp.Or(a.Src.Compare(b.Src), a.Dst.Compare(b.Dst), cmp.Compare(a.PortMin, b.PortMin), cmp.Compare(a.PortMax, b.PortMax))
	})
}
