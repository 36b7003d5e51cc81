package load

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"time"
)

// Session runs one complete session; nil means it succeeded. It must
// return once ctx ends.
type Session func(ctx context.Context) error

// Config bounds a Run.
type Config struct {
	// Concurrency is the number of workers, each running one session
	// after the other: the number of sessions in flight.
	Concurrency int
	// Warmup is the time from the start during which completions are not
	// counted: every worker starts at once, and the first completions
	// measure that burst rather than the steady state.
	Warmup time.Duration
	// Window is the measurement window after Warmup. Workers start no
	// session after it ends; sessions still running are waited for (each
	// bounded by SessionTimeout) but count only as failures when they
	// fail.
	Window time.Duration
	// SessionTimeout bounds each session (its context's deadline).
	SessionTimeout time.Duration
	// MaxSessions, when positive, bounds the sessions started; the window
	// then ends early when the last of them has ended.
	MaxSessions int
	// MaxErrors is how many distinct error texts Result keeps (default 5).
	MaxErrors int
	// OnWindowStart and OnWindowEnd, when set, are called when the
	// window starts and ends (from a timer: for reading the daemon's CPU
	// time over exactly the window). Run returns after both have
	// returned; a window cut short by MaxSessions (even during the
	// warm-up) still has both, in order.
	OnWindowStart, OnWindowEnd func()
}

// Result is what a Run measured.
type Result struct {
	Concurrency int
	// Sessions completed successfully within the window; their latencies,
	// sorted, are in Latencies.
	Sessions  int
	Latencies []time.Duration
	// Failures counts failed sessions over the whole run (warm-up and
	// drain included): a failure anywhere is worth reporting.
	Failures int
	// Errors holds up to Config.MaxErrors distinct error texts, with how
	// often each occurred.
	Errors map[string]int
	// Window is the measurement window; Elapsed the whole run, drain
	// included.
	Window, Elapsed time.Duration
}

// Rate is the completed sessions per second within the window.
func (r Result) Rate() float64 {
	if r.Window <= 0 {
		return 0
	}
	return float64(r.Sessions) / r.Window.Seconds()
}

// Percentile returns the p-th percentile (0 ≤ p ≤ 1) of the latencies.
func (r Result) Percentile(p float64) time.Duration { return Percentile(r.Latencies, p) }

// String is a one-line summary.
func (r Result) String() string {
	return fmt.Sprintf("concurrency %d: %d sessions in %v (%.1f/s), p50 %v p95 %v p99 %v, %d failed",
		r.Concurrency, r.Sessions, r.Window, r.Rate(), r.Percentile(0.50).Round(time.Microsecond),
		r.Percentile(0.95).Round(time.Microsecond), r.Percentile(0.99).Round(time.Microsecond), r.Failures)
}

// Percentile returns the p-th percentile (0 ≤ p ≤ 1) of sorted by the
// nearest-rank method: the smallest value with at least p of the values
// at or below it. It is 0 for no values.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p * float64(len(sorted))))
	if rank < 1 {
		rank = 1
	}
	if rank > len(sorted) {
		rank = len(sorted)
	}
	return sorted[rank-1]
}

// Run starts cfg.Concurrency workers that run fn one session after the
// other until the window ends (or ctx does), waits for the sessions in
// flight, and returns what it measured. It never runs longer than
// Warmup + Window + SessionTimeout.
func Run(ctx context.Context, cfg Config, fn Session) Result {
	if cfg.MaxErrors == 0 {
		cfg.MaxErrors = 5
	}
	var (
		mu      sync.Mutex
		res     = Result{Concurrency: cfg.Concurrency, Window: cfg.Window, Errors: map[string]int{}}
		wg      sync.WaitGroup
		started int
	)
	// next claims the right to start one more session.
	next := func() bool {
		mu.Lock()
		defer mu.Unlock()
		if cfg.MaxSessions > 0 && started >= cfg.MaxSessions {
			return false
		}
		started++
		return true
	}
	start := time.Now()
	from, until := start.Add(cfg.Warmup), start.Add(cfg.Warmup+cfg.Window)
	stop, cancel := context.WithDeadline(ctx, until)
	defer cancel()
	windowStarted := make(chan struct{})
	startTimer := time.AfterFunc(cfg.Warmup, func() {
		defer close(windowStarted)
		if cfg.OnWindowStart != nil {
			cfg.OnWindowStart()
		}
	})
	for range cfg.Concurrency {
		wg.Go(func() {
			for stop.Err() == nil && next() {
				// Each session's deadline is its own, not the window's: a
				// session started just before the end runs to completion.
				sctx, scancel := context.WithTimeout(ctx, cfg.SessionTimeout)
				t0 := time.Now()
				err := fn(sctx)
				t1 := time.Now()
				scancel()
				mu.Lock()
				switch {
				case err != nil:
					res.Failures++
					if _, ok := res.Errors[err.Error()]; ok || len(res.Errors) < cfg.MaxErrors {
						res.Errors[err.Error()]++
					}
				case !t1.Before(from) && !t1.After(until):
					res.Sessions++
					res.Latencies = append(res.Latencies, t1.Sub(t0))
				}
				mu.Unlock()
			}
		})
	}
	// The window ends at its time or when the last worker stopped
	// (MaxSessions), whichever comes first.
	workersDone := make(chan struct{})
	go func() { wg.Wait(); close(workersDone) }()
	select {
	case <-stop.Done():
	case <-workersDone:
	}
	if startTimer.Stop() {
		// Out of sessions during the warm-up: an empty window, still
		// opened and closed so that the hooks pair up.
		if cfg.OnWindowStart != nil {
			cfg.OnWindowStart()
		}
		close(windowStarted)
	}
	<-windowStarted
	if end := time.Now(); end.Before(until) {
		res.Window = max(end.Sub(from), 0)
	}
	if cfg.OnWindowEnd != nil {
		cfg.OnWindowEnd()
	}
	<-workersDone
	res.Elapsed = time.Since(start)
	sort.Slice(res.Latencies, func(i, j int) bool { return res.Latencies[i] < res.Latencies[j] })
	return res
}

// ErrorSummary lists the distinct errors, most frequent first, one per
// line ("N× text").
func (r Result) ErrorSummary() string {
	type e struct {
		text string
		n    int
	}
	var es []e
	for t, n := range r.Errors {
		es = append(es, e{t, n})
	}
	slices.SortFunc(es, func(a, b e) int {
		if a.n != b.n {
			return b.n - a.n
		}
		if a.text < b.text {
			return -1
		}
		return 1
	})
	var s string
	for _, x := range es {
		s += fmt.Sprintf("%d× %s\n", x.n, x.text)
	}
	return s
}
