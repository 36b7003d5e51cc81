package route

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Router installs the policy routing that mitm mode needs next to the
// table: packets carrying the tproxy mark are looked up in a routing table
// of their own whose only route delivers everything locally, for IPv4 and
// IPv6:
//
//	ip rule add fwmark MARK/MARK lookup TABLE pref PRIO proto 245
//	ip route add local 0.0.0.0/0 dev lo table TABLE proto 245
//	(and the same with ip -6 and local ::/0)
//
// The mark is set by the prerouting chain (nft.Spec.TProxyMark), on diverted
// control connections and on the server's replies to the proxy's spoofed
// upstream connections, which are addressed to the client and would
// otherwise be forwarded to it. Kernel implements Router on the
// running kernel and Fake in memory.
type Router interface {
	// Ensure installs the rule and route of both families. It is
	// idempotent: what already exists (ours, or an identical rule or route
	// someone else made) is not added twice.
	Ensure(ctx context.Context) error
	// Remove deletes what Ensure created, identified by Protocol;
	// missing objects are not an error and nothing else is touched.
	Remove(ctx context.Context) error
}

var (
	_ Router = (*Kernel)(nil)
	_ Router = (*Fake)(nil)
)

// Protocol tags the rules and routes a Router creates (rtm_protocol,
// FRA_PROTOCOL; "proto 245" in ip(8) listings). Remove deletes only objects
// with this tag, so an identical rule or route that the operator made
// survives. The kernel does not interpret the value; "245 ftpsalg" in
// /etc/iproute2/rt_protos.d/ftpsalg.conf makes ip(8) print the name.
const Protocol = 245

// loIndex is the interface index of lo, the same in every network
// namespace (LOOPBACK_IFINDEX).
const loIndex = 1

// routeTimeout bounds every Router call whose context has no deadline, so
// that a netlink exchange never blocks forever.
const routeTimeout = 10 * time.Second

// routeSpec is a validated Router configuration.
type routeSpec struct {
	mark, table, prio uint32
}

func newRouteSpec(mark, table, prio uint32) (routeSpec, error) {
	switch {
	case mark == 0:
		return routeSpec{}, errors.New("mark must not be zero")
	case table == unix.RT_TABLE_UNSPEC || table == unix.RT_TABLE_DEFAULT ||
		table == unix.RT_TABLE_MAIN || table == unix.RT_TABLE_LOCAL:
		return routeSpec{}, fmt.Errorf("table %d is reserved (unspec, default, main, local): use a table of its own", table)
	case prio == 0 || prio >= 32766:
		// 0 is the local table's rule; from 32766 on, the main table
		// (which routes the client's address to the client) would decide
		// first.
		return routeSpec{}, fmt.Errorf("priority %d out of range [1, 32765]: the rule must come before the main table's (32766)", prio)
	}
	return routeSpec{mark: mark, table: table, prio: prio}, nil
}

// ipRule is a policy routing rule as far as Router models it.
type ipRule struct {
	family     uint8
	pref       uint32
	hasMark    bool
	mark, mask uint32
	action     uint8
	table      uint32
	proto      uint8
	flags      uint32
	// other lists selectors that Router does not create, rendered in
	// ip(8)'s words; a rule with any is never one of ours.
	other []string
}

// ipRoute is a route as far as Router models it.
type ipRoute struct {
	family  uint8
	typ     uint8
	dst     netip.Prefix
	gateway netip.Addr
	oif     uint32
	table   uint32
	proto   uint8
	scope   uint8
	metric  uint32
}

func (s routeSpec) rule(family uint8) ipRule {
	return ipRule{family: family, pref: s.prio, hasMark: true, mark: s.mark, mask: s.mark,
		action: unix.FR_ACT_TO_TBL, table: s.table, proto: Protocol}
}

func (s routeSpec) route(family uint8) ipRoute {
	dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	if family == unix.AF_INET6 {
		dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	}
	return ipRoute{family: family, typ: unix.RTN_LOCAL, dst: dst, oif: loIndex,
		table: s.table, proto: Protocol, scope: unix.RT_SCOPE_HOST}
}

// sameRule reports whether a has the selector, action, table and priority
// of b: then it does what b would, whoever created it.
func sameRule(a, b ipRule) bool {
	return a.family == b.family && a.pref == b.pref && a.hasMark == b.hasMark &&
		a.mark == b.mark && a.mask == b.mask && a.action == b.action && a.table == b.table &&
		a.flags&unix.FIB_RULE_INVERT == b.flags&unix.FIB_RULE_INVERT && len(a.other) == 0 && len(b.other) == 0
}

// sameRoute reports whether a is a route like b (type, destination,
// device, table), whoever created it.
func sameRoute(a, b ipRoute) bool {
	return a.family == b.family && a.typ == b.typ && a.dst == b.dst && a.oif == b.oif &&
		a.table == b.table && !a.gateway.IsValid() && !b.gateway.IsValid()
}

var routeFamilies = []uint8{unix.AF_INET, unix.AF_INET6}

// renderRouting prints the rules that look up the table and the routes in
// it, per family, in the words of ip(8); each section is headed by the
// command that shows it on a live system.
func renderRouting(table uint32, rules []ipRule, routes []ipRoute) string {
	var b strings.Builder
	for _, fam := range routeFamilies {
		v := "4"
		if fam == unix.AF_INET6 {
			v = "6"
		}
		fmt.Fprintf(&b, "# ip -%s rule list table %d\n", v, table)
		var lines []string
		for _, r := range rules {
			if r.family == fam && r.table == table {
				lines = append(lines, r.String())
			}
		}
		slices.Sort(lines)
		for _, l := range lines {
			fmt.Fprintln(&b, l)
		}
		fmt.Fprintf(&b, "# ip -%s route list table %d\n", v, table)
		lines = lines[:0]
		for _, r := range routes {
			if r.family == fam && r.table == table {
				lines = append(lines, r.String())
			}
		}
		slices.Sort(lines)
		for _, l := range lines {
			fmt.Fprintln(&b, l)
		}
	}
	return b.String()
}

func (r ipRule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d:\t", r.pref)
	if r.flags&unix.FIB_RULE_INVERT != 0 {
		b.WriteString("not ")
	}
	b.WriteString("from all")
	if r.hasMark {
		fmt.Fprintf(&b, " fwmark 0x%x/0x%x", r.mark, r.mask)
	}
	for _, o := range r.other {
		b.WriteString(" " + o)
	}
	switch r.action {
	case unix.FR_ACT_TO_TBL:
		b.WriteString(" lookup " + tableName(r.table))
	default:
		fmt.Fprintf(&b, " action %d", r.action)
	}
	if r.proto != 0 {
		b.WriteString(" proto " + protoName(r.proto))
	}
	return b.String()
}

func (r ipRoute) String() string {
	var parts []string
	if r.typ != unix.RTN_UNICAST {
		parts = append(parts, routeTypeName(r.typ))
	}
	if r.dst.Bits() == 0 {
		parts = append(parts, "default")
	} else {
		parts = append(parts, r.dst.String())
	}
	if r.gateway.IsValid() {
		parts = append(parts, "via", r.gateway.String())
	}
	if r.oif == loIndex {
		parts = append(parts, "dev", "lo")
	} else if r.oif != 0 {
		parts = append(parts, "dev", fmt.Sprintf("if%d", r.oif))
	}
	if r.proto != 0 {
		parts = append(parts, "proto", protoName(r.proto))
	}
	switch r.scope {
	case unix.RT_SCOPE_UNIVERSE:
	case unix.RT_SCOPE_HOST:
		parts = append(parts, "scope", "host")
	case unix.RT_SCOPE_LINK:
		parts = append(parts, "scope", "link")
	default:
		parts = append(parts, "scope", fmt.Sprint(r.scope))
	}
	if r.metric != 0 {
		parts = append(parts, "metric", fmt.Sprint(r.metric))
	}
	return strings.Join(parts, " ")
}

func tableName(t uint32) string {
	switch t {
	case unix.RT_TABLE_DEFAULT:
		return "default"
	case unix.RT_TABLE_MAIN:
		return "main"
	case unix.RT_TABLE_LOCAL:
		return "local"
	}
	return fmt.Sprint(t)
}

func protoName(p uint8) string {
	switch p {
	case unix.RTPROT_KERNEL:
		return "kernel"
	case unix.RTPROT_BOOT:
		return "boot"
	case unix.RTPROT_STATIC:
		return "static"
	}
	return fmt.Sprint(p)
}

func routeTypeName(t uint8) string {
	switch t {
	case unix.RTN_LOCAL:
		return "local"
	case unix.RTN_BROADCAST:
		return "broadcast"
	case unix.RTN_ANYCAST:
		return "anycast"
	case unix.RTN_MULTICAST:
		return "multicast"
	case unix.RTN_BLACKHOLE:
		return "blackhole"
	case unix.RTN_UNREACHABLE:
		return "unreachable"
	case unix.RTN_PROHIBIT:
		return "prohibit"
	case unix.RTN_THROW:
		return "throw"
	}
	return fmt.Sprintf("type%d", t)
}

// Kernel is the Router on the running kernel, over one lasting
// rtnetlink socket. Messages are built and (for routes) parsed with
// jsimonetti/rtnetlink's types; rules are parsed here, because its decoder
// rejects a whole dump when any rule carries an attribute it does not know
// (newer kernels have several, e.g. FRA_DSCP), and the dump includes the
// operator's rules.
type Kernel struct {
	spec  routeSpec
	netns int
	log   *slog.Logger

	mu   sync.Mutex
	conn *netlink.Conn // nil after an interrupted call; redialled on use
}

// New checks the configuration and opens an rtnetlink socket (in the
// namespace of Options.NetNS, if given). It changes nothing in the kernel.
// mark must be the table's Spec.TProxyMark; table is a routing table of
// ftpsalg's own (not main, local or default); priority must come before
// the main table's rule (32766).
func New(mark, table, priority uint32, o Options) (*Kernel, error) {
	s, err := newRouteSpec(mark, table, priority)
	if err != nil {
		return nil, fmt.Errorf("route: invalid policy routing: %w", err)
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Kernel{spec: s, netns: o.NetNS, log: log}
	if err := r.dial(); err != nil {
		return nil, fmt.Errorf("route: %w", err)
	}
	return r, nil
}

// dial opens the socket; callers hold r.mu or own r.
func (r *Kernel) dial() error {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{NetNS: r.netns})
	if err != nil {
		return fmt.Errorf("failed to open rtnetlink connection: %w", err)
	}
	// Strict checking makes the kernel honour the table filter of route
	// dumps (otherwise every route of the family is sent, a full BGP
	// table included); extended acks add the kernel's reason to errors.
	// Both are optimisations: filtering happens here too.
	_ = c.SetOption(netlink.GetStrictCheck, true)
	_ = c.SetOption(netlink.ExtendedAcknowledge, true)
	r.conn = c
	return nil
}

// Close releases the socket. It leaves the rules and routes in place: a
// stopping daemon calls Remove first.
func (r *Kernel) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn == nil {
		return nil
	}
	err := r.conn.Close()
	r.conn = nil
	if err != nil {
		return fmt.Errorf("route: failed to close rtnetlink connection: %w", err)
	}
	return nil
}

// do runs fn under the lock with the context's deadline (routeTimeout if it
// has none) on the socket; cancelling the context expires the deadline. A
// socket whose exchange was cut short is replaced.
func (r *Kernel) do(ctx context.Context, fn func(c *netlink.Conn) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, routeTimeout)
		defer cancel()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn == nil {
		if err := r.dial(); err != nil {
			return err
		}
	}
	c := r.conn
	dl, _ := ctx.Deadline()
	if err := c.SetDeadline(dl); err != nil {
		return fmt.Errorf("failed to set deadline: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	err := fn(c)
	interrupted := !stop()
	if interrupted || errors.Is(err, os.ErrDeadlineExceeded) {
		r.log.Debug("replacing rtnetlink connection after interrupted operation", slog.Any("error", err))
		_ = c.Close()
		r.conn = nil
		if err != nil && ctx.Err() != nil {
			return errors.Join(ctx.Err(), err)
		}
	}
	return err
}

// Ensure implements Router. For each family it adds the route first and
// then the rule, so the rule never points at an empty table. A family the
// kernel does not support (IPv6 disabled at boot) is skipped.
func (r *Kernel) Ensure(ctx context.Context) error {
	err := r.do(ctx, func(c *netlink.Conn) error {
		for _, fam := range routeFamilies {
			err := r.ensure(c, fam)
			if errors.Is(err, unix.EAFNOSUPPORT) {
				r.log.Debug("policy routing: address family not supported, skipped", slog.Int("family", int(fam)))
				continue
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("route: failed to install policy routing: %w", err)
	}
	r.log.Debug("installed policy routing", slog.Uint64("mark", uint64(r.spec.mark)),
		slog.Uint64("table", uint64(r.spec.table)), slog.Uint64("priority", uint64(r.spec.prio)))
	return nil
}

func (r *Kernel) ensure(c *netlink.Conn, fam uint8) error {
	wantRoute := r.spec.route(fam)
	routes, err := listRoutes(c, fam, r.spec.table)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(routes, func(x ipRoute) bool { return sameRoute(x, wantRoute) }) {
		err := execute(c, unix.RTM_NEWROUTE, netlink.Create|netlink.Excl, routeMessage(wantRoute))
		if errors.Is(err, unix.EEXIST) {
			// The table has another route for the same destination
			// (kernel's EEXIST compares prefix, tos and metric, not
			// type): with it, marked packets would not be delivered
			// locally.
			routes, _ := listRoutes(c, fam, r.spec.table)
			if !slices.ContainsFunc(routes, func(x ipRoute) bool { return sameRoute(x, wantRoute) }) {
				return fmt.Errorf("failed to add route %q to table %d: the table has another default route (%w): use a table of ftpsalg's own", wantRoute, r.spec.table, err)
			}
		} else if err != nil {
			return fmt.Errorf("failed to add route %q: %w", wantRoute, err)
		}
	}
	wantRule := r.spec.rule(fam)
	rules, err := listRules(c, fam)
	if err != nil {
		return err
	}
	if slices.ContainsFunc(rules, func(x ipRule) bool { return sameRule(x, wantRule) }) {
		return nil
	}
	err = execute(c, unix.RTM_NEWRULE, netlink.Create|netlink.Excl, ruleMessage(wantRule))
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("failed to add rule %q: %w", wantRule, err)
	}
	return nil
}

// Remove implements Router: the rule goes first, then the route.
func (r *Kernel) Remove(ctx context.Context) error {
	err := r.do(ctx, func(c *netlink.Conn) error {
		for _, fam := range routeFamilies {
			err := r.remove(c, fam)
			if errors.Is(err, unix.EAFNOSUPPORT) {
				continue
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("route: failed to remove policy routing: %w", err)
	}
	return nil
}

func (r *Kernel) remove(c *netlink.Conn, fam uint8) error {
	wantRule := r.spec.rule(fam)
	rules, err := listRules(c, fam)
	if err != nil {
		return err
	}
	for _, x := range rules {
		if !sameRule(x, wantRule) || x.proto != Protocol {
			continue
		}
		// The kernel matches the protocol too, so an identical rule of
		// the operator's is never the one deleted.
		err := execute(c, unix.RTM_DELRULE, 0, ruleMessage(x))
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("failed to delete rule %q: %w", x, err)
		}
	}
	wantRoute := r.spec.route(fam)
	routes, err := listRoutes(c, fam, r.spec.table)
	if err != nil {
		return err
	}
	for _, x := range routes {
		if !sameRoute(x, wantRoute) || x.proto != Protocol {
			continue
		}
		m := routeMessage(x)
		m.Scope = unix.RT_SCOPE_NOWHERE // any scope, as ip route del does
		err := execute(c, unix.RTM_DELROUTE, 0, m)
		if err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("failed to delete route %q: %w", x, err)
		}
	}
	return nil
}

// Dump renders the rules that look up the Router's table and the routes in
// that table, read back from the kernel, in the format of Fake.Dump.
func (r *Kernel) Dump(ctx context.Context) (string, error) {
	var rules []ipRule
	var routes []ipRoute
	err := r.do(ctx, func(c *netlink.Conn) error {
		for _, fam := range routeFamilies {
			ru, err := listRules(c, fam)
			if errors.Is(err, unix.EAFNOSUPPORT) {
				continue
			}
			if err != nil {
				return err
			}
			ro, err := listRoutes(c, fam, r.spec.table)
			if err != nil {
				return err
			}
			rules, routes = append(rules, ru...), append(routes, ro...)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("route: failed to dump policy routing: %w", err)
	}
	return renderRouting(r.spec.table, rules, routes), nil
}

// execute sends one request with an acknowledgement and waits for it.
func execute(c *netlink.Conn, typ uint16, flags netlink.HeaderFlags, m interface{ MarshalBinary() ([]byte, error) }) error {
	b, err := m.MarshalBinary()
	if err != nil {
		return err
	}
	_, err = c.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(typ), Flags: netlink.Request | netlink.Acknowledge | flags},
		Data:   b,
	})
	return err
}

// hdrTable is the 8-bit table field of rtmsg and fib_rule_hdr: the table
// itself if it fits, else RT_TABLE_UNSPEC and the 32-bit attribute decides.
func hdrTable(t uint32) uint8 {
	if t < 256 {
		return uint8(t)
	}
	return unix.RT_TABLE_UNSPEC
}

func ruleMessage(r ipRule) *rtnetlink.RuleMessage {
	a := &rtnetlink.RuleAttributes{Table: &r.table, Priority: &r.pref, Protocol: &r.proto}
	if r.hasMark {
		a.FwMark, a.FwMask = &r.mark, &r.mask
	}
	return &rtnetlink.RuleMessage{Family: r.family, Table: hdrTable(r.table), Action: r.action,
		Flags: r.flags & unix.FIB_RULE_INVERT, Attributes: a}
}

func routeMessage(r ipRoute) *rtnetlink.RouteMessage {
	return &rtnetlink.RouteMessage{
		Family: r.family, DstLength: uint8(r.dst.Bits()), Table: hdrTable(r.table),
		Protocol: r.proto, Scope: r.scope, Type: r.typ,
		Attributes: rtnetlink.RouteAttributes{OutIface: r.oif, Table: r.table, Priority: r.metric},
	}
}

// listRoutes dumps the routes of one family in one table.
func listRoutes(c *netlink.Conn, fam uint8, table uint32) ([]ipRoute, error) {
	req, err := (&rtnetlink.RouteMessage{Family: fam, Table: hdrTable(table),
		Attributes: rtnetlink.RouteAttributes{Table: table}}).MarshalBinary()
	if err != nil {
		return nil, err
	}
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.RTM_GETROUTE, Flags: netlink.Request | netlink.Dump},
		Data:   req,
	})
	if errors.Is(err, unix.ENOENT) {
		// Strict dumps of a table that does not exist (yet).
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to list routes: %w", err)
	}
	var out []ipRoute
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWROUTE {
			continue
		}
		var rm rtnetlink.RouteMessage
		if err := rm.UnmarshalBinary(m.Data); err != nil {
			return nil, fmt.Errorf("failed to decode route: %w", err)
		}
		t := rm.Attributes.Table
		if t == 0 {
			t = uint32(rm.Table)
		}
		if rm.Family != fam || t != table {
			continue
		}
		dst, _ := netip.AddrFromSlice(rm.Attributes.Dst)
		if !dst.IsValid() {
			dst = netip.IPv4Unspecified()
			if fam == unix.AF_INET6 {
				dst = netip.IPv6Unspecified()
			}
		}
		gw, _ := netip.AddrFromSlice(rm.Attributes.Gateway)
		out = append(out, ipRoute{
			family: fam, typ: rm.Type, dst: netip.PrefixFrom(dst.Unmap(), int(rm.DstLength)),
			gateway: gw.Unmap(), oif: rm.Attributes.OutIface, table: t, proto: rm.Protocol,
			scope: rm.Scope, metric: rm.Attributes.Priority,
		})
	}
	return out, nil
}

// listRules dumps the rules of one family.
func listRules(c *netlink.Conn, fam uint8) ([]ipRule, error) {
	req, err := (&rtnetlink.RuleMessage{Family: fam}).MarshalBinary()
	if err != nil {
		return nil, err
	}
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.RTM_GETRULE, Flags: netlink.Request | netlink.Dump},
		Data:   req,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to list rules: %w", err)
	}
	var out []ipRule
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWRULE {
			continue
		}
		r, err := decodeRuleMessage(m.Data)
		if err != nil {
			return nil, fmt.Errorf("failed to decode rule: %w", err)
		}
		if r.family == fam {
			out = append(out, r)
		}
	}
	return out, nil
}

// decodeRuleMessage parses a struct fib_rule_hdr and its attributes
// (native byte order). Attributes that Router never sets are kept as text
// in other, so that such a rule is never taken for one of ours.
func decodeRuleMessage(b []byte) (ipRule, error) {
	if len(b) < 12 {
		return ipRule{}, fmt.Errorf("rule message of %d bytes", len(b))
	}
	r := ipRule{family: b[0], table: uint32(b[4]), action: b[7], flags: binary.NativeEndian.Uint32(b[8:12])}
	dstLen, srcLen, tos := b[1], b[2], b[3]
	if tos != 0 {
		r.other = append(r.other, fmt.Sprintf("tos 0x%x", tos))
	}
	r.flags &^= unix.FIB_RULE_IIF_DETACHED | unix.FIB_RULE_OIF_DETACHED | unix.FIB_RULE_UNRESOLVED
	if r.flags&^unix.FIB_RULE_INVERT != 0 {
		r.other = append(r.other, fmt.Sprintf("flags 0x%x", r.flags&^unix.FIB_RULE_INVERT))
	}
	ad, err := netlink.NewAttributeDecoder(b[12:])
	if err != nil {
		return ipRule{}, err
	}
	ad.ByteOrder = binary.NativeEndian
	mask := uint32(0xffffffff) // the kernel omits FRA_FWMASK when all ones
	for ad.Next() {
		switch ad.Type() {
		case unix.FRA_UNSPEC, unix.FRA_PAD:
		case unix.FRA_PRIORITY:
			r.pref = ad.Uint32()
		case unix.FRA_TABLE:
			r.table = ad.Uint32()
		case unix.FRA_PROTOCOL:
			r.proto = ad.Uint8()
		case unix.FRA_FWMARK:
			r.mark, r.hasMark = ad.Uint32(), true
		case unix.FRA_FWMASK:
			mask = ad.Uint32()
		case unix.FRA_SUPPRESS_PREFIXLEN, unix.FRA_SUPPRESS_IFGROUP:
			// 0xffffffff (-1) means "not set".
			if v := ad.Uint32(); v != 0xffffffff {
				r.other = append(r.other, fmt.Sprintf("suppress(%d) %d", ad.Type(), v))
			}
		case unix.FRA_SRC, unix.FRA_DST:
			dir, n := "from", srcLen
			if ad.Type() == unix.FRA_DST {
				dir, n = "to", dstLen
			}
			a, _ := netip.AddrFromSlice(ad.Bytes())
			r.other = append(r.other, fmt.Sprintf("%s %s/%d", dir, a, n))
		case unix.FRA_IIFNAME:
			r.other = append(r.other, "iif "+ad.String())
		case unix.FRA_OIFNAME:
			r.other = append(r.other, "oif "+ad.String())
		default:
			r.other = append(r.other, fmt.Sprintf("attribute(%d)", ad.Type()))
		}
	}
	if err := ad.Err(); err != nil {
		return ipRule{}, err
	}
	if r.hasMark {
		r.mask = mask
	}
	return r, nil
}

// Fake is an in-memory Router for unit tests. It records the rules and
// routes as the kernel would hold them (an IPv4 local route has scope host,
// an IPv6 route gets metric 1024) and renders them like Kernel.Dump.
// It is safe for concurrent use.
type Fake struct {
	spec routeSpec

	mu       sync.Mutex
	rules    []ipRule
	routes   []ipRoute
	failNext error
}

// NewFake returns a Fake with nothing installed; its arguments
// are checked as New checks them.
func NewFake(mark, table, priority uint32) (*Fake, error) {
	s, err := newRouteSpec(mark, table, priority)
	if err != nil {
		return nil, fmt.Errorf("route: invalid policy routing: %w", err)
	}
	return &Fake{spec: s}, nil
}

// FailNext makes the next call fail with err, without changing anything.
func (f *Fake) FailNext(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNext = err
}

// Installed reports whether both families' rule and route are in place.
func (f *Fake) Installed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, fam := range routeFamilies {
		if slices.ContainsFunc(f.rules, func(x ipRule) bool { return sameRule(x, f.spec.rule(fam)) }) &&
			slices.ContainsFunc(f.routes, func(x ipRoute) bool { return sameRoute(x, f.spec.route(fam)) }) {
			n++
		}
	}
	return n == len(routeFamilies)
}

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
	return nil
}

// Ensure implements Router.
func (f *Fake) Ensure(ctx context.Context) error {
	if err := f.begin(ctx); err != nil {
		return fmt.Errorf("route: failed to install policy routing: %w", err)
	}
	defer f.mu.Unlock()
	for _, fam := range routeFamilies {
		route := f.spec.route(fam)
		if !slices.ContainsFunc(f.routes, func(x ipRoute) bool { return sameRoute(x, route) }) {
			if fam == unix.AF_INET6 {
				// The kernel's defaults for IPv6 routes.
				route.scope, route.metric = unix.RT_SCOPE_UNIVERSE, 1024
			}
			f.routes = append(f.routes, route)
		}
		rule := f.spec.rule(fam)
		if !slices.ContainsFunc(f.rules, func(x ipRule) bool { return sameRule(x, rule) }) {
			f.rules = append(f.rules, rule)
		}
	}
	return nil
}

// Remove implements Router.
func (f *Fake) Remove(ctx context.Context) error {
	if err := f.begin(ctx); err != nil {
		return fmt.Errorf("route: failed to remove policy routing: %w", err)
	}
	defer f.mu.Unlock()
	f.rules = slices.DeleteFunc(f.rules, func(x ipRule) bool {
		return x.proto == Protocol && sameRule(x, f.spec.rule(x.family))
	})
	f.routes = slices.DeleteFunc(f.routes, func(x ipRoute) bool {
		return x.proto == Protocol && sameRoute(x, f.spec.route(x.family))
	})
	return nil
}

// Dump renders the state like Kernel.Dump.
func (f *Fake) Dump(ctx context.Context) (string, error) {
	if err := f.begin(ctx); err != nil {
		return "", fmt.Errorf("route: failed to dump policy routing: %w", err)
	}
	defer f.mu.Unlock()
	return renderRouting(f.spec.table, f.rules, f.routes), nil
}
