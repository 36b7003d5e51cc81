package gateway

import (
	"net/netip"
	"slices"

	"github.com/ftpsalg/ftpsalg/alg/policy"
	"github.com/ftpsalg/ftpsalg/nft"
)

// Spec derives the nftables table's desired state from the policy and the
// kernel's queue support (nft.ProbeQueue).
func Spec(cfg *policy.Config, kind nft.QueueKind) nft.Spec {
	s := nft.Spec{
		Table:      cfg.NFTables.Table,
		Queue:      cfg.Queue.Number,
		QueueTotal: cfg.Queue.Count,
		QueueKind:  kind,
		FailOpen:   cfg.Queue.FailOpen,
		CtMark:     cfg.NFTables.CtMark,
		PacketMark: cfg.NFTables.PacketMark,
		TProxyPort: cfg.MITM.ListenPort,
		TProxyMark: cfg.MITM.TProxyMark,
		Bans:       cfg.Throttle.Enabled(),
	}
	for _, srv := range cfg.Servers {
		var eps []netip.AddrPort
		for _, a := range srv.Addresses {
			for _, p := range srv.ControlPorts {
				eps = append(eps, netip.AddrPortFrom(a, p))
			}
			for _, p := range srv.ImplicitTLSPorts {
				eps = append(eps, netip.AddrPortFrom(a, p))
			}
		}
		// Published addresses: their control connections always go to
		// the transparent listener, which translates them (docs/nat.md).
		for _, a := range srv.Public {
			for _, p := range append(slices.Clone(srv.ControlPorts), srv.ImplicitTLSPorts...) {
				s.MITM = append(s.MITM, netip.AddrPortFrom(a, p))
			}
		}
		if srv.Mode == policy.ModeMITM {
			s.MITM = append(s.MITM, eps...)
			if srv.MITM.Data == policy.DataRelay {
				// The relay objects exist only when a server uses them,
				// so that the table is otherwise the plain mitm table.
				s.RelayPort = cfg.MITM.RelayPort
			}
		} else {
			// Opaque servers' control connections are queued like
			// inspect servers': the packet path reads the clear-text
			// part and the TLS handshake.
			s.Control = append(s.Control, eps...)
			s.Opaque = s.Opaque || srv.Mode == policy.ModeOpaque
		}
	}
	for _, c := range cfg.Clients {
		s.Masqueraded = append(s.Masqueraded, c.Prefixes...)
	}
	return s
}

// HasMITM reports whether the policy has a mitm-mode server.
func HasMITM(cfg *policy.Config) bool {
	for _, srv := range cfg.Servers {
		if srv.Mode == policy.ModeMITM {
			return true
		}
	}
	return false
}
