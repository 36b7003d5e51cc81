package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"time"

	"github.com/ftpsalg/ftpsalg/cmd/ftpsalg/internal/sdnotify"
	"github.com/ftpsalg/ftpsalg/metrics"
)

// errNeedsRestart is the refusal of a reload that changes settings only a
// restart applies.
var errNeedsRestart = errors.New("nftables, queue, metrics and mitm settings, and adding the first (or removing the last) mitm server, published server or clients entry, need a restart")

// lifecycle tells systemd (sd_notify) and the metrics what the daemon is
// doing: ready, reloading, reloaded (accepted or refused), stopping. The
// daemon calls it from one-line hooks; the logic lives here.
type lifecycle struct {
	n   *sdnotify.Notifier
	m   *metrics.Metrics
	log *slog.Logger
	// poll is how often Run asks whether the daemon is ready.
	poll time.Duration
}

// newLifecycle records the policy loaded at start as a successful load.
func newLifecycle(m *metrics.Metrics, log *slog.Logger) *lifecycle {
	m.ReloadSuccessful.Set(1)
	m.ReloadSuccessTime.SetToCurrentTime()
	return &lifecycle{n: sdnotify.New(os.Getenv), m: m, log: log, poll: 20 * time.Millisecond}
}

// Run says READY=1 once ready reports nil (the table is built and the
// queue bound: the listeners were opened before the tasks started), then
// keeps the watchdog fed while ready holds, and says STOPPING=1 when ctx
// ends. It returns nil when ctx ends.
func (l *lifecycle) Run(ctx context.Context, ready func() error) error {
	t := time.NewTicker(l.poll)
	for ready() != nil {
		select {
		case <-ctx.Done():
			t.Stop()
			l.notify(l.n.Stopping())
			return nil
		case <-t.C:
		}
	}
	t.Stop()
	l.notify(l.n.Ready("running: policy accepted"))
	l.n.RunWatchdog(ctx, ready)
	<-ctx.Done()
	l.notify(l.n.Stopping())
	return nil
}

// Reloading says a SIGHUP reload began.
func (l *lifecycle) Reloading() { l.notify(l.n.Reloading()) }

// Reloaded records a reload's outcome: the metrics, and READY=1 with a
// STATUS line saying whether the policy was accepted (the daemon runs on
// in either case).
func (l *lifecycle) Reloaded(err error) {
	l.m.ReloadSuccessful.Set(0)
	status := "running: reload refused, previous policy kept: "
	if err == nil {
		l.m.ReloadSuccessful.Set(1)
		l.m.ReloadSuccessTime.SetToCurrentTime()
		status = "running: policy accepted"
	} else {
		status += err.Error()
	}
	l.notify(l.n.Ready(status))
}

func (l *lifecycle) notify(err error) {
	if err != nil {
		l.log.Warn("failed to notify systemd", "err", err)
	}
}
