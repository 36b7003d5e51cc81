package gateway

import (
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/ftp"
	"github.com/ftpsalg/ftpsalg/alg/nat"
	"github.com/ftpsalg/ftpsalg/alg/policy"
	"github.com/ftpsalg/ftpsalg/metrics"
)

// Transport says which path carries a control connection.
type Transport uint8

const (
	// Packet is the NFQUEUE packet path (inspect mode, untranslated).
	Packet Transport = iota + 1
	// Stream is the transparent stream path: mitm servers, and inspect
	// sessions that need translating (published servers, masqueraded
	// clients).
	Stream
)

// Refusal is why a new control connection was not admitted. Reason is a
// bounded metric label.
type Refusal struct {
	Reason string
	// Reply is the FTP reply a stream transport sends before closing,
	// unless Implicit: the client connected to an implicit-TLS port and
	// expects a TLS handshake, not clear text.
	Reply    string
	Implicit bool
}

// Refusal reasons of Admit.
const (
	RefuseNotInPolicy      = "not_in_policy"
	RefuseClientNotAllowed = "client_not_allowed"
	RefuseFlowLimit        = "flow_limit"
	RefuseClientLimit      = "client_limit"
	RefuseHairpin          = "hairpin"
	// RefuseBanned (throttle.go) is a banned client address.
)

// Session is one admitted control connection: its policy, addresses,
// ledger entries, reservations and audit. Transports hold it as an opaque
// handle and report to it; it is safe for concurrent use.
type Session struct {
	g  *Gateway
	id uint64

	// Server is the policy entry the session was admitted under; it keeps
	// it across reloads.
	Server *policy.Server
	Policy *policy.Config
	// Mode is metrics.ModeInspect, metrics.ModeMITM or metrics.ModeOpaque.
	Mode string
	// Client is the client as it connected, Orig the server address it
	// connected to.
	Client, Orig netip.AddrPort
	// Upstream is where the stream path's upstream connection goes: Orig,
	// or the server's own address when Orig is a public address of it.
	Upstream netip.AddrPort
	// Source is the upstream connection's local address when the policy
	// fixes it (a masqueraded client's NAT address); invalid otherwise.
	Source netip.Addr
	// NATPorts is where active translations reserve gateway ports.
	NATPorts nat.Range
	// Log carries the session's identity (session_id, client, server,
	// server_name) on every line.
	Log *slog.Logger

	mu       sync.Mutex
	leg      nat.Leg
	holes    []*hole // committed, not yet known gone, oldest first
	opaque   []*opaqueEntry
	reserved []nat.Reservation
	active   *activeNAT // the last translated active announcement
	audit    audit
	ended    bool
}

// activeNAT is one translated active announcement: the client listens on
// from, the server was told to connect to to.
type activeNAT struct{ from, to netip.AddrPort }

// Admit decides whether a new control connection from client to orig is
// let in on transport t, and returns its session. A refusal is counted
// and logged here; the packet path drops the packet, the stream path
// sends Refusal.Reply and closes.
func (g *Gateway) Admit(t Transport, client, orig netip.AddrPort) (*Session, *Refusal) {
	return g.admit(t, client, orig, netip.AddrPort{})
}

// admit is Admit; followed, when valid, is the served endpoint a
// translation ftpsalg did not make (the operator's dnat) sent the
// connection to orig to (AdmitFollowed).
func (g *Gateway) admit(t Transport, client, orig, followed netip.AddrPort) (*Session, *Refusal) {
	pol := g.pol.Load()
	client = netip.AddrPortFrom(client.Addr().Unmap(), client.Port())
	orig = netip.AddrPortFrom(orig.Addr().Unmap(), orig.Port())
	log := g.log.With("client", client.String(), "server", orig.String())
	lookup := orig
	if followed.IsValid() {
		lookup = followed
	}
	srv, ok := pol.ServerFor(lookup.Addr(), lookup.Port())
	upstream, source, natPorts := orig, netip.Addr{}, nat.DefaultActiveRange
	if followed.IsValid() {
		upstream = followed
	}
	if ok && t == Stream {
		if priv, pub := srv.Private(orig.Addr()); pub {
			upstream = netip.AddrPortFrom(priv, orig.Port())
		}
		if cn, masq := pol.ClientNAT(client.Addr()); masq {
			if a, fam := cn.Address(client.Addr()); fam {
				source, natPorts = a, nat.Range{Min: cn.PortMin, Max: cn.PortMax}
			}
		}
	}
	refuse := func(reason, reply string, attrs ...any) (*Session, *Refusal) {
		g.m.Refusals.WithLabelValues(reason).Inc()
		if t == Stream {
			g.m.MITMConnections.WithLabelValues("refused").Inc()
		}
		log.Warn("connection refused", append([]any{"reason", reason}, attrs...)...)
		return nil, &Refusal{Reason: reason, Reply: reply, Implicit: ok && slices.Contains(srv.ImplicitTLSPorts, upstream.Port())}
	}
	// Inspect-mode servers reach the stream path only when the session
	// needs translating: the packet path cannot resize payloads.
	translated := upstream != orig || source.IsValid()
	switch {
	case !ok,
		t == Packet && srv.Mode != policy.ModeInspect && srv.Mode != policy.ModeOpaque,
		t == Stream && srv.Mode != policy.ModeMITM && !translated:
		return refuse(RefuseNotInPolicy, "421 ftpsalg: this server is not in the gateway's policy.\r\n")
	case g.banned(pol, client.Addr()):
		// The kernel drops a banned client's new control connections;
		// this is for one that was on its way when the ban was added.
		return refuse(RefuseBanned, "421 ftpsalg: too many failed logins from your address; try again later.\r\n",
			"server_name", srv.Name)
	case !srv.ClientAllowed(client.Addr()):
		return refuse(RefuseClientNotAllowed, "421 ftpsalg: this client may not use this server.\r\n", "server_name", srv.Name)
	case t == Stream && upstream.Addr() != orig.Addr() && g.hairpin(client.Addr(), upstream.Addr()):
		// A client on the server's own network reaching it through its
		// published address: the server would answer its data
		// connections directly, past the gateway's translation, and they
		// would fail. Refused with the reason instead (docs/nat.md).
		return refuse(RefuseHairpin, "421 ftpsalg: connect to this server by its own address from its network (hairpin NAT is not supported).\r\n",
			"server_name", srv.Name, "upstream", upstream.String())
	}
	// One count for both transports: max_flows bounds what the gateway
	// holds, whichever path carries it.
	n := g.active.Add(1)
	if n > int64(pol.Limits.MaxFlows) {
		g.active.Add(-1)
		return refuse(RefuseFlowLimit, "421 ftpsalg: too many sessions; try again later.\r\n",
			"server_name", srv.Name, "limit", pol.Limits.MaxFlows)
	}
	for p := g.peak.Load(); n > p && !g.peak.CompareAndSwap(p, n); p = g.peak.Load() {
	}
	// And one client address may not take it all.
	g.mu.Lock()
	if g.perClient[client.Addr()] >= pol.Limits.MaxSessionsPerClient && pol.Limits.MaxSessionsPerClient > 0 {
		g.mu.Unlock()
		g.active.Add(-1)
		return refuse(RefuseClientLimit, "421 ftpsalg: too many sessions from your address; try again later.\r\n",
			"server_name", srv.Name, "limit", pol.Limits.MaxSessionsPerClient)
	}
	g.perClient[client.Addr()]++
	g.mu.Unlock()
	mode := metrics.ModeInspect
	switch srv.Mode {
	case policy.ModeMITM:
		mode = metrics.ModeMITM
	case policy.ModeOpaque:
		mode = metrics.ModeOpaque
	}
	s := &Session{g: g, id: g.nextID.Add(1), Server: srv, Policy: pol, Mode: mode,
		Client: client, Orig: orig, Upstream: upstream, Source: source, NATPorts: natPorts}
	s.Log = log.With("session_id", s.id, "server_name", srv.Name)
	if upstream != orig {
		s.Log = s.Log.With("upstream", upstream.String())
	}
	s.audit.start = g.now()
	g.mu.Lock()
	g.sessions[s] = struct{}{}
	g.mu.Unlock()
	g.m.SessionsActive.WithLabelValues(mode).Inc()
	g.m.SessionsTotal.WithLabelValues(mode).Inc()
	g.m.ServerSessions.WithLabelValues(srv.Name).Inc()
	g.m.FlowsActive.Set(float64(g.active.Load()))
	return s, nil
}

// ID is the session's number, unique for the daemon's life; it is the
// session_id of every log line.
func (s *Session) ID() uint64 { return s.id }

// Implicit reports whether the client connected to an implicit-TLS port.
func (s *Session) Implicit() bool {
	return slices.Contains(s.Server.ImplicitTLSPorts, s.Upstream.Port())
}

// Translated reports whether the stream path translates this session
// (published server or masqueraded client).
func (s *Session) Translated() bool { return s.Upstream != s.Orig || s.Source.IsValid() }

// CoreConfig returns the FTP core's configuration for this session on
// transport t. The core sees the server by the address the bytes really
// travel to (the upstream), and midstream says the packet path joined a
// connection already established (no greeting will be seen).
func (s *Session) CoreConfig(t Transport, midstream bool) ftp.Config {
	return ftp.Config{
		Client: s.Client, Server: s.Upstream,
		PassiveMin: s.Server.PassiveMin, PassiveMax: s.Server.PassiveMax,
		AllowActive: s.Server.ActiveMode, AllowThirdParty: s.Server.ThirdParty,
		MaxLine: s.Policy.Limits.MaxLine,
		// The stream path feeds clear text only: a translated inspect
		// session stops feeding the core when TLS starts (it relays the
		// rest unread).
		TransportDecrypts: t == Stream,
		InjectsReplies:    t == Stream,
		Midstream:         midstream,
	}
}

// MaxLine is the longest control line the session accepts.
func (s *Session) MaxLine() int {
	if s.Policy.Limits.MaxLine > 0 {
		return s.Policy.Limits.MaxLine
	}
	return ftp.DefaultMaxLine
}

// SetLeg records the session's addresses once the stream path's upstream
// connection is up (what translations are computed from).
func (s *Session) SetLeg(l nat.Leg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.leg = l
}

// Leg returns the session's addresses (zero on the packet path).
func (s *Session) Leg() nat.Leg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.leg
}

// Start writes the session's first audit line; midstream says the
// packet path joined a connection already established.
func (s *Session) Start(midstream bool) {
	s.Log.Info("session start", "mode", s.Mode, "implicit_tls", s.Implicit(), "midstream", midstream)
}

// pinholeTimeout is how long the session's pinholes wait for their data
// connection.
func (s *Session) pinholeTimeout() time.Duration { return s.Policy.Pinholes.Timeout }

// banned reports whether client is banned (and not allow-listed).
func (g *Gateway) banned(pol *policy.Config, client netip.Addr) bool {
	if !pol.Throttle.Enabled() || pol.Throttle.Allowed(client) {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.bannedLocked(client, g.now())
}

// hairpin reports whether client and server are on the same network of
// the gateway's (one of its interface prefixes holds both).
func (g *Gateway) hairpin(client, server netip.Addr) bool {
	for _, p := range g.local {
		if p.Contains(client) && p.Contains(server) {
			return true
		}
	}
	return false
}
