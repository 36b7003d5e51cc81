package nft

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"
)

// The Dump text is modelled on "nft list table" so that it reads like what
// operators see, with three deliberate differences: rules show every
// expression the kernel holds (nft hides the "meta nfproto" and "meta
// l4proto" dependencies of payload matches), values that change at run time
// (handles, counter values, expiry) are left out, and sets and chains come
// in name order. Kernel.Dump reads the table back from the kernel and
// Fake.Dump renders its model; both go through renderTable.

// tableModel is what renderTable prints.
type tableModel struct {
	name   string
	sets   []setModel
	chains []chainModel
}

type setModel struct {
	set   *nftables.Set
	elems []nftables.SetElement
}

type chainModel struct {
	chain *nftables.Chain
	rules []*nftables.Rule
}

func renderTable(m tableModel) string {
	sets := map[string]*nftables.Set{}
	var blocks []string
	slices.SortFunc(m.sets, func(a, b setModel) int { return strings.Compare(a.set.Name, b.set.Name) })
	for _, s := range m.sets {
		sets[s.set.Name] = s.set
		var b strings.Builder
		renderSet(&b, s)
		blocks = append(blocks, b.String())
	}
	slices.SortFunc(m.chains, func(a, b chainModel) int { return strings.Compare(a.chain.Name, b.chain.Name) })
	for _, c := range m.chains {
		var b strings.Builder
		renderChain(&b, c, sets)
		blocks = append(blocks, b.String())
	}
	return fmt.Sprintf("table inet %s {\n%s}\n", m.name, strings.Join(blocks, "\n"))
}

func renderSet(b *strings.Builder, s setModel) {
	kind, typ := "set", s.set.KeyType.Name
	if s.set.IsMap {
		kind, typ = "map", typ+" : "+s.set.DataType.Name
	}
	fmt.Fprintf(b, "\t%s %s {\n", kind, s.set.Name)
	fmt.Fprintf(b, "\t\ttype %s\n", typ)
	if s.set.Size != 0 {
		fmt.Fprintf(b, "\t\tsize %d\n", s.set.Size)
	}
	var flags []string
	if s.set.Constant {
		flags = append(flags, "constant")
	}
	if s.set.Interval {
		flags = append(flags, "interval")
	}
	if s.set.Dynamic {
		flags = append(flags, "dynamic")
	}
	if s.set.HasTimeout {
		flags = append(flags, "timeout")
	}
	if len(flags) > 0 {
		fmt.Fprintf(b, "\t\tflags %s\n", strings.Join(flags, ","))
	}
	if s.set.Timeout != 0 {
		fmt.Fprintf(b, "\t\ttimeout %s\n", nftDuration(s.set.Timeout))
	}
	if s.set.Comment != "" {
		fmt.Fprintf(b, "\t\tcomment %q\n", s.set.Comment)
	}
	if len(s.elems) > 0 {
		types := nftables.ConcatSetTypeElements(s.set.KeyType)
		elems := make([]string, 0, len(s.elems))
		for _, e := range s.elems {
			txt := renderKey(types, e.Key)
			if len(e.KeyEnd) > 0 {
				txt = renderRange(types, e.Key, e.KeyEnd)
			}
			if e.Timeout != 0 {
				txt += " timeout " + nftDuration(e.Timeout)
			}
			if s.set.IsMap {
				txt += " : " + renderKey(nftables.ConcatSetTypeElements(s.set.DataType), e.Val)
			}
			elems = append(elems, txt)
		}
		slices.Sort(elems)
		fmt.Fprintf(b, "\t\telements = { %s }\n", strings.Join(elems, ",\n\t\t\t     "))
	}
	b.WriteString("\t}\n")
}

// renderKey prints a (possibly concatenated) key; each field is padded to a
// multiple of 4 bytes.
func renderKey(types []nftables.SetDatatype, k []byte) string {
	parts := make([]string, 0, len(types))
	for _, t := range types {
		n := int(t.Bytes)
		padded := (n + 3) &^ 3
		if n == 0 || len(k) < n {
			return fmt.Sprintf("0x%x", k)
		}
		parts = append(parts, renderValue(t.Name, k[:n]))
		k = k[min(padded, len(k)):]
	}
	return strings.Join(parts, " . ")
}

// renderRange prints a concatenated interval element: each field whose
// start and end differ as "start-end".
func renderRange(types []nftables.SetDatatype, from, to []byte) string {
	a, b := renderKey(types, from), renderKey(types, to)
	as, bs := strings.Split(a, " . "), strings.Split(b, " . ")
	if len(as) != len(bs) {
		return a + "-" + b
	}
	for i := range as {
		if as[i] != bs[i] {
			as[i] += "-" + bs[i]
		}
	}
	return strings.Join(as, " . ")
}

func renderValue(typ string, v []byte) string {
	switch typ {
	case "ipv4_addr", "ipv6_addr":
		if a, ok := netip.AddrFromSlice(v); ok {
			return a.String()
		}
	case "inet_service":
		if len(v) == 2 {
			return fmt.Sprint(binary.BigEndian.Uint16(v))
		}
	case "mark":
		if len(v) == 4 {
			return fmt.Sprintf("0x%08x", binary.NativeEndian.Uint32(v))
		}
	case "tcp_flag":
		if len(v) == 1 {
			return fmt.Sprintf("0x%x", v[0])
		}
	}
	return fmt.Sprintf("0x%x", v)
}

var hookNames = map[nftables.ChainHook]string{
	*nftables.ChainHookPrerouting:  "prerouting",
	*nftables.ChainHookInput:       "input",
	*nftables.ChainHookForward:     "forward",
	*nftables.ChainHookOutput:      "output",
	*nftables.ChainHookPostrouting: "postrouting",
}

// Standard priority names, as nft prints them for the inet family.
var priorityNames = map[nftables.ChainPriority]string{
	-300: "raw", -150: "mangle", -100: "dstnat", 0: "filter", 50: "security", 100: "srcnat",
}

func renderChain(b *strings.Builder, c chainModel, sets map[string]*nftables.Set) {
	fmt.Fprintf(b, "\tchain %s {\n", c.chain.Name)
	if c.chain.Hooknum != nil && c.chain.Priority != nil {
		hook, ok := hookNames[*c.chain.Hooknum]
		if !ok {
			hook = fmt.Sprint(uint32(*c.chain.Hooknum))
		}
		prio, ok := priorityNames[*c.chain.Priority]
		if !ok {
			prio = fmt.Sprint(int32(*c.chain.Priority))
		}
		fmt.Fprintf(b, "\t\ttype %s hook %s priority %s;", c.chain.Type, hook, prio)
		if c.chain.Policy != nil {
			pol := "accept"
			if *c.chain.Policy == nftables.ChainPolicyDrop {
				pol = "drop"
			}
			fmt.Fprintf(b, " policy %s;", pol)
		}
		b.WriteString("\n")
	}
	for _, r := range c.rules {
		fmt.Fprintf(b, "\t\t%s\n", renderRule(r, sets))
	}
	b.WriteString("\t}\n")
}

// regKind says how to print the constants a register is compared with.
type regKind int

const (
	kindRaw regKind = iota
	kindHex32
	kindNFProto
	kindL4Proto
	kindCtState
	kindAddr
	kindPort
	kindDec
	kindCtStatus
)

// regVal is the symbolic content of a register during decompilation.
type regVal struct {
	text string
	kind regKind
	// id distinguishes loads, so that a concatenation spanning several
	// 32-bit registers prints each load once.
	id int
	// data is the constant an immediate loaded.
	data []byte
	// bits is the prefix length an address was masked to (0: none).
	bits int
}

// slot maps a register number to its first 32-bit register: NFT_REG_1..4
// are 16 bytes wide and alias NFT_REG32_00..15 (8..23).
func slot(r uint32) uint32 {
	if r >= 1 && r <= 4 {
		return 8 + (r-1)*4
	}
	return r
}

// renderRule decompiles the expressions of a rule into nft-like text. It
// knows the expressions ftpsalg builds; anything else prints as
// "<unknown ...>" so that a golden test shows it.
func renderRule(r *nftables.Rule, sets map[string]*nftables.Set) string {
	keyLen := func(name string) uint32 {
		if s, ok := sets[name]; ok {
			return s.KeyType.Bytes
		}
		return 0
	}
	regs := map[uint32]regVal{}
	nextID := 0
	set := func(reg, length uint32, v regVal) {
		nextID++
		v.id = nextID
		s := slot(reg)
		for i := uint32(0); i < max(1, (length+3)/4); i++ {
			regs[s+i] = v
		}
	}
	get := func(reg uint32) regVal { return regs[slot(reg)] }
	concat := func(reg, length uint32) string {
		s := slot(reg)
		var parts []string
		last := -1
		for i := uint32(0); i < max(1, (length+3)/4); i++ {
			v, ok := regs[s+i]
			if !ok {
				parts = append(parts, fmt.Sprintf("<reg %d>", s+i))
				continue
			}
			if v.id != last {
				parts = append(parts, v.text)
				last = v.id
			}
		}
		return strings.Join(parts, " . ")
	}
	l4 := "th"
	nfproto := "inet"

	var out []string
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Meta:
			if e.SourceRegister {
				out = append(out, fmt.Sprintf("meta %s set %s", metaName(e.Key), get(e.Register).text))
				continue
			}
			kind := kindRaw
			switch e.Key {
			case expr.MetaKeyMARK:
				kind = kindHex32
			case expr.MetaKeyNFPROTO:
				kind = kindNFProto
			case expr.MetaKeyL4PROTO:
				kind = kindL4Proto
			}
			set(e.Register, 4, regVal{text: "meta " + metaName(e.Key), kind: kind})
		case *expr.Ct:
			if e.SourceRegister {
				out = append(out, fmt.Sprintf("ct %s set %s", ctName(e.Key), get(e.Register).text))
				continue
			}
			kind := kindRaw
			switch e.Key {
			case expr.CtKeyMARK:
				kind = kindHex32
			case expr.CtKeySTATE:
				kind = kindCtState
			case expr.CtKeySTATUS:
				kind = kindCtStatus
			}
			set(e.Register, 4, regVal{text: "ct " + ctName(e.Key), kind: kind})
		case *expr.Payload:
			if e.OperationType != expr.PayloadLoad {
				out = append(out, fmt.Sprintf("<unknown payload write %+v>", *e))
				continue
			}
			set(e.DestRegister, e.Len, payloadVal(e, nfproto, l4))
		case *expr.Bitwise:
			v := get(e.SourceRegister)
			mask := binary.NativeEndian.Uint32(pad4(e.Mask))
			xor := binary.NativeEndian.Uint32(pad4(e.Xor))
			if bits, ok := prefixMask(e.Mask, e.Xor); ok && v.kind == kindAddr && uint32(len(e.Mask)) == e.Len {
				v.bits = bits
				set(e.DestRegister, e.Len, v)
				continue
			}
			if v.kind == kindCtStatus && e.Len == 4 && xor == 0 && mask == ipsDstNAT {
				v.text = "ct status & dnat"
				set(e.DestRegister, e.Len, v)
				continue
			}
			switch {
			case e.Len == 1 && len(e.Mask) == 1 && isZero(e.Xor):
				v.text = fmt.Sprintf("%s & 0x%02x", v.text, e.Mask[0])
			case e.Len == 4 && xor == 0:
				v.text = fmt.Sprintf("%s & %s", v.text, fmtConst(v.kind, e.Mask))
			case e.Len == 4 && mask == ^xor:
				v.text = fmt.Sprintf("%s | %s", v.text, fmtConst(v.kind, e.Xor))
			default:
				v.text = fmt.Sprintf("(%s & 0x%x) ^ 0x%x", v.text, e.Mask, e.Xor)
			}
			set(e.DestRegister, e.Len, v)
		case *expr.Cmp:
			v := get(e.Register)
			if v.kind == kindNFProto && e.Op == expr.CmpOpEq && len(e.Data) == 1 {
				switch e.Data[0] {
				case unix.NFPROTO_IPV4:
					nfproto = "ip"
				case unix.NFPROTO_IPV6:
					nfproto = "ip6"
				}
			}
			if v.kind == kindL4Proto && e.Op == expr.CmpOpEq && len(e.Data) == 1 && e.Data[0] == unix.IPPROTO_TCP {
				l4 = "tcp"
			}
			if v.kind == kindAddr && v.bits > 0 && e.Op == expr.CmpOpEq {
				out = append(out, fmt.Sprintf("%s %s/%d", v.text, fmtConst(kindAddr, e.Data), v.bits))
				continue
			}
			if v.kind == kindCtStatus && e.Op == expr.CmpOpNeq && isZero(e.Data) {
				// "ct status dnat" is "ct status & dnat != 0".
				if status, ok := strings.CutPrefix(v.text, "ct status & "); ok {
					out = append(out, "ct status "+status)
					continue
				}
			}
			if v.kind == kindCtState && e.Op == expr.CmpOpNeq && isZero(e.Data) {
				// "ct state new" is "ct state & new != 0".
				if state, ok := strings.CutPrefix(v.text, "ct state & "); ok {
					out = append(out, "ct state "+state)
					continue
				}
			}
			op := cmpOps[e.Op]
			if op != "" {
				op += " "
			}
			out = append(out, fmt.Sprintf("%s %s%s", v.text, op, fmtConst(v.kind, e.Data)))
		case *expr.Lookup:
			neg := ""
			if e.Invert {
				neg = "!= "
			}
			key := concat(e.SourceRegister, keyLen(e.SetName))
			if e.IsDestRegSet {
				// A map lookup: the value goes to a register that the
				// next statement (snat) reads.
				var n uint32 = 4
				if s, ok := sets[e.SetName]; ok {
					n = s.DataType.Bytes
				}
				set(e.DestRegister, n, regVal{text: fmt.Sprintf("%s map @%s", key, e.SetName), kind: kindAddr})
				continue
			}
			out = append(out, fmt.Sprintf("%s %s@%s", key, neg, e.SetName))
		case *expr.Dynset:
			op := map[uint32]string{unix.NFT_DYNSET_OP_ADD: "add", unix.NFT_DYNSET_OP_UPDATE: "update", dynsetOpDelete: "delete"}[e.Operation]
			if op == "" {
				op = fmt.Sprintf("<dynset op %d>", e.Operation)
			}
			timeout := ""
			if e.Timeout != 0 {
				timeout = " timeout " + nftDuration(e.Timeout)
			}
			out = append(out, fmt.Sprintf("%s @%s { %s%s }", op, e.SetName, concat(e.SrcRegKey, keyLen(e.SetName)), timeout))
		case *expr.Counter:
			out = append(out, "counter")
		case *expr.Verdict:
			out = append(out, verdictText(e))
		case *expr.Immediate:
			set(e.Register, uint32(len(e.Data)), regVal{text: fmt.Sprintf("0x%x", e.Data), data: e.Data})
		case *expr.Socket:
			kind := kindRaw
			if e.Key == expr.SocketKeyTransparent {
				kind = kindDec
			}
			set(e.Register, 1, regVal{text: "socket " + socketName(e.Key), kind: kind})
		case *expr.TProxy:
			out = append(out, tproxyText(e, get(e.RegAddr), get(e.RegPort)))
		case *expr.NAT:
			out = append(out, natText(e, get(e.RegAddrMin), get(e.RegProtoMin)))
		case *opaqueExpr:
			out = append(out, fmt.Sprintf("<unknown expression %s>", e.name))
		case *expr.Queue:
			out = append(out, queueText(e.Num, e.Total, e.Flag&expr.QueueFlagBypass != 0, e.Flag&expr.QueueFlagFanout != 0))
		case *expr.Target:
			out = append(out, targetText(e))
		default:
			out = append(out, fmt.Sprintf("<unknown %T>", e))
		}
	}
	if c, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok {
		out = append(out, fmt.Sprintf("comment %q", c))
	}
	return strings.Join(out, " ")
}

func socketName(k expr.SocketKey) string {
	switch k {
	case expr.SocketKeyTransparent:
		return "transparent"
	case expr.SocketKeyMark:
		return "mark"
	case expr.SocketKeyWildcard:
		return "wildcard"
	default:
		return fmt.Sprintf("<key %d>", k)
	}
}

func familyName(nfproto uint32) string {
	switch nfproto {
	case unix.NFPROTO_IPV4:
		return "ip"
	case unix.NFPROTO_IPV6:
		return "ip6"
	default:
		return fmt.Sprintf("<family %d>", nfproto)
	}
}

// tproxyText prints "tproxy ip to :8021" (or "to ADDR:PORT"), as nft does.
func tproxyText(e *expr.TProxy, addr, port regVal) string {
	s := "tproxy " + familyName(uint32(e.Family)) + " to "
	if e.RegAddr != 0 {
		a, ok := netip.AddrFromSlice(addr.data)
		switch {
		case ok && a.Is6():
			s += "[" + a.String() + "]"
		case ok:
			s += a.String()
		default:
			s += addr.text
		}
	}
	if e.RegPort != 0 {
		if len(port.data) == 2 {
			s += fmt.Sprintf(":%d", binary.BigEndian.Uint16(port.data))
		} else {
			s += ":" + port.text
		}
	}
	return s
}

// natText prints "snat ip to <expression>", as nft does for an address
// from a register, or "dnat ip to <map lookup>" for an address and a port
// from one map lookup (the two forms ftpsalg builds; the kernel reports
// the port register for the latter and may add the proto-specified flag).
func natText(e *expr.NAT, addr regVal, port regVal) string {
	typ := map[expr.NATType]string{expr.NATTypeSourceNAT: "snat", expr.NATTypeDestNAT: "dnat"}[e.Type]
	if typ == "" {
		typ = fmt.Sprintf("<nat type %d>", e.Type)
	}
	s := fmt.Sprintf("%s %s to %s", typ, familyName(e.Family), addr.text)
	mapPort := e.RegProtoMin != 0 && port.id == addr.id && (e.RegProtoMax == 0 || e.RegProtoMax == e.RegProtoMin)
	// The kernel reports a single address as a range of one.
	if (e.RegProtoMin != 0 && !mapPort) || (e.RegAddrMax != 0 && e.RegAddrMax != e.RegAddrMin) ||
		e.Random || e.FullyRandom || e.Persistent || e.Prefix || (e.Specified && !mapPort) {
		s += fmt.Sprintf(" <nat options %+v>", *e)
	}
	return s
}

// prefixMask reports whether mask is a contiguous prefix mask (and xor
// zero), and its length.
func prefixMask(mask, xor []byte) (int, bool) {
	if !isZero(xor) || len(mask) == 0 {
		return 0, false
	}
	bits, ended := 0, false
	for _, b := range mask {
		for i := 7; i >= 0; i-- {
			set := b&(1<<i) != 0
			switch {
			case set && ended:
				return 0, false
			case set:
				bits++
			default:
				ended = true
			}
		}
	}
	return bits, bits > 0 && bits < len(mask)*8
}

// queueText prints a queue statement the way nft 1.0 prints the native
// expression ("queue flags bypass to 5").
func queueText(num, total uint16, bypass, fanout bool) string {
	var flags []string
	if bypass {
		flags = append(flags, "bypass")
	}
	if fanout {
		flags = append(flags, "fanout")
	}
	s := "queue"
	if len(flags) > 0 {
		s += " flags " + strings.Join(flags, ",")
	}
	if total > 1 {
		return fmt.Sprintf("%s to %d-%d", s, num, num+total-1)
	}
	return fmt.Sprintf("%s to %d", s, num)
}

// targetText prints an xtables target. NFQUEUE prints like the native queue
// with an "xt NFQUEUE" marker, because the two behave the same but operators
// and nft see different expressions.
func targetText(e *expr.Target) string {
	if e.Name == "NFQUEUE" && e.Rev == 3 {
		var info []byte
		switch i := e.Info.(type) {
		case *xt.Unknown:
			info = *i
		}
		if len(info) >= 6 {
			num := binary.NativeEndian.Uint16(info[0:])
			total := binary.NativeEndian.Uint16(info[2:])
			flags := binary.NativeEndian.Uint16(info[4:])
			return "xt NFQUEUE " + queueText(num, total, flags&nfqFlagBypass != 0, flags&0x2 != 0)
		}
	}
	return fmt.Sprintf("xt target %q rev %d", e.Name, e.Rev)
}

func verdictText(v *expr.Verdict) string {
	switch v.Kind {
	case expr.VerdictAccept:
		return "accept"
	case expr.VerdictDrop:
		return "drop"
	case expr.VerdictReturn:
		return "return"
	case expr.VerdictContinue:
		return "continue"
	case expr.VerdictJump:
		return "jump " + v.Chain
	case expr.VerdictGoto:
		return "goto " + v.Chain
	default:
		return fmt.Sprintf("<verdict %d>", v.Kind)
	}
}

var cmpOps = map[expr.CmpOp]string{
	expr.CmpOpEq: "", expr.CmpOpNeq: "!=", expr.CmpOpLt: "<", expr.CmpOpLte: "<=", expr.CmpOpGt: ">", expr.CmpOpGte: ">=",
}

func metaName(k expr.MetaKey) string {
	switch k {
	case expr.MetaKeyMARK:
		return "mark"
	case expr.MetaKeyNFPROTO:
		return "nfproto"
	case expr.MetaKeyL4PROTO:
		return "l4proto"
	case expr.MetaKeyIIFNAME:
		return "iifname"
	case expr.MetaKeyOIFNAME:
		return "oifname"
	default:
		return fmt.Sprintf("<key %d>", k)
	}
}

func ctName(k expr.CtKey) string {
	switch k {
	case expr.CtKeySTATE:
		return "state"
	case expr.CtKeyMARK:
		return "mark"
	default:
		return fmt.Sprintf("<key %d>", k)
	}
}

func payloadVal(e *expr.Payload, nfproto, l4 string) regVal {
	switch e.Base {
	case expr.PayloadBaseNetworkHeader:
		names := map[string]map[[2]uint32]string{
			"ip":  {{12, 4}: "saddr", {16, 4}: "daddr", {2, 2}: "length"},
			"ip6": {{8, 16}: "saddr", {24, 16}: "daddr", {4, 2}: "length", {6, 1}: "nexthdr"},
		}
		if n, ok := names[nfproto][[2]uint32{e.Offset, e.Len}]; ok {
			return regVal{text: nfproto + " " + n, kind: kindAddr}
		}
	case expr.PayloadBaseTransportHeader:
		switch {
		case e.Offset == 0 && e.Len == 2:
			return regVal{text: l4 + " sport", kind: kindPort}
		case e.Offset == 2 && e.Len == 2:
			return regVal{text: l4 + " dport", kind: kindPort}
		}
	}
	return regVal{text: fmt.Sprintf("@%s,%d,%d", baseName(e.Base), e.Offset*8, e.Len*8)}
}

func baseName(b expr.PayloadBase) string {
	switch b {
	case expr.PayloadBaseLLHeader:
		return "ll"
	case expr.PayloadBaseNetworkHeader:
		return "nh"
	default:
		return "th"
	}
}

var ctStates = []struct {
	bit  uint32
	name string
}{
	{expr.CtStateBitINVALID, "invalid"}, {expr.CtStateBitESTABLISHED, "established"},
	{expr.CtStateBitRELATED, "related"}, {expr.CtStateBitNEW, "new"}, {expr.CtStateBitUNTRACKED, "untracked"},
}

func fmtConst(k regKind, d []byte) string {
	switch k {
	case kindHex32:
		if len(d) == 4 {
			return fmt.Sprintf("0x%08x", binary.NativeEndian.Uint32(d))
		}
	case kindNFProto:
		if len(d) == 1 {
			switch d[0] {
			case unix.NFPROTO_IPV4:
				return "ipv4"
			case unix.NFPROTO_IPV6:
				return "ipv6"
			}
		}
	case kindL4Proto:
		if len(d) == 1 {
			switch d[0] {
			case unix.IPPROTO_TCP:
				return "tcp"
			case unix.IPPROTO_UDP:
				return "udp"
			}
		}
	case kindCtState:
		if len(d) == 4 {
			v := binary.NativeEndian.Uint32(d)
			var names []string
			for _, s := range ctStates {
				if v&s.bit != 0 {
					names = append(names, s.name)
					v &^= s.bit
				}
			}
			if v == 0 && len(names) > 0 {
				return strings.Join(names, ",")
			}
		}
	case kindAddr:
		if a, ok := netip.AddrFromSlice(d); ok {
			return a.String()
		}
	case kindPort:
		if len(d) == 2 {
			return fmt.Sprint(binary.BigEndian.Uint16(d))
		}
	case kindDec:
		if len(d) == 1 {
			return fmt.Sprint(d[0])
		}
	}
	return fmt.Sprintf("0x%x", d)
}

func pad4(b []byte) []byte {
	if len(b) >= 4 {
		return b[:4]
	}
	return append(slices.Clone(b), make([]byte, 4-len(b))...)
}

func isZero(b []byte) bool { return len(bytes.Trim(b, "\x00")) == 0 }

// nftDuration prints durations the way nft does: 1h2m3s, 1m30s, 500ms.
func nftDuration(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	var b strings.Builder
	for _, u := range []struct {
		d    time.Duration
		name string
	}{{24 * time.Hour, "d"}, {time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}, {time.Millisecond, "ms"}} {
		if n := d / u.d; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, u.name)
			d -= n * u.d
		}
	}
	if b.Len() == 0 {
		return "0s"
	}
	return b.String()
}
