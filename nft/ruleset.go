package nft

import (
	"encoding/binary"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"
)

// Names of the objects in our table. They are part of the operator-visible
// interface (README, docs/integration.md): change them only with the docs.
const (
	setCtl4      = "ctl4"
	setCtl6      = "ctl6"
	setPinholes4 = "pinholes4"
	setPinholes6 = "pinholes6"
	setBare4     = "bare4"
	setBare6     = "bare6"
	chainForward = "forward"

	// Only in tables with mitm servers.
	setMITM4         = "mitm4"
	setMITM6         = "mitm6"
	mapSNAT4         = "snat4"
	mapSNAT6         = "snat6"
	chainPrerouting  = "prerouting"
	chainPostrouting = "postrouting"

	// Only in tables with a relay port.
	setRelay4 = "relay4"
	setRelay6 = "relay6"

	// NAT (docs/nat.md), in tables with mitm objects.
	mapDNAT4         = "dnat4"
	mapDNAT6         = "dnat6"
	setDNATPinholes4 = "pinholes_dnat4"
	setDNATPinholes6 = "pinholes_dnat6"
	chainDstnat      = "dstnat"
	// chainFollow runs after every destination NAT (the operator's too):
	// it follows translations ftpsalg did not make (docs/nat.md,
	// "The operator's own NAT").
	chainFollow = "prerouting_nat"
)

// followPriority is dstnat + 10 (-90): after the standard destination NAT
// priority, where the operator's port-forward (dnat) has rewritten a new
// connection's destination and conntrack has undone the operator's
// masquerade on a reply, and still before the routing decision.
const followPriority nftables.ChainPriority = -90

// dstnatPriority is dstnat (-100), the standard destination NAT priority:
// after TPROXY (prerouting, -150), which diverts connections to local
// listeners before any translation could change their destination.
const dstnatPriority nftables.ChainPriority = -100

// forwardPriority is mangle (-150): after conntrack (-200), so ct state and
// ct mark are available, and before the operator's filter chains (0), so the
// ct mark is set when their "ct mark" rule looks at the packet.
const forwardPriority nftables.ChainPriority = -150

// preroutingPriority is mangle (-150), where TPROXY traditionally runs:
// after conntrack (-200) and before destination NAT (-100) and the routing
// decision, which must see the packet mark set with the diversion.
const preroutingPriority nftables.ChainPriority = -150

// postroutingPriority is srcnat (100), the standard source NAT priority.
const postroutingPriority nftables.ChainPriority = 100

// dynsetOpDelete is NFT_DYNSET_OP_DELETE, missing from x/sys/unix.
const dynsetOpDelete = 2

// xt_NFQ_info_v3 flags (linux/netfilter/xt_NFQUEUE.h).
const (
	nfqFlagBypass = 0x1
)

var (
	typeCtl4      = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)
	typeCtl6      = nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetService)
	typePinholes4 = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIPAddr, nftables.TypeInetService)
	typePinholes6 = nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeIP6Addr, nftables.TypeInetService)
	// Segments the packet path never needs (bareKey): IP header byte
	// (version and header length; next header for IPv6) . IP length . TCP
	// data offset . TCP flags FIN, SYN, RST.
	typeBare = nftables.MustConcatSetType(nftables.TypeMark, nftables.TypeInetService, nftables.TypeMark, nftables.TypeTCPFlag)
	// The destination NAT maps' values: address . port.
	typeTarget4 = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)
	typeTarget6 = nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetService)
)

// ruleset is the desired content of the table, built from a Spec. Kernel
// sends it to the kernel; Fake keeps it and renders it.
type ruleset struct {
	table *nftables.Table
	sets  []*nftables.Set
	// elems holds the initial elements of each set, by set name.
	elems map[string][]nftables.SetElement
	// chains in creation order, each with its rules.
	chains []chainModel
}

func newTable(name string) *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: name}
}

// pinholeSets returns the two pinhole set definitions. They are also the
// templates for element updates: a set value without HasTimeout would make
// google/nftables silently drop the element timeouts.
func pinholeSets(t *nftables.Table) (v4, v6 *nftables.Set) {
	mk := func(name string, typ nftables.SetDatatype, comment string) *nftables.Set {
		return &nftables.Set{
			Table: t, Name: name, KeyType: typ, Concatenation: true,
			HasTimeout: true, Dynamic: true, Size: MaxPinholes, Comment: comment,
		}
	}
	return mk(setPinholes4, typePinholes4, "single-use data pinholes: initiator . target . target port"),
		mk(setPinholes6, typePinholes6, "single-use data pinholes: initiator . target . target port")
}

// relaySets returns the two relay set definitions, also the templates for
// element updates (HasTimeout, as for pinholeSets). Like the pinhole sets
// they are updated from the packet path (dynamic) and sized MaxPinholes.
func relaySets(t *nftables.Table) (v4, v6 *nftables.Set) {
	mk := func(name string, typ nftables.SetDatatype) *nftables.Set {
		return &nftables.Set{
			Table: t, Name: name, KeyType: typ, Concatenation: true,
			HasTimeout: true, Dynamic: true, Size: MaxPinholes,
			Comment: "single-use relayed data connections: initiator . target . target port",
		}
	}
	return mk(setRelay4, typePinholes4), mk(setRelay6, typePinholes6)
}

// snatMaps returns the two source NAT map definitions, which are also the
// templates for element updates (HasTimeout, as for pinholeSets). They are
// sized like the pinhole sets: an element lives as long as its pinhole
// would, used or not.
func snatMaps(t *nftables.Table) (v4, v6 *nftables.Set) {
	mk := func(name string, typ, data nftables.SetDatatype) *nftables.Set {
		return &nftables.Set{
			Table: t, Name: name, KeyType: typ, DataType: data, IsMap: true, Concatenation: true,
			HasTimeout: true, Size: MaxPinholes,
			Comment: "source NAT of pinholed data connections: initiator . target . target port : new source",
		}
	}
	return mk(mapSNAT4, typePinholes4, nftables.TypeIPAddr), mk(mapSNAT6, typePinholes6, nftables.TypeIP6Addr)
}

// dnatMaps returns the destination NAT map definitions (initiator .
// announced address . announced port : address . port), also the templates
// for element updates.
func dnatMaps(t *nftables.Table) (v4, v6 *nftables.Set) {
	mk := func(name string, typ, data nftables.SetDatatype) *nftables.Set {
		return &nftables.Set{
			Table: t, Name: name, KeyType: typ, DataType: data, IsMap: true, Concatenation: true,
			HasTimeout: true, Size: MaxPinholes,
			Comment: "destination NAT of announced data connections: initiator . announced address . announced port : target . target port",
		}
	}
	return mk(mapDNAT4, typePinholes4, typeTarget4), mk(mapDNAT6, typePinholes6, typeTarget6)
}

// dnatPinholeSets returns the sets of single-use pinholes for translated
// connections, keyed by the translated tuple (what the forward hook sees)
// and used only by connections conntrack marks as destination-NATed.
func dnatPinholeSets(t *nftables.Table) (v4, v6 *nftables.Set) {
	mk := func(name string, typ nftables.SetDatatype) *nftables.Set {
		return &nftables.Set{
			Table: t, Name: name, KeyType: typ, Concatenation: true,
			HasTimeout: true, Dynamic: true, Size: MaxPinholes,
			Comment: "single-use pinholes of translated data connections: initiator . target . target port",
		}
	}
	return mk(setDNATPinholes4, typePinholes4), mk(setDNATPinholes6, typePinholes6)
}

func buildRuleset(s Spec) *ruleset {
	t := newTable(s.Table)
	ctl4 := &nftables.Set{Table: t, Name: setCtl4, KeyType: typeCtl4, Concatenation: true,
		Comment: "inspected control endpoints: server . control port"}
	ctl6 := &nftables.Set{Table: t, Name: setCtl6, KeyType: typeCtl6, Concatenation: true,
		Comment: "inspected control endpoints: server . control port"}
	ph4, ph6 := pinholeSets(t)

	bare4, bare6 := bareSets(t)

	rs := &ruleset{
		table: t,
		sets:  []*nftables.Set{ctl4, ctl6, ph4, ph6, bare4, bare6},
		elems: map[string][]nftables.SetElement{setBare4: bareElements(ipv4), setBare6: bareElements(ipv6)},
	}
	for _, ap := range s.Control {
		name := setCtl6
		if ap.Addr().Is4() {
			name = setCtl4
		}
		rs.elems[name] = append(rs.elems[name], nftables.SetElement{Key: controlKey(ap)})
	}

	// addChain appends a base chain (policy accept) and returns a function
	// that appends rules to it.
	addChain := func(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio nftables.ChainPriority) func(string, ...expr.Any) {
		policy := nftables.ChainPolicyAccept
		ch := &nftables.Chain{
			Name: name, Table: t, Type: typ, Hooknum: hook,
			Priority: nftables.ChainPriorityRef(prio), Policy: &policy,
		}
		rs.chains = append(rs.chains, chainModel{chain: ch})
		i := len(rs.chains) - 1
		return func(comment string, e ...expr.Any) {
			rs.chains[i].rules = append(rs.chains[i].rules, &nftables.Rule{
				Table: t, Chain: ch, Exprs: e,
				UserData: userdata.AppendString(nil, userdata.TypeComment, comment),
			})
		}
	}

	if s.Bans {
		buildBans(rs, s, addChain)
	}
	add := addChain(chainForward, nftables.ChainTypeFilter, nftables.ChainHookForward, forwardPriority)
	if s.hasMITM() && !s.FailOpen {
		// A control connection from a masqueraded client reaches the
		// forward hook only when TPROXY found no listener (daemon down):
		// fail closed before the queue rules could pass it on untranslated.
		for _, f := range []family{ipv4, ipv6} {
			for _, p := range s.Masqueraded {
				if p.Addr().Is4() != (f.nfproto == unix.NFPROTO_IPV4) {
					continue
				}
				add("masqueraded "+f.name+": control connection not diverted (daemon down) -> drop",
					cat(ctStateNew(), f.match(), matchTCP(), f.prefix(offSrc, p), f.addrPort(offDst, offDport),
						lookup(f.ctl), counter(), drop())...)
			}
		}
	}
	for _, f := range []family{ipv4, ipv6} {
		add("control "+f.name+": client to inspected server -> nfqueue",
			cat(markNotSet(s.PacketMark), f.match(), matchTCP(),
				f.addrPort(offDst, offDport), lookup(f.ctl), f.bareKey(), lookupNot(f.bare), counter(), queue(s))...)
		add("control "+f.name+": inspected server to client -> nfqueue",
			cat(markNotSet(s.PacketMark), f.match(), matchTCP(),
				f.addrPort(offSrc, offSport), lookup(f.ctl), f.bareKey(), lookupNot(f.bare), counter(), queue(s))...)
	}
	for _, f := range []family{ipv4, ipv6} {
		add("data "+f.name+": first packet uses its pinhole once, marks the flow",
			cat(ctStateNew(), f.match(), matchTCP(),
				f.pinholeKey(), lookup(f.pinholes),
				f.pinholeKey(), dynsetDelete(f.pinholes),
				ctMarkOr(s.CtMark), counter(), accept())...)
	}
	if s.Opaque {
		o4, o6 := opaqueSets(t)
		rs.sets = append(rs.sets, o4, o6)
		opaqueRules(s, add)
	}
	if s.hasMITM() {
		buildMITM(rs, s, addChain)
		for _, f := range []family{ipv4, ipv6} {
			add("data "+f.name+": first packet of a translated connection uses its pinhole once, marks the flow",
				cat(ctStateNew(), ctStatusDNAT(), f.match(), matchTCP(),
					f.pinholeKey(), lookup(f.dnatPinholes),
					f.pinholeKey(), dynsetDelete(f.dnatPinholes),
					ctMarkOr(s.CtMark), counter(), accept())...)
		}
		if s.hasRelay() {
			// A relay element is still there when its connection reaches
			// the forward hook: TPROXY found no relay listener (daemon
			// down) and the rule stopped before consuming it. The
			// connection cannot work without the daemon (it holds the
			// control session and its TLS state), so it is dropped
			// whatever queue.failure says.
			for _, f := range []family{ipv4, ipv6} {
				add("relay "+f.name+": data connection not diverted (daemon down) -> drop",
					cat(ctStateNew(), f.match(), matchTCP(), f.pinholeKey(), lookup(f.relay),
						counter(), drop())...)
			}
		}
		if !s.FailOpen {
			// A control connection to a mitm server reaches the forward
			// hook only when TPROXY found no listener: the daemon is down.
			// Fail closed rather than let it pass uninspected (after a
			// clean exit the table is gone and the operator's rules apply).
			for _, f := range []family{ipv4, ipv6} {
				add("mitm "+f.name+": control connection not diverted (daemon down) -> drop",
					cat(ctStateNew(), f.match(), matchTCP(), f.addrPort(offDst, offDport), lookup(f.mitm),
						counter(), drop())...)
			}
		}
	}
	return rs
}

// buildMITM adds what mitm mode needs: the TPROXY diversion of control
// connections in prerouting, and source NAT for pinholes in postrouting.
// Both chains exist whenever the spec has mitm servers, whether or not any
// pinhole asks for source NAT: the layout then depends on the server list
// only, and an empty map costs nothing.
func buildMITM(rs *ruleset, s Spec, addChain func(string, nftables.ChainType, *nftables.ChainHook, nftables.ChainPriority) func(string, ...expr.Any)) {
	t := rs.table
	mitm4 := &nftables.Set{Table: t, Name: setMITM4, KeyType: typeCtl4, Concatenation: true,
		Comment: "mitm control endpoints: server . control port"}
	mitm6 := &nftables.Set{Table: t, Name: setMITM6, KeyType: typeCtl6, Concatenation: true,
		Comment: "mitm control endpoints: server . control port"}
	snat4, snat6 := snatMaps(t)
	dnat4, dnat6 := dnatMaps(t)
	dph4, dph6 := dnatPinholeSets(t)
	rs.sets = append(rs.sets, mitm4, mitm6, snat4, snat6, dnat4, dnat6, dph4, dph6)
	for _, ap := range s.MITM {
		name := setMITM6
		if ap.Addr().Is4() {
			name = setMITM4
		}
		rs.elems[name] = append(rs.elems[name], nftables.SetElement{Key: controlKey(ap)})
	}

	add := addChain(chainPrerouting, nftables.ChainTypeFilter, nftables.ChainHookPrerouting, preroutingPriority)
	// The standard TPROXY recipe: a packet for which a transparent socket
	// exists (later packets of a diverted connection, and the server's
	// replies to the proxy's upstream connection, which is bound to the
	// client's address) gets the routing mark, so that policy routing
	// delivers it locally instead of forwarding it.
	add("mitm: packet of a transparent proxy socket -> routing mark",
		cat(matchTCP(), socketTransparent(), metaMarkOr(s.TProxyMark), counter(), accept())...)
	for _, f := range []family{ipv4, ipv6} {
		add("mitm "+f.name+": new control connection to a mitm server -> transparent listener",
			cat(f.match(), matchTCP(), f.addrPort(offDst, offDport), lookup(f.mitm),
				counter(), tproxy(f, s.TProxyPort), metaMarkOr(s.TProxyMark), accept())...)
	}
	for _, f := range []family{ipv4, ipv6} {
		for _, p := range s.Masqueraded {
			if p.Addr().Is4() != (f.nfproto == unix.NFPROTO_IPV4) {
				continue
			}
			add("masqueraded "+f.name+": control connection to an inspected server -> transparent listener",
				cat(f.match(), matchTCP(), f.prefix(offSrc, p), f.addrPort(offDst, offDport), lookup(f.ctl),
					counter(), tproxy(f, s.TProxyPort), metaMarkOr(s.TProxyMark), accept())...)
		}
	}

	if s.hasRelay() {
		r4, r6 := relaySets(t)
		rs.sets = append(rs.sets, r4, r6)
		// The announced data connection, exactly: this initiator, this
		// target, this port, new. TPROXY assigns it to the relay listener;
		// only when that worked (tproxy stops the rule when no listener
		// exists) is the element consumed, so it admits one connection.
		// Later packets of the connection are the socket rule's.
		for _, f := range []family{ipv4, ipv6} {
			add("relay "+f.name+": announced data connection -> relay listener, once",
				cat(ctStateNew(), f.match(), matchTCP(), f.pinholeKey(), lookup(f.relay), counter(),
					tproxy(f, s.RelayPort), f.pinholeKey(), dynsetDelete(f.relay),
					metaMarkOr(s.TProxyMark), accept())...)
		}
	}

	// After destination NAT: the operator's own translations (docs/nat.md).
	// A connection the operator's dnat sent to a served control endpoint
	// is diverted here, by its translated destination; TPROXY before the
	// translation would hand its handshake to a listener under the
	// original address while the kernel answers under the translated one
	// (the client's first ACK then meets the listener and is reset). The
	// socket rule again: a reply to the proxy's upstream connection whose
	// source the operator masqueraded reaches its socket's address only
	// once conntrack has undone the masquerade (dstnat).
	add = addChain(chainFollow, nftables.ChainTypeFilter, nftables.ChainHookPrerouting, followPriority)
	add("follow: packet of a transparent proxy socket, after the operator's NAT -> routing mark",
		cat(matchTCP(), socketTransparent(), metaMarkOr(s.TProxyMark), counter(), accept())...)
	for _, f := range []family{ipv4, ipv6} {
		for _, set := range []string{f.mitm, f.ctl} {
			add("follow "+f.name+": control connection the operator's dnat sent to a served endpoint ("+set+") -> transparent listener",
				cat(ctStateNew(), ctStatusDNAT(), f.match(), matchTCP(), f.addrPort(offDst, offDport), lookup(set),
					counter(), tproxy(f, s.TProxyPort), metaMarkOr(s.TProxyMark), accept())...)
		}
	}

	add = addChain(chainDstnat, nftables.ChainTypeNAT, nftables.ChainHookPrerouting, dstnatPriority)
	for _, f := range []family{ipv4, ipv6} {
		add("data "+f.name+": announced data connection -> its translated target",
			cat(f.match(), matchTCP(), f.pinholeKey(), mapLookup(f.dnat), dnat(f))...)
	}

	add = addChain(chainPostrouting, nftables.ChainTypeNAT, nftables.ChainHookPostrouting, postroutingPriority)
	for _, f := range []family{ipv4, ipv6} {
		add("data "+f.name+": pinholed connection leaves from the source NAT address",
			cat(f.match(), matchTCP(), f.pinholeKey(), mapLookup(f.snat), snat(f))...)
	}
}

// family holds what differs between the IPv4 and IPv6 rules.
type family struct {
	name          string
	nfproto       byte
	addrLen       uint32
	srcOff        uint32 // source address offset in the network header
	dstOff        uint32
	ctl, pinholes string
	bare          string
	mitm, snat    string
	relay         string
	dnat          string // destination NAT map
	dnatPinholes  string // pinholes of translated connections
	// regs are the registers of the concatenated key parts, as nft
	// allocates them: 32-bit registers (9, 10) after a 4-byte address,
	// 16-byte registers (2, 3) after a 16-byte one.
	regs [3]uint32
}

var (
	ipv4 = family{name: "ipv4", nfproto: unix.NFPROTO_IPV4, addrLen: 4, srcOff: 12, dstOff: 16,
		ctl: setCtl4, bare: setBare4, pinholes: setPinholes4, mitm: setMITM4, snat: mapSNAT4, relay: setRelay4, regs: [3]uint32{1, 9, 10},
		dnat: mapDNAT4, dnatPinholes: setDNATPinholes4}
	ipv6 = family{name: "ipv6", nfproto: unix.NFPROTO_IPV6, addrLen: 16, srcOff: 8, dstOff: 24,
		ctl: setCtl6, bare: setBare6, pinholes: setPinholes6, mitm: setMITM6, snat: mapSNAT6, relay: setRelay6, regs: [3]uint32{1, 2, 3},
		dnat: mapDNAT6, dnatPinholes: setDNATPinholes6}
)

// Offsets of the TCP ports in the transport header.
const (
	offSport = 0
	offDport = 2
)

const (
	offSrc = iota
	offDst
)

func (f family) match() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{f.nfproto}},
	}
}

func (f family) addrOff(which int) uint32 {
	if which == offSrc {
		return f.srcOff
	}
	return f.dstOff
}

// addrPort loads "address . port" of one side of the packet.
func (f family) addrPort(which int, portOff uint32) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: f.regs[0], Base: expr.PayloadBaseNetworkHeader, Offset: f.addrOff(which), Len: f.addrLen},
		&expr.Payload{DestRegister: f.regs[1], Base: expr.PayloadBaseTransportHeader, Offset: portOff, Len: 2},
	}
}

// pinholeKey loads "saddr . daddr . dport".
func (f family) pinholeKey() []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: f.regs[0], Base: expr.PayloadBaseNetworkHeader, Offset: f.srcOff, Len: f.addrLen},
		&expr.Payload{DestRegister: f.regs[1], Base: expr.PayloadBaseNetworkHeader, Offset: f.dstOff, Len: f.addrLen},
		&expr.Payload{DestRegister: f.regs[2], Base: expr.PayloadBaseTransportHeader, Offset: offDport, Len: 2},
	}
}

// prefix is "ip saddr PREFIX" (or daddr, ip6): the address masked to the
// prefix length and compared with the prefix's network.
func (f family) prefix(which int, p netip.Prefix) []expr.Any {
	out := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: f.addrOff(which), Len: f.addrLen}}
	if p.Bits() < p.Addr().BitLen() {
		mask := make([]byte, f.addrLen)
		for i := 0; i < p.Bits(); i++ {
			mask[i/8] |= 0x80 >> (i % 8)
		}
		out = append(out, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: f.addrLen, Mask: mask, Xor: make([]byte, f.addrLen)})
	}
	return append(out, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()})
}

func matchTCP() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
	}
}

// markNotSet is "meta mark & m != m": the packet path marks packets it has
// already seen, and a packet re-entering the hook must not loop.
func markNotSet(m uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ne32(m), Xor: ne32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ne32(m)},
	}
}

func ctStateNew() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ne32(expr.CtStateBitNEW), Xor: ne32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ne32(0)},
	}
}

// ctStatusDNAT is "ct status dnat": the connection's destination was
// translated (IPS_DST_NAT).
func ctStatusDNAT() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATUS, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ne32(ipsDstNAT), Xor: ne32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ne32(0)},
	}
}

// ipsDstNAT is IPS_DST_NAT (linux/netfilter/nf_conntrack_common.h).
const ipsDstNAT = 0x20

// ctMarkOr is "ct mark set ct mark | m": (mark & ^m) ^ m keeps the other
// bits, which belong to the operator.
func ctMarkOr(m uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ne32(^m), Xor: ne32(m)},
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true},
	}
}

// metaMarkOr is "meta mark set meta mark | m", keeping the other bits.
func metaMarkOr(m uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ne32(^m), Xor: ne32(m)},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1, SourceRegister: true},
	}
}

// socketTransparent is "socket transparent 1": a local socket with
// IP_TRANSPARENT exists for the packet.
func socketTransparent() []expr.Any {
	return []expr.Any{
		&expr.Socket{Key: expr.SocketKeyTransparent, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{1}},
	}
}

// tproxy is "tproxy ip to :port" (ip6 for IPv6): the packet is assigned to
// the transparent listener on port, bound to a wildcard address (without an
// address the kernel looks the listener up on the incoming interface's
// primary address). If there is no such listener the rule ends there and
// the packet is not diverted.
func tproxy(f family, port uint16) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: binary.BigEndian.AppendUint16(nil, port)},
		&expr.TProxy{Family: f.nfproto, TableFamily: unix.NFPROTO_INET, RegPort: 1},
	}
}

// mapLookup looks the key in register 1 up in a map and puts the value in
// register 1; a missing key ends the rule.
func mapLookup(m string) []expr.Any {
	return []expr.Any{&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: m}}
}

// snat is "snat ip to <register 1>" (ip6 for IPv6), keeping the port.
func snat(f family) []expr.Any {
	return []expr.Any{&expr.NAT{Type: expr.NATTypeSourceNAT, Family: uint32(f.nfproto), RegAddrMin: 1}}
}

// dnat is "dnat ip to <register 1> : <port register>" (ip6 for IPv6): the
// address and port a destination NAT map lookup left in the registers
// (for IPv4 the port follows in 32-bit register 9, for IPv6 in register 2).
func dnat(f family) []expr.Any {
	port := uint32(9)
	if f.nfproto == unix.NFPROTO_IPV6 {
		port = 2
	}
	return []expr.Any{&expr.NAT{Type: expr.NATTypeDestNAT, Family: uint32(f.nfproto), RegAddrMin: 1, RegProtoMin: port}}
}

func lookup(set string) []expr.Any {
	return []expr.Any{&expr.Lookup{SourceRegister: 1, SetName: set}}
}

// lookupNot is "KEY != @set".
func lookupNot(set string) []expr.Any {
	return []expr.Any{&expr.Lookup{SourceRegister: 1, SetName: set, Invert: true}}
}

func dynsetDelete(set string) []expr.Any {
	return []expr.Any{&expr.Dynset{SrcRegKey: 1, SetName: set, Operation: dynsetOpDelete}}
}

func counter() []expr.Any { return []expr.Any{&expr.Counter{}} }

func accept() []expr.Any { return []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}} }

func drop() []expr.Any { return []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}} }

func queue(s Spec) []expr.Any {
	if s.QueueKind == QueueNative {
		q := &expr.Queue{Num: s.Queue, Total: max(s.QueueTotal, 1)}
		if s.FailOpen {
			q.Flag = expr.QueueFlagBypass
		}
		return []expr.Any{q}
	}
	var flags uint16
	if s.FailOpen {
		flags = nfqFlagBypass
	}
	return []expr.Any{nfqueueTarget(s.Queue, max(s.QueueTotal, 1), flags)}
}

// nfqueueTarget is the xtables NFQUEUE target, revision 3:
// struct xt_NFQ_info_v3 { __u16 queuenum; __u16 queues_total; __u16 flags; }
// in host byte order, padded to 8 bytes (the kernel rejects 6). With total
// above 1 and no cpu-fanout flag the kernel picks the queue by its flow
// hash, which orders the address pair: both directions share a queue.
func nfqueueTarget(num, total, flags uint16) *expr.Target {
	b := make([]byte, 8)
	binary.NativeEndian.PutUint16(b[0:], num)
	binary.NativeEndian.PutUint16(b[2:], total)
	binary.NativeEndian.PutUint16(b[4:], flags)
	info := xt.Unknown(b)
	return &expr.Target{Name: "NFQUEUE", Rev: 3, Info: &info}
}

func cat(parts ...[]expr.Any) []expr.Any { return slices.Concat(parts...) }

// ne32 encodes a 32-bit value the way nf_tables registers hold marks and
// ct state: host byte order.
func ne32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

// Set keys: concatenated fields are each padded to 4 bytes.

func appendAddr(b []byte, a netip.Addr) []byte { return append(b, a.AsSlice()...) }

func appendPort(b []byte, p uint16) []byte { return append(binary.BigEndian.AppendUint16(b, p), 0, 0) }

func controlKey(ap netip.AddrPort) []byte {
	return appendPort(appendAddr(make([]byte, 0, 20), ap.Addr()), ap.Port())
}

func pinholeKey(p Pinhole) []byte {
	return appendPort(appendAddr(appendAddr(make([]byte, 0, 36), p.Src), p.Dst), p.DstPort)
}

// forwardKey is the key of a pinhole's forward-hook element: the tuple
// after destination NAT (what the forward and postrouting hooks see).
func forwardKey(p Pinhole) []byte {
	if p.DNAT.IsValid() {
		return appendPort(appendAddr(appendAddr(make([]byte, 0, 36), p.Src), p.DNAT.Addr()), p.DNAT.Port())
	}
	return pinholeKey(p)
}

// targetValue is a destination NAT map value: address . port.
func targetValue(ap netip.AddrPort) []byte {
	return appendPort(appendAddr(make([]byte, 0, 20), ap.Addr()), ap.Port())
}

// decodeTarget is the inverse of targetValue.
func decodeTarget(b []byte) (netip.AddrPort, bool) {
	var n int
	switch len(b) {
	case 8:
		n = 4
	case 20:
		n = 16
	default:
		return netip.AddrPort{}, false
	}
	a, _ := netip.AddrFromSlice(b[:n])
	return netip.AddrPortFrom(a, binary.BigEndian.Uint16(b[n:])), true
}

// decodePinholeKey is the inverse of pinholeKey.
func decodePinholeKey(b []byte) (Pinhole, bool) {
	var n int
	switch len(b) {
	case 12:
		n = 4
	case 36:
		n = 16
	default:
		return Pinhole{}, false
	}
	src, _ := netip.AddrFromSlice(b[:n])
	dst, _ := netip.AddrFromSlice(b[n : 2*n])
	return Pinhole{Src: src, Dst: dst, DstPort: binary.BigEndian.Uint16(b[2*n:])}, true
}

// bareSets returns the two constant sets of bare TCP segments (bareKey):
// no payload and none of FIN, SYN, RST. Such a segment (a pure ACK, a
// window update, a keep-alive) tells the packet path nothing, so the queue
// rules leave it in the kernel.
func bareSets(t *nftables.Table) (v4, v6 *nftables.Set) {
	mk := func(name, comment string) *nftables.Set {
		return &nftables.Set{Table: t, Name: name, KeyType: typeBare, Concatenation: true, Constant: true,
			Comment: comment}
	}
	return mk(setBare4, "bare TCP segments, not queued: ip version+hdrlength . ip length . tcp doff . tcp flags & (fin|syn|rst)"),
		mk(setBare6, "bare TCP segments, not queued: ip6 nexthdr . ip6 length . tcp doff . tcp flags & (fin|syn|rst)")
}

// bareElements lists every bare segment of family f the sets recognise,
// one per TCP data offset (5 to 15 words): IPv4 without IP options (first
// byte 0x45) whose total length is the two headers exactly, and IPv6
// whose next header is TCP (no extension headers) and whose payload length
// is the TCP header exactly. A segment with IP options or IPv6 extension
// headers is therefore always queued, bare or not: recognising less than
// every bare segment only costs a queue round trip, while a segment with
// payload must never be recognised.
func bareElements(f family) []nftables.SetElement {
	var out []nftables.SetElement
	for doff := 5; doff <= 15; doff++ {
		first, length := byte(0x45), 20+4*doff
		if f.nfproto == unix.NFPROTO_IPV6 {
			first, length = unix.IPPROTO_TCP, 4*doff
		}
		k := []byte{first, 0, 0, 0}
		k = appendPort(k, uint16(length))
		k = append(k, byte(doff<<4), 0, 0, 0, 0, 0, 0, 0)
		out = append(out, nftables.SetElement{Key: k})
	}
	return out
}

// bareKey loads the key of the bare sets: the IPv4 header's first byte
// (version and header length) or the IPv6 next header, the IP length (total
// length for IPv4, payload length for IPv6), the TCP data offset (the
// reserved and AE bits masked off) and the TCP flags FIN, SYN and RST. The
// lengths are those the kernel delivers by: it trims the packet to the IP
// length before the forward hook, so a segment whose lengths match an
// element carries no byte of payload (RFC 791, RFC 8200 §3, RFC 9293 §3.1).
func (f family) bareKey() []expr.Any {
	first, length := uint32(0), uint32(2)
	if f.nfproto == unix.NFPROTO_IPV6 {
		first, length = 6, 4
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: first, Len: 1},
		&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseNetworkHeader, Offset: length, Len: 2},
		&expr.Payload{DestRegister: 10, Base: expr.PayloadBaseTransportHeader, Offset: 12, Len: 1},
		&expr.Bitwise{SourceRegister: 10, DestRegister: 10, Len: 1, Mask: []byte{0xf0}, Xor: []byte{0}},
		&expr.Payload{DestRegister: 11, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 11, DestRegister: 11, Len: 1, Mask: []byte{flagsFinSynRst}, Xor: []byte{0}},
	}
}

// flagsFinSynRst is the TCP flags byte's FIN, SYN and RST bits.
const flagsFinSynRst = 0x07
