package policy

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Allowed ranges. The reasons are in docs/config.md.
const (
	minQueueLength, maxQueueLength = 16, 65536
	// One reader goroutine and socket per queue; 64 is beyond the cores
	// of any gateway this runs on.
	maxQueues                            = 64
	minPinholeTimeout, maxPinholeTimeout = time.Second, 120 * time.Second
	minMaxFlows, maxMaxFlows             = 1, 1_000_000
	minMaxLine, maxMaxLine               = 512, 65536
	minPerClient, maxPerClient           = 1, 1_000_000
	minFirstCommand, maxFirstCommand     = time.Second, 10 * time.Minute
	minIdle, maxIdle                     = 10 * time.Second, 24 * time.Hour
	// minPassivePort is the first unprivileged port. A pinhole to a
	// privileged port would let a server steer clients (or a client steer
	// the server) at well-known services, so such ports are never allowed.
	minPassivePort = 1024
)

var (
	// tableNameRE: a name nft(8) accepts unquoted, so that operators can
	// type `nft list table inet NAME`.
	tableNameRE  = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)
	serverNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)
	// unitlessRE matches a number written without a duration unit.
	unitlessRE = regexp.MustCompile(`^[0-9]+(\.[0-9]*)?$`)
)

// logLevels are the accepted values of log.level, in the order shown to
// operators.
var logLevels = []struct {
	name  string
	level slog.Level
}{
	{"debug", slog.LevelDebug},
	{"info", slog.LevelInfo},
	{"warn", slog.LevelWarn},
	{"error", slog.LevelError},
}

// section checks that n is a mapping with only the keys known.
func (d *decoder) section(n node, known []string) (map[string]node, bool) {
	return d.fields(n, "a mapping with keys: "+validKeys(known), known)
}

// config validates the root mapping into cfg, which holds the defaults.
func (d *decoder) config(root node, cfg *Config) {
	f, ok := d.section(root, rootKeys)
	if !ok {
		return
	}
	if n, ok := f["log"]; ok {
		d.log(n, &cfg.Log)
	}
	if n, ok := f["admin"]; ok {
		d.admin(n, &cfg.Admin)
	}
	if n, ok := f["metrics"]; ok {
		d.metrics(n, &cfg.Metrics)
	}
	var nftFields map[string]node
	marksOK := true
	if n, ok := f["nftables"]; ok {
		nftFields, marksOK = d.nftables(n, &cfg.NFTables)
	}
	if n, ok := f["queue"]; ok {
		d.queue(n, &cfg.Queue)
	}
	if n, ok := f["pinholes"]; ok {
		d.pinholes(n, &cfg.Pinholes)
	}
	if n, ok := f["limits"]; ok {
		d.limits(n, &cfg.Limits)
	}
	if n, ok := f["throttle"]; ok {
		d.throttle(n, &cfg.Throttle)
	}
	// The TPROXY mark is checked against the nftables marks even without a
	// mitm section: its default applies then.
	var tproxy node
	tproxyOK := true
	if n, ok := f["mitm"]; ok {
		tproxy, tproxyOK = d.mitmGlobal(n, &cfg.MITM)
	}
	if marksOK && tproxyOK {
		d.tproxyMarkOverlap(nftFields, tproxy, cfg)
	}
	n, ok := f["servers"]
	if !ok {
		d.errorf(root.line, "servers", "no servers: nothing to do (add a servers list)")
		return
	}
	cfg.Servers = d.servers(n)
	var clientSrcs []clientSrc
	if n, ok := f["clients"]; ok {
		cfg.Clients, clientSrcs = d.clientNATs(n)
	}
	d.natContradictions(cfg, clientSrcs)
}

func (d *decoder) log(n node, l *Log) {
	f, ok := d.section(n, logKeys)
	if !ok {
		return
	}
	if v, ok := f["format"]; ok {
		const want = "json or text"
		if s, ok := d.str(v, want); ok {
			if s != LogJSON && s != LogText {
				d.at(v, "%q is not a log format; use %s", s, want)
			} else {
				l.Format = s
			}
		}
	}
	if v, ok := f["level"]; ok {
		names := make([]string, len(logLevels))
		for i, ll := range logLevels {
			names[i] = ll.name
		}
		want := "one of " + strings.Join(names, ", ")
		s, ok := d.str(v, want)
		if !ok {
			return
		}
		for _, ll := range logLevels {
			if ll.name == s {
				l.Level = ll.level
				return
			}
		}
		d.at(v, "%q is not a level; use %s", s, want)
	}
}

func (d *decoder) admin(n node, a *Admin) {
	f, ok := d.section(n, adminKeys)
	if !ok {
		return
	}
	if v, ok := f["socket"]; ok {
		const want = `an absolute path such as "/run/ftpsalg/admin.sock"`
		s, ok := d.str(v, want)
		if !ok {
			return
		}
		// sun_path holds 108 bytes with the terminating NUL.
		if !strings.HasPrefix(s, "/") || len(s) > 107 {
			d.at(v, "%q is not %s of at most 107 bytes", s, want)
			return
		}
		a.Socket = s
	}
}

func (d *decoder) metrics(n node, m *Metrics) {
	f, ok := d.section(n, metricsKeys)
	if !ok {
		return
	}
	if v, ok := f["listen"]; ok {
		const example = `such as "127.0.0.1:9641" or "[::1]:9641"`
		s, ok := d.str(v, "a host:port string "+example)
		if !ok {
			return
		}
		_, port, err := net.SplitHostPort(s)
		if err != nil {
			d.at(v, "%q is not host:port; use an address and a port %s", s, example)
			return
		}
		if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
			d.at(v, "%q: port %q is not a number from 1 to 65535", s, port)
			return
		}
		m.Listen = s
	}
}

// nftables validates the nftables section into t. It returns the
// section's fields and whether both marks are valid and disjoint.
func (d *decoder) nftables(n node, t *NFTables) (map[string]node, bool) {
	f, ok := d.section(n, nftablesKeys)
	if !ok {
		return nil, false
	}
	if v, ok := f["table"]; ok {
		if s, ok := d.str(v, "a table name"); ok {
			if tableNameRE.MatchString(s) {
				t.Table = s
			} else {
				d.at(v, "%q is not a valid table name: use 1 to 32 of a-z, 0-9, _ and -, starting with a letter", s)
			}
		}
	}
	ctOK, pktOK := true, true
	if v, ok := f["ct_mark"]; ok {
		t.CtMark, ctOK = d.mark(v)
	}
	if v, ok := f["packet_mark"]; ok {
		t.PacketMark, pktOK = d.mark(v)
	}
	if ctOK && pktOK && t.CtMark&t.PacketMark != 0 {
		// Report it where the operator changed something: packet_mark if
		// given, else ct_mark (both cannot be defaults: those are disjoint).
		v, ok := f["packet_mark"]
		mine, other, otherKey := t.PacketMark, t.CtMark, "ct_mark"
		if !ok {
			v = f["ct_mark"]
			mine, other, otherKey = t.CtMark, t.PacketMark, "packet_mark"
		}
		d.at(v, "0x%08x shares bits 0x%08x with %s (0x%08x): the two marks must not overlap",
			mine, mine&other, otherKey, other)
		return f, false
	}
	return f, ctOK && pktOK
}

// mark reads a nonzero 32-bit mark.
func (d *decoder) mark(n node) (uint32, bool) {
	v, ok := d.integer(n, "a nonzero 32-bit integer such as 0x10000000")
	if !ok {
		return 0, false
	}
	switch {
	case v == 0:
		d.at(n, "must not be zero: ftpsalg needs bits of its own")
		return 0, false
	case v < 0 || v > 0xffffffff:
		d.at(n, "%s does not fit in 32 bits", n.Value)
		return 0, false
	}
	return uint32(v), true
}

func (d *decoder) queue(n node, q *Queue) {
	f, ok := d.section(n, queueKeys)
	if !ok {
		return
	}
	if v, ok := f["number"]; ok {
		if lo, n, ok := d.queueNumbers(v); ok {
			q.Number, q.Count = lo, n
		}
	}
	if v, ok := f["length"]; ok {
		if x, ok := d.intRange(v, minQueueLength, maxQueueLength); ok {
			q.Length = uint32(x)
		}
	}
	if v, ok := f["failure"]; ok {
		const want = "closed or open"
		if s, ok := d.str(v, want); ok {
			switch s {
			case "closed":
				q.FailOpen = false
			case "open":
				q.FailOpen = true
			default:
				d.at(v, "%q is not a failure mode; use %s", s, want)
			}
		}
	}
}

// queueNumbers reads a queue number (N) or a range of queues (N-M), and
// returns the first and how many.
func (d *decoder) queueNumbers(n node) (first, count uint16, ok bool) {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" {
		lo, hi, found := strings.Cut(n.Value, "-")
		a, errA := strconv.ParseUint(strings.TrimSpace(lo), 10, 32)
		b, errB := strconv.ParseUint(strings.TrimSpace(hi), 10, 32)
		switch {
		case !found || errA != nil || errB != nil:
			d.at(n, "%q is not a queue number or range; use N or N-M (0 to 65535)", n.Value)
		case a > 65535 || b > 65535:
			d.at(n, "queue range %s is out of range: queues are from 0 to 65535", n.Value)
		case b < a:
			d.at(n, "queue range %s ends before it starts", n.Value)
		case b-a+1 > maxQueues:
			d.at(n, "queue range %s has %d queues; at most %d", n.Value, b-a+1, maxQueues)
		default:
			return uint16(a), uint16(b - a + 1), true
		}
		return 0, 0, false
	}
	x, ok := d.intRange(n, 0, 65535)
	return uint16(x), 1, ok
}

func (d *decoder) pinholes(n node, p *Pinholes) {
	f, ok := d.section(n, pinholesKeys)
	if !ok {
		return
	}
	if v, ok := f["timeout"]; ok {
		if x, ok := d.duration(v, minPinholeTimeout, maxPinholeTimeout); ok {
			p.Timeout = x
		}
	}
}

func (d *decoder) limits(n node, l *Limits) {
	f, ok := d.section(n, limitsKeys)
	if !ok {
		return
	}
	if v, ok := f["max_flows"]; ok {
		if x, ok := d.intRange(v, minMaxFlows, maxMaxFlows); ok {
			l.MaxFlows = int(x)
		}
	}
	if v, ok := f["max_line"]; ok {
		if x, ok := d.intRange(v, minMaxLine, maxMaxLine); ok {
			l.MaxLine = int(x)
		}
	}
	if v, ok := f["max_sessions_per_client"]; ok {
		if x, ok := d.intRange(v, minPerClient, maxPerClient); ok {
			l.MaxSessionsPerClient = int(x)
		}
	}
	if v, ok := f["first_command_timeout"]; ok {
		if x, ok := d.duration(v, minFirstCommand, maxFirstCommand); ok {
			l.FirstCommandTimeout = x
		}
	}
	if v, ok := f["idle_timeout"]; ok {
		if x, ok := d.duration(v, minIdle, maxIdle); ok {
			l.IdleTimeout = x
		}
	}
}

func (d *decoder) throttle(n node, t *Throttle) {
	f, ok := d.section(n, throttleKeys)
	if !ok {
		return
	}
	if v, ok := f["max_failures"]; ok {
		if x, ok := d.intRange(v, 0, maxThrottleFailures); ok {
			t.MaxFailures = int(x)
		}
	}
	if v, ok := f["window"]; ok {
		if x, ok := d.duration(v, minThrottleWindow, maxThrottleWindow); ok {
			t.Window = x
		}
	}
	if v, ok := f["ban"]; ok {
		if x, ok := d.duration(v, minThrottleBan, maxThrottleBan); ok {
			t.Ban = x
		}
	}
	if v, ok := f["allow"]; ok {
		items, ok := d.items(v, `a list of IP prefixes such as ["192.0.2.0/24", "2001:db8::/32"]`)
		if !ok {
			return
		}
		if prefixes, ok := d.prefixList(items); ok {
			t.Allow = prefixes
		}
	}
}

// intRange reads an integer from lo to hi inclusive.
func (d *decoder) intRange(n node, lo, hi int64) (int64, bool) {
	v, ok := d.integer(n, fmt.Sprintf("an integer from %d to %d", lo, hi))
	if !ok {
		return 0, false
	}
	if v < lo || v > hi {
		d.at(n, "%d is out of range: must be from %d to %d", v, lo, hi)
		return 0, false
	}
	return v, true
}

// duration reads a duration from lo to hi inclusive, written with a unit.
func (d *decoder) duration(n node, lo, hi time.Duration) (time.Duration, bool) {
	const want = `a duration such as "5s" or "500ms"`
	if n.Kind == yaml.ScalarNode && unitlessRE.MatchString(n.Value) {
		tag := n.ShortTag()
		if tag == "!!int" || tag == "!!float" || tag == "!!str" {
			d.at(n, "%q has no unit: use \"%ss\"", n.Value, n.Value)
			return 0, false
		}
	}
	s, ok := d.str(n, want)
	if !ok {
		return 0, false
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		d.at(n, "%q is not a duration: use %s", s, want)
		return 0, false
	}
	if v < lo || v > hi {
		d.at(n, "%s is out of range: must be from %s to %s", s, seconds(lo), seconds(hi))
		return 0, false
	}
	return v, true
}

// seconds formats a whole number of seconds as "120s" rather than "2m0s",
// and a whole number of hours as "720h".
func seconds(v time.Duration) string {
	if v >= time.Hour && v%time.Hour == 0 {
		return fmt.Sprintf("%dh", v/time.Hour)
	}
	if v%time.Second == 0 {
		return fmt.Sprintf("%ds", v/time.Second)
	}
	return v.String()
}

// serverSrc remembers where a server's parts were written, for the checks
// across servers.
type serverSrc struct {
	path     string
	line     int
	nameLine int
	// addrPaths and addrLines are parallel to Server.Addresses.
	addrPaths []string
	addrLines []int
	// publicPaths and publicLines are parallel to Server.Public.
	publicPaths []string
	publicLines []int
}

func (d *decoder) servers(n node) []Server {
	items, ok := d.items(n, "a list of servers")
	if !ok {
		return nil
	}
	if len(items) == 0 {
		d.at(n, "no servers: nothing to do")
		return nil
	}
	servers := make([]Server, len(items))
	srcs := make([]serverSrc, len(items))
	for i, it := range items {
		servers[i], srcs[i] = d.server(it)
	}
	d.uniqueNames(servers, srcs)
	d.uniqueEndpoints(servers, srcs)
	d.srvSrcs = srcs
	return servers
}

// server validates one item of servers. It returns what it could read even
// when there were errors, so that the checks across servers still run.
func (d *decoder) server(n node) (Server, serverSrc) {
	s := defaultServer()
	src := serverSrc{path: n.path, line: n.line}
	known := append(append(slices.Clone(serverKeys), mitmKeys...), opaqueKeys...)
	f, ok := d.fields(n, "a mapping with keys: "+validKeys(known), known)
	if !ok {
		return s, src
	}
	missing := func(key, msg string) {
		d.errorf(n.line, childPath(n.path, key), "missing: %s", msg)
	}

	if v, ok := f["name"]; ok {
		src.nameLine = v.line
		if name, ok := d.str(v, "a name"); ok {
			if serverNameRE.MatchString(name) {
				s.Name = name
			} else {
				d.at(v, "%q is not a valid name: use 1 to 64 of A-Z, a-z, 0-9, _, . and -", name)
			}
		}
	} else {
		missing("name", "every server needs a name")
	}

	if v, ok := f["mode"]; ok {
		const want = "inspect, mitm or opaque"
		if m, ok := d.str(v, want); ok {
			switch m {
			case "inspect":
				s.Mode = ModeInspect
			case "mitm":
				s.Mode = ModeMITM
			case "opaque":
				s.Mode = ModeOpaque
			default:
				d.at(v, "%q is not a mode; use %s", m, want)
			}
		}
	} else {
		missing("mode", "every server needs a mode: inspect, mitm or opaque")
	}

	if v, ok := f["addresses"]; ok {
		d.addresses(v, &s, &src)
	} else {
		missing("addresses", "every server needs at least one address")
	}

	controlOK, implicitOK := true, true
	var implicitLines []int
	if v, ok := f["control_ports"]; ok {
		s.ControlPorts, _, controlOK = d.portList(v)
	}
	if v, ok := f["implicit_tls_ports"]; ok {
		s.ImplicitTLSPorts, implicitLines, implicitOK = d.portList(v)
		for i, p := range s.ImplicitTLSPorts {
			if !slices.Contains(s.ControlPorts, p) {
				continue
			}
			hint := ""
			if _, given := f["control_ports"]; !given {
				hint = " (control_ports defaults to [21])"
			}
			d.errorf(implicitLines[i], fmt.Sprintf("%s[%d]", v.path, i),
				"port %d is also in control_ports%s: a port is either plain/explicit TLS or implicit TLS", p, hint)
		}
		if len(s.ImplicitTLSPorts) == 0 {
			s.ImplicitTLSPorts = nil
		}
	}
	if controlOK && implicitOK && len(s.ControlPorts) == 0 && len(s.ImplicitTLSPorts) == 0 {
		v := f["control_ports"] // present: the default is not empty
		d.at(v, "no ports: list at least one port in control_ports or implicit_tls_ports")
	}
	if len(s.ControlPorts) == 0 {
		s.ControlPorts = nil
	}

	if v, ok := f["passive_ports"]; ok {
		if lo, hi, ok := d.passivePorts(v); ok {
			s.PassiveMin, s.PassiveMax = lo, hi
		}
	}
	if v, ok := f["active_mode"]; ok {
		if b, ok := d.boolean(v); ok {
			s.ActiveMode = b
		}
	}
	if v, ok := f["allow_third_party"]; ok {
		if b, ok := d.boolean(v); ok {
			s.ThirdParty = b
		}
	}
	if v, ok := f["clients"]; ok {
		d.clients(v, &s)
	}
	d.public(f, &s, &src)

	switch s.Mode {
	case ModeMITM:
		s.MITM = d.mitm(f)
	case ModeInspect:
		for _, k := range mitmKeys {
			if v, ok := f[k]; ok {
				d.at(v, "only valid with mode: mitm (this server has mode: inspect, which does not terminate TLS)")
			}
		}
	case ModeOpaque:
		if _, ok := f["passive_ports"]; !ok {
			missing("passive_ports", "an opaque server needs its passive range: it is what a TLS session's client may reach")
		}
		s.Opaque = d.opaque(f)
	}
	if s.Mode != ModeOpaque {
		for _, k := range opaqueKeys {
			if v, ok := f[k]; ok {
				d.at(v, "only valid with mode: opaque (this server has mode: %s)", s.Mode)
			}
		}
	}
	return s, src
}

func (d *decoder) addresses(n node, s *Server, src *serverSrc) {
	items, ok := d.items(n, `a list of IP addresses such as ["192.0.2.10", "2001:db8::10"]`)
	if !ok {
		return
	}
	if len(items) == 0 {
		d.at(n, "empty list: a server needs at least one address")
		return
	}
	seen := make(map[netip.Addr]int)
	for _, it := range items {
		str, ok := d.str(it, `an IP address such as "192.0.2.10"`)
		if !ok {
			continue
		}
		a, err := netip.ParseAddr(str)
		switch {
		case err != nil:
			if p, perr := netip.ParsePrefix(str); perr == nil {
				d.at(it, "%q is a prefix: list single addresses, such as %q", str, p.Addr().String())
			} else {
				d.at(it, "%q is not an IP address", str)
			}
			continue
		case a.Zone() != "":
			d.at(it, "%q has a zone: zones are not allowed", str)
			continue
		case a.Is4In6():
			d.at(it, "%q is IPv4-mapped IPv6: write it as %q", str, a.Unmap().String())
			continue
		case a.IsUnspecified():
			d.at(it, "%q is the unspecified address: list the server's own addresses", str)
			continue
		case a.IsMulticast():
			d.at(it, "%q is a multicast address: FTP servers have unicast addresses", str)
			continue
		case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			d.at(it, "%q is the broadcast address: FTP servers have unicast addresses", str)
			continue
		}
		if first, dup := seen[a]; dup {
			d.at(it, "duplicate address %s: already listed at line %d", a, first)
			continue
		}
		seen[a] = it.line
		s.Addresses = append(s.Addresses, a)
		src.addrPaths = append(src.addrPaths, it.path)
		src.addrLines = append(src.addrLines, it.line)
	}
}

// portList reads a list of distinct ports and the line of each. ok is false
// when any item was bad.
func (d *decoder) portList(n node) (ports []uint16, lines []int, ok bool) {
	items, ok := d.items(n, "a list of ports, such as [21]")
	if !ok {
		return nil, nil, false
	}
	seen := make(map[uint16]int)
	for _, it := range items {
		x, itemOK := d.intRange(it, 1, 65535)
		if !itemOK {
			ok = false
			continue
		}
		p := uint16(x)
		if first, dup := seen[p]; dup {
			d.at(it, "duplicate port %d: already listed at line %d", p, first)
			ok = false
			continue
		}
		seen[p] = it.line
		ports = append(ports, p)
		lines = append(lines, it.line)
	}
	return ports, lines, ok
}

// passivePorts reads "first-last" or a single port, all unprivileged.
func (d *decoder) passivePorts(n node) (lo, hi uint16, ok bool) {
	const want = `a port range such as "50000-50100", or a single port`
	var text string
	switch {
	case n.Kind == yaml.ScalarNode && n.ShortTag() == "!!int":
		text = n.Value
	default:
		s, ok := d.str(n, want)
		if !ok {
			return 0, 0, false
		}
		text = s
	}
	first, last, isRange := strings.Cut(text, "-")
	if !isRange {
		last = first
	}
	a, errA := strconv.ParseUint(strings.TrimSpace(first), 10, 64)
	b, errB := strconv.ParseUint(strings.TrimSpace(last), 10, 64)
	switch {
	case errA != nil || errB != nil:
		d.at(n, "%q is not a port range: use %s", text, want)
	case a > 65535 || b > 65535 || a == 0 || b == 0:
		d.at(n, "%q: ports are from 1 to 65535", text)
	case a > b:
		d.at(n, "%q: start is above end", text)
	case a < minPassivePort:
		d.at(n, "%q: ports below %d are privileged and always refused; start at %d or above",
			text, minPassivePort, minPassivePort)
	default:
		return uint16(a), uint16(b), true
	}
	return 0, 0, false
}

func (d *decoder) clients(n node, s *Server) {
	items, ok := d.items(n, `a list of IP prefixes such as ["192.0.2.0/24", "2001:db8::/32"]`)
	if !ok {
		return
	}
	if len(items) == 0 {
		d.at(n, "empty list: no client could connect (remove the key to allow all clients)")
		return
	}
	if prefixes, ok := d.prefixList(items); ok {
		s.Clients = prefixes
	}
}

// prefixList reads a list of IP prefixes, each error reported at its item
// (not a prefix, a duplicate); ok only when every item was good.
func (d *decoder) prefixList(items []node) ([]netip.Prefix, bool) {
	var prefixes []netip.Prefix
	seen := make(map[netip.Prefix]int)
	for _, it := range items {
		str, ok := d.str(it, `an IP prefix such as "192.0.2.0/24"`)
		if !ok {
			continue
		}
		p, ok := d.prefix(it, str)
		if !ok {
			continue
		}
		if first, dup := seen[p]; dup {
			d.at(it, "duplicate prefix %s: already listed at line %d", p, first)
			continue
		}
		seen[p] = it.line
		prefixes = append(prefixes, p)
	}
	return prefixes, len(prefixes) == len(items)
}

// prefix parses a masked IP prefix; a single address stands for itself
// (/32 or /128).
func (d *decoder) prefix(n node, str string) (netip.Prefix, bool) {
	var p netip.Prefix
	if a, err := netip.ParseAddr(str); err == nil {
		if a.Zone() != "" {
			d.at(n, "%q has a zone: zones are not allowed", str)
			return p, false
		}
		p = netip.PrefixFrom(a, a.BitLen())
	} else if p, err = netip.ParsePrefix(str); err != nil {
		d.at(n, "%q is not an IP prefix such as \"192.0.2.0/24\" or \"2001:db8::/32\"", str)
		return p, false
	}
	if p.Addr().Is4In6() {
		if p.Bits() >= 96 {
			v4 := netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96).Masked()
			d.at(n, "%q is IPv4-mapped IPv6: write it as %q", str, v4.String())
		} else {
			d.at(n, "%q is IPv4-mapped IPv6: write the IPv4 prefix instead", str)
		}
		return p, false
	}
	if m := p.Masked(); m != p {
		d.at(n, "%q has host bits set: did you mean %q?", str, m.String())
		return p, false
	}
	return p, true
}

// uniqueNames reports a server name used twice.
func (d *decoder) uniqueNames(servers []Server, srcs []serverSrc) {
	first := make(map[string]int)
	for i, s := range servers {
		if s.Name == "" {
			continue
		}
		if j, dup := first[s.Name]; dup {
			d.errorf(srcs[i].nameLine, childPath(srcs[i].path, "name"),
				"duplicate server name %q: already used by %s at line %d", s.Name, srcs[j].path, srcs[j].nameLine)
			continue
		}
		first[s.Name] = i
	}
}

// uniqueEndpoints reports an address and control port pair claimed by two
// servers: a new control connection must map to exactly one policy.
func (d *decoder) uniqueEndpoints(servers []Server, srcs []serverSrc) {
	owner := make(map[netip.AddrPort]int)
	for i, s := range servers {
		ports := slices.Concat(s.ControlPorts, s.ImplicitTLSPorts)
		for ai, a := range s.Addresses {
			var others []int // servers a conflict is with, in order found
			clash := make(map[int][]string)
			for _, p := range ports {
				ap := netip.AddrPortFrom(a, p)
				j, taken := owner[ap]
				if !taken {
					owner[ap] = i
					continue
				}
				if j == i {
					continue
				}
				if _, ok := clash[j]; !ok {
					others = append(others, j)
				}
				clash[j] = append(clash[j], strconv.Itoa(int(p)))
			}
			for _, j := range others {
				what := "port " + clash[j][0] + " already belongs"
				if len(clash[j]) > 1 {
					what = "ports " + strings.Join(clash[j], ", ") + " already belong"
				}
				d.errorf(srcs[i].addrLines[ai], srcs[i].addrPaths[ai],
					"%s %s to server %q (%s, line %d): an address and control port may belong to one server only",
					a, what, servers[j].Name, srcs[j].path, srcs[j].line)
			}
		}
	}
}
