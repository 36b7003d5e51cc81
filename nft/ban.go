package nft

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Names of the ban objects, in tables with Spec.Bans (docs/config.md,
// "throttle").
const (
	setBanned4 = "banned4"
	setBanned6 = "banned6"
	chainBan   = "ban"
)

// banPriority is mangle - 10 (-160): after conntrack (-200), so ct state is
// known, and before the prerouting chain's TPROXY diversion (-150) and the
// forward hook's queue rules: a banned client's new control connection is
// dropped before anything of ftpsalg's (or the daemon) sees it.
const banPriority nftables.ChainPriority = -160

// MaxBans is the capacity of each ban set (one per family).
const MaxBans = 65535

// maxBan bounds ban timeouts (a week: the policy's limit).
const maxBan = 7 * 24 * time.Hour

// ErrNoBans reports a ban for a table built without Spec.Bans.
var ErrNoBans = errors.New("bans need a table with throttling (Spec.Bans)")

// Ban refuses new control connections from Addr for Timeout.
type Ban struct {
	Addr    netip.Addr
	Timeout time.Duration
}

// BanElement is a ban as the kernel (or the fake) holds it.
type BanElement struct {
	Ban
	// Expires is the time left before the ban times out.
	Expires time.Duration
}

// Banner is the part of a Table that holds bans. Kernel and Fake
// implement it.
type Banner interface {
	// AddBans adds bans in one transaction; re-adding a banned address
	// sets its timeout anew. It needs a table with Spec.Bans (ErrNoBans).
	AddBans(ctx context.Context, b ...Ban) error
	// Bans lists the bans in force, sorted by address.
	Bans(ctx context.Context) ([]BanElement, error)
}

var (
	_ Banner = (*Kernel)(nil)
	_ Banner = (*Fake)(nil)
)

func (b Ban) normalize() (Ban, error) {
	b.Addr = b.Addr.Unmap()
	switch {
	case !b.Addr.IsValid() || b.Addr.Zone() != "" || b.Addr.IsUnspecified():
		return Ban{}, fmt.Errorf("invalid ban of %s: need a unicast address without zone", b.Addr)
	case b.Timeout < time.Millisecond || b.Timeout > maxBan:
		return Ban{}, fmt.Errorf("invalid ban of %s: timeout %s out of range [1ms, %s]", b.Addr, b.Timeout, maxBan)
	}
	b.Timeout = b.Timeout.Truncate(time.Millisecond)
	return b, nil
}

// banSets returns the ban set definitions, also the templates of element
// updates (HasTimeout: see pinholeSets).
func banSets(t *nftables.Table) (v4, v6 *nftables.Set) {
	mk := func(name string, typ nftables.SetDatatype) *nftables.Set {
		return &nftables.Set{Table: t, Name: name, KeyType: typ, HasTimeout: true, Size: MaxBans,
			Comment: "client addresses banned after failed logins: no new control connections"}
	}
	return mk(setBanned4, nftables.TypeIPAddr), mk(setBanned6, nftables.TypeIP6Addr)
}

// buildBans adds the ban sets and chain: a new connection from a banned
// address to any control endpoint, inspected (ctl) or diverted (mitm), is
// dropped. Other traffic of the address (its data connections, connections
// to other services) is the operator's business.
func buildBans(rs *ruleset, s Spec, addChain func(string, nftables.ChainType, *nftables.ChainHook, nftables.ChainPriority) func(string, ...expr.Any)) {
	b4, b6 := banSets(rs.table)
	rs.sets = append(rs.sets, b4, b6)
	add := addChain(chainBan, nftables.ChainTypeFilter, nftables.ChainHookPrerouting, banPriority)
	for _, f := range []family{ipv4, ipv6} {
		banned := setBanned4
		if f.nfproto == unix.NFPROTO_IPV6 {
			banned = setBanned6
		}
		sets := []string{f.ctl}
		if s.hasMITM() {
			sets = append(sets, f.mitm)
		}
		for _, set := range sets {
			add("ban "+f.name+": new control connection ("+set+") from a banned client -> drop",
				cat(ctStateNew(), f.match(), matchTCP(),
					[]expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: f.srcOff, Len: f.addrLen}},
					lookup(banned), f.addrPort(offDst, offDport), lookup(set), counter(), drop())...)
		}
	}
}

func banElements(bs []Ban) (v4, v6 []nftables.SetElement) {
	seen := map[netip.Addr]int{}
	for i, b := range bs {
		seen[b.Addr] = i
	}
	for i, b := range bs {
		if seen[b.Addr] != i {
			continue // the last of equal keys wins: a batch must not hold one twice
		}
		e := nftables.SetElement{Key: b.Addr.AsSlice(), Timeout: b.Timeout}
		if b.Addr.Is4() {
			v4 = append(v4, e)
		} else {
			v6 = append(v6, e)
		}
	}
	return v4, v6
}

func sortBans(out []BanElement) {
	slices.SortFunc(out, func(a, b BanElement) int { return a.Addr.Compare(b.Addr) })
}

// AddBans implements Banner.
func (k *Kernel) AddBans(ctx context.Context, b ...Ban) error {
	norm := make([]Ban, len(b))
	for i := range b {
		n, err := b[i].normalize()
		if err != nil {
			return fmt.Errorf("nft: failed to add bans: %w", err)
		}
		norm[i] = n
	}
	if len(norm) == 0 {
		return nil
	}
	tpl, err := k.templates()
	if err != nil {
		return fmt.Errorf("nft: failed to add bans: %w", err)
	}
	if tpl.ban4 == nil {
		return fmt.Errorf("nft: failed to add bans: %w", ErrNoBans)
	}
	v4, v6 := banElements(norm)
	return k.commitOps(ctx, "add bans", addOp(tpl.ban4, v4), addOp(tpl.ban6, v6))
}

// Bans implements Banner.
func (k *Kernel) Bans(ctx context.Context) ([]BanElement, error) {
	tpl, err := k.templates()
	if err != nil {
		return nil, fmt.Errorf("nft: failed to list bans: %w", err)
	}
	if tpl.ban4 == nil {
		return nil, nil
	}
	var out []BanElement
	err = k.doRead(ctx, func(c *nftables.Conn) error {
		var err error
		out, err = readBans(c, tpl.ban4, tpl.ban6)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("nft: failed to list bans: %w", classify(err))
	}
	sortBans(out)
	return out, nil
}

func readBans(c *nftables.Conn, sets ...*nftables.Set) ([]BanElement, error) {
	var out []BanElement
	for _, s := range sets {
		elems, err := c.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("failed to list set %s: %w", s.Name, err)
		}
		for _, e := range elems {
			a, ok := netip.AddrFromSlice(e.Key)
			if !ok {
				return nil, fmt.Errorf("unexpected key %x in set %s", e.Key, s.Name)
			}
			out = append(out, BanElement{Ban: Ban{Addr: a, Timeout: e.Timeout}, Expires: e.Expires})
		}
	}
	return out, nil
}

// carryBans reads the bans of the table about to be rebuilt, so that Apply
// re-creates them with what is left of their timeouts: a reload or a
// restart of the daemon keeps its bans. A table (or ban set) that does not
// exist has none.
func carryBans(c *nftables.Conn, t *nftables.Table) []nftables.SetElement {
	var out []nftables.SetElement
	for _, name := range []string{setBanned4, setBanned6} {
		s, err := c.GetSetByName(t, name)
		if err != nil {
			continue
		}
		bs, err := readBans(c, s)
		if err != nil {
			continue
		}
		for _, b := range bs {
			if b.Expires >= time.Millisecond {
				out = append(out, nftables.SetElement{Key: b.Addr.AsSlice(), Timeout: b.Expires.Truncate(time.Millisecond)})
			}
		}
	}
	return out
}

// AddBans implements Banner.
func (f *Fake) AddBans(ctx context.Context, b ...Ban) error {
	norm := make([]Ban, len(b))
	for i := range b {
		n, err := b[i].normalize()
		if err != nil {
			return fmt.Errorf("nft: failed to add bans: %w", err)
		}
		norm[i] = n
	}
	if err := f.begin(ctx); err != nil {
		return fmt.Errorf("nft: failed to add bans: %w", err)
	}
	defer f.mu.Unlock()
	if f.rs == nil {
		return fmt.Errorf("nft: failed to add bans: %w", ErrNoTable)
	}
	if !f.spec.Bans {
		return fmt.Errorf("nft: failed to add bans: %w", ErrNoBans)
	}
	for _, b := range norm {
		f.bans[b.Addr] = fakeBan{b: b, deadline: f.now + b.Timeout}
	}
	return nil
}

// Bans implements Banner.
func (f *Fake) Bans(ctx context.Context) ([]BanElement, error) {
	if err := f.begin(ctx); err != nil {
		return nil, fmt.Errorf("nft: failed to list bans: %w", err)
	}
	defer f.mu.Unlock()
	if f.rs == nil {
		return nil, fmt.Errorf("nft: failed to list bans: %w", ErrNoTable)
	}
	out := make([]BanElement, 0, len(f.bans))
	for _, e := range f.bans {
		out = append(out, BanElement{Ban: e.b, Expires: e.deadline - f.now})
	}
	sortBans(out)
	return out, nil
}

// Refused simulates the first packet of a new TCP connection from src to a
// control endpoint reaching the ban chain: it reports whether a ban drops
// it.
func (f *Fake) Refused(src netip.Addr, dst netip.AddrPort) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rs == nil || !f.spec.Bans {
		return false
	}
	f.expire()
	if _, ok := f.bans[src.Unmap()]; !ok {
		return false
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	return slices.Contains(f.spec.Control, dst) || slices.Contains(f.spec.MITM, dst)
}

type fakeBan struct {
	b        Ban
	deadline time.Duration
}
