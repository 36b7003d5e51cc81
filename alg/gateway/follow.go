package gateway

import "net/netip"

// AdmitFollowed admits a control connection that a translation ftpsalg
// did not make sent elsewhere: the operator's own port-forward (dnat)
// translated the client's connection to orig (a public address of the
// gateway, as conntrack's original tuple names it) into one to served, a
// control endpoint of the policy. The session is then a published one,
// exactly as if orig were a public address of the server in the policy:
// the upstream connection goes to served, passive announcements are
// moved to orig's address and their data connections translated to the
// server (docs/nat.md, "The operator's own NAT"). The policy needs no NAT
// keys for it: the kernel's translation of the control connection is the
// configuration.
func (g *Gateway) AdmitFollowed(client, orig, served netip.AddrPort) (*Session, *Refusal) {
	s, r := g.admit(Stream, client, orig, served)
	if s != nil {
		g.m.NATFollowed.WithLabelValues("dnat").Inc()
		s.Log.Info("following the operator's translation", "kind", "dnat",
			"original_destination", s.Orig.String(), "translated_destination", s.Upstream.String())
	}
	return s, r
}
