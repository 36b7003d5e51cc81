package main

import (
	"context"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/gateway"
)

// releaseMemory returns memory to the OS after a flood of sessions has
// gone: every interval, when the sessions in progress have fallen to half
// of their peak since the last release (and by at least minDrop), it runs
// debug.FreeOSMemory. The Go runtime's own scavenger returns memory too,
// but slowly (minutes after a flood of thousands of TLS sessions the RSS is
// still the flood's); this makes the daemon's RSS follow its sessions. A
// GOMEMLIMIT in the environment (the systemd unit may set one) bounds the
// heap in addition.
func releaseMemory(ctx context.Context, gw *gateway.Gateway, interval time.Duration, minDrop int, log *slog.Logger) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	peak := 0 // the most sessions since the last release
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		peak = max(peak, gw.TakePeak())
		n := gw.Sessions()
		if peak-n < minDrop || n > peak/2 {
			continue
		}
		start := time.Now()
		debug.FreeOSMemory()
		log.Debug("memory returned to the OS after the sessions fell", "sessions", n, "peak", peak, "took", time.Since(start).String())
		peak = n
	}
}
