package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// OperatorNAT is a destination NAT rule of the operator's own ruleset
// (read by the daemon and check-config with nft.Kernel.ForeignDNAT):
// Name identifies it as nft lists it; Dst and Ports are the destination
// addresses and TCP ports it matches (nil: any); To is its target
// address (invalid when unknown).
type OperatorNAT struct {
	Name  string
	Dst   []netip.Addr
	Ports []uint16
	To    netip.Addr
}

func (r OperatorNAT) port(p uint16) bool { return r.Ports == nil || slices.Contains(r.Ports, p) }

func (r OperatorNAT) matches(a netip.Addr, p uint16) bool {
	return (r.Dst == nil || slices.Contains(r.Dst, a)) && r.port(p)
}

// CheckOperatorNAT finds the combinations of the policy and the
// operator's own port-forwards that cannot work, and names the rule:
//
//   - a public address of a server whose control or implicit-TLS port the
//     operator's rule also translates. ftpsalg diverts such a connection
//     before destination NAT (TPROXY at mangle, -150); the operator's
//     dnat then rewrites its destination under the listener, whose
//     handshake the kernel completes under the translated address, and
//     the client's first ACK, still carrying the public one, is reset by
//     the listener: every control connection fails at once, unseen by
//     ftpsalg (measured: test/integration TestNATOperatorConflict). Keep
//     one of the two: without public:, ftpsalg follows the rule.
//   - a port-forward to an inspect-mode server when the policy has no
//     stream path (no mitm server, no NAT keys): the packet path cannot
//     resize the 227 that names the server's own address, and nothing
//     follows the rule.
func CheckOperatorNAT(c *Config, rules []OperatorNAT) error {
	var problems []string
	for _, s := range c.Servers {
		ports := slices.Concat(s.ControlPorts, s.ImplicitTLSPorts)
		for _, a := range s.Public {
			for _, p := range ports {
				for _, r := range rules {
					if r.matches(a, p) {
						problems = append(problems, fmt.Sprintf(
							"server %q: public address %s port %d is also translated by the operator's rule %s: "+
								"the kernel would translate the connection under ftpsalg's diversion and reset it; "+
								"remove %s from public (ftpsalg follows the operator's dnat) or remove the rule",
							s.Name, a, p, r.Name, a))
					}
				}
			}
		}
		if c.Stream() || s.Mode != ModeInspect {
			continue
		}
		for _, r := range rules {
			if !r.To.IsValid() || !slices.Contains(s.Addresses, r.To) {
				continue
			}
			if !slices.ContainsFunc(ports, r.port) {
				continue
			}
			problems = append(problems, fmt.Sprintf(
				"server %q (mode: inspect): the operator's rule %s forwards to it, and its passive replies would name its own address %s; "+
					"ftpsalg follows an operator's port-forward on its stream path, which this policy does not start: "+
					"use mode: mitm for the server, or public: instead of the rule",
				s.Name, r.Name, r.To))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("the policy conflicts with the host's NAT rules: %s", strings.Join(problems, "; "))
	}
	return nil
}
