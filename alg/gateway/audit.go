package gateway

import (
	"context"
	"crypto/tls"
	"log/slog"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/certs"
	"github.com/ftpsalg/ftpsalg/alg/ftp"
	"github.com/ftpsalg/ftpsalg/alg/tlspeek"
	"github.com/ftpsalg/ftpsalg/metrics"
)

// audit is what auditors ask about a control session. Both transports
// feed it through the same methods, so the lines and their keys are the
// same in both modes (docs/config.md, "Audit log").
type audit struct {
	start      time.Time
	sni        string
	tlsStarted time.Time
	tls        TLSInfo
	user       string
	commands   int
	transfers  int
	opened     int
	used       int
	expired    int
	refusals   int
	pending    []pendingTransfer
	// relayed data connections and their plaintext bytes.
	relayed                int
	relayedUp, relayedDown int64
	// opaque mode: what the handshake selected.
	hsVersion, hsSuite uint16
}

type pendingTransfer struct{ verb, path string }

// TLSInfo is what the audit records of a control connection's TLS. On
// the packet path only the start is known.
type TLSInfo struct {
	SNI      string
	Client   *tls.ConnectionState // the client leg (mitm)
	Upstream *tls.ConnectionState // the upstream leg (mitm)
}

// Observe records the informational decisions of the FTP core (commands,
// replies, TLS changes) in the metrics and the audit: the user, each
// transfer with its final reply, TLS start (packet path) and clearing.
func (s *Session) Observe(d ftp.Decision) {
	m := s.g.m
	switch d.Action {
	case ftp.ActionCommand:
		m.Commands.WithLabelValues(metrics.VerbLabel(d.Verb)).Inc()
		s.mu.Lock()
		s.audit.commands++
		if d.Verb == "USER" {
			s.audit.user = d.Arg
		}
		if ftp.IsTransferVerb(d.Verb) {
			s.audit.pending = append(s.audit.pending, pendingTransfer{verb: d.Verb, path: d.Arg})
		}
		s.mu.Unlock()
		if s.Log.Enabled(context.Background(), slog.LevelDebug) { // no boxing per line otherwise
			s.Log.Debug("command", "verb", d.Verb, "arg", d.Arg)
		}
	case ftp.ActionReply:
		m.Replies.WithLabelValues(metrics.ReplyClassLabel(d.Code)).Inc()
		s.mu.Lock()
		var done *pendingTransfer
		if len(s.audit.pending) > 0 && s.audit.pending[0].verb == d.Verb && d.Code >= 200 {
			t := s.audit.pending[0]
			done = &t
			s.audit.pending = s.audit.pending[1:]
			s.audit.transfers++
		}
		user := s.audit.user
		s.mu.Unlock()
		if d.Code == 530 && (d.Verb == "PASS" || d.Verb == "USER") {
			// A refused login (RFC 959 §4.2: 530 Not logged in): counted
			// towards the client's ban, on both paths alike.
			s.LoginFailed(FailureLogin)
		}
		if done != nil {
			s.Log.Info("transfer", "verb", done.verb, "path", done.path, "code", d.Code, "user", user)
		}
		if s.Log.Enabled(context.Background(), slog.LevelDebug) {
			s.Log.Debug("reply", "code", d.Code, "verb", d.Verb)
		}
	case ftp.ActionTLSStarted:
		if s.Mode == metrics.ModeInspect || s.Mode == metrics.ModeOpaque {
			// The packet path cannot see the handshake: the start is all.
			s.TLSStarted(TLSInfo{})
		}
	case ftp.ActionTLSCleared:
		s.Log.Info("tls cleared", "tls_cleared", s.g.now())
	case ftp.ActionSessionEnd:
		s.Log.Debug("session quit", "code", d.Code)
	}
}

// ExpiringSoon is how close to its expiry an upstream certificate is
// counted (ftpsalg_tls_upstream_cert_expiring_total) and logged as a
// warning: two weeks leave time to renew.
const ExpiringSoon = 14 * 24 * time.Hour

// TLSStarted writes the audit line of a control connection's TLS start;
// in mitm mode it carries the upstream certificate's fingerprint and
// expiry, and an upstream certificate that expires within ExpiringSoon is
// counted and warned about.
func (s *Session) TLSStarted(info TLSInfo) {
	now := s.g.now()
	if u := info.Upstream; u != nil && len(u.PeerCertificates) > 0 {
		crt := u.PeerCertificates[0]
		s.g.m.UpstreamCertExpiry.WithLabelValues(s.Server.Name).Set(float64(crt.NotAfter.Unix()))
		if left := crt.NotAfter.Sub(now); left < ExpiringSoon {
			s.g.m.UpstreamCertExpiring.WithLabelValues(s.Server.Name).Inc()
			s.Log.Warn("upstream certificate expires soon", "upstream_cert_not_after", crt.NotAfter,
				"upstream_cert_sha256", certs.Fingerprint(crt), "left", left.Truncate(time.Minute).String())
		}
	}
	s.mu.Lock()
	s.audit.tlsStarted = now
	s.audit.sni = info.SNI
	s.audit.tls = info
	s.mu.Unlock()
	s.Log.Info("tls started", append([]any{"tls_started", now, "sni", info.SNI}, tlsAttrs(info)...)...)
}

func tlsAttrs(info TLSInfo) []any {
	var out []any
	if c := info.Client; c != nil {
		out = append(out, "client_tls_version", tls.VersionName(c.Version), "client_tls_suite", tls.CipherSuiteName(c.CipherSuite))
	}
	if u := info.Upstream; u != nil {
		out = append(out, "upstream_tls_version", tls.VersionName(u.Version), "upstream_tls_suite", tls.CipherSuiteName(u.CipherSuite),
			"upstream_resumed", u.DidResume)
		if len(u.PeerCertificates) > 0 {
			crt := u.PeerCertificates[0]
			out = append(out, "upstream_cert_sha256", certs.Fingerprint(crt), "upstream_cert_not_after", crt.NotAfter)
		}
	}
	return out
}

// Refused counts, audits and logs one refusal; reason is a bounded label.
func (s *Session) Refused(reason string, attrs ...any) {
	s.g.m.Refusals.WithLabelValues(reason).Inc()
	s.mu.Lock()
	s.audit.refusals++
	s.mu.Unlock()
	s.Log.Warn("refused", append([]any{"reason", reason}, attrs...)...)
}

// RefusedDecision is Refused for a refusal the core decided.
func (s *Session) RefusedDecision(d ftp.Decision) {
	attrs := []any{"direction", d.Dir.String(), "verb", d.Verb}
	if d.Dir == ftp.FromServer {
		attrs = append(attrs, "code", d.Code)
	}
	s.Refused(string(d.Reason), append(attrs, "detail", d.Detail)...)
}

// Relayed records one data connection the relay carried.
func (s *Session) Relayed(up, down int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.audit.relayed++
	s.audit.relayedUp += up
	s.audit.relayedDown += down
}

// User returns the user name the client logged in as (USER's argument).
func (s *Session) User() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.audit.user
}

// endAttrs is the session end line: the same keys in both modes.
func (s *Session) endAttrs(reason string) []any {
	s.mu.Lock()
	a := s.audit
	s.mu.Unlock()
	attrs := []any{"mode", s.Mode, "reason", reason, "duration", s.g.now().Sub(a.start).String(),
		"user", a.user, "sni", a.sni, "commands", a.commands, "transfers", a.transfers,
		"pinholes_opened", a.opened, "pinholes_used", a.used, "pinholes_expired", a.expired,
		"refusals", a.refusals, "tls", !a.tlsStarted.IsZero()}
	if a.relayed > 0 {
		attrs = append(attrs, "data_relayed", a.relayed, "relayed_bytes_to_server", a.relayedUp,
			"relayed_bytes_to_client", a.relayedDown)
	}
	if a.hsVersion != 0 {
		attrs = append(attrs, "tls_version", tlspeek.VersionName(a.hsVersion), "tls_suite", tlspeek.SuiteName(a.hsSuite))
	}
	if !a.tlsStarted.IsZero() {
		attrs = append(attrs, "tls_started", a.tlsStarted)
		attrs = append(attrs, tlsAttrs(a.tls)...)
	}
	return attrs
}
