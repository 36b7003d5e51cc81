package nft

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// NATRule is a destination NAT rule (dnat or redirect) in a table that is
// not ftpsalg's: the operator's own port-forward. ftpsalg never changes
// it; it reads it to tell the operator when it conflicts with the policy
// (docs/nat.md, "The operator's own NAT").
type NATRule struct {
	Family, Table, Chain string
	Handle               uint64
	// Text is the rule as nft lists it (ftpsalg's rendering).
	Text string
	// Dst are the destination addresses the rule matches (ip/ip6 daddr
	// equal to one, or in an anonymous set), nil for any; Ports likewise
	// the TCP destination ports.
	Dst   []netip.Addr
	Ports []uint16
	// To is the translation's address when the rule names one
	// (invalid: a redirect, or an address from a map).
	To netip.Addr
}

// String names the rule as an operator finds it with nft -a list.
func (r NATRule) String() string {
	return fmt.Sprintf("table %s %s chain %s handle %d (%s)", r.Family, r.Table, r.Chain, r.Handle, r.Text)
}

// Matches reports whether the rule translates new connections to a:port.
func (r NATRule) Matches(a netip.Addr, port uint16) bool {
	return (r.Dst == nil || slices.Contains(r.Dst, a.Unmap())) && (r.Ports == nil || slices.Contains(r.Ports, port))
}

// ForeignDNAT lists the destination NAT rules of every nat chain at the
// prerouting hook outside ftpsalg's table.
func (k *Kernel) ForeignDNAT(ctx context.Context) ([]NATRule, error) {
	own := ""
	if n := k.name.Load(); n != nil {
		own = *n
	}
	var out []NATRule
	err := k.do(ctx, func(c *nftables.Conn) error {
		chains, err := c.ListChains()
		if err != nil {
			return fmt.Errorf("failed to list chains: %w", err)
		}
		for _, ch := range chains {
			if ch.Type != nftables.ChainTypeNAT || ch.Hooknum == nil || *ch.Hooknum != *nftables.ChainHookPrerouting ||
				(ch.Table.Name == own && ch.Table.Family == nftables.TableFamilyINet) {
				continue
			}
			rules, err := getRules(k.sock, ch.Table, ch.Name)
			if err != nil {
				return fmt.Errorf("failed to list rules of chain %s: %w", ch.Name, err)
			}
			for _, r := range rules {
				if nr, ok := parseDNAT(c, ch, r); ok {
					out = append(out, nr)
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("nft: failed to read the ruleset: %w", classify(err))
	}
	return out, nil
}

// parseDNAT reads what a rule matches and where it translates to, from
// the expressions nft generates for "ip daddr A tcp dport { P, Q } dnat
// to B": payload loads into registers, compared or looked up, then an
// immediate and the nat expression. What it cannot read stays "any", so a
// conflict is reported rather than missed.
func parseDNAT(c *nftables.Conn, ch *nftables.Chain, r *nftables.Rule) (NATRule, bool) {
	type reg struct {
		kind string // "daddr", "dport", "imm"
		data []byte
	}
	regs := map[uint32]reg{}
	nr := NATRule{Family: tableFamilyName(ch.Table.Family), Table: ch.Table.Name, Chain: ch.Name, Handle: r.Handle}
	isNAT := false
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Payload:
			switch {
			case e.Base == expr.PayloadBaseNetworkHeader && ((e.Offset == 16 && e.Len == 4) || (e.Offset == 24 && e.Len == 16)):
				regs[e.DestRegister] = reg{kind: "daddr"}
			case e.Base == expr.PayloadBaseTransportHeader && e.Offset == 2 && e.Len == 2:
				regs[e.DestRegister] = reg{kind: "dport"}
			default:
				delete(regs, e.DestRegister)
			}
		case *expr.Cmp:
			if e.Op != expr.CmpOpEq {
				continue
			}
			switch regs[e.Register].kind {
			case "daddr":
				if a, ok := netip.AddrFromSlice(e.Data); ok {
					nr.Dst = append(nr.Dst, a.Unmap())
				}
			case "dport":
				if len(e.Data) >= 2 {
					nr.Ports = append(nr.Ports, binary.BigEndian.Uint16(e.Data))
				}
			}
		case *expr.Lookup:
			kind := regs[e.SourceRegister].kind
			if e.Invert || (kind != "daddr" && kind != "dport") {
				continue
			}
			set, err := c.GetSetByName(ch.Table, e.SetName)
			if err != nil || set.Interval || !set.Anonymous {
				continue // ranges, named sets: any
			}
			elems, err := c.GetSetElements(set)
			if err != nil {
				continue
			}
			for _, el := range elems {
				if kind == "daddr" {
					if a, ok := netip.AddrFromSlice(el.Key); ok {
						nr.Dst = append(nr.Dst, a.Unmap())
					}
				} else if len(el.Key) >= 2 {
					nr.Ports = append(nr.Ports, binary.BigEndian.Uint16(el.Key))
				}
			}
		case *expr.Immediate:
			regs[e.Register] = reg{kind: "imm", data: e.Data}
		case *expr.NAT:
			if e.Type != expr.NATTypeDestNAT {
				continue
			}
			isNAT = true
			if r := regs[e.RegAddrMin]; r.kind == "imm" {
				if a, ok := netip.AddrFromSlice(r.data); ok {
					nr.To = a.Unmap()
				}
			}
		case *expr.Redir:
			isNAT = true
		}
	}
	if !isNAT {
		return NATRule{}, false
	}
	nr.Text = renderRule(r, nil)
	return nr, true
}

func tableFamilyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyINet:
		return "inet"
	}
	return fmt.Sprint(f)
}
