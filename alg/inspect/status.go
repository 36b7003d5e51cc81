package inspect

import (
	"net/netip"

	"github.com/ftpsalg/ftpsalg/alg/status"
)

// Status returns the packet path's live control sessions and the pinholes
// they hold, for the admin endpoint. The packet path does not keep the
// USER argument, so User is empty.
func (e *Engine) Status() ([]status.Session, []status.Pinhole) {
	e.mu.Lock()
	defer e.mu.Unlock()
	sessions := make([]status.Session, 0, len(e.flows))
	for _, f := range e.flows {
		sessions = append(sessions, status.Session{Client: f.key.client, Server: f.key.server,
			ServerName: f.server.Name, Mode: f.server.Mode.String(), Started: f.started, Pinholes: len(f.pinholes)})
	}
	pinholes := make([]status.Pinhole, 0, len(e.pinholes))
	for k, r := range e.pinholes {
		pinholes = append(pinholes, status.Pinhole{Src: k.src, Dst: netip.AddrPortFrom(k.dst, k.port),
			DataMode: r.mode.String(), Client: r.flow.key.client, Expires: r.deadline})
	}
	return sessions, pinholes
}
