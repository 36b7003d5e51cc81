package gateway

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/ftp"
	"github.com/ftpsalg/ftpsalg/alg/nat"
	"github.com/ftpsalg/ftpsalg/nft"
)

// Opened is a committed data-connection admission and what the transport
// must do about the line that announced it.
type Opened struct {
	Hole nft.Pinhole
	// Rewrite, when not nil, is the core's rewrite of the announcement
	// (an ActionRewrite decision): the transport sends its Replacement
	// instead of the server's line.
	Rewrite *ftp.Decision
	// Relay, for a relay element, is where the relay connects onward and
	// from which address (see RelayPlan).
	Relay RelayPlan
}

// RelayPlan is what the data relay does with the one connection a relay
// element diverts to it. The element is keyed by the tuple the initiator
// uses (Hole: initiator . announced target . announced port); behind NAT
// that target is a gateway address, and the relay connects onward to
// where the translation would have sent the connection (Target), from
// the address the other peer knows (Source). Without NAT Target is the
// announced endpoint itself and Source is invalid (the relay's default:
// the client's address for passive connections, the server's for active
// ones).
type RelayPlan struct {
	Target netip.AddrPort
	Source netip.Addr
}

// OpenPinhole commits the admission the core asks for (an
// ActionOpenPinhole decision), translated where the session crosses a NAT,
// and returns it with the rewrite of the announcement, if any. relay makes
// it a relay element (the transport registers its expectation first).
// On error nothing is committed and the announcement must not be
// released.
func (s *Session) OpenPinhole(ctx context.Context, d ftp.Decision, relay bool) (Opened, error) {
	return s.open(ctx, d, relay, nil)
}

// OpenRelay is OpenPinhole for a relay element: it computes the
// translation as for a pinhole, turns it into the relay's plan (the
// element keyed by the tuple the initiator uses, the translation target
// as where the relay connects onward), and calls expect with both before
// the element is committed — the connection may arrive as soon as it is.
// expect is not called when the announcement cannot be translated. On
// error nothing is committed; the caller withdraws what expect
// registered.
func (s *Session) OpenRelay(ctx context.Context, d ftp.Decision, expect func(nft.Pinhole, RelayPlan)) (Opened, error) {
	return s.open(ctx, d, true, expect)
}

func (s *Session) open(ctx context.Context, d ftp.Decision, relay bool, expect func(nft.Pinhole, RelayPlan)) (Opened, error) {
	ph := d.Pinhole
	h := nft.Pinhole{Src: ph.Src, Dst: ph.Dst, DstPort: ph.DstPort, Timeout: s.pinholeTimeout(), Relay: relay}
	var out Opened
	var reserved nat.Reservation
	var translation []any
	leg := s.Leg()
	switch {
	case ph.Mode == ftp.Passive:
		if leg.Published() && ph.Dst.Unmap() == leg.Server.Unmap() {
			// Published server: the client connects to the public
			// address, on the announced port if it is free there.
			target := netip.AddrPortFrom(ph.Dst, ph.DstPort)
			// The server's own port first, even outside public_ports
			// (which says where to go when it is taken).
			res, moved, err := s.g.ports.Reserve(ph.Src, leg.Public, ph.DstPort, target,
				nat.Range{Min: ph.DstPort, Max: ph.DstPort}, s.reservation())
			if err != nil {
				res, moved, err = s.g.ports.Reserve(ph.Src, leg.Public, ph.DstPort, target,
					nat.Range{Min: s.Server.PublicPortMin, Max: s.Server.PublicPortMax}, s.reservation())
			}
			if err != nil {
				s.natFailed("passive", err)
				return Opened{}, err
			}
			reserved = res
			h.Dst, h.DstPort = res.At.Addr(), res.At.Port()
			h.DNAT = target
			if d.Code != 229 || moved {
				rw, err := ftp.RewriteAnnouncement(d, res.At)
				if err != nil {
					s.g.ports.Release(reserved)
					s.natFailed("passive", err)
					return Opened{}, err
				}
				out.Rewrite = &rw
			}
			s.g.m.NATTranslations.WithLabelValues("passive", movedLabel(moved)).Inc()
			translation = []any{"announced", h.DNAT.String(), "translated", res.At.String(), "port_moved", moved}
		}
		if leg.ClientTranslated() {
			// The server knows this session by the upstream's address:
			// the client's data connection must come from there too
			// (servers such as vsftpd refuse data from another address).
			h.SNAT = leg.Upstream
		}
	case ph.Mode == ftp.Active:
		s.mu.Lock()
		a := s.active
		s.active = nil
		s.mu.Unlock()
		if a != nil && ph.Dst.Unmap() == a.from.Addr().Unmap() && ph.DstPort == a.from.Port() {
			// The server was told a gateway port: it connects there and
			// the gateway forwards to where the client listens.
			h.Dst, h.DstPort = a.to.Addr(), a.to.Port()
			h.DNAT = a.from
			translation = []any{"announced", a.from.String(), "translated", a.to.String()}
		}
		if leg.Published() {
			// The client knows the server by its public address.
			h.SNAT = leg.Public
		}
	}
	if relay {
		// The relay makes the onward connection itself: the translation
		// becomes where it connects and from where, and the kernel only
		// diverts the announced tuple to it (nft: a relay element has no
		// NAT of its own).
		out.Relay = RelayPlan{Target: netip.AddrPortFrom(h.Dst, h.DstPort), Source: h.SNAT}
		if h.DNAT.IsValid() {
			out.Relay.Target = h.DNAT
		}
		h.DNAT, h.SNAT = netip.AddrPort{}, netip.Addr{}
		if expect != nil {
			expect(h, out.Relay)
		}
	}
	if err := s.commit(ctx, h, ph.Mode); err != nil {
		if reserved.At.IsValid() {
			s.g.ports.Release(reserved)
		}
		return Opened{}, err
	}
	if reserved.At.IsValid() {
		s.mu.Lock()
		s.reserved = append(s.reserved, reserved)
		s.mu.Unlock()
	}
	if len(translation) > 0 {
		s.Log.Debug("announcement translated", append([]any{"data_mode", ph.Mode.String()}, translation...)...)
	}
	out.Hole = h
	return out, nil
}

// TranslateActive handles a client's PORT, EPRT or LPRT (an
// ActionCommand decision carrying the announced endpoint) for a server that
// knows the client by another address: it reserves a gateway port and
// returns the core's rewrite naming that address and port. With reply
// set, nothing is forwarded and the client gets reply instead.
func (s *Session) TranslateActive(d ftp.Decision) (rw ftp.Decision, reply string) {
	leg := s.Leg()
	from := d.Endpoint
	res, moved, err := s.g.ports.Reserve(leg.Server, leg.Upstream, from.Port(), from, s.NATPorts, s.reservation())
	if err != nil {
		s.natFailed("active", err)
		return ftp.Decision{}, "425 ftpsalg: no gateway port is free for the data connection.\r\n"
	}
	rw, err = ftp.RewriteAnnouncement(d, res.At)
	if err != nil {
		s.g.ports.Release(res)
		s.natFailed("active", err)
		return ftp.Decision{}, "522 ftpsalg: cannot translate this data address; use EPRT.\r\n"
	}
	s.mu.Lock()
	s.active = &activeNAT{from: from, to: res.At}
	s.reserved = append(s.reserved, res)
	s.mu.Unlock()
	s.g.m.NATTranslations.WithLabelValues("active", movedLabel(moved)).Inc()
	s.Log.Debug("active announcement translated", "verb", d.Verb, "announced", from.String(), "translated", res.At.String())
	return rw, ""
}

// NeedsActiveTranslation reports whether the client's active
// announcements must be translated (the server knows the client by
// another address).
func (s *Session) NeedsActiveTranslation(d ftp.Decision) bool {
	return d.Action == ftp.ActionCommand && ftp.IsActiveVerb(d.Verb) && d.Endpoint.IsValid() && s.Leg().ClientTranslated()
}

// reservation is how long a gateway port stays reserved for one
// announcement: as long as its translation lives in the kernel's map (the
// pinhole's timeout) and a margin for the reply's round trip. The
// session's end releases it sooner.
func (s *Session) reservation() time.Duration { return s.pinholeTimeout() + 5*time.Second }

func movedLabel(moved bool) string {
	if moved {
		return "moved"
	}
	return "kept"
}

// natFailed counts and logs an announcement that could not be translated.
func (s *Session) natFailed(kind string, err error) {
	reason := "error"
	switch {
	case errors.Is(err, nat.ErrExhausted):
		reason = "ports_exhausted"
	case errors.Is(err, ftp.ErrNotRewritable):
		// A multi-line 227 whose address was on an earlier line: that
		// line has gone to the client already (docs/nat.md, Limits).
		reason = "not_rewritable"
	}
	s.g.m.NATFailures.WithLabelValues(kind, reason).Inc()
	s.Log.Warn("announcement not translated", "data_mode", kind, "reason", reason, "err", err)
}
