package inspect

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/ftp"
	"github.com/ftpsalg/ftpsalg/alg/gateway"
	"github.com/ftpsalg/ftpsalg/conntrack"
	"github.com/ftpsalg/ftpsalg/metrics"
)

// Options configure an Engine.
type Options struct {
	// Gateway admits sessions and owns what they put into the kernel.
	Gateway *gateway.Gateway
	Metrics *metrics.Metrics // nil: the gateway's
	Log     *slog.Logger     // nil: discarded
	Now     func() time.Time // nil: time.Now

	// IdleTimeout evicts control flows that carried no packet for this
	// long (default 1h; servers usually close idle sessions much sooner).
	IdleTimeout time.Duration
	// PollInterval is how often idle flows are looked for (default 500ms).
	PollInterval time.Duration
	// Injector sends the reverse RST when an opaque-mode handshake is
	// refused (reset.go); nil: only the refused packet's receiver is
	// reset, and the sender's later packets are dropped.
	Injector Injector
}

// Verdict is the engine's decision on one packet.
type Verdict struct {
	Accept bool
	// Payload is the whole modified packet (checksums fixed) when the
	// packet was edited; nil when it goes out unchanged.
	Payload []byte
	// Reason names why a packet was dropped (bounded set, for metrics).
	Reason string
}

// Engine is the inspect-mode packet path's brain: it tracks control flows,
// feeds their bytes to the FTP core in stream order, commits pinholes before
// releasing the packets that announce them, and neutralises refused lines.
// Process is called from the queue's goroutine; ConntrackEvent and Run from
// others.
type Engine struct {
	gw    *gateway.Gateway
	m     *metrics.Metrics
	log   *slog.Logger
	now   func() time.Time
	idle  time.Duration
	every time.Duration
	inj   Injector

	mu    sync.Mutex
	flows map[flowKey]*flow
	// decisions is the FTP core's output buffer, reused under mu.
	decisions []ftp.Decision
}

type flowKey struct{ client, server netip.AddrPort }

type flow struct {
	key      flowKey
	gw       *gateway.Session
	sess     *ftp.Session
	dirs     [2]stream
	fin      [2]bool
	lastSeen time.Time

	blocked bool             // a line could not be checked: drop all further data
	ctID    uint32           // conntrack ID, learned from its NEW event
	pending []pendingPinhole // decided but not committed: the line is held
	tls     *tlsFlow         // opaque mode: the handshake seen
}

// pendingPinhole is a pinhole whose commit failed. The packet that carried
// its announcement was dropped; its retransmission retries the commit.
type pendingPinhole struct {
	dir ftp.Direction
	end uint64 // stream offset just past the announcing line
	d   ftp.Decision
}

// New returns an Engine.
func New(o Options) *Engine {
	e := &Engine{gw: o.Gateway, m: o.Metrics, log: o.Log, now: o.Now,
		idle: o.IdleTimeout, every: o.PollInterval, inj: o.Injector, flows: map[flowKey]*flow{}}
	if e.m == nil {
		e.m = o.Gateway.Metrics()
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.idle == 0 {
		e.idle = time.Hour
	}
	if e.every == 0 {
		e.every = 500 * time.Millisecond
	}
	return e
}

// Flows returns the number of tracked control flows.
func (e *Engine) Flows() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.flows)
}

func (e *Engine) refuse(reason string) {
	e.m.Refusals.WithLabelValues(reason).Inc()
}

// Process decides the fate of one queued packet.
func (e *Engine) Process(ctx context.Context, raw []byte) Verdict {
	var pk packet
	p := &pk
	if err := p.parse(raw); err != nil {
		// The queue rule sends only TCP control flows. Whatever cannot be
		// parsed cannot be inspected: fail closed.
		e.m.QueueErrors.WithLabelValues("parse").Inc()
		reason := "unparsable"
		if errors.Is(err, errFragment) {
			reason = "fragment"
		}
		e.refuse(reason)
		e.log.Warn("packet refused", "reason", reason, "err", err)
		return Verdict{Reason: reason}
	}
	now := e.now()
	e.mu.Lock()
	defer e.mu.Unlock()

	f, dir := e.lookup(p)
	if f == nil {
		return e.noFlow(p, now)
	}
	e.m.QueuePackets.WithLabelValues(dir.String()).Inc()
	f.lastSeen = now
	st := &f.dirs[dir]

	if p.Flags&flagSYN != 0 {
		if dir == ftp.FromClient && p.Flags&flagACK == 0 && (!st.synced || st.base != p.Seq+1) {
			// A new connection on the 4-tuple of a flow we still track
			// (its end went unseen): the old state must not be applied
			// to the new sequence space.
			e.endFlow(f, "reused")
			return e.newFlow(p, f.key, now, false)
		}
		// A retransmitted SYN, or the server's SYN-ACK: (re)start that
		// direction unless it already carried data.
		if st.next == 0 || f.dirs[ftp.FromClient].next == 0 {
			st.syncSYN(p.Seq)
		}
		return Verdict{Accept: true}
	}
	if p.Flags&flagRST != 0 {
		e.endFlow(f, "rst")
		return Verdict{Accept: true}
	}

	v := Verdict{Accept: true}
	if len(p.Payload) > 0 {
		v = e.payload(ctx, f, dir, p)
	}
	if v.Accept && p.Flags&flagFIN != 0 {
		f.fin[dir] = true
		if f.fin[0] && f.fin[1] {
			e.endFlow(f, "fin")
		}
	}
	return v
}

func (e *Engine) lookup(p *packet) (*flow, ftp.Direction) {
	if f := e.flows[flowKey{client: p.Src, server: p.Dst}]; f != nil {
		return f, ftp.FromClient
	}
	if f := e.flows[flowKey{client: p.Dst, server: p.Src}]; f != nil {
		return f, ftp.FromServer
	}
	return nil, 0
}

// noFlow handles a packet of a connection the engine does not track.
func (e *Engine) noFlow(p *packet, now time.Time) Verdict {
	if p.Flags&flagSYN != 0 && p.Flags&flagACK == 0 {
		e.m.QueuePackets.WithLabelValues("client").Inc()
		return e.newFlow(p, flowKey{client: p.Src, server: p.Dst}, now, false)
	}
	if len(p.Payload) == 0 || p.Flags&flagRST != 0 {
		// Pure ACKs, FINs and RSTs of flows we do not track (ended, or
		// from before a restart) carry nothing to inspect.
		e.m.QueuePackets.WithLabelValues("other").Inc()
		return Verdict{Accept: true}
	}
	// Data of a connection opened before the daemon started: pick it up
	// midstream. Which end is the server follows from the policy.
	key := flowKey{client: p.Src, server: p.Dst}
	if _, ok := e.gw.Policy().ServerFor(p.Dst.Addr(), p.Dst.Port()); !ok {
		key = flowKey{client: p.Dst, server: p.Src}
	}
	e.m.QueuePackets.WithLabelValues("other").Inc()
	v := e.newFlow(p, key, now, true)
	if !v.Accept {
		return v
	}
	f := e.flows[key]
	dir := ftp.FromClient
	if p.Src == key.server {
		dir = ftp.FromServer
	}
	f.dirs[dir].syncMidstream(p.Seq, p.Payload)
	return v
}

func (e *Engine) newFlow(p *packet, key flowKey, now time.Time, midstream bool) Verdict {
	gs, refused := e.gw.Admit(gateway.Packet, key.client, key.server)
	if refused != nil {
		// Fail closed: the connection does not reach the server.
		return Verdict{Reason: refused.Reason}
	}
	f := &flow{
		key:      key,
		gw:       gs,
		sess:     ftp.NewSession(gs.CoreConfig(gateway.Packet, midstream)),
		lastSeen: now,
	}
	if !midstream {
		f.dirs[ftp.FromClient].syncSYN(p.Seq)
	}
	if gs.Opaque() {
		f.tls = &tlsFlow{}
	}
	if gs.Implicit() {
		f.sess.StartImplicitTLS()
		if f.tls != nil && !midstream {
			f.tls.from = [2]uint64{} // TLS from the first byte both ways
			f.tls.on = true
		}
	}
	e.flows[key] = f
	gs.Start(midstream)
	if f.tls != nil && f.tls.on {
		gs.TLSStarted(gateway.TLSInfo{}) // implicit: from the first byte
	}
	return Verdict{Accept: true}
}

// payload handles a segment carrying data on a tracked flow.
func (e *Engine) payload(ctx context.Context, f *flow, dir ftp.Direction, p *packet) Verdict {
	st := &f.dirs[dir]
	if f.blocked {
		return Verdict{Reason: "flow_blocked"}
	}
	if f.tls != nil && f.tls.openPending {
		// The range could not be committed when the handshake
		// completed: nothing passes until it is.
		if err := f.gw.OpenOpaque(ctx); err != nil {
			return Verdict{Reason: "pinhole_commit"}
		}
		f.tls.openPending = false
	}
	if !st.synced {
		// Flow picked up midstream and no line end seen yet in this
		// direction: the bytes pass unparsed and can open nothing.
		st.syncMidstream(p.Seq, p.Payload)
		return Verdict{Accept: true}
	}
	kind, off := st.classify(p.Seq, len(p.Payload))
	switch kind {
	case segFuture:
		// Bytes after a gap: feeding them would misplace line starts.
		// Drop; the sender retransmits in order.
		e.m.QueueErrors.WithLabelValues("out_of_order").Inc()
		return Verdict{Reason: "out_of_order"}
	case segOld:
		if !e.retryPending(ctx, f, dir, off, len(p.Payload)) {
			return Verdict{Reason: "pinhole_commit"}
		}
		if st.reapply(off, p.Payload) {
			p.fixChecksum()
			return Verdict{Accept: true, Payload: p.Raw}
		}
		return Verdict{Accept: true}
	}
	if !e.retryPending(ctx, f, dir, off, int(st.next-off)) {
		return Verdict{Reason: "pinhole_commit"}
	}
	changed := st.reapply(off, p.Payload)
	fresh := p.Payload[st.next-off:]
	freshAt := f.sess.Offset(dir)
	decisions := f.sess.FeedAppend(e.decisions[:0], dir, fresh)
	e.decisions = decisions
	st.next += uint64(len(fresh))
	if f.tls != nil {
		if v, done := e.handshake(ctx, f, dir, p, fresh, freshAt, decisions); done {
			return v
		}
	}

	accept := true
	for _, d := range decisions {
		switch d.Action {
		case ftp.ActionOpenPinhole:
			if _, err := f.gw.OpenPinhole(ctx, d, false); err != nil {
				f.pending = append(f.pending, pendingPinhole{dir: dir, end: d.Line.End(), d: d})
				accept = false
			}
		case ftp.ActionRefuse:
			f.gw.RefusedDecision(d)
			if d.Reason == ftp.ReasonLineTooLong {
				// The rest of an over-long line is never checked: let
				// nothing more through on this control connection.
				f.blocked = true
				accept = false
				f.gw.Log.Warn("control connection blocked", "reason", string(d.Reason))
				continue
			}
			if len(d.Replacement) == d.Line.Len && len(d.Replacement) > 0 {
				// Same-length neutralisation: the peer sees a line it
				// rejects (a command the server answers 500, a 425 reply).
				if overlay(off, p.Payload, d.Line.Start, d.Replacement) {
					changed = true
				}
				st.remember(d.Line.Start, d.Replacement)
			}
		case ftp.ActionRewrite:
			if len(d.Replacement) != d.Line.Len {
				// Length-changing edits need sequence adjustment, which
				// this path does not do: refuse rather than corrupt.
				f.gw.Refused("rewrite_length", "direction", dir.String(), "verb", d.Verb,
					"detail", "length change not supported on the packet path")
				accept = false
				continue
			}
			if overlay(off, p.Payload, d.Line.Start, d.Replacement) {
				changed = true
			}
			st.remember(d.Line.Start, d.Replacement)
		default:
			f.gw.Observe(d)
		}
	}
	if f.blocked {
		return Verdict{Reason: "flow_blocked"}
	}
	if !accept {
		return Verdict{Reason: "pinhole_commit"}
	}
	if changed {
		p.fixChecksum()
		return Verdict{Accept: true, Payload: p.Raw}
	}
	return Verdict{Accept: true}
}

// retryPending commits pending pinholes whose announcing line ends within
// the n bytes at stream offset off of dir. It returns false if one still
// fails, in which case the packet must be dropped.
func (e *Engine) retryPending(ctx context.Context, f *flow, dir ftp.Direction, off uint64, n int) bool {
	if len(f.pending) == 0 {
		return true
	}
	ok := true
	f.pending = slices.DeleteFunc(f.pending, func(pp pendingPinhole) bool {
		if pp.dir != dir || pp.end <= off || pp.end > off+uint64(n) {
			return false
		}
		if !ok {
			return false
		}
		if _, err := f.gw.OpenPinhole(ctx, pp.d, false); err != nil {
			ok = false
			return false
		}
		return true
	})
	return ok
}

// endFlow forgets f; the gateway removes its pinholes that are still open
// and writes its end line.
func (e *Engine) endFlow(f *flow, reason string) {
	if e.flows[f.key] != f {
		return
	}
	delete(e.flows, f.key)
	if f.tls != nil {
		f.tls.ended(f.gw, reason)
	}
	f.gw.End(reason)
}

// ConntrackEvent follows control connections' conntrack entries: NEW
// tells a flow its conntrack ID, DESTROY of that ID ends the flow. A
// DESTROY whose ID the flow never learned is ignored: it may belong to an
// earlier connection on the same 4-tuple, and FIN, RST and idle eviction
// end flows anyway.
func (e *Engine) ConntrackEvent(ev conntrack.Event) {
	e.m.ConntrackEvent.WithLabelValues(ev.Type.String()).Inc()
	if ev.Proto != 6 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	f := e.flows[flowKey{client: ev.Src, server: ev.Dst}]
	if f == nil {
		return
	}
	switch ev.Type {
	case conntrack.EventNew:
		if f.ctID == 0 {
			f.ctID = ev.ID
		}
	case conntrack.EventDestroy:
		if f.ctID != 0 && f.ctID == ev.ID {
			e.endFlow(f, "conntrack")
		}
	}
}

// Run evicts idle flows until ctx is done.
func (e *Engine) Run(ctx context.Context) error {
	t := time.NewTicker(e.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			e.evictIdle()
		}
	}
}

func (e *Engine) evictIdle() {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	for _, f := range e.flows {
		if now.Sub(f.lastSeen) > e.idle {
			e.endFlow(f, "idle")
		}
	}
}
