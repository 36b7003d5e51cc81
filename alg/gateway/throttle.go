package gateway

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/status"
	"github.com/ftpsalg/ftpsalg/nft"
)

// Reasons a login failure is counted for (CountFailure), the bounded label
// of ftpsalg_login_failures_total.
const (
	// FailureLogin is a 530 reply to PASS or USER, read by the FTP core
	// on either path (Observe).
	FailureLogin = "login"
	// FailureHandshake is a control connection's TLS handshake that
	// failed, for transports that cannot read the replies (opaque mode).
	FailureHandshake = "handshake"
	// FailureUnauthenticated is a control session that ended without a
	// login the transport could see succeed (opaque mode).
	FailureUnauthenticated = "unauthenticated"
)

// RefuseBanned is Admit's refusal of a banned client address.
const RefuseBanned = "banned"

// maxTracked bounds the addresses whose recent failures the gateway
// remembers: past it, failures of addresses not yet tracked are counted in
// the metric but not towards a ban until old entries age out of the
// window (memory stays bounded whatever the number of addresses).
const maxTracked = 65536

// banTimeout bounds the kernel call that adds a ban.
const banTimeout = 5 * time.Second

// LoginFailed counts one failed login of the session's client towards the
// policy's throttle (CountFailure); reason is one of the Failure
// constants. The FTP core's 530 replies are counted by Observe; a
// transport that cannot read replies (opaque mode) calls this for a failed
// handshake (FailureHandshake) or a session that ends unauthenticated
// (FailureUnauthenticated), once per event. Safe for concurrent use.
func (s *Session) LoginFailed(reason string) {
	s.Log.Info("login failed", "reason", reason, "user", s.User())
	s.g.CountFailure(s.Client.Addr(), reason)
}

// CountFailure counts one failed login from client (reason: one of the
// Failure constants) and bans the address when the policy's throttle says
// so: MaxFailures failures within Window ban it for Ban, with a kernel set
// element that drops its new control connections (nft.Banner), an entry
// that makes Admit refuse it meanwhile, ftpsalg_bans_total and a "client
// banned" log line. Allow-listed addresses are counted but never banned.
// It is for transports that have no session (a connection that failed
// before Admit); those with one call Session.LoginFailed. Safe for
// concurrent use; it makes a kernel call only when it bans.
func (g *Gateway) CountFailure(client netip.Addr, reason string) {
	client = client.Unmap().WithZone("")
	g.m.LoginFailures.WithLabelValues(reason).Inc()
	th := g.pol.Load().Throttle
	if !th.Enabled() || th.Allowed(client) || !client.IsValid() {
		return
	}
	now := g.now()
	g.fmu.Lock()
	recent := g.fails[client]
	recent = slices.DeleteFunc(recent, func(t time.Time) bool { return now.Sub(t) >= th.Window })
	if len(recent) == 0 && len(g.fails) >= maxTracked {
		for a, ts := range g.fails {
			if len(ts) == 0 || now.Sub(ts[len(ts)-1]) >= th.Window {
				delete(g.fails, a)
			}
		}
		if len(g.fails) >= maxTracked {
			g.fmu.Unlock()
			return
		}
	}
	recent = append(recent, now)
	n := len(recent)
	if n >= th.MaxFailures {
		delete(g.fails, client)
	} else {
		g.fails[client] = recent
	}
	g.fmu.Unlock()
	if n < th.MaxFailures {
		return
	}
	g.ban(client, n, th.Window, th.Ban)
}

// ban puts client's ban into the kernel and the gateway's own list.
func (g *Gateway) ban(client netip.Addr, failures int, window, d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), banTimeout)
	defer cancel()
	g.mu.Lock()
	g.bans[client] = g.now().Add(d)
	var err error
	if b, ok := g.tbl.(nft.Banner); ok {
		err = b.AddBans(ctx, nft.Ban{Addr: client, Timeout: d})
	}
	g.mu.Unlock()
	g.m.Bans.Inc()
	attrs := []any{"client", client.String(), "failures", failures, "window", window.String(), "ban", d.String()}
	if err != nil {
		// Admit still refuses the address; the next rebuild (the
		// reconcile task's, if the table is gone) adds the element.
		g.log.Error("client banned, but the kernel refused the ban element", append(attrs, "err", err)...)
		if errors.Is(err, nft.ErrNoTable) {
			g.Trigger()
		}
		return
	}
	g.log.Warn("client banned", attrs...)
}

// bannedLocked reports whether client is banned now. g.mu is held.
func (g *Gateway) bannedLocked(client netip.Addr, now time.Time) bool {
	until, ok := g.bans[client]
	if ok && !now.Before(until) {
		delete(g.bans, client)
		return false
	}
	return ok
}

// ActiveBans is the number of bans in force (ftpsalg_bans_active).
func (g *Gateway) ActiveBans() int {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, until := range g.bans {
		if now.Before(until) {
			n++
		}
	}
	return n
}

// restoreBansLocked makes the kernel and the gateway agree on the bans
// after a rebuild: the gateway's bans go in again with what is left of
// them (the table may have been deleted), and the kernel's (carried over
// from the table the rebuild replaced, possibly by an earlier run of the
// daemon) are learnt. g.mu is held.
func (g *Gateway) restoreBansLocked(ctx context.Context) error {
	if !g.pol.Load().Throttle.Enabled() {
		clear(g.bans)
		return nil
	}
	now := g.now()
	var add []nft.Ban
	for a, until := range g.bans {
		if left := until.Sub(now).Truncate(time.Millisecond); left >= time.Millisecond {
			add = append(add, nft.Ban{Addr: a, Timeout: left})
		} else {
			delete(g.bans, a)
		}
	}
	b, ok := g.tbl.(nft.Banner)
	if !ok {
		return nil
	}
	if err := b.AddBans(ctx, add...); err != nil {
		return err
	}
	have, err := b.Bans(ctx)
	if err != nil {
		return err
	}
	for _, b := range have {
		if _, ok := g.bans[b.Addr]; !ok {
			g.bans[b.Addr] = now.Add(b.Expires)
		}
	}
	return nil
}

// banStatusLocked lists the bans in force for Status. g.mu is held.
func (g *Gateway) banStatusLocked(now time.Time) []status.Ban {
	out := []status.Ban{}
	for a, until := range g.bans {
		if now.Before(until) {
			out = append(out, status.Ban{Client: a, Expires: until})
		}
	}
	return out
}
