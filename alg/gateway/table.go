package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/policy"
	"github.com/ftpsalg/ftpsalg/nft"
)

// Apply builds the table from cfg, makes cfg the policy in force and
// commits the live sessions' entries again (a rebuild empties every set):
// the start-up build and every reload. A failure leaves the previous table
// and policy in force (nft's Apply is one transaction).
func (g *Gateway) Apply(ctx context.Context, cfg *policy.Config) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.applyLocked(ctx, cfg); err != nil {
		return err
	}
	g.pol.Store(cfg)
	n, err := g.restoreLocked(ctx)
	g.m.PinholesRestored.Add(float64(n))
	if err != nil {
		return err
	}
	if err := g.restoreBansLocked(ctx); err != nil {
		return fmt.Errorf("failed to restore bans after the rebuild: %w", err)
	}
	g.setReady(nil)
	return nil
}

func (g *Gateway) applyLocked(ctx context.Context, cfg *policy.Config) error {
	start := time.Now()
	err := g.tbl.Apply(ctx, Spec(cfg, g.kind))
	g.m.NFTSyncSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		g.m.NFTSyncs.WithLabelValues("error").Inc()
		return err
	}
	g.m.NFTSyncs.WithLabelValues("ok").Inc()
	g.m.NFTLastSuccess.SetToCurrentTime()
	g.gen++
	g.applied = true
	return nil
}

// rebuildLocked rebuilds the table from the policy in force and restores
// the live entries. g.mu is held.
func (g *Gateway) rebuildLocked(ctx context.Context, why string) error {
	start := time.Now()
	err := g.applyLocked(ctx, g.pol.Load())
	n := 0
	if err == nil {
		n, err = g.restoreLocked(ctx)
		g.m.PinholesRestored.Add(float64(n))
	}
	if err == nil {
		if err = g.restoreBansLocked(ctx); err != nil {
			err = fmt.Errorf("failed to restore bans after the rebuild: %w", err)
		}
	}
	d := time.Since(start)
	g.m.ReconcileSeconds.Observe(d.Seconds())
	if err != nil {
		g.m.Reconciles.WithLabelValues("error").Inc()
		g.setReady(fmt.Errorf("the nftables table is %s and could not be rebuilt: %w", why, err))
		return err
	}
	g.m.Reconciles.WithLabelValues("rebuilt").Inc()
	g.m.ReconcileLastSuccess.SetToCurrentTime()
	g.setReady(nil)
	attrs := []any{"cause", why, "pinholes_restored", n, "duration", d.String()}
	if at := g.changedAt.Swap(nil); at != nil {
		// The window in which the table was missing, as far as the
		// daemon can tell: from the kernel's notification to now.
		attrs = append(attrs, "since_change", time.Since(*at).String())
	}
	g.log.Warn("nftables table rebuilt", attrs...)
	return nil
}

func (g *Gateway) setReady(err error) {
	if err == nil {
		g.ready.Store(true)
		return
	}
	why := err.Error()
	g.readyWhy.Store(&why)
	g.ready.Store(false)
}

// Ready reports nil while the table is in place, or why it is not.
func (g *Gateway) Ready() error {
	if g.ready.Load() {
		return nil
	}
	return errors.New(*g.readyWhy.Load())
}

// Changed tells the reconcile task that the table changed (a watcher's
// notification): it checks at once, and a rebuild's log line says how
// long after the first unhandled change the table was back.
func (g *Gateway) Changed() {
	now := time.Now()
	g.changedAt.CompareAndSwap(nil, &now)
	g.Trigger()
}

// Trigger asks the reconcile task to check the table now.
func (g *Gateway) Trigger() {
	select {
	case g.reconcile <- struct{}{}:
	default:
	}
}

// Watcher reports changes to the table as they happen: it calls changed
// for each (nft netlink notifications) until ctx is done or it fails.
type Watcher func(ctx context.Context, changed func()) error

// Checker reports whether the applied table is intact.
type Checker func(ctx context.Context) (bool, error)

// Reconciler is the task that owns the table's health: level-triggered,
// it checks the table whenever the watcher reports a change to it (and
// every Interval, in case a notification was lost) and rebuilds it, with
// the live sessions' entries, the moment it is found missing or broken.
// While it is, Ready reports why (/readyz answers 503).
type Reconciler struct {
	G *Gateway
	// Watch reports changes; nil means only the periodic check.
	Watch Watcher
	// Check tells an intact table; nil means "listing the pinholes
	// works".
	Check Checker
	// Interval is the periodic check (default 30s).
	Interval time.Duration
}

// Run checks and repairs until ctx is done.
func (r *Reconciler) Run(ctx context.Context) error {
	every := r.Interval
	if every == 0 {
		every = 30 * time.Second
	}
	if r.Watch != nil {
		go r.watch(ctx)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	backoff := 10 * time.Millisecond
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.G.reconcile:
		case <-t.C:
		case <-retry:
			retry = nil
		}
		if err := r.Once(ctx); err != nil && ctx.Err() == nil {
			r.G.log.Error("failed to rebuild the nftables table; retrying", "err", err, "backoff", backoff.String())
			retry = time.After(backoff)
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 10 * time.Millisecond
	}
}

// Once checks the table and rebuilds it, with the live sessions' entries,
// if it is missing or incomplete. It returns the rebuild's error.
func (r *Reconciler) Once(ctx context.Context) error {
	g := r.G
	check := r.Check
	if check == nil {
		check = func(ctx context.Context) (bool, error) {
			_, err := g.tbl.Pinholes(ctx)
			if errors.Is(err, nft.ErrNoTable) {
				return false, nil
			}
			return err == nil, err
		}
	}
	start := time.Now()
	ok, err := check(ctx)
	if ctx.Err() != nil {
		return nil
	}
	if err == nil && ok {
		g.changedAt.Store(nil)
		g.m.Reconciles.WithLabelValues("intact").Inc()
		g.m.ReconcileSeconds.Observe(time.Since(start).Seconds())
		g.m.ReconcileLastSuccess.SetToCurrentTime()
		g.setReady(nil)
		return nil
	}
	why := "missing or incomplete"
	if err != nil {
		why = "unreadable (" + err.Error() + ")"
	}
	g.setReady(fmt.Errorf("the nftables table is %s", why))
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.rebuildLocked(ctx, why)
}

// watch runs the watcher, restarting it after a failure, and checks the
// table after each (re)start: changes may have been missed meanwhile.
func (r *Reconciler) watch(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := r.Watch(ctx, r.G.Changed)
		if ctx.Err() != nil {
			return
		}
		r.G.log.Warn("nftables change notifications stopped; restarting them", "err", err)
		r.G.Trigger()
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		backoff = min(2*backoff, 5*time.Second)
	}
}
