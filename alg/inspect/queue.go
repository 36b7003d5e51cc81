package inspect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/ftpsalg/ftpsalg/alg/inspect/nfq"
	"github.com/ftpsalg/ftpsalg/metrics"
)

// MaxQueues is the most NFQUEUEs one daemon reads (queue.number as a range).
const MaxQueues = 64

// Queue binds NFQUEUEs Num to Num+Count-1 and hands each packet to the
// Engine, then issues the verdict the Engine decided. Each queue has one
// reader goroutine that handles its packets in queue order; the kernel's
// flow hash sends both directions of a flow to the same queue, so a flow's
// packets are seen in order. All readers share the Engine.
type Queue struct {
	Num        uint16
	Count      uint16 // number of queues from Num on; 0 means 1
	MaxLen     uint32
	FailOpen   bool   // kernel accepts packets uninspected when the queue is full
	PacketMark uint32 // OR-ed into every accepted packet's mark: not queued again
	NetNS      int    // network namespace fd; 0 means the current one

	Engine  *Engine
	Metrics *metrics.Metrics
	Log     *slog.Logger

	bound atomic.Int32 // readers bound; Ready when all are
}

func (q *Queue) count() int {
	return max(int(q.Count), 1)
}

// Ready reports whether every queue is bound.
func (q *Queue) Ready() bool { return int(q.bound.Load()) == q.count() }

// Run binds the queues and serves them until ctx is done. It fails when
// any queue cannot be bound (another process holds it, say).
func (q *Queue) Run(ctx context.Context) error {
	log := q.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := q.Metrics
	if m == nil {
		m = metrics.NewDiscard()
	}
	n := q.count()
	if n > MaxQueues || int(q.Num)+n-1 > 0xffff {
		return fmt.Errorf("invalid queue range %d-%d", q.Num, int(q.Num)+n-1)
	}
	conns := make([]*nfq.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for i := range n {
		num := q.Num + uint16(i)
		c, err := nfq.Open(nfq.Config{Queue: num, MaxLen: q.MaxLen, FailOpen: q.FailOpen, NetNS: q.NetNS})
		if err != nil {
			return fmt.Errorf("failed to open nfqueue %d: %w", num, err)
		}
		conns = append(conns, c)
	}
	g, gctx := errgroup.WithContext(ctx)
	for i, c := range conns {
		r := &reader{q: q, c: c, num: q.Num + uint16(i), m: m, log: log}
		g.Go(func() error { return r.run(gctx) })
	}
	q.bound.Store(int32(n))
	log.Info("queue bound", "queue", q.Num, "queues", n, "fail_open", q.FailOpen)
	err := g.Wait()
	q.bound.Store(0)
	return err
}

// reader serves one queue.
type reader struct {
	q   *Queue
	c   *nfq.Conn
	num uint16
	m   *metrics.Metrics
	log *slog.Logger
}

func (r *reader) run(ctx context.Context) error {
	q, m, log := r.q, r.m, r.log
	// Resolved once: a label lookup per packet hashes the label values.
	var (
		vDrop, vRewrite, vAccept = m.QueueVerdicts.WithLabelValues("drop"),
			m.QueueVerdicts.WithLabelValues("rewrite"), m.QueueVerdicts.WithLabelValues("accept")
		eVerdict   = m.QueueErrors.WithLabelValues("verdict")
		eReceive   = m.QueueErrors.WithLabelValues("receive")
		eNoPayload = m.QueueErrors.WithLabelValues("no_payload")
		eTruncated = m.QueueErrors.WithLabelValues("truncated")
		eENOBUFS   = m.QueueErrors.WithLabelValues("enobufs")
	)
	for {
		b, err := r.c.Read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, unix.ENOBUFS) {
				eENOBUFS.Inc()
				log.Warn("queue overflow: the kernel dropped packets it could not deliver", "queue", r.num)
				continue
			}
			eReceive.Inc()
			log.Warn("queue receive error", "queue", r.num, "err", err)
			// Whatever broke, do not spin on it.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		// All of one read is decided, then released in one send: the time
		// a packet waits for its batch mates is part of its latency.
		start := time.Now()
		for _, ke := range b.Errors {
			eVerdict.Inc()
			log.Warn("kernel refused a verdict", "queue", r.num, "err", ke)
		}
		if b.Malformed > 0 {
			eReceive.Add(float64(b.Malformed))
			log.Warn("undecodable queue messages", "queue", r.num, "count", b.Malformed)
		}
		for i := range b.Packets {
			p := &b.Packets[i]
			var v Verdict
			switch {
			case p.Payload == nil:
				eNoPayload.Inc()
				v = Verdict{Reason: "no_payload"}
			case p.Truncated():
				// A truncated copy can be neither inspected nor re-injected.
				eTruncated.Inc()
				v = Verdict{Reason: "truncated"}
			default:
				v = q.Engine.Process(ctx, p.Payload)
			}
			var verr error
			switch {
			case !v.Accept:
				verr = r.c.Verdict(p.ID, nfq.Drop, false, 0, nil)
				vDrop.Inc()
			case v.Payload != nil:
				verr = r.c.Verdict(p.ID, nfq.Accept, true, p.Mark|q.PacketMark, v.Payload)
				vRewrite.Inc()
			default:
				verr = r.c.Verdict(p.ID, nfq.Accept, true, p.Mark|q.PacketMark, nil)
				vAccept.Inc()
			}
			if verr != nil {
				eVerdict.Inc()
				log.Warn("failed to encode verdict", "queue", r.num, "err", verr)
				// Never leave the packet queued: drop it unchanged.
				_ = r.c.Verdict(p.ID, nfq.Drop, false, 0, nil)
			}
		}
		if err := r.c.Flush(); err != nil {
			eVerdict.Add(float64(len(b.Packets)))
			log.Warn("failed to send verdicts", "queue", r.num, "packets", len(b.Packets), "err", err)
		}
		d := time.Since(start).Seconds()
		for range b.Packets {
			m.VerdictLatency.Observe(d)
		}
	}
}
