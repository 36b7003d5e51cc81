package main

import (
	"context"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/gateway"
)

// memoryPolicy is how the daemon keeps its memory near what its sessions
// need (issue 12, goal 2).
type memoryPolicy struct {
	// Interval between checks.
	Interval time.Duration
	// MinDrop: memory goes back to the OS when the sessions in progress
	// fall to half of their peak since the last release, and by at least
	// this many.
	MinDrop int
	// TuneGC: set the GC percent by the number of sessions (gcPercentFor).
	// False when the environment sets GOGC: the operator's choice stands.
	TuneGC bool
}

// Sessions from which the heap is kept tight, and the GC percent then.
// Idle sessions allocate almost nothing: their heap is live data that
// GOGC=100 would let the heap grow past by as much again before a
// collection, memory the daemon's RSS keeps. With 25 the heap stays within
// a quarter of the live data; the collections it costs more come with new
// sessions (their handshakes allocate), not with idle ones.
const (
	manySessions = 1000
	tightGC      = 25
	defaultGC    = 100
)

// gcPercentFor returns the GC percent for n sessions in progress, cur the
// one in force: tight from manySessions, the default again below half of
// that (the gap keeps a load near the threshold from flapping).
func gcPercentFor(n, cur int) int {
	switch {
	case n >= manySessions:
		return tightGC
	case n < manySessions/2:
		return defaultGC
	}
	return cur
}

// releaseMemory keeps the daemon's memory near what its sessions need:
// every interval, it sets the GC percent by the sessions in progress
// (gcPercentFor, unless the environment sets GOGC), and when they have
// fallen to half of their peak since the last release (and by at least
// MinDrop), it runs debug.FreeOSMemory. The Go runtime's own scavenger
// returns memory too, but slowly (minutes after a flood of thousands of
// TLS sessions the RSS is still the flood's); this makes the daemon's RSS
// follow its sessions. A GOMEMLIMIT in the environment (the systemd unit
// may set one) bounds the heap in addition.
func releaseMemory(ctx context.Context, gw *gateway.Gateway, mp memoryPolicy, log *slog.Logger) error {
	t := time.NewTicker(mp.Interval)
	defer t.Stop()
	peak := 0 // the most sessions since the last release
	gc := defaultGC
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		peak = max(peak, gw.TakePeak())
		n := gw.Sessions()
		if mp.TuneGC {
			if p := gcPercentFor(n, gc); p != gc {
				debug.SetGCPercent(p)
				log.Info("gc percent set by the sessions in progress", "gc_percent", p, "sessions", n)
				gc = p
			}
		}
		if peak-n < mp.MinDrop || n > peak/2 {
			continue
		}
		start := time.Now()
		debug.FreeOSMemory()
		log.Debug("memory returned to the OS after the sessions fell", "sessions", n, "peak", peak, "took", time.Since(start).String())
		peak = n
	}
}
