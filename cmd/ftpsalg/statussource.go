package main

import (
	"time"

	"github.com/ftpsalg/ftpsalg/alg/status"
)

// statusPart is a path that reports its live sessions and pinholes
// (inspect.Engine, proxy.Proxy).
type statusPart interface {
	Status() ([]status.Session, []status.Pinhole)
}

// statusSource builds the admin endpoint's snapshot from the packet path
// and the stream paths.
func statusSource[P statusPart](eng statusPart, proxies []P) func() status.Snapshot {
	return func() status.Snapshot {
		snap := status.Snapshot{Time: time.Now(), Sessions: []status.Session{}, Pinholes: []status.Pinhole{}}
		add := func(p statusPart) {
			ss, ps := p.Status()
			snap.Sessions = append(snap.Sessions, ss...)
			for _, ph := range ps {
				if ph.Expires.After(snap.Time) {
					snap.Pinholes = append(snap.Pinholes, ph)
				}
			}
		}
		add(eng)
		for _, p := range proxies {
			add(p)
		}
		return snap
	}
}
