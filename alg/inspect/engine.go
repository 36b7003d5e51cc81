package inspect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/ftp"
	"github.com/ftpsalg/ftpsalg/alg/policy"
	"github.com/ftpsalg/ftpsalg/conntrack"
	"github.com/ftpsalg/ftpsalg/metrics"
	"github.com/ftpsalg/ftpsalg/nft"
)

// Table is the part of the nft package the packet path needs.
type Table interface {
	AddPinholes(ctx context.Context, p ...nft.Pinhole) error
	DeletePinholes(ctx context.Context, p ...nft.Pinhole) error
	Pinholes(ctx context.Context) ([]nft.Element, error)
}

// Options configure an Engine.
type Options struct {
	Policy  *policy.Config
	Table   Table
	Metrics *metrics.Metrics // nil: discarded
	Log     *slog.Logger     // nil: discarded
	Now     func() time.Time // nil: time.Now

	// IdleTimeout evicts control flows that carried no packet for this
	// long (default 1h; servers usually close idle sessions much sooner).
	IdleTimeout time.Duration
	// PollInterval is how often pinholes are compared with the kernel's
	// set to count them used or expired (default 500ms).
	PollInterval time.Duration

	// Rebuild recreates the kernel table from the current policy. It is
	// called when the table turns out to be missing (someone flushed the
	// ruleset); nil disables self-repair.
	Rebuild func(ctx context.Context) error
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
	pol     *policy.Config
	tbl     Table
	m       *metrics.Metrics
	log     *slog.Logger
	now     func() time.Time
	idle    time.Duration
	every   time.Duration
	rebuild func(ctx context.Context) error

	mu       sync.Mutex
	flows    map[flowKey]*flow
	pinholes map[pinholeKey]*pinholeRec
	cleanup  chan []retired
}

// retired is a pinhole whose session no longer wants it: the cleanup task
// checks the kernel set to tell used or expired ones from those it removes.
type retired struct {
	key pinholeKey
	rec *pinholeRec
}

type flowKey struct{ client, server netip.AddrPort }

type pinholeKey struct {
	src, dst netip.Addr
	port     uint16
}

type pinholeRec struct {
	flow     *flow
	mode     ftp.DataMode
	opened   time.Time
	deadline time.Time
}

type flow struct {
	key      flowKey
	server   *policy.Server
	sess     *ftp.Session
	dirs     [2]stream
	fin      [2]bool
	started  time.Time
	lastSeen time.Time
	log      *slog.Logger

	blocked  bool             // a line could not be checked: drop all further data
	ctID     uint32           // conntrack ID, learned from its NEW event
	pinholes []pinholeKey     // opened in the kernel, not yet known gone
	pending  []pendingPinhole // decided but not committed: the line is held
	stats    struct{ cmds, pinholes, refusals int }
}

// pendingPinhole is a pinhole whose commit failed. The packet that carried
// its announcement was dropped; its retransmission retries the commit.
type pendingPinhole struct {
	dir  ftp.Direction
	end  uint64 // stream offset just past the announcing line
	hole nft.Pinhole
	mode ftp.DataMode
}

// maxPinholesPerFlow bounds what one control session can hold open; the
// oldest is closed first. A client needs one data connection at a time.
const maxPinholesPerFlow = 16

// New returns an Engine.
func New(o Options) *Engine {
	e := &Engine{pol: o.Policy, tbl: o.Table, m: o.Metrics, log: o.Log, now: o.Now,
		idle: o.IdleTimeout, every: o.PollInterval, rebuild: o.Rebuild,
		flows: map[flowKey]*flow{}, pinholes: map[pinholeKey]*pinholeRec{},
		cleanup: make(chan []retired, 1024)}
	if e.m == nil {
		e.m = metrics.NewDiscard()
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
	p, err := parsePacket(raw)
	if err != nil {
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
	if _, ok := e.pol.ServerFor(p.Dst.Addr(), p.Dst.Port()); !ok {
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
	log := e.log.With("client", key.client.String(), "server", key.server.String())
	srv, ok := e.pol.ServerFor(key.server.Addr(), key.server.Port())
	if !ok || srv.Mode != policy.ModeInspect {
		e.refuse("not_in_policy")
		log.Warn("connection refused", "reason", "not_in_policy")
		return Verdict{Reason: "not_in_policy"}
	}
	if !srv.ClientAllowed(key.client.Addr()) {
		e.refuse("client_not_allowed")
		log.Warn("connection refused", "reason", "client_not_allowed", "server_name", srv.Name)
		return Verdict{Reason: "client_not_allowed"}
	}
	if len(e.flows) >= e.pol.Limits.MaxFlows {
		e.refuse("flow_limit")
		log.Warn("connection refused", "reason", "flow_limit", "limit", e.pol.Limits.MaxFlows)
		return Verdict{Reason: "flow_limit"}
	}
	f := &flow{
		key:    key,
		server: srv,
		sess: ftp.NewSession(ftp.Config{
			Client: key.client, Server: key.server,
			PassiveMin: srv.PassiveMin, PassiveMax: srv.PassiveMax,
			AllowActive: srv.ActiveMode, AllowThirdParty: srv.ThirdParty,
			MaxLine: e.pol.Limits.MaxLine,
		}),
		started:  now,
		lastSeen: now,
		log:      log.With("server_name", srv.Name),
	}
	if !midstream {
		f.dirs[ftp.FromClient].syncSYN(p.Seq)
	}
	if slices.Contains(srv.ImplicitTLSPorts, key.server.Port()) {
		f.sess.StartImplicitTLS()
	}
	e.flows[key] = f
	e.m.SessionsActive.WithLabelValues(metrics.ModeInspect).Inc()
	e.m.SessionsTotal.WithLabelValues(metrics.ModeInspect).Inc()
	e.m.FlowsActive.Set(float64(len(e.flows)))
	f.log.Info("session start", "mode", metrics.ModeInspect, "midstream", midstream)
	return Verdict{Accept: true}
}

// payload handles a segment carrying data on a tracked flow.
func (e *Engine) payload(ctx context.Context, f *flow, dir ftp.Direction, p *packet) Verdict {
	st := &f.dirs[dir]
	if f.blocked {
		return Verdict{Reason: "flow_blocked"}
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
	decisions := f.sess.Feed(dir, fresh)
	st.next += uint64(len(fresh))

	accept := true
	for _, d := range decisions {
		switch d.Action {
		case ftp.ActionCommand:
			f.stats.cmds++
			e.m.Commands.WithLabelValues(metrics.VerbLabel(d.Verb)).Inc()
			f.log.Debug("command", "verb", d.Verb, "arg", d.Arg)
		case ftp.ActionReply:
			e.m.Replies.WithLabelValues(metrics.ReplyClassLabel(d.Code)).Inc()
			f.log.Debug("reply", "code", d.Code, "verb", d.Verb)
		case ftp.ActionOpenPinhole:
			if !e.openPinhole(ctx, f, d) {
				f.pending = append(f.pending, pendingPinhole{dir: dir, end: d.Line.End(),
					hole: e.nftPinhole(d.Pinhole), mode: d.Pinhole.Mode})
				accept = false
			}
		case ftp.ActionRefuse:
			f.stats.refusals++
			e.refuse(string(d.Reason))
			f.log.Warn("refused", "direction", dir.String(), "verb", d.Verb, "code", d.Code,
				"reason", string(d.Reason), "detail", d.Detail)
			if d.Reason == ftp.ReasonLineTooLong {
				// The rest of an over-long line is never checked: let
				// nothing more through on this control connection.
				f.blocked = true
				accept = false
				f.log.Warn("control connection blocked", "reason", string(d.Reason))
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
				e.refuse("rewrite_length")
				f.log.Error("rewrite refused", "reason", "length change not supported on the packet path")
				accept = false
				continue
			}
			if overlay(off, p.Payload, d.Line.Start, d.Replacement) {
				changed = true
			}
			st.remember(d.Line.Start, d.Replacement)
		case ftp.ActionTLSStarted:
			f.log.Info("tls started", "direction", dir.String())
		case ftp.ActionTLSCleared:
			f.log.Info("tls cleared", "direction", dir.String())
		case ftp.ActionSessionEnd:
			f.log.Debug("session quit")
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

func (e *Engine) nftPinhole(ph ftp.Pinhole) nft.Pinhole {
	return nft.Pinhole{Src: ph.Src, Dst: ph.Dst, DstPort: ph.DstPort, Timeout: e.pol.Pinholes.Timeout}
}

// openPinhole commits a pinhole to the kernel. It returns false if the
// commit failed: the caller must not release the announcement.
func (e *Engine) openPinhole(ctx context.Context, f *flow, d ftp.Decision) bool {
	h := e.nftPinhole(d.Pinhole)
	start := time.Now()
	err := e.tbl.AddPinholes(ctx, h)
	if errors.Is(err, nft.ErrNoTable) && e.rebuild != nil {
		f.log.Warn("nftables table missing; rebuilding it")
		if rerr := e.repairLocked(ctx); rerr == nil {
			err = e.tbl.AddPinholes(ctx, h)
		}
	}
	e.m.PinholeCommit.Observe(time.Since(start).Seconds())
	if err != nil {
		e.m.PinholeErrors.Inc()
		f.log.Error("pinhole commit failed", "err", err, "src", h.Src.String(),
			"dst", h.Dst.String(), "port", h.DstPort)
		return false
	}
	e.track(f, h, d.Pinhole.Mode)
	return true
}

func (e *Engine) track(f *flow, h nft.Pinhole, mode ftp.DataMode) {
	k := pinholeKey{src: h.Src, dst: h.Dst, port: h.DstPort}
	if old, ok := e.pinholes[k]; ok && old.flow != f {
		old.flow.pinholes = slices.DeleteFunc(old.flow.pinholes, func(x pinholeKey) bool { return x == k })
	}
	now := e.now()
	e.pinholes[k] = &pinholeRec{flow: f, mode: mode, opened: now, deadline: now.Add(h.Timeout)}
	if !slices.Contains(f.pinholes, k) {
		f.pinholes = append(f.pinholes, k)
	}
	if len(f.pinholes) > maxPinholesPerFlow {
		e.retire(f, f.pinholes[0])
	}
	f.stats.pinholes++
	e.m.PinholesOpened.WithLabelValues(mode.String()).Inc()
	f.log.Info("pinhole opened", "data_mode", mode.String(), "src", h.Src.String(),
		"dst", h.Dst.String(), "port", h.DstPort, "timeout", h.Timeout.String())
}

// retire forgets a pinhole of f and queues its removal from the kernel.
func (e *Engine) retire(f *flow, k pinholeKey) {
	f.pinholes = slices.DeleteFunc(f.pinholes, func(x pinholeKey) bool { return x == k })
	r, ok := e.pinholes[k]
	if !ok {
		return
	}
	delete(e.pinholes, k)
	e.queueCleanup([]retired{{key: k, rec: r}})
}

func (e *Engine) queueCleanup(rs []retired) {
	select {
	case e.cleanup <- rs:
	default:
		// The kernel expires them within the pinhole timeout anyway.
		e.m.PinholeErrors.Inc()
		e.log.Warn("pinhole cleanup queue full; leaving pinholes to expire", "count", len(rs))
	}
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
		start := time.Now()
		err := e.tbl.AddPinholes(ctx, pp.hole)
		e.m.PinholeCommit.Observe(time.Since(start).Seconds())
		if err != nil {
			e.m.PinholeErrors.Inc()
			f.log.Error("pinhole commit failed again", "err", err)
			ok = false
			return false
		}
		e.track(f, pp.hole, pp.mode)
		return true
	})
	return ok
}

// endFlow forgets f and removes its pinholes that are still open.
func (e *Engine) endFlow(f *flow, reason string) {
	if e.flows[f.key] != f {
		return
	}
	delete(e.flows, f.key)
	var rs []retired
	for _, k := range f.pinholes {
		if r, ok := e.pinholes[k]; ok {
			delete(e.pinholes, k)
			rs = append(rs, retired{key: k, rec: r})
		}
	}
	f.pinholes = nil
	if len(rs) > 0 {
		e.queueCleanup(rs)
	}
	e.m.SessionsActive.WithLabelValues(metrics.ModeInspect).Dec()
	e.m.FlowsActive.Set(float64(len(e.flows)))
	e.m.FlowEvictions.WithLabelValues(reason).Inc()
	f.log.Info("session end", "reason", reason, "duration", e.now().Sub(f.started).String(),
		"commands", f.stats.cmds, "pinholes", f.stats.pinholes, "refusals", f.stats.refusals)
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

// Run removes the pinholes of ended sessions, counts pinholes used or
// expired, and evicts idle flows, until ctx is done.
func (e *Engine) Run(ctx context.Context) error {
	t := time.NewTicker(e.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case rs := <-e.cleanup:
			// Settle everything queued so far with one listing: at
			// hundreds of sessions per second, one per session costs.
			for more := true; more && len(rs) < 4096; {
				select {
				case next := <-e.cleanup:
					rs = append(rs, next...)
				default:
					more = false
				}
			}
			e.settle(ctx, rs)
		case <-t.C:
			e.poll(ctx)
		}
	}
}

// settle removes retired pinholes that are still in the kernel and counts
// the others as used or expired. It holds the engine's lock so that a
// pinhole with the same key, opened again by a newer session in between, is
// neither deleted nor miscounted.
func (e *Engine) settle(ctx context.Context, rs []retired) {
	live := map[pinholeKey]bool{}
	els, err := e.tbl.Pinholes(ctx)
	if err != nil {
		// Unknown: try to delete them all (missing ones are no error).
		for _, r := range rs {
			live[r.key] = true
		}
	}
	for _, el := range els {
		live[pinholeKey{src: el.Src, dst: el.Dst, port: el.DstPort}] = true
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	var del []nft.Pinhole
	for _, r := range rs {
		if _, reopened := e.pinholes[r.key]; reopened {
			// A newer session announced the same port to the same
			// client: the kernel element is now that session's.
			e.m.PinholesRemoved.Inc()
			continue
		}
		if live[r.key] {
			del = append(del, nft.Pinhole{Src: r.key.src, Dst: r.key.dst, DstPort: r.key.port})
			e.m.PinholesRemoved.Inc()
			r.rec.flow.log.Info("pinhole removed", r.key.attrs(r.rec.mode)...)
			continue
		}
		e.gone(r.key, r.rec, now)
	}
	if len(del) == 0 {
		return
	}
	if err := e.tbl.DeletePinholes(ctx, del...); err != nil && ctx.Err() == nil {
		e.m.PinholeErrors.Inc()
		e.log.Warn("failed to remove pinholes; they expire on their own", "err", err, "count", len(del))
	}
}

// gone counts a pinhole that left the kernel set: before its deadline a
// data connection consumed it, after it it expired.
func (e *Engine) gone(k pinholeKey, r *pinholeRec, now time.Time) {
	if now.Before(r.deadline) {
		e.m.PinholesUsed.Inc()
		r.flow.log.Info("pinhole used", k.attrs(r.mode)...)
	} else {
		e.m.PinholesExpired.Inc()
		r.flow.log.Info("pinhole expired", k.attrs(r.mode)...)
	}
}

func (k pinholeKey) attrs(mode ftp.DataMode) []any {
	return []any{"data_mode", mode.String(), "src", k.src.String(), "dst", k.dst.String(), "port", k.port}
}

// poll compares tracked pinholes with the kernel set: one that vanished
// before its deadline was consumed by a data connection; after it, expired.
func (e *Engine) poll(ctx context.Context) {
	e.mu.Lock()
	n := len(e.pinholes)
	e.mu.Unlock()
	if n > 0 {
		listed := e.now()
		els, err := e.tbl.Pinholes(ctx)
		if err != nil {
			if ctx.Err() == nil {
				e.log.Warn("failed to list pinholes", "err", err)
			}
			return
		}
		live := make(map[pinholeKey]bool, len(els))
		for _, el := range els {
			live[pinholeKey{src: el.Src, dst: el.Dst, port: el.DstPort}] = true
		}
		now := e.now()
		e.mu.Lock()
		for k, r := range e.pinholes {
			if live[k] || r.opened.After(listed) {
				continue
			}
			delete(e.pinholes, k)
			r.flow.pinholes = slices.DeleteFunc(r.flow.pinholes, func(x pinholeKey) bool { return x == k })
			e.gone(k, r, now)
		}
		e.mu.Unlock()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	for _, f := range e.flows {
		if now.Sub(f.lastSeen) > e.idle {
			e.endFlow(f, "idle")
		}
	}
}

// SetPolicy switches to a new policy. rebuild recreates the kernel table
// (which empties the pinhole sets); the pinholes of live sessions are then
// committed again, so a reload does not break transfers in progress.
// Existing flows keep the server settings they started with.
func (e *Engine) SetPolicy(ctx context.Context, p *policy.Config, rebuild func() error) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := rebuild(); err != nil {
		return err
	}
	e.pol = p
	return e.restoreLocked(ctx)
}

// Repair rebuilds the kernel table if it is missing, restoring live
// pinholes. It reports whether a rebuild happened.
func (e *Engine) Repair(ctx context.Context) (bool, error) {
	if _, err := e.tbl.Pinholes(ctx); !errors.Is(err, nft.ErrNoTable) {
		return false, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.log.Warn("nftables table missing; rebuilding it")
	return true, e.repairLocked(ctx)
}

func (e *Engine) repairLocked(ctx context.Context) error {
	if e.rebuild == nil {
		return errors.New("no rebuild function")
	}
	if err := e.rebuild(ctx); err != nil {
		return err
	}
	return e.restoreLocked(ctx)
}

// restoreLocked commits the live sessions' pinholes again after a rebuild,
// with what is left of their timeouts.
func (e *Engine) restoreLocked(ctx context.Context) error {
	now := e.now()
	var hs []nft.Pinhole
	for k, r := range e.pinholes {
		if left := r.deadline.Sub(now); left > time.Second {
			hs = append(hs, nft.Pinhole{Src: k.src, Dst: k.dst, DstPort: k.port, Timeout: left.Truncate(time.Second)})
		}
	}
	if len(hs) == 0 {
		return nil
	}
	if err := e.tbl.AddPinholes(ctx, hs...); err != nil {
		return fmt.Errorf("failed to restore %d pinholes after the rebuild: %w", len(hs), err)
	}
	return nil
}
