package inspect

import (
	"context"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/ftp"
	"github.com/ftpsalg/ftpsalg/alg/gateway"
	"github.com/ftpsalg/ftpsalg/alg/tlspeek"
)

// tlsFlow is what opaque mode follows of a control connection's TLS: the
// handshake in clear text (alg/tlspeek), judged by the server's TLS
// policy; when it completes the session's data ranges are opened.
type tlsFlow struct {
	on          bool      // TLS started (234 to AUTH TLS, or an implicit port)
	from        [2]uint64 // stream offset where TLS starts, per direction
	hs          tlspeek.Handshake
	events      []tlspeek.Event // reused
	started     time.Time       // the ClientHello
	certReq     bool
	failed      bool // a failure or refusal was logged already
	openPending bool // the handshake completed, the range is not committed yet
}

// ended logs a handshake that the connection's end interrupted.
func (t *tlsFlow) ended(gs *gateway.Session, reason string) {
	if t.on && !t.failed && !t.hs.Complete() && t.hs.Client() != nil {
		t.failed = true
		gs.TLSHandshakeFailed("closed", "the connection ended before the handshake completed", "end", reason)
	}
}

// handshake feeds the TLS bytes of fresh (the new bytes of dir at stream
// offset at) to the handshake parser and acts on what it shows. done
// means the packet's verdict is v.
func (e *Engine) handshake(ctx context.Context, f *flow, dir ftp.Direction, p *packet, fresh []byte, at uint64, ds []ftp.Decision) (v Verdict, done bool) {
	t := f.tls
	if !t.on {
		for _, d := range ds {
			if d.Action == ftp.ActionTLSStarted {
				// The server's TLS starts right after its 234 line, the
				// client's after all it has sent (it waits for the 234).
				t.on = true
				t.from[ftp.FromServer] = d.Line.End()
				t.from[ftp.FromClient] = f.sess.Offset(ftp.FromClient)
			}
		}
		if !t.on {
			return Verdict{}, false
		}
	}
	if t.hs.Done() {
		return Verdict{}, false
	}
	end := at + uint64(len(fresh))
	if end <= t.from[dir] {
		return Verdict{}, false
	}
	b := fresh
	if t.from[dir] > at {
		b = fresh[t.from[dir]-at:]
	}
	td := tlspeek.FromClient
	if dir == ftp.FromServer {
		td = tlspeek.FromServer
	}
	t.events = t.hs.Feed(t.events[:0], td, b)
	gs := f.gw
	for _, ev := range t.events {
		switch ev.Kind {
		case tlspeek.EventClientHello:
			if t.started.IsZero() {
				t.started = e.now()
			}
			if !gs.JudgeClientHello(ev.Client) {
				return e.reset(f, p), true
			}
		case tlspeek.EventServerHello:
			if !gs.JudgeServerHello(ev.Server) {
				return e.reset(f, p), true
			}
		case tlspeek.EventCertificateRequest:
			t.certReq = true
		case tlspeek.EventAlert:
			if !t.failed {
				t.failed = true
				attrs := []any{"from", dir.String(), "encrypted", ev.Encrypted}
				if !ev.Encrypted {
					attrs = append(attrs, "alert_level", ev.Level, "alert_description", ev.Description)
				}
				gs.TLSHandshakeFailed("alert", "an alert before the handshake completed", attrs...)
			}
		case tlspeek.EventMalformed:
			if !t.failed {
				t.failed = true
				gs.TLSHandshakeFailed("malformed", ev.Err.Error(), "from", dir.String())
			}
		case tlspeek.EventComplete:
			gs.TLSHandshake(gateway.Handshake{Client: t.hs.Client(), Server: t.hs.Server(),
				CertRequested: t.certReq, Started: t.started})
			if err := gs.OpenOpaque(ctx); err != nil {
				// Hold the packet: its retransmission retries.
				t.openPending = true
				return Verdict{Reason: "pinhole_commit"}, true
			}
		}
	}
	return Verdict{}, false
}

// reset refuses the flow: p becomes a RST to its receiver, its sender gets
// one through the injector, and the flow drops everything until it ends.
func (e *Engine) reset(f *flow, p *packet) Verdict {
	f.blocked = true
	f.tls.failed = true
	if e.inj != nil {
		if err := e.inj.Inject(p.reverseRST()); err != nil {
			f.gw.Log.Warn("failed to reset the sender of a refused handshake; its packets are dropped", "err", err)
		}
	}
	f.gw.End("tls_refused")
	return Verdict{Accept: true, Payload: p.toRST(), Reason: "tls_refused"}
}
