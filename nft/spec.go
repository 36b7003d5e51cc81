package nft

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"
)

// DefaultTable is the name of the table when the configuration names none.
const DefaultTable = "ftpsalg"

// maxTimeout bounds pinhole timeouts: the kernel stores them in milliseconds
// and a data-connection pinhole that lives longer than a day is a bug.
const maxTimeout = 24 * time.Hour

// QueueKind says how the queue rule hands packets to NFQUEUE.
type QueueKind int

const (
	// QueueUnset is the zero value; Apply rejects it so that callers probe
	// the kernel with ProbeQueue first.
	QueueUnset QueueKind = iota
	// QueueNative uses the nf_tables queue expression (nft_queue,
	// CONFIG_NFT_QUEUE). Operators see "queue ... to N" in nft listings.
	QueueNative
	// QueueCompat uses the xtables NFQUEUE target (revision 3) through
	// nft_compat, for kernels built without nft_queue.
	QueueCompat
)

// String returns the name used in logs and in the configuration.
func (k QueueKind) String() string {
	switch k {
	case QueueUnset:
		return "unset"
	case QueueNative:
		return "native"
	case QueueCompat:
		return "compat"
	default:
		return fmt.Sprintf("QueueKind(%d)", int(k))
	}
}

// Spec is the desired static content of the table.
type Spec struct {
	// Table is the name of the inet table ftpsalg owns.
	Table string
	// Queue is the NFQUEUE number the packet path reads, the first of
	// QueueTotal queues.
	Queue uint16
	// QueueTotal is the number of queues from Queue on (0 means 1). With
	// more than one the rule spreads packets over them by the kernel's
	// flow hash, symmetric over the address pair, so both directions of a
	// flow reach the same queue (never CPU fanout, which would split them).
	QueueTotal uint16
	// QueueKind selects the queue expression, as returned by ProbeQueue.
	QueueKind QueueKind
	// FailOpen lets control packets pass uninspected when no process is
	// bound to the queue (NFQUEUE bypass). Without it they are dropped.
	FailOpen bool
	// CtMark is the conntrack mark bit (or bits) set on flows admitted by a
	// pinhole; the operator accepts "ct mark & CtMark == CtMark".
	CtMark uint32
	// PacketMark is the packet mark bit (or bits) the packet path sets on
	// verdicts it re-injects; packets carrying it are not queued again.
	PacketMark uint32
	// Control lists the control endpoints (server address and control port)
	// of inspect-mode servers.
	Control []netip.AddrPort

	// MITM lists the control endpoints whose connections are diverted to
	// the daemon's transparent listener: the explicit and implicit-TLS
	// ports of mitm-mode servers, and of every server's public addresses
	// (docs/nat.md). Their control connections are diverted with TPROXY
	// to the daemon's transparent listener on TProxyPort. Empty means no
	// mitm servers: the table is then exactly the inspect-only table, and
	// TProxyPort and TProxyMark are not used.
	MITM []netip.AddrPort
	// TProxyPort is the port of the daemon's transparent listener.
	TProxyPort uint16
	// TProxyMark is the packet mark bit (or bits) that selects the policy
	// routing rule delivering diverted and spoofed-upstream packets to the
	// local transparent sockets (see Router). It must not overlap CtMark or
	// PacketMark.
	TProxyMark uint32
	// RelayPort is the port of the daemon's transparent data-connection
	// relay listener. Pinholes with Relay are diverted to it with TPROXY
	// (sets relay4/relay6) instead of being forwarded. Zero means no relay:
	// the table then has no relay objects and is exactly the mitm table,
	// and AddPinholes refuses Relay pinholes (ErrNoRelay). It needs mitm
	// servers and must differ from TProxyPort.
	RelayPort uint16
	// Masqueraded are inside prefixes (docs/nat.md): their clients'
	// control connections to inspected control endpoints (Control) are
	// diverted to the transparent listener too, which translates them.
	// They need the mitm objects (TProxyPort, TProxyMark), which they
	// bring into the table even without mitm servers.
	Masqueraded []netip.Prefix
	// Bans adds the ban sets (banned4, banned6) and the ban chain, which
	// drops new control connections from a banned client to every control
	// endpoint (Control and MITM) before anything else of ours sees them
	// (AddBans; docs/config.md, "throttle"). Apply carries the bans of
	// the table it replaces over, with what is left of their timeouts.
	Bans bool
	// Opaque adds the opaque-mode sets (opaque4/opaque6) and their
	// forward rules: the policy has opaque servers, whose control
	// endpoints are in Control like inspect servers'.
	Opaque bool
}

// hasMITM reports whether the table has the mitm objects: the prerouting
// chain with its sets and the source NAT chain with its maps.
func (s Spec) hasMITM() bool { return len(s.MITM) > 0 || len(s.Masqueraded) > 0 }

// hasRelay reports whether the table has the relay sets and rules.
func (s Spec) hasRelay() bool { return s.hasMITM() && s.RelayPort != 0 }

// Pinhole admits exactly one new TCP connection from Src to Dst:DstPort
// until it is used or its Timeout elapses.
type Pinhole struct {
	Src, Dst netip.Addr
	DstPort  uint16
	Timeout  time.Duration
	// SNAT, when valid, is the source address the admitted connection is
	// translated to on its way out (mitm mode with the upstream connection
	// made from the gateway's address: servers that require the data
	// connection to come from the control connection's address then see
	// the gateway on both). It needs a table with mitm servers. The zero
	// value means no translation.
	SNAT netip.Addr
	// DNAT, when valid, is where the admitted connection really goes: the
	// initiator addresses Dst:DstPort (the announced endpoint, a gateway
	// address) and the gateway translates it to DNAT (docs/nat.md). The
	// translation is an element of dnat4/dnat6 keyed by the announced
	// tuple; the single-use admission is an element of
	// pinholes_dnat4/pinholes_dnat6 keyed by the translated tuple and used
	// only by a connection conntrack saw translated. It needs a table with
	// the mitm objects and excludes Relay. SNAT may be combined with it.
	DNAT netip.AddrPort
	// Relay steers the admitted connection to the daemon's relay listener
	// (TPROXY to Spec.RelayPort, in prerouting) instead of letting the
	// kernel forward it: the connection ends at ftpsalg, which makes its
	// own connection to the target and relays the bytes (mitm data
	// relay). The element lives in relay4/relay6 instead of
	// pinholes4/pinholes6 and is just as single-use. It needs a table with
	// RelayPort (ErrNoRelay otherwise) and excludes SNAT: the relay makes
	// the onward connection itself.
	Relay bool
}

// String formats the pinhole like its set element (and map element), with
// "-> target" for a translated one and "(relay)" for a relay element.
func (p Pinhole) String() string {
	s := fmt.Sprintf("%s . %s . %d", p.Src, p.Dst, p.DstPort)
	if p.DNAT.IsValid() {
		s += " -> " + p.DNAT.String()
	}
	if p.SNAT.IsValid() {
		s += " : " + p.SNAT.String()
	}
	if p.Relay {
		s += " (relay)"
	}
	return s
}

// Element is a pinhole as the kernel (or the fake) holds it.
type Element struct {
	Pinhole
	// Expires is the time left before the element times out.
	Expires time.Duration
}

// Table is ftpsalg's view of its nftables table. Kernel implements it on
// the running kernel; Fake implements it in memory.
type Table interface {
	// Apply rebuilds the whole table from s in one transaction: the table is
	// destroyed if present and created again, which drops every pinhole.
	// It is used at start and for a full resync.
	Apply(ctx context.Context, s Spec) error
	// AddPinholes adds pinholes in one transaction and returns once the
	// kernel has committed it, so a PASV/EPSV reply may be released.
	// Adding an existing pinhole refreshes its timeout and replaces its
	// source NAT and its kind (a key is either a forwarded pinhole or a
	// relay element, never both). A pinhole with SNAT needs a table with
	// mitm servers (ErrNoMITM otherwise), one with Relay a table with a
	// relay port (ErrNoRelay otherwise).
	AddPinholes(ctx context.Context, p ...Pinhole) error
	// DeletePinholes removes pinholes, with their source NAT elements, in
	// one transaction, whichever set (pinhole or relay) they are in;
	// missing ones are not an error. Only the key (Src, Dst, DstPort) of
	// each pinhole is used.
	DeletePinholes(ctx context.Context, p ...Pinhole) error
	// Pinholes lists the pinholes that are still open, relay elements
	// included (Relay set), sorted, with SNAT set for those that have a
	// source NAT element.
	Pinholes(ctx context.Context) ([]Element, error)
	// Live reports, for each pinhole, whether its admission element (the
	// pinhole, relay or translated-pinhole set element) is still there:
	// neither used nor expired. One lookup per pinhole, so it is cheaper
	// than Pinholes for a session's few.
	Live(ctx context.Context, p ...Pinhole) ([]bool, error)
	// Delete removes the table; a missing table is not an error.
	Delete(ctx context.Context) error
	// Dump renders the table as normalised nft-like text (no handles,
	// counter values or expiry times) for golden tests and debugging.
	Dump(ctx context.Context) (string, error)
}

// MaxPinholes is the capacity of each pinhole set (one for IPv4, one for
// IPv6). It is the kernel's default for sets updated from the packet path,
// made explicit. Expired elements count until the kernel's garbage
// collection removes them.
const MaxPinholes = 65535

// ErrFull reports that a pinhole set holds MaxPinholes elements.
var ErrFull = errors.New("pinhole set is full")

// ErrNoMITM reports a pinhole with SNAT or DNAT for a table without the
// mitm objects (mitm servers, public addresses or masqueraded prefixes),
// which has no NAT maps.
var ErrNoMITM = errors.New("address translation needs a table with mitm servers, public addresses or masqueraded clients")

// ErrNoRelay reports a pinhole with Relay for a table without a relay
// port, which has no relay sets.
var ErrNoRelay = errors.New("relay pinholes need a table with a relay port")

// ErrNoTable reports that the table does not exist: it was never applied,
// was deleted, or was removed by someone else. Callers resync with Apply.
var ErrNoTable = errors.New("table does not exist")

// Option configures Kernel and ProbeQueue.
type Option func(*options)

type options struct {
	netns  int
	logger *slog.Logger
	table  string
}

// WithNetNS makes netlink requests in the network namespace the file
// descriptor refers to (an open /run/netns/NAME or /proc/PID/ns/net). The
// caller keeps the descriptor open while the Kernel is used.
func WithNetNS(fd int) Option {
	return func(o *options) { o.netns = fd }
}

// WithTable makes a Kernel observe an existing table without applying one
// (Dump and Pinholes), for tools and tests that read a running daemon's
// state. Apply still replaces it with the spec's table.
func WithTable(name string) Option {
	return func(o *options) { o.table = name }
}

// WithLogger sets the logger; nil (the default) discards logs.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

func buildOptions(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// validate checks s and returns a normalised copy: control endpoints
// unmapped, de-duplicated and sorted, so equal specs build equal tables.
func (s Spec) validate() (Spec, error) {
	if err := validName(s.Table); err != nil {
		return Spec{}, fmt.Errorf("invalid table name %q: %w", s.Table, err)
	}
	if s.QueueKind != QueueNative && s.QueueKind != QueueCompat {
		return Spec{}, fmt.Errorf("invalid queue kind %s: probe the kernel with ProbeQueue", s.QueueKind)
	}
	if s.QueueTotal == 0 {
		s.QueueTotal = 1
	}
	if int(s.Queue)+int(s.QueueTotal)-1 > 0xffff {
		return Spec{}, fmt.Errorf("invalid queue range %d-%d", s.Queue, int(s.Queue)+int(s.QueueTotal)-1)
	}
	if s.CtMark == 0 {
		return Spec{}, errors.New("ct mark must not be zero")
	}
	if s.PacketMark == 0 {
		return Spec{}, errors.New("packet mark must not be zero")
	}
	var err error
	if s.Control, err = normalizeEndpoints("control", s.Control); err != nil {
		return Spec{}, err
	}
	if s.MITM, err = normalizeEndpoints("mitm", s.MITM); err != nil {
		return Spec{}, err
	}
	for _, ap := range s.MITM {
		if _, found := slices.BinarySearchFunc(s.Control, ap, netip.AddrPort.Compare); found {
			return Spec{}, fmt.Errorf("invalid mitm endpoint %s: also an inspect-mode control endpoint", ap)
		}
	}
	// The tproxy mark shares the packet mark with PacketMark, and operators
	// copy between packet and ct marks (CONNMARK): keep all three apart.
	if s.TProxyMark&s.CtMark != 0 {
		return Spec{}, fmt.Errorf("tproxy mark 0x%x overlaps ct mark 0x%x", s.TProxyMark, s.CtMark)
	}
	if s.TProxyMark&s.PacketMark != 0 {
		return Spec{}, fmt.Errorf("tproxy mark 0x%x overlaps packet mark 0x%x", s.TProxyMark, s.PacketMark)
	}
	for _, p := range s.Masqueraded {
		if !p.IsValid() || p.Addr().Is4In6() || p.Addr().Zone() != "" || p.Masked() != p {
			return Spec{}, fmt.Errorf("invalid masqueraded prefix %s: need a masked prefix without zone", p)
		}
	}
	s.Masqueraded = slices.Clone(s.Masqueraded)
	slices.SortFunc(s.Masqueraded, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	s.Masqueraded = slices.Compact(s.Masqueraded)
	if s.RelayPort != 0 && !s.hasMITM() {
		return Spec{}, errors.New("relay port needs mitm servers")
	}
	if s.RelayPort != 0 && s.RelayPort == s.TProxyPort {
		return Spec{}, fmt.Errorf("relay port %d is also the tproxy port", s.RelayPort)
	}
	if s.hasMITM() {
		if s.TProxyPort == 0 {
			return Spec{}, errors.New("tproxy port must not be zero with mitm servers")
		}
		if s.TProxyMark == 0 {
			return Spec{}, errors.New("tproxy mark must not be zero with mitm servers")
		}
	}
	return s, nil
}

// normalizeEndpoints unmaps, checks, sorts and de-duplicates endpoints.
func normalizeEndpoints(what string, eps []netip.AddrPort) ([]netip.AddrPort, error) {
	out := make([]netip.AddrPort, 0, len(eps))
	for _, ap := range eps {
		a := ap.Addr().Unmap()
		if !a.IsValid() || a.Zone() != "" || a.IsUnspecified() {
			return nil, fmt.Errorf("invalid %s endpoint %s: need a unicast address without zone", what, ap)
		}
		if ap.Port() == 0 {
			return nil, fmt.Errorf("invalid %s endpoint %s: port must not be zero", what, ap)
		}
		out = append(out, netip.AddrPortFrom(a, ap.Port()))
	}
	slices.SortFunc(out, netip.AddrPort.Compare)
	return slices.Compact(out), nil
}

// validName accepts the names nft itself accepts without quoting, so that
// operators can type "nft list table inet NAME".
func validName(n string) error {
	if n == "" {
		return errors.New("empty")
	}
	if len(n) > 255 {
		return errors.New("longer than 255 bytes")
	}
	for i, r := range n {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r == '_':
		case i > 0 && (r >= '0' && r <= '9' || r == '-' || r == '.'):
		default:
			return fmt.Errorf("character %q at %d: use letters, digits, '_', '-' and '.', starting with a letter or '_'", r, i)
		}
	}
	return nil
}

// normalize validates a pinhole and unmaps IPv4-mapped IPv6 addresses.
func (p Pinhole) normalize() (Pinhole, error) {
	p.Src, p.Dst, p.SNAT = p.Src.Unmap(), p.Dst.Unmap(), p.SNAT.Unmap()
	if p.DNAT.IsValid() {
		p.DNAT = netip.AddrPortFrom(p.DNAT.Addr().Unmap(), p.DNAT.Port())
	}
	switch {
	case p.DNAT.IsValid() && p.DNAT.Addr().Is4() != p.Src.Is4():
		return Pinhole{}, fmt.Errorf("invalid pinhole %s: translation target of another family", p)
	case p.DNAT.IsValid() && (p.DNAT.Port() == 0 || p.DNAT.Addr().Zone() != "" || p.DNAT.Addr().IsUnspecified() || p.DNAT.Addr().IsMulticast()):
		return Pinhole{}, fmt.Errorf("invalid pinhole %s: translation target must be a unicast address and a port", p)
	case p.DNAT.IsValid() && p.Relay:
		return Pinhole{}, fmt.Errorf("invalid pinhole %s: a relay element has no translation (the relay makes its own connection)", p)
	case !p.Src.IsValid() || !p.Dst.IsValid():
		return Pinhole{}, fmt.Errorf("invalid pinhole %s: missing address", p)
	case p.Src.Is4() != p.Dst.Is4():
		return Pinhole{}, fmt.Errorf("invalid pinhole %s: mixed address families", p)
	case p.Src.Zone() != "" || p.Dst.Zone() != "":
		return Pinhole{}, fmt.Errorf("invalid pinhole %s: addresses must not have a zone", p)
	case p.DstPort == 0:
		return Pinhole{}, fmt.Errorf("invalid pinhole %s: port must not be zero", p)
	case p.SNAT.IsValid() && p.SNAT.Is4() != p.Src.Is4():
		return Pinhole{}, fmt.Errorf("invalid pinhole %s: source NAT address of another family", p)
	case p.SNAT.IsValid() && (p.SNAT.Zone() != "" || p.SNAT.IsUnspecified() || p.SNAT.IsMulticast()):
		return Pinhole{}, fmt.Errorf("invalid pinhole %s: source NAT address must be unicast without zone", p)
	case p.SNAT.IsValid() && p.Relay:
		return Pinhole{}, fmt.Errorf("invalid pinhole %s: a relay element has no source NAT (the relay makes its own connection)", p)
	}
	return p, nil
}

// normalizeAdd also checks the timeout: an element without one would never
// expire, and the kernel counts in milliseconds.
func (p Pinhole) normalizeAdd() (Pinhole, error) {
	p, err := p.normalize()
	if err != nil {
		return Pinhole{}, err
	}
	if p.Timeout < time.Millisecond || p.Timeout > maxTimeout {
		return Pinhole{}, fmt.Errorf("invalid pinhole %s: timeout %s out of range [1ms, %s]", p, p.Timeout, maxTimeout)
	}
	p.Timeout = p.Timeout.Truncate(time.Millisecond)
	return p, nil
}

// key identifies a pinhole regardless of its timeout and source NAT: it is
// the key of both the pinhole set element and the source NAT map element.
type key struct {
	src, dst netip.Addr
	port     uint16
}

func (p Pinhole) key() key { return key{p.Src, p.Dst, p.DstPort} }

func comparePinholes(a, b Pinhole) int {
	if a.Src.Is4() != b.Src.Is4() {
		if a.Src.Is4() {
			return -1
		}
		return 1
	}
	return cmp.Or(a.Src.Compare(b.Src), a.Dst.Compare(b.Dst), cmp.Compare(a.DstPort, b.DstPort))
}

func sortElements(e []Element) {
	slices.SortFunc(e, func(a, b Element) int { return comparePinholes(a.Pinhole, b.Pinhole) })
}
