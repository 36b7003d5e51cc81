package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/ftp"
	"github.com/ftpsalg/ftpsalg/alg/nat"
	"github.com/ftpsalg/ftpsalg/nft"
)

// hole is one ledger entry: an element ftpsalg committed to the kernel for
// a session (a pinhole, a relay element, with its NAT translations).
type hole struct {
	s        *Session
	h        nft.Pinhole // as committed, Timeout the full lifetime
	mode     ftp.DataMode
	opened   time.Time
	deadline time.Time
	seq      uint64 // commit order: a poll ignores entries committed after its listing
	// gone: the admission was used (counted), but the translations of a
	// translated pinhole stay in the kernel's maps until the session ends.
	gone bool
}

// key is what identifies an element in the kernel: its tuple, and whether
// it is a relay element.
func key(h nft.Pinhole) nft.Pinhole {
	return nft.Pinhole{Src: h.Src.Unmap(), Dst: h.Dst.Unmap(), DstPort: h.DstPort, Relay: h.Relay}
}

func (h *hole) translated() bool { return h.h.DNAT.IsValid() || h.h.SNAT.IsValid() }

func (h *hole) attrs() []any {
	return []any{"data_mode", h.mode.String(), "src", h.h.Src.String(), "dst", h.h.Dst.String(), "port", h.h.DstPort}
}

// settleJob is a set of entries whose session no longer wants them: the
// ledger's task removes those still in the kernel and counts the others
// used or expired. end carries the session's end (its audit line is
// written once its pinholes are counted).
type settleJob struct {
	s        *Session
	holes    []*hole
	end      bool
	reason   string
	reserved []nat.Reservation
	opaque   []*opaqueEntry
}

// commit adds h to the kernel and records s as its owner, under the
// ledger's lock: a cleanup cannot delete an element re-added meanwhile, and
// a rebuild cannot slip between the commit and the record. A table found
// missing is rebuilt at once and the commit retried.
func (s *Session) commit(ctx context.Context, h nft.Pinhole, mode ftp.DataMode) error {
	g := s.g
	start := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	k := key(h)
	// The same client was told the same endpoint before (by this session
	// or another): the element becomes this entry. Whether the earlier
	// admission was used must be read before the re-add hides it.
	prev := g.owners[k]
	prevUsed := false
	if prev != nil && !prev.gone {
		if l, lerr := g.tbl.Live(ctx, prev.h); lerr == nil {
			prevUsed = !l[0]
		}
	}
	err := g.tbl.AddPinholes(ctx, h)
	if errors.Is(err, nft.ErrNoTable) && g.applied {
		s.Log.Warn("nftables table missing at a pinhole commit; rebuilding it")
		if rerr := g.rebuildLocked(ctx, "missing at commit"); rerr == nil {
			err = g.tbl.AddPinholes(ctx, h)
		}
	}
	g.m.PinholeCommit.Observe(time.Since(start).Seconds())
	if err != nil {
		g.m.PinholeErrors.Inc()
		s.Log.Error("pinhole commit failed", "err", err, "src", h.Src.String(), "dst", h.Dst.String(), "port", h.DstPort)
		return err
	}
	now := g.now()
	e := &hole{s: s, h: h, mode: mode, opened: now, deadline: now.Add(h.Timeout)}
	if prev != nil {
		switch {
		case prev.gone:
			// Counted already; its translations are this entry's now.
		case prevUsed:
			prev.s.count(prev, now) // used (or expired) before the re-add
		default:
			g.m.PinholesRemoved.Inc() // superseded while still unused
		}
		prev.s.dropHole(prev)
	}
	g.seq++
	e.seq = g.seq
	g.owners[k] = e
	s.mu.Lock()
	s.holes = append(s.holes, e)
	s.audit.opened++
	var evict *hole
	if s.openCount() > g.maxPH {
		// The per-session bound: the oldest plain admission goes (a
		// translated one holds its translation for a connection).
		for i, x := range s.holes {
			if !x.gone && !x.translated() {
				evict = x
				s.holes = append(s.holes[:i:i], s.holes[i+1:]...)
				break
			}
		}
	}
	s.mu.Unlock()
	g.m.PinholesOpened.WithLabelValues(mode.String()).Inc()
	g.m.ServerPinholes.WithLabelValues(s.Server.Name).Inc()
	attrs := []any{"data_mode", mode.String(), "src", h.Src.String(), "dst", h.Dst.String(), "port", h.DstPort,
		"timeout", h.Timeout.String(), "relay", h.Relay}
	if h.SNAT.IsValid() {
		attrs = append(attrs, "snat", h.SNAT.String())
	}
	if h.DNAT.IsValid() {
		attrs = append(attrs, "dnat", h.DNAT.String())
	}
	s.Log.Info("pinhole opened", attrs...)
	if evict != nil {
		g.m.Refusals.WithLabelValues("pinhole_limit").Inc()
		s.Log.Warn("pinhole retired: the session holds the most pinholes allowed", append(evict.attrs(), "limit", g.maxPH)...)
		g.queue(settleJob{s: s, holes: []*hole{evict}})
	}
	return nil
}

// openCount is the number of the session's entries not yet used; s.mu held.
func (s *Session) openCount() int {
	n := 0
	for _, x := range s.holes {
		if !x.gone {
			n++
		}
	}
	return n
}

// dropHole forgets e in its session (another session owns its element now).
func (s *Session) dropHole(e *hole) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, x := range s.holes {
		if x == e {
			s.holes = append(s.holes[:i:i], s.holes[i+1:]...)
			return
		}
	}
}

// End ends the session: its pinholes still open are removed, the others
// counted used or expired, its translations and reservations released and
// its audit line written, by the ledger's task (Run) — the transports
// never wait for the kernel here. A second End is ignored.
func (s *Session) End(reason string) {
	g := s.g
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	holes := s.holes
	s.holes = nil
	reserved := s.reserved
	s.reserved = nil
	opaque := s.opaque
	s.opaque = nil
	s.mu.Unlock()
	if len(opaque) > 0 {
		g.m.OpaqueActive.Dec()
	}
	g.mu.Lock()
	delete(g.sessions, s)
	if g.perClient[s.Client.Addr()]--; g.perClient[s.Client.Addr()] <= 0 {
		delete(g.perClient, s.Client.Addr())
	}
	g.mu.Unlock()
	g.active.Add(-1)
	g.m.SessionsActive.WithLabelValues(s.Mode).Dec()
	g.m.FlowsActive.Set(float64(g.active.Load()))
	g.m.FlowEvictions.WithLabelValues(reason).Inc()
	g.queue(settleJob{s: s, holes: holes, end: true, reason: reason, reserved: reserved, opaque: opaque})
}

// queue hands a job to the ledger's task; when its queue is full the job
// is settled on a goroutine of its own rather than lost.
func (g *Gateway) queue(j settleJob) {
	select {
	case g.settleq <- j:
	default:
		go g.settle(context.Background(), []settleJob{j})
	}
}

// Run is the ledger's task: it settles retired entries and ended sessions
// and polls live sessions' pinholes, until ctx is done; then it settles
// what is queued.
func (g *Gateway) Run(ctx context.Context) error {
	t := time.NewTicker(g.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			g.Drain(context.Background())
			return nil
		case j := <-g.settleq:
			jobs := []settleJob{j}
			// Settle everything queued so far in one go: at hundreds of
			// sessions per second, one kernel look-up round per session
			// costs.
			for more := true; more && len(jobs) < 1024; {
				select {
				case j := <-g.settleq:
					jobs = append(jobs, j)
				default:
					more = false
				}
			}
			g.settle(ctx, jobs)
		case <-t.C:
			g.poll(ctx)
			g.refreshOpaque(ctx)
		}
	}
}

// Drain settles every queued job now (tests, and shutdown).
func (g *Gateway) Drain(ctx context.Context) {
	for {
		select {
		case j := <-g.settleq:
			g.settle(ctx, []settleJob{j})
		default:
			return
		}
	}
}

// liveness says which entries' admissions are still in the kernel: one
// element look-up each, in chunks, so that settling a session costs O(its
// own entries) whatever the table holds (a listing of 100,000 pinholes
// takes over a second: BenchmarkPinholeScale in nft).
func (g *Gateway) liveness(ctx context.Context, hs []*hole) (map[*hole]bool, error) {
	out := make(map[*hole]bool, len(hs))
	for len(hs) > 0 {
		n := min(len(hs), liveChunk)
		ps := make([]nft.Pinhole, n)
		for i, h := range hs[:n] {
			ps[i] = h.h
		}
		l, err := g.tbl.Live(ctx, ps...)
		if err != nil {
			return nil, err
		}
		for i, h := range hs[:n] {
			out[h] = l[i]
		}
		hs = hs[n:]
	}
	return out, nil
}

// liveChunk bounds the look-ups of one Live call. The table serialises
// its calls, so a pinhole commit waits for at most one chunk (10-20 µs a
// look-up at 100,000 pinholes) rather than for all of a large settle or
// poll: with 32 a chunk, commit p99 was 2.2 ms during a poll; with 8,
// see docs/benchmarks.md.
const liveChunk = 8

// settle removes the jobs' entries that are still in the kernel and
// counts the others used (gone before their deadline: a data connection
// took them) or expired, then releases reservations and writes the end
// lines of ended sessions.
func (g *Gateway) settle(ctx context.Context, jobs []settleJob) {
	var all []*hole
	var opaque []*opaqueEntry
	for _, j := range jobs {
		all = append(all, j.holes...)
		opaque = append(opaque, j.opaque...)
	}
	live, err := g.liveness(ctx, all)
	if err != nil {
		// Unknown: delete them all (missing ones are no error) and count
		// them removed.
		live = map[*hole]bool{}
		for _, h := range all {
			live[h] = true
		}
	}
	g.mu.Lock()
	now := g.now()
	var del []nft.Pinhole
	for _, h := range all {
		k := key(h.h)
		if g.owners[k] != h {
			// A later session re-added this element: not ours to remove
			// or to count.
			g.m.PinholesRemoved.Inc()
			continue
		}
		delete(g.owners, k)
		switch {
		case h.gone:
			del = append(del, h.h) // used earlier; its translations go now
		case live[h]:
			del = append(del, h.h)
			g.m.PinholesRemoved.Inc()
			h.s.Log.Info("pinhole removed", h.attrs()...)
		default:
			h.s.count(h, now)
			if h.translated() {
				del = append(del, h.h)
			}
		}
	}
	if len(del) > 0 {
		if err := g.tbl.DeletePinholes(ctx, del...); err != nil && !errors.Is(err, nft.ErrNoTable) {
			g.m.PinholeErrors.Inc()
			g.log.Warn("failed to remove pinholes; they expire on their own", "err", err, "count", len(del))
		}
	}
	g.settleOpaqueLocked(ctx, opaque)
	g.mu.Unlock()
	for _, j := range jobs {
		for _, r := range j.reserved {
			g.ports.Release(r)
		}
		if j.end {
			j.s.Log.Info("session end", j.s.endAttrs(j.reason)...)
		}
	}
}

// count records an entry that left the kernel: before its deadline a data
// connection consumed it, after it it expired.
func (s *Session) count(h *hole, now time.Time) {
	h.gone = true
	s.mu.Lock()
	used := now.Before(h.deadline)
	if used {
		s.audit.used++
	} else {
		s.audit.expired++
	}
	s.mu.Unlock()
	if used {
		s.g.m.PinholesUsed.Inc()
		s.Log.Info("pinhole used", h.attrs()...)
	} else {
		s.g.m.PinholesExpired.Inc()
		s.Log.Info("pinhole expired", h.attrs()...)
	}
}

// poll compares live sessions' entries with the kernel's sets: one that
// vanished was used or expired. A small ledger is compared with one
// listing of the table. A large one is not (listing 100,000 pinholes takes
// over a second and holds the table, so every commit would wait for it):
// the poll looks up, in chunks, the entries whose deadline is near or
// past (so expiries are counted as such), those committed in the last few
// intervals (data connections usually follow their announcement at once),
// and a rotating share of the rest, at most pollBudget in all. A rebuild
// between the look-ups and the comparison voids them.
func (g *Gateway) poll(ctx context.Context) {
	g.mu.Lock()
	n, gen, seq := len(g.owners), g.gen, g.seq
	var picked []*hole
	if n > pollListMax {
		picked = g.pollPickLocked(g.now())
	}
	g.mu.Unlock()
	if n == 0 {
		return
	}
	var gone func(nft.Pinhole, *hole) bool
	if n <= pollListMax {
		els, err := g.tbl.Pinholes(ctx)
		if err != nil {
			g.pollFailed(ctx, err)
			return
		}
		in := make(map[nft.Pinhole]bool, len(els))
		for _, el := range els {
			in[key(el.Pinhole)] = true
		}
		gone = func(k nft.Pinhole, _ *hole) bool { return !in[k] }
	} else {
		live, err := g.liveness(ctx, picked)
		if err != nil {
			g.pollFailed(ctx, err)
			return
		}
		gone = func(_ nft.Pinhole, h *hole) bool { l, ok := live[h]; return ok && !l }
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gen != gen {
		return
	}
	now := g.now()
	for k, h := range g.owners {
		if h.gone || h.seq > seq || !gone(k, h) {
			continue
		}
		h.s.count(h, now)
		if !h.translated() {
			delete(g.owners, k)
			h.s.dropHole(h)
		}
	}
}

func (g *Gateway) pollFailed(ctx context.Context, err error) {
	if errors.Is(err, nft.ErrNoTable) {
		g.Trigger()
	} else if ctx.Err() == nil {
		g.log.Warn("failed to list pinholes", "err", err)
	}
}

// Bounds of a poll. Up to pollListMax entries one listing is cheaper
// than a look-up each (and exact); beyond, a poll looks up at most
// pollBudget entries (about 20 ms of look-ups at 100,000 pinholes, in
// chunks of liveChunk).
const (
	pollListMax = 256
	pollBudget  = 1024
)

// pollPickLocked chooses the entries a poll of a large ledger looks up:
// first those due (deadline within the next interval, or past), then
// those committed in the last four intervals, then the rest in turns —
// an entry's turn comes every ceil(rest/pollBudget) intervals, by its
// commit number, so every entry is looked at within a bounded time
// without remembering anything between polls. g.mu held.
func (g *Gateway) pollPickLocked(now time.Time) []*hole {
	var due, fresh, rest []*hole
	for _, h := range g.owners {
		switch {
		case h.gone:
		case !h.deadline.After(now.Add(g.every)):
			due = append(due, h)
		case now.Sub(h.opened) < 4*g.every:
			fresh = append(fresh, h)
		default:
			rest = append(rest, h)
		}
	}
	out := append(due, fresh...)
	if len(out) >= pollBudget {
		return out[:pollBudget]
	}
	if turns := uint64((len(rest) + pollBudget - 1) / pollBudget); turns > 0 {
		slot := uint64(now.UnixNano() / int64(g.every))
		for _, h := range rest {
			if h.seq%turns == slot%turns && len(out) < pollBudget {
				out = append(out, h)
			}
		}
	}
	return out
}

// restoreLocked commits the live entries again after a rebuild emptied
// the table, each with what is left of its timeout. An admission a data
// connection had already used before the table was lost opens again for
// that remainder: the table's loss took the knowledge with it.
func (g *Gateway) restoreLocked(ctx context.Context) (int, error) {
	now := g.now()
	var hs []nft.Pinhole
	for _, h := range g.owners {
		if h.gone {
			continue
		}
		if left := h.deadline.Sub(now); left > time.Second {
			p := h.h
			p.Timeout = left.Truncate(time.Second)
			hs = append(hs, p)
		}
	}
	n, err := g.restoreOpaqueLocked(ctx)
	if err != nil {
		return 0, err
	}
	if len(hs) == 0 {
		return n, nil
	}
	if err := g.tbl.AddPinholes(ctx, hs...); err != nil {
		return 0, fmt.Errorf("failed to restore %d pinholes after the rebuild: %w", len(hs), err)
	}
	return n + len(hs), nil
}

// Poll compares the live sessions' entries with the kernel's sets now (the
// ledger's task does it every PollInterval).
func (g *Gateway) Poll(ctx context.Context) { g.poll(ctx) }
