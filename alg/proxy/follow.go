package proxy

import (
	"context"
	"net"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/nat"
)

// followLookupTimeout bounds the conntrack look-up of an upstream
// connection's translation: one netlink round trip, well under a
// millisecond; a kernel that does not answer in time leaves the session
// untranslated (and logged) rather than holding the client.
const followLookupTimeout = 2 * time.Second

// followMasquerade learns whether the operator's own source NAT
// (masquerade or snat, at postrouting) translated the upstream connection:
// conntrack's reply tuple then names the address the server knows the
// client by. The leg takes that address as the upstream one, so the
// client's active announcements are moved to it and its passive data
// connections leave from it (gateway.TranslateActive, OpenPinhole) —
// what nf_nat_ftp does for plain FTP behind the same masquerade. A
// session whose source the policy already fixes (clients:) is not looked
// up: ftpsalg chose that address itself.
func (s *session) followMasquerade(ctx context.Context, up net.Conn, leg *nat.Leg) {
	if s.gs.Source.IsValid() {
		return
	}
	local, remote := addrPort(up.LocalAddr()), addrPort(up.RemoteAddr())
	if !local.IsValid() || !remote.IsValid() {
		return
	}
	lctx, cancel := context.WithTimeout(ctx, followLookupTimeout)
	defer cancel()
	reply, err := s.p.o.ReplyDestination(lctx, local, remote)
	if err != nil {
		s.gs.Log.Debug("upstream translation not looked up", "err", err)
		return
	}
	if reply.Addr().Unmap() == local.Addr().Unmap() {
		return
	}
	leg.Upstream = reply.Addr().Unmap()
	s.m.NATFollowed.WithLabelValues("masquerade").Inc()
	s.gs.Log.Info("following the operator's translation", "kind", "masquerade",
		"upstream_source", local.String(), "translated_source", reply.String())
}
