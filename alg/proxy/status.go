package proxy

import (
	"net/netip"

	"github.com/ftpsalg/ftpsalg/alg/status"
)

// register adds s to the live sessions Status reports and returns the
// function that removes it (deferred by handle for the session's life).
func (p *Proxy) register(s *session) func() {
	p.live.Store(s, struct{}{})
	return func() { p.live.Delete(s) }
}

// Status returns the stream path's live control sessions and the pinholes
// they hold that have not expired, for the admin endpoint. (The stream path
// keeps a used pinhole until its session ends, so one used but unexpired
// is listed too.)
func (p *Proxy) Status() ([]status.Session, []status.Pinhole) {
	now := p.o.Now()
	var sessions []status.Session
	var pinholes []status.Pinhole
	p.live.Range(func(k, _ any) bool {
		s := k.(*session)
		s.mu.Lock()
		defer s.mu.Unlock()
		server := s.upstream
		if s.orig != s.upstream {
			server = s.orig // what the client connected to (a published address)
		}
		sessions = append(sessions, status.Session{Client: s.client, Server: server, ServerName: s.srv.Name,
			Mode: s.mode, User: s.audit.user, Started: s.audit.start, Pinholes: len(s.pinholes)})
		for _, t := range s.pinholes {
			if !t.deadline.After(now) {
				continue
			}
			pinholes = append(pinholes, status.Pinhole{Src: t.hole.Src, Dst: netip.AddrPortFrom(t.hole.Dst, t.hole.DstPort),
				DataMode: t.mode.String(), Client: s.client, Expires: t.deadline})
		}
		return true
	})
	return sessions, pinholes
}
