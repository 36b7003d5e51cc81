package gateway

import (
	"net/netip"

	"github.com/ftpsalg/ftpsalg/alg/status"
)

// Status returns the live sessions of both paths, their pending pinholes
// (admissions not yet used, before their deadline) and the bans in force,
// for the admin endpoint (ftpsalg status).
func (g *Gateway) Status() status.Snapshot {
	now := g.now()
	snap := status.Snapshot{Time: now, Sessions: []status.Session{}, Pinholes: []status.Pinhole{}}
	g.mu.Lock()
	defer g.mu.Unlock()
	snap.Bans = g.banStatusLocked(now)
	for s := range g.sessions {
		s.mu.Lock()
		pending := 0
		for _, h := range s.holes {
			if h.gone || !h.deadline.After(now) {
				continue
			}
			pending++
			dst := netip.AddrPortFrom(h.h.Dst, h.h.DstPort)
			snap.Pinholes = append(snap.Pinholes, status.Pinhole{Src: h.h.Src, Dst: dst,
				DataMode: h.mode.String(), Client: s.Client, Expires: h.deadline})
		}
		snap.Sessions = append(snap.Sessions, status.Session{Client: s.Client, Server: s.Orig,
			ServerName: s.Server.Name, Mode: s.Mode, User: s.audit.user, Started: s.audit.start, Pinholes: pending})
		s.mu.Unlock()
	}
	snap.Sort()
	return snap
}
