package conntrack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/mdlayher/netlink"
	ct "github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// EventType is the kind of a conntrack event.
type EventType uint8

// Event types.
const (
	EventNew EventType = iota + 1
	EventDestroy
)

func (t EventType) String() string {
	switch t {
	case EventNew:
		return "new"
	case EventDestroy:
		return "destroy"
	}
	return "unknown"
}

// Event is a conntrack event for a TCP or UDP flow, in the original direction.
type Event struct {
	Type EventType
	// ID is the kernel's conntrack ID: two connections that reuse a
	// 4-tuple (TIME_WAIT reuse) have different IDs.
	ID    uint32
	Proto uint8
	Src   netip.AddrPort
	Dst   netip.AddrPort
	Mark  uint32
}

// Source delivers conntrack events until ctx is done.
type Source interface {
	Run(ctx context.Context, handle func(Event)) error
}

var _ Source = (*Listener)(nil)

// Listener is the kernel implementation of Source. It restarts its netlink
// socket after errors (e.g. ENOBUFS when the kernel outruns it).
type Listener struct {
	// NetNS is a network namespace file descriptor; 0 means the current one.
	NetNS int
	// Types selects the events wanted; empty means EventDestroy only.
	Types []EventType
	// Log receives restarts; nil discards.
	Log *slog.Logger
	// OnRestart is called after an error restarted the socket (metrics).
	OnRestart func(err error)
	// ReadBuffer is the socket receive buffer (default 4 MiB).
	ReadBuffer int
}

// Run listens until ctx is done. It returns an error only if the first
// socket cannot be set up (the kernel lacks ctnetlink, or no privilege).
func (l *Listener) Run(ctx context.Context, handle func(Event)) error {
	log := l.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	backoff := 100 * time.Millisecond
	first := true
	for {
		err := l.listenOnce(ctx, handle, first)
		if ctx.Err() != nil {
			return nil
		}
		if first && err != nil && errors.Is(err, errSetup) {
			return err
		}
		first = false
		if l.OnRestart != nil {
			l.OnRestart(err)
		}
		log.Warn("conntrack listener restarting", "err", err, "backoff", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

var errSetup = errors.New("conntrack: setup failed")

func (l *Listener) groups() []netfilter.NetlinkGroup {
	types := l.Types
	if len(types) == 0 {
		types = []EventType{EventDestroy}
	}
	var g []netfilter.NetlinkGroup
	for _, t := range types {
		switch t {
		case EventNew:
			g = append(g, netfilter.GroupCTNew)
		case EventDestroy:
			g = append(g, netfilter.GroupCTDestroy)
		}
	}
	return g
}

func (l *Listener) listenOnce(ctx context.Context, handle func(Event), first bool) error {
	c, err := ct.Dial(&netlink.Config{NetNS: l.NetNS})
	if err != nil {
		return fmt.Errorf("%w: failed to dial ctnetlink: %w", errSetup, err)
	}
	rb := l.ReadBuffer
	if rb == 0 {
		rb = 4 << 20
	}
	_ = c.SetReadBuffer(rb) // best effort: the default still works
	evCh := make(chan ct.Event, 1024)
	errCh, err := c.Listen(evCh, 1, l.groups())
	if err != nil {
		c.Close()
		return fmt.Errorf("%w: failed to join conntrack groups: %w", errSetup, err)
	}
	// The library's worker blocks on sends to evCh and errCh; keep draining
	// both while closing so Close does not wait forever.
	defer func() {
		done := make(chan struct{})
		go func() {
			for {
				select {
				case <-evCh:
				case <-errCh:
				case <-done:
					return
				}
			}
		}()
		c.Close()
		close(done)
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errCh:
			return fmt.Errorf("conntrack: failed to receive events: %w", err)
		case ev := <-evCh:
			if e, ok := convert(ev); ok {
				handle(e)
			}
		}
	}
}

func convert(ev ct.Event) (Event, bool) {
	if ev.Flow == nil {
		return Event{}, false
	}
	var t EventType
	switch ev.Type {
	case ct.EventNew:
		t = EventNew
	case ct.EventDestroy:
		t = EventDestroy
	default:
		return Event{}, false
	}
	o := ev.Flow.TupleOrig
	if o.Proto.Protocol != unix.IPPROTO_TCP && o.Proto.Protocol != unix.IPPROTO_UDP {
		return Event{}, false
	}
	return Event{
		Type:  t,
		ID:    ev.Flow.ID,
		Proto: o.Proto.Protocol,
		Src:   netip.AddrPortFrom(o.IP.SourceAddress.Unmap(), o.Proto.SourcePort),
		Dst:   netip.AddrPortFrom(o.IP.DestinationAddress.Unmap(), o.Proto.DestinationPort),
		Mark:  ev.Flow.Mark,
	}, true
}

// Fake is a Source for unit tests: events sent with Send reach the handler.
type Fake struct{ ch chan Event }

var _ Source = (*Fake)(nil)

// NewFake returns a Fake.
func NewFake() *Fake { return &Fake{ch: make(chan Event)} }

// Send delivers e to the running handler (it blocks until Run takes it).
func (f *Fake) Send(ctx context.Context, e Event) error {
	select {
	case f.ch <- e:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run implements Source.
func (f *Fake) Run(ctx context.Context, handle func(Event)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case e := <-f.ch:
			handle(e)
		}
	}
}
