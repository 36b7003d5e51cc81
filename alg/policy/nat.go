package policy

import (
	"fmt"
	"net/netip"
	"slices"
)

// Default NAT port range for translated PORT/EPRT announcements (key
// nat_ports). It lies above Linux's default ephemeral range (32768-60999),
// so the gateway's own outgoing connections never hold these ports.
const defaultNATPortMin, defaultNATPortMax = 61000, 61999

// clientSrc is where a clients entry was written, for errors.
type clientSrc struct {
	path       string
	line       int
	nameLine   int
	prefixLine []int // parallel to ClientNAT.Prefixes
	natLine    []int // parallel to ClientNAT.NAT
}

// public reads a server's public and public_ports keys. It runs after the
// addresses and the passive range are known.
func (d *decoder) public(f map[string]node, s *Server, src *serverSrc) {
	v, ok := f["public"]
	if ports, given := f["public_ports"]; given {
		if !ok {
			d.at(ports, "only valid with public: there is no public address to announce ports on")
		} else if lo, hi, ok := d.passivePorts(ports); ok {
			s.PublicPortMin, s.PublicPortMax = lo, hi
		}
	}
	if !ok {
		return
	}
	if s.PublicPortMin == 0 {
		s.PublicPortMin, s.PublicPortMax = s.PassiveMin, s.PassiveMax
	}
	var tmp Server
	var tsrc serverSrc
	d.addresses(v, &tmp, &tsrc)
	for i, a := range tmp.Addresses {
		at := node{Node: v.Node, path: tsrc.addrPaths[i], line: tsrc.addrLines[i]}
		if slices.Contains(s.Addresses, a) {
			d.at(at, "%s is also one of this server's addresses: public is the gateway's address that clients use instead", a)
			continue
		}
		same := 0
		for _, b := range s.Addresses {
			if b.Is4() == a.Is4() {
				same++
			}
		}
		fam := map[bool]string{true: "IPv4", false: "IPv6"}[a.Is4()]
		switch {
		case same == 0 && len(s.Addresses) > 0:
			d.at(at, "%s is %s but the server has no %s address to translate it to", a, fam, fam)
			continue
		case same > 1:
			d.at(at, "%s is %s and the server has %d %s addresses: which one it stands for is ambiguous (list one)", a, fam, same, fam)
			continue
		}
		if slices.ContainsFunc(s.Public, func(b netip.Addr) bool { return b.Is4() == a.Is4() }) {
			d.at(at, "a second %s public address: at most one per family", fam)
			continue
		}
		s.Public = append(s.Public, a)
		src.publicPaths = append(src.publicPaths, at.path)
		src.publicLines = append(src.publicLines, at.line)
	}
}

// clientNATs reads the top-level clients list.
func (d *decoder) clientNATs(n node) ([]ClientNAT, []clientSrc) {
	items, ok := d.items(n, "a list of masqueraded client networks")
	if !ok {
		return nil, nil
	}
	var out []ClientNAT
	var srcs []clientSrc
	names := map[string]int{}
	for _, it := range items {
		c := ClientNAT{PortMin: defaultNATPortMin, PortMax: defaultNATPortMax}
		src := clientSrc{path: it.path, line: it.line}
		f, ok := d.section(it, clientNATKeys)
		if !ok {
			continue
		}
		bad := false
		if v, ok := f["name"]; ok {
			src.nameLine = v.line
			if name, ok := d.str(v, "a name"); ok {
				switch {
				case !serverNameRE.MatchString(name):
					d.at(v, "%q is not a valid name: use 1 to 64 of A-Z, a-z, 0-9, _, . and -", name)
				case names[name] != 0:
					d.at(v, "duplicate clients name %q: already used at line %d", name, names[name])
				default:
					names[name] = v.line
					c.Name = name
				}
			}
		} else {
			d.errorf(it.line, childPath(it.path, "name"), "missing: every clients entry needs a name")
			bad = true
		}
		if v, ok := f["prefixes"]; ok {
			var tmp Server
			before := len(d.errs)
			d.clients(v, &tmp)
			if len(d.errs) == before {
				c.Prefixes = tmp.Clients
				ps, _ := d.items(v, "")
				for _, p := range ps {
					src.prefixLine = append(src.prefixLine, p.line)
				}
			}
		} else {
			d.errorf(it.line, childPath(it.path, "prefixes"), "missing: the inside prefixes whose clients are masqueraded")
			bad = true
		}
		if v, ok := f["nat_addresses"]; ok {
			var tmp Server
			var tsrc serverSrc
			d.addresses(v, &tmp, &tsrc)
			for i, a := range tmp.Addresses {
				if slices.ContainsFunc(c.NAT, func(b netip.Addr) bool { return b.Is4() == a.Is4() }) {
					d.errorf(tsrc.addrLines[i], tsrc.addrPaths[i], "a second %s NAT address: at most one per family",
						map[bool]string{true: "IPv4", false: "IPv6"}[a.Is4()])
					continue
				}
				c.NAT = append(c.NAT, a)
				src.natLine = append(src.natLine, tsrc.addrLines[i])
			}
		} else {
			d.errorf(it.line, childPath(it.path, "nat_addresses"), "missing: the gateway address these clients are translated to")
			bad = true
		}
		if v, ok := f["nat_ports"]; ok {
			if lo, hi, ok := d.passivePorts(v); ok {
				c.PortMin, c.PortMax = lo, hi
			}
		}
		if !bad {
			out = append(out, c)
			srcs = append(srcs, src)
		}
	}
	return out, srcs
}

// natContradictions rejects NAT settings that contradict each other or
// the servers.
func (d *decoder) natContradictions(cfg *Config, csrcs []clientSrc) {
	if len(d.srvSrcs) != len(cfg.Servers) {
		return // servers had errors that left no sources; reported already
	}
	srcs := d.srvSrcs
	// Public addresses against every server's addresses, and shared
	// public addresses against each other's control ports.
	owner := map[netip.AddrPort]int{}
	for i, s := range cfg.Servers {
		for _, a := range s.Addresses {
			for _, p := range slices.Concat(s.ControlPorts, s.ImplicitTLSPorts) {
				owner[netip.AddrPortFrom(a, p)] = i
			}
		}
	}
	for i, s := range cfg.Servers {
		for k, a := range s.Public {
			path, line := srcs[i].publicPaths[k], srcs[i].publicLines[k]
			serverAddr := false
			for j, o := range cfg.Servers {
				if j != i && slices.Contains(o.Addresses, a) {
					d.errorf(line, path, "%s is an address of server %q (%s, line %d): a public address is the gateway's, not a server's",
						a, o.Name, srcs[j].path, srcs[j].line)
					serverAddr = true
				}
			}
			if serverAddr {
				continue
			}
			for _, p := range slices.Concat(s.ControlPorts, s.ImplicitTLSPorts) {
				ap := netip.AddrPortFrom(a, p)
				if j, taken := owner[ap]; taken && j != i {
					d.errorf(line, path, "%s port %d already belongs to server %q (%s, line %d): servers may share a public address only on different control ports",
						a, p, cfg.Servers[j].Name, srcs[j].path, srcs[j].line)
					continue
				}
				owner[ap] = i
			}
		}
	}
	// Clients entries: no overlaps, nothing of the servers inside them.
	for i, c := range cfg.Clients {
		for k, p := range c.Prefixes {
			at := func(format string, args ...any) {
				d.errorf(csrcs[i].prefixLine[k], fmt.Sprintf("%s.prefixes[%d]", csrcs[i].path, k), format, args...)
			}
			for j := range i + 1 {
				o := cfg.Clients[j]
				for m, q := range o.Prefixes {
					if (j == i && m >= k) || !p.Overlaps(q) {
						continue
					}
					at("%s overlaps %s of clients %q (line %d): a client must belong to one entry", p, q, o.Name, csrcs[j].prefixLine[m])
				}
			}
			if !slices.ContainsFunc(c.NAT, func(a netip.Addr) bool { return a.Is4() == p.Addr().Is4() }) {
				fam := map[bool]string{true: "IPv4", false: "IPv6"}[p.Addr().Is4()]
				at("%s is %s but clients %q has no %s NAT address to translate it to", p, fam, c.Name, fam)
			}
			for si, s := range cfg.Servers {
				for _, a := range slices.Concat(s.Addresses, s.Public) {
					if p.Contains(a) {
						at("%s contains %s of server %q (%s, line %d): servers and public addresses are outside the masqueraded networks",
							p, a, s.Name, srcs[si].path, srcs[si].line)
					}
				}
			}
		}
		for k, a := range c.NAT {
			path := fmt.Sprintf("%s.nat_addresses[%d]", csrcs[i].path, k)
			line := csrcs[i].natLine[k]
			for _, o := range cfg.Clients {
				for _, p := range o.Prefixes {
					if p.Contains(a) {
						d.errorf(line, path, "%s is inside %s (clients %q): the NAT address is the gateway's outside address", a, p, o.Name)
					}
				}
			}
			for si, s := range cfg.Servers {
				if slices.Contains(s.Addresses, a) {
					d.errorf(line, path, "%s is an address of server %q (%s, line %d): the NAT address is the gateway's", a, s.Name, srcs[si].path, srcs[si].line)
				}
			}
			if !slices.ContainsFunc(c.Prefixes, func(p netip.Prefix) bool { return p.Addr().Is4() == a.Is4() }) {
				fam := map[bool]string{true: "IPv4", false: "IPv6"}[a.Is4()]
				d.errorf(line, path, "%s is %s but clients %q has no %s prefix: nothing would be translated to it", a, fam, c.Name, fam)
			}
		}
	}
}
