package nft

import (
	"encoding/binary"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// getRules lists the rules of one chain over the connection's socket. It
// replaces google/nftables' GetRules for Dump because that decoder knows
// neither the socket nor the tproxy expression and silently drops them from
// the rules it returns (its TProxy type also reads the 32-bit family
// attribute as 8 bits); the rules of the prerouting chain would then read
// back without their point. Everything else is decoded by the library's
// expression types; an expression this decoder does not know shows in the
// Dump as "<unknown expression NAME>".
func getRules(sock *netlink.Conn, t *nftables.Table, chain string) ([]*nftables.Rule, error) {
	msgs, err := dumpRules(sock, t, chain)
	if err != nil {
		return nil, err
	}
	rules := make([]*nftables.Rule, 0, len(msgs))
	for _, m := range msgs {
		if m.Header.Type != netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWRULE) || len(m.Data) < 4 {
			continue
		}
		r, err := decodeRule(byte(t.Family), m.Data[4:])
		if err != nil {
			return nil, fmt.Errorf("failed to decode rule: %w", err)
		}
		r.Table = t
		rules = append(rules, r)
	}
	return rules, nil
}

// dumpRules sends an NFT_MSG_GETRULE dump for the table's rules, of one
// chain or (chain "") of all, filtered by the kernel, and returns the
// NEWRULE messages undecoded.
func dumpRules(sock *netlink.Conn, t *nftables.Table, chain string) ([]netlink.Message, error) {
	attrs := []netlink.Attribute{{Type: unix.NFTA_RULE_TABLE, Data: []byte(t.Name + "\x00")}}
	if chain != "" {
		attrs = append(attrs, netlink.Attribute{Type: unix.NFTA_RULE_CHAIN, Data: []byte(chain + "\x00")})
	}
	b, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		return nil, err
	}
	req := netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETRULE),
			Flags: netlink.Request | netlink.Dump,
		},
		// struct nfgenmsg: family, version, resource id.
		Data: append([]byte{byte(t.Family), unix.NFNETLINK_V0, 0, 0}, b...),
	}
	return sock.Execute(req)
}

func decodeRule(fam byte, b []byte) (*nftables.Rule, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return nil, err
	}
	ad.ByteOrder = binary.BigEndian
	r := &nftables.Rule{}
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_RULE_CHAIN:
			r.Chain = &nftables.Chain{Name: ad.String()}
		case unix.NFTA_RULE_HANDLE:
			r.Handle = ad.Uint64()
		case unix.NFTA_RULE_USERDATA:
			r.UserData = ad.Bytes()
		case unix.NFTA_RULE_EXPRESSIONS:
			ad.Nested(func(list *netlink.AttributeDecoder) error {
				for list.Next() {
					list.Nested(func(el *netlink.AttributeDecoder) error {
						e, err := decodeExpr(fam, el)
						if err == nil {
							r.Exprs = append(r.Exprs, e)
						}
						return err
					})
				}
				return list.Err()
			})
		}
	}
	return r, ad.Err()
}

// decodeExpr decodes one NFTA_LIST_ELEM: NFTA_EXPR_NAME, then NFTA_EXPR_DATA.
func decodeExpr(fam byte, ad *netlink.AttributeDecoder) (expr.Any, error) {
	var name string
	var data []byte
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_EXPR_NAME:
			name = ad.String()
		case unix.NFTA_EXPR_DATA:
			data = ad.Bytes()
		}
	}
	if err := ad.Err(); err != nil {
		return nil, err
	}
	if name == "tproxy" {
		return decodeTProxy(data)
	}
	e := newExpr(name)
	if e == nil {
		return &opaqueExpr{name: name}, nil
	}
	if err := expr.Unmarshal(fam, data, e); err != nil {
		return nil, fmt.Errorf("expression %s: %w", name, err)
	}
	// A verdict is an immediate that writes the verdict register; the
	// immediate decoder leaves its data empty.
	if imm, ok := e.(*expr.Immediate); ok && imm.Register == unix.NFT_REG_VERDICT && len(imm.Data) == 0 {
		v := &expr.Verdict{}
		if err := expr.Unmarshal(fam, data, v); err != nil {
			return nil, fmt.Errorf("expression %s: %w", name, err)
		}
		return v, nil
	}
	return e, nil
}

// newExpr returns an empty expression of the kernel's name for the types a
// Dump renders.
func newExpr(name string) expr.Any {
	switch name {
	case "meta":
		return &expr.Meta{}
	case "cmp":
		return &expr.Cmp{}
	case "payload":
		return &expr.Payload{}
	case "bitwise":
		return &expr.Bitwise{}
	case "ct":
		return &expr.Ct{}
	case "lookup":
		return &expr.Lookup{}
	case "dynset":
		return &expr.Dynset{}
	case "counter":
		return &expr.Counter{}
	case "immediate":
		return &expr.Immediate{}
	case "queue":
		return &expr.Queue{}
	case "target":
		return &expr.Target{}
	case "socket":
		return &expr.Socket{}
	case "nat":
		return &expr.NAT{}
	}
	return nil
}

// decodeTProxy decodes struct nft_tproxy: NFTA_TPROXY_FAMILY is a 32-bit
// value (big endian), as are the register numbers.
func decodeTProxy(b []byte) (*expr.TProxy, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return nil, err
	}
	ad.ByteOrder = binary.BigEndian
	e := &expr.TProxy{TableFamily: unix.NFPROTO_INET}
	for ad.Next() {
		switch ad.Type() {
		case expr.NFTA_TPROXY_FAMILY:
			e.Family = byte(ad.Uint32())
		case expr.NFTA_TPROXY_REG_ADDR:
			e.RegAddr = ad.Uint32()
		case expr.NFTA_TPROXY_REG_PORT:
			e.RegPort = ad.Uint32()
		}
	}
	if err := ad.Err(); err != nil {
		return nil, fmt.Errorf("expression tproxy: %w", err)
	}
	return e, nil
}

// opaqueExpr stands for an expression getRules cannot decode. It embeds a
// library expression only to satisfy expr.Any (whose methods are
// unexported); it is never marshalled.
type opaqueExpr struct {
	expr.Counter
	name string
}
