package certs

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// ErrOutsideConstraints is matched (errors.Is) by every error that reports
// a name or address the CA's name constraints forbid: a *ConstraintError,
// and the Minter's refusal to mint a leaf for such a name.
var ErrOutsideConstraints = errors.New("outside the CA's name constraints")

// NameConstraints are the name constraints of a CA certificate (RFC 5280
// section 4.2.1.10) on the two name forms a minted leaf carries: DNS names
// and IP addresses. A name must match one permitted subtree of its form,
// when the CA lists any for that form, and no excluded subtree. A form
// with neither permitted nor excluded subtrees is unconstrained.
//
// A DNS subtree "example.com" matches example.com and every name below it;
// ".example.com" matches only the names below it; the empty subtree ""
// matches every name (RFC 5280 leaves it open; crypto/x509, OpenSSL and
// NSS read it so, and the CA/Browser Forum Baseline Requirements use an
// excluded "" to forbid DNS names altogether).
type NameConstraints struct {
	PermittedDNS, ExcludedDNS []string
	PermittedIPs, ExcludedIPs []netip.Prefix
	// Critical is whether the extension is marked critical: a client that
	// does not implement name constraints must then refuse the CA rather
	// than ignore them.
	Critical bool
	// Other says that the CA constrains name forms a leaf of ftpsalg
	// never carries (e-mail addresses, URIs); they are not checked here.
	Other bool
}

// ConstraintsOf returns cert's name constraints; the zero value when it
// has none.
func ConstraintsOf(cert *x509.Certificate) NameConstraints {
	nc := NameConstraints{
		PermittedDNS: slices.Clone(cert.PermittedDNSDomains),
		ExcludedDNS:  slices.Clone(cert.ExcludedDNSDomains),
		PermittedIPs: prefixes(cert.PermittedIPRanges),
		ExcludedIPs:  prefixes(cert.ExcludedIPRanges),
		Critical:     cert.PermittedDNSDomainsCritical,
		Other: len(cert.PermittedEmailAddresses)+len(cert.ExcludedEmailAddresses)+
			len(cert.PermittedURIDomains)+len(cert.ExcludedURIDomains) > 0,
	}
	return nc
}

// IsZero reports whether nc constrains neither DNS names nor IP addresses.
func (nc NameConstraints) IsZero() bool {
	return len(nc.PermittedDNS)+len(nc.ExcludedDNS)+len(nc.PermittedIPs)+len(nc.ExcludedIPs) == 0
}

// CheckDNS returns a *ConstraintError when nc forbids the DNS name name
// (which may be a wildcard such as "*.example.com"; its "*" is matched as
// a label, as crypto/x509 does).
func (nc NameConstraints) CheckDNS(name string) error {
	n := strings.ToLower(strings.TrimSuffix(name, "."))
	for _, c := range nc.ExcludedDNS {
		if matchDNS(n, c) {
			return &ConstraintError{Name: name, Excluded: true, Constraint: "excluded DNS " + dnsList([]string{c})}
		}
	}
	if len(nc.PermittedDNS) > 0 && !slices.ContainsFunc(nc.PermittedDNS, func(c string) bool { return matchDNS(n, c) }) {
		return &ConstraintError{Name: name, Constraint: "permitted DNS " + dnsList(nc.PermittedDNS)}
	}
	return nil
}

// CheckIP returns a *ConstraintError when nc forbids the address a. An
// IPv4 address matches IPv4 ranges only, IPv6 ones IPv6 ranges; an
// IPv4-mapped IPv6 address counts as its IPv4 address, since that is how
// crypto/x509 writes it into a certificate.
func (nc NameConstraints) CheckIP(a netip.Addr) error {
	a = a.Unmap()
	for _, p := range nc.ExcludedIPs {
		if p.Contains(a) {
			return &ConstraintError{Name: a.String(), IP: true, Excluded: true, Constraint: "excluded IP " + p.String()}
		}
	}
	if len(nc.PermittedIPs) > 0 && !slices.ContainsFunc(nc.PermittedIPs, func(p netip.Prefix) bool { return p.Contains(a) }) {
		return &ConstraintError{Name: a.String(), IP: true, Constraint: "permitted IP " + prefixList(nc.PermittedIPs)}
	}
	return nil
}

// Describe returns nc as lines for people: "permitted DNS: ...",
// "excluded IP: ...", and so on, or nil when nc IsZero.
func (nc NameConstraints) Describe() []string {
	var out []string
	if len(nc.PermittedDNS) > 0 {
		out = append(out, "permitted DNS: "+dnsList(nc.PermittedDNS))
	}
	if len(nc.ExcludedDNS) > 0 {
		out = append(out, "excluded DNS: "+dnsList(nc.ExcludedDNS))
	}
	if len(nc.PermittedIPs) > 0 {
		out = append(out, "permitted IP: "+prefixList(nc.PermittedIPs))
	}
	if len(nc.ExcludedIPs) > 0 {
		out = append(out, "excluded IP: "+prefixList(nc.ExcludedIPs))
	}
	return out
}

// checkLeaf returns an error wrapping ErrOutsideConstraints, naming every
// name nc forbids, for a leaf with the DNS names dns and the addresses ips.
func (nc NameConstraints) checkLeaf(dns []string, ips []net.IP) error {
	if nc.IsZero() {
		return nil
	}
	var errs []error
	for _, n := range dns {
		if err := nc.CheckDNS(n); err != nil {
			errs = append(errs, err)
		}
	}
	for _, ip := range ips {
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			continue
		}
		if err := nc.CheckIP(a); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return joined(errs)
}

// constrainsDNS reports whether nc constrains DNS names. Clients then
// check the common name of a leaf without DNS names against them: GnuTLS
// whatever it holds, OpenSSL when it looks like a host name (an IP
// address does).
func (nc NameConstraints) constrainsDNS() bool {
	return len(nc.PermittedDNS)+len(nc.ExcludedDNS) > 0
}

// joined is errors.Join on one line: it ends up in a log line.
type joined []error

func (j joined) Error() string {
	s := make([]string, len(j))
	for i, e := range j {
		s[i] = e.Error()
	}
	return strings.Join(s, "; ")
}

func (j joined) Unwrap() []error { return j }

// ConstraintError reports a DNS name or IP address outside a CA's name
// constraints: a leaf naming it would be refused by every client that
// enforces them. errors.Is(err, ErrOutsideConstraints) holds.
type ConstraintError struct {
	// Name is the DNS name or the address.
	Name string
	// IP is true when Name is an address.
	IP bool
	// Excluded is true when an excluded subtree matched, false when no
	// permitted one did.
	Excluded bool
	// Constraint is the constraint that refuses it, as people read it:
	// "permitted DNS files.example.com, .example.com" or
	// "excluded IP 0.0.0.0/0".
	Constraint string
}

func (e *ConstraintError) Error() string {
	what := "DNS name"
	if e.IP {
		what = "IP address"
	}
	if e.Excluded {
		return fmt.Sprintf("%s %s is outside the CA's name constraints (%s)", what, e.Name, e.Constraint)
	}
	return fmt.Sprintf("%s %s is outside the CA's name constraints (%s only)", what, e.Name, e.Constraint)
}

// Is makes errors.Is(err, ErrOutsideConstraints) true.
func (e *ConstraintError) Is(target error) bool { return target == ErrOutsideConstraints }

// matchDNS reports whether the lower-case name n is within the subtree c,
// as crypto/x509 and OpenSSL match: case-insensitively, on label
// boundaries, "" matching everything and a leading "." excluding the
// subtree's own name.
func matchDNS(n, c string) bool {
	c = strings.ToLower(c)
	switch {
	case c == "":
		return true
	case strings.HasPrefix(c, "."):
		return len(n) > len(c) && strings.HasSuffix(n, c)
	}
	return n == c || strings.HasSuffix(n, "."+c)
}

// dnsList lists DNS subtrees, writing the empty one as people would
// understand it.
func dnsList(cs []string) string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c
		if c == "" {
			out[i] = `"" (every name)`
		}
	}
	return strings.Join(out, ", ")
}

func prefixList(ps []netip.Prefix) string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
		if p.Bits() == 0 {
			out[i] += " (every address)"
		}
	}
	return strings.Join(out, ", ")
}

// prefixes converts the constraint ranges of a parsed certificate. A
// range whose mask is not a prefix (RFC 5280 allows none such, but
// crypto/x509 parses them) is kept as its leading ones.
func prefixes(ns []*net.IPNet) []netip.Prefix {
	var out []netip.Prefix
	for _, n := range ns {
		a, ok := netip.AddrFromSlice(n.IP)
		if !ok {
			continue
		}
		ones, _ := n.Mask.Size()
		out = append(out, netip.PrefixFrom(a, ones))
	}
	return out
}

// ipNets converts prefixes to what x509.Certificate holds.
func ipNets(ps []netip.Prefix) []*net.IPNet {
	out := make([]*net.IPNet, len(ps))
	for i, p := range ps {
		out[i] = &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
	}
	return out
}

// Permitted is what a new CA may sign for (InitOptions.Permit): DNS
// subtrees and IP ranges. When only one of the two is given, the other
// form is forbidden altogether (an excluded "" or 0.0.0.0/0 and ::/0, as
// the CA/Browser Forum Baseline Requirements section 7.1.2.5.2 asks of
// constrained CAs): constraints on one form alone leave the other
// unconstrained under RFC 5280.
type Permitted struct {
	// DNS are subtrees in the form ParseDNSConstraint accepts.
	DNS []string
	// IPs are masked prefixes.
	IPs []netip.Prefix
}

// IsZero reports whether p permits nothing in particular, i.e. the CA is
// unconstrained.
func (p Permitted) IsZero() bool { return len(p.DNS) == 0 && len(p.IPs) == 0 }

// constraints are the name constraints p gives a CA.
func (p Permitted) constraints() NameConstraints {
	if p.IsZero() {
		return NameConstraints{}
	}
	nc := NameConstraints{PermittedDNS: p.DNS, PermittedIPs: p.IPs, Critical: true}
	if len(p.DNS) == 0 {
		nc.ExcludedDNS = []string{""}
	}
	if len(p.IPs) == 0 {
		nc.ExcludedIPs = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	}
	return nc
}

// validate checks p's subtrees.
func (p Permitted) validate() error {
	for _, d := range p.DNS {
		if _, err := ParseDNSConstraint(d); err != nil {
			return err
		}
	}
	for _, pr := range p.IPs {
		if !pr.IsValid() || pr != pr.Masked() || pr.Addr().Is4In6() || pr.Addr().Zone() != "" {
			return fmt.Errorf("IP range %s is not a masked prefix such as 198.51.100.0/24", pr)
		}
	}
	return nil
}

// ParseDNSConstraint checks a permitted DNS subtree as an operator writes
// it: "files.example.com" (that name and every name below it) or
// ".example.com" (every name below it). It returns it in lower case.
// Wildcards are refused with a hint, since "*.example.com" is not a
// subtree.
func ParseDNSConstraint(s string) (string, error) {
	d := strings.ToLower(s)
	name := strings.TrimPrefix(d, ".")
	switch {
	case strings.HasPrefix(name, "*"):
		return "", fmt.Errorf("DNS constraint %q is a wildcard: write %q for the names below %s", s, "."+strings.TrimPrefix(name, "*."), strings.TrimPrefix(name, "*."))
	case name == "" || len(name) > 253 || !hostnameRE.MatchString(name) || strings.HasSuffix(name, "."):
		return "", fmt.Errorf("DNS constraint %q is not a DNS name such as files.example.com or .example.com (no trailing dot)", s)
	case net.ParseIP(name) != nil:
		return "", fmt.Errorf("DNS constraint %q is an IP address: give it as an IP range", s)
	}
	return d, nil
}

// ParseIPConstraint parses a permitted IP range as an operator writes it:
// a prefix such as 198.51.100.0/24 or 2001:db8::/32, or one address,
// which stands for itself alone (/32 or /128). A prefix with host bits set
// is refused with the masked form as a hint.
func ParseIPConstraint(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("IP constraint %q has a zone", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("IP constraint %q is neither an address nor a prefix such as 198.51.100.0/24", s)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("IP constraint %q is an IPv4-mapped IPv6 prefix: give the IPv4 prefix", s)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("IP constraint %q has host bits set: did you mean %s?", s, m)
	}
	return p, nil
}
