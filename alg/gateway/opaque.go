package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/tlspeek"
	"github.com/ftpsalg/ftpsalg/nft"
)

// OpaqueTable is what opaque mode needs of the table (nft.Kernel and
// nft.Fake have it).
type OpaqueTable interface {
	AddOpaque(ctx context.Context, o ...nft.Opaque) error
	DeleteOpaque(ctx context.Context, o ...nft.Opaque) error
}

// OpaqueTimeout is the lifetime of an opaque session's kernel elements.
// The ledger's task refreshes them while the session lives, once a third
// of it has passed (one small transaction per session every 10 s), so a
// daemon that dies leaves them open for at most this long.
const OpaqueTimeout = 30 * time.Second

// opaqueEntry is an opaque element in the ledger: unlike a pinhole it is
// not used up by a connection; its owner holds it until the session ends.
type opaqueEntry struct {
	s        *Session
	o        nft.Opaque // Timeout: OpaqueTimeout
	mode     string     // passive or active
	deadline time.Time  // when the kernel drops it unless refreshed
}

func (e *opaqueEntry) attrs() []any {
	return []any{"data_mode", e.mode, "src", e.o.Src.String(), "dst", e.o.Dst.String(),
		"ports", fmt.Sprintf("%d-%d", e.o.PortMin, e.o.PortMax)}
}

// ErrNoOpaqueTable reports a table that cannot hold opaque elements.
var ErrNoOpaqueTable = errors.New("the table does not support opaque elements")

// Opaque reports whether the session's server is in opaque mode.
func (s *Session) Opaque() bool { return s.Server.Opaque != nil }

// OpenOpaque admits the session's data connections while its TLS control
// connection lives: the client's to the server's passive range and, when
// the policy has opaque.active_ports, the server's to the client's
// address in that range. One element each, owned by the session under the
// ledger's lock like a pinhole: refreshed by the ledger's task, restored
// after a rebuild, deleted when the session ends. A second call is a
// no-op.
func (s *Session) OpenOpaque(ctx context.Context) error {
	g := s.g
	ot, ok := g.tbl.(OpaqueTable)
	if !ok || s.Server.Opaque == nil {
		return ErrNoOpaqueTable
	}
	s.mu.Lock()
	done := len(s.opaque) > 0 || s.ended
	s.mu.Unlock()
	if done {
		return nil
	}
	client, server := s.Client.Addr(), s.Upstream.Addr()
	entries := []*opaqueEntry{{s: s, mode: "passive", o: nft.Opaque{Src: client, Dst: server,
		PortMin: s.Server.PassiveMin, PortMax: s.Server.PassiveMax, Timeout: OpaqueTimeout}}}
	if op := s.Server.Opaque; op.ActiveMin != 0 {
		entries = append(entries, &opaqueEntry{s: s, mode: "active", o: nft.Opaque{Src: server, Dst: client,
			PortMin: op.ActiveMin, PortMax: op.ActiveMax, Timeout: OpaqueTimeout}})
	}
	els := make([]nft.Opaque, len(entries))
	for i, e := range entries {
		els[i] = e.o
	}
	start := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	err := ot.AddOpaque(ctx, els...)
	if errors.Is(err, nft.ErrNoTable) && g.applied {
		s.Log.Warn("nftables table missing at an opaque commit; rebuilding it")
		if rerr := g.rebuildLocked(ctx, "missing at commit"); rerr == nil {
			err = ot.AddOpaque(ctx, els...)
		}
	}
	g.m.PinholeCommit.Observe(time.Since(start).Seconds())
	if err != nil {
		g.m.PinholeErrors.Inc()
		s.Log.Error("opaque commit failed", "err", err)
		return err
	}
	now := g.now()
	for _, e := range entries {
		e.deadline = now.Add(OpaqueTimeout)
		k := e.o.Key()
		if prev := g.opaque[k]; prev != nil {
			// Another live session of the same client to the same
			// server: the element is this session's now.
			prev.s.dropOpaque(prev)
		}
		g.opaque[k] = e
	}
	s.mu.Lock()
	if s.ended {
		// The session ended while its elements were committed: nobody
		// would settle them, so they go now.
		s.mu.Unlock()
		g.settleOpaqueLocked(ctx, entries)
		return nil
	}
	s.opaque = entries
	s.mu.Unlock()
	g.m.OpaqueOpened.Inc()
	g.m.OpaqueActive.Inc()
	for _, e := range entries {
		s.Log.Info("opaque range opened", append(e.attrs(), "timeout", OpaqueTimeout.String())...)
	}
	return nil
}

func (s *Session) dropOpaque(e *opaqueEntry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, x := range s.opaque {
		if x == e {
			s.opaque = append(s.opaque[:i:i], s.opaque[i+1:]...)
			return
		}
	}
}

// refreshOpaque re-adds, in one transaction, the opaque elements whose
// deadline is less than two thirds of OpaqueTimeout away. Called by the
// ledger's task at every poll; most polls find nothing due and cost
// nothing.
func (g *Gateway) refreshOpaque(ctx context.Context) {
	ot, ok := g.tbl.(OpaqueTable)
	if !ok {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	var due []*opaqueEntry
	for _, e := range g.opaque {
		if e.deadline.Sub(now) < 2*OpaqueTimeout/3 {
			due = append(due, e)
		}
	}
	if len(due) == 0 {
		return
	}
	els := make([]nft.Opaque, len(due))
	for i, e := range due {
		els[i] = e.o
	}
	if err := ot.AddOpaque(ctx, els...); err != nil {
		if errors.Is(err, nft.ErrNoTable) {
			g.Trigger()
		} else if ctx.Err() == nil {
			g.m.PinholeErrors.Inc()
			g.log.Warn("failed to refresh opaque ranges", "err", err, "count", len(els))
		}
		return
	}
	g.m.OpaqueRefreshes.Inc()
	for _, e := range due {
		e.deadline = now.Add(OpaqueTimeout)
	}
}

// restoreOpaqueLocked commits the live opaque elements again after a
// rebuild, each with its full timeout (its session is alive). g.mu held.
func (g *Gateway) restoreOpaqueLocked(ctx context.Context) (int, error) {
	ot, ok := g.tbl.(OpaqueTable)
	if !ok || len(g.opaque) == 0 {
		return 0, nil
	}
	now := g.now()
	els := make([]nft.Opaque, 0, len(g.opaque))
	for _, e := range g.opaque {
		els = append(els, e.o)
		e.deadline = now.Add(OpaqueTimeout)
	}
	if err := ot.AddOpaque(ctx, els...); err != nil {
		return 0, fmt.Errorf("failed to restore %d opaque ranges after the rebuild: %w", len(els), err)
	}
	return len(els), nil
}

// settleOpaqueLocked deletes the ended sessions' opaque elements they
// still own. g.mu held.
func (g *Gateway) settleOpaqueLocked(ctx context.Context, es []*opaqueEntry) {
	var del []nft.Opaque
	for _, e := range es {
		k := e.o.Key()
		if g.opaque[k] != e {
			continue // another session of the client holds it now
		}
		delete(g.opaque, k)
		del = append(del, e.o)
		e.s.Log.Info("opaque range closed", e.attrs()...)
	}
	if len(del) == 0 {
		return
	}
	if ot, ok := g.tbl.(OpaqueTable); ok {
		if err := ot.DeleteOpaque(ctx, del...); err != nil && !errors.Is(err, nft.ErrNoTable) {
			g.m.PinholeErrors.Inc()
			g.log.Warn("failed to remove opaque ranges; they expire on their own", "err", err, "count", len(del),
				"within", OpaqueTimeout.String())
		}
	}
}

// JudgeClientHello applies the server's TLS policy (opaque mode) to a
// ClientHello. A refusal is counted, audited and logged; the caller resets
// the connection.
func (s *Session) JudgeClientHello(ch *tlspeek.ClientHello) bool {
	s.mu.Lock()
	s.audit.sni = ch.SNI
	s.mu.Unlock()
	if s.Server.Opaque == nil {
		return true
	}
	if r, detail := tlspeek.CheckClientHello(ch, s.Server.Opaque.MinVersion); r != "" {
		s.tlsRefused(r, detail, "sni", ch.SNI)
		return false
	}
	return true
}

// JudgeServerHello applies the server's TLS policy to a ServerHello, like
// JudgeClientHello.
func (s *Session) JudgeServerHello(sh *tlspeek.ServerHello) bool {
	if s.Server.Opaque == nil {
		return true
	}
	if r, detail := tlspeek.CheckServerHello(sh, s.Server.Opaque.MinVersion); r != "" {
		s.tlsRefused(r, detail, "tls_version", tlspeek.VersionName(sh.Version), "tls_suite", tlspeek.SuiteName(sh.Suite))
		return false
	}
	return true
}

func (s *Session) tlsRefused(reason, detail string, attrs ...any) {
	s.g.m.OpaqueRefusals.WithLabelValues(reason).Inc()
	s.g.m.OpaqueHandshakes.WithLabelValues("refused").Inc()
	s.Refused(reason, append([]any{"detail", detail, "action", "reset"}, attrs...)...)
}

// Handshake is what the packet path saw of a TLS handshake.
type Handshake struct {
	Client        *tlspeek.ClientHello
	Server        *tlspeek.ServerHello
	CertRequested bool // TLS 1.2 CertificateRequest seen
	Started       time.Time
}

// TLSHandshake writes the audit line of a completed handshake (opaque
// mode): one line per handshake, keys in docs/opaque.md.
func (s *Session) TLSHandshake(h Handshake) {
	now := s.g.now()
	s.g.m.OpaqueHandshakes.WithLabelValues("ok").Inc()
	attrs := []any{"tls_handshake", now, "handshake_duration", now.Sub(h.Started).String()}
	if c := h.Client; c != nil {
		offered := make([]string, 0, len(c.Versions))
		for _, v := range c.Versions {
			offered = append(offered, tlspeek.VersionName(v))
		}
		attrs = append(attrs, "sni", c.SNI, "offered_versions", offered, "alpn_offered", c.ALPN)
		s.mu.Lock()
		s.audit.sni = c.SNI
		s.mu.Unlock()
	}
	if sh := h.Server; sh != nil {
		cert := "no"
		switch {
		case h.CertRequested:
			cert = "yes"
		case sh.Version >= tlspeek.VersionTLS13:
			cert = "unknown (encrypted in TLS 1.3)"
		}
		alpn := sh.ALPN
		if sh.Version >= tlspeek.VersionTLS13 {
			alpn = "(encrypted in TLS 1.3)"
		}
		attrs = append(attrs, "tls_version", tlspeek.VersionName(sh.Version), "tls_suite", tlspeek.SuiteName(sh.Suite),
			"alpn", alpn, "resumed", sh.Resumed(h.Client), "client_cert_requested", cert)
		s.mu.Lock()
		s.audit.hsVersion, s.audit.hsSuite = sh.Version, sh.Suite
		s.mu.Unlock()
	}
	s.Log.Info("tls handshake", attrs...)
}

// TLSHandshakeFailed writes the audit line of a handshake that did not
// complete (result: alert, closed or malformed) and counts it.
func (s *Session) TLSHandshakeFailed(result, detail string, attrs ...any) {
	s.g.m.OpaqueHandshakes.WithLabelValues(result).Inc()
	s.Log.Warn("tls handshake failed", append([]any{"result", result, "detail", detail}, attrs...)...)
	// Where the gateway cannot read the login, a failed handshake is
	// what it can count against the client (policy throttle).
	s.LoginFailed(FailureHandshake)
}
