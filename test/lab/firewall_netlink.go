package lab

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// installFirewallNetlink loads the operator table of GatewayFirewallRuleset
// (plus control ports extra) over netlink, in one transaction that
// replaces an earlier version, so that the lab needs no nft binary: a fresh
// machine with only Go and iproute2 can run `make demo`.
func (l *Lab) installFirewallNetlink(ctMark uint32, extra []uint16) error {
	ns, err := os.Open(l.NetNSPath(Gateway))
	if err != nil {
		return err
	}
	defer ns.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.Fd())))
	if err != nil {
		return fmt.Errorf("failed to open netlink: %w", err)
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: FirewallTable}
	c.DestroyTable(t)
	c.AddTable(t)
	drop := nftables.ChainPolicyDrop
	ch := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &drop})
	rule := func(comment string, e ...expr.Any) {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append(e, &expr.Verdict{Kind: expr.VerdictAccept}),
			UserData: userdata.AppendString(nil, userdata.TypeComment, comment)})
	}
	ne := binary.NativeEndian
	// ct state established,related accept
	rule("established", &expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: ne.AppendUint32(nil, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)})
	// ct mark & M == M accept
	rule("ftpsalg pinholes", &expr.Ct{Key: expr.CtKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ne.AppendUint32(nil, ctMark), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ne.AppendUint32(nil, ctMark)})
	// ip(6) daddr SERVER tcp dport PORT accept
	for _, a := range []netip.Addr{ServerAddr4, ServerAddr6} {
		proto, off := byte(unix.NFPROTO_IPV4), uint32(16)
		if a.Is6() {
			proto, off = unix.NFPROTO_IPV6, 24
		}
		for _, p := range append([]uint16{21, 990}, extra...) {
			rule("control",
				&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: uint32(a.BitLen() / 8)},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a.AsSlice()},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, p)})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("failed to load the gateway firewall: %w", err)
	}
	return nil
}
