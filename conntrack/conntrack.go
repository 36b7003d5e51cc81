package conntrack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
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
	// Ports, when not nil, names the TCP destination ports (original
	// direction) whose events the handler wants; the kernel drops the
	// events of every other connection before they reach the daemon (a
	// socket filter), so that the gateway's other traffic costs the
	// daemon nothing. It is asked at every start of the socket and by
	// Refilter. Events the filter cannot place (a conntrack zone in the
	// tuple, an unknown layout) pass: the filter saves work, it never
	// loses an event. nil means every event.
	Ports func() []uint16

	mu   sync.Mutex
	conn *netlink.Conn // the live socket, for Refilter
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
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: l.NetNS})
	if err != nil {
		return fmt.Errorf("%w: failed to dial ctnetlink: %w", errSetup, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	rb := l.ReadBuffer
	if rb == 0 {
		rb = 4 << 20
	}
	_ = c.SetReadBuffer(rb) // best effort: the default still works
	l.mu.Lock()
	l.conn = c
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.conn = nil
		l.mu.Unlock()
	}()
	// The filter before the groups: no event unfiltered.
	if err := l.filter(c); err != nil {
		return fmt.Errorf("%w: %w", errSetup, err)
	}
	for _, g := range l.groups() {
		if err := c.JoinGroup(uint32(g)); err != nil {
			return fmt.Errorf("%w: failed to join conntrack group %d: %w", errSetup, g, err)
		}
	}
	for {
		msgs, err := c.Receive()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("conntrack: failed to receive events: %w", err)
		}
		for _, m := range msgs {
			var ev ct.Event
			if ev.Unmarshal(m) != nil {
				continue
			}
			if e, ok := convert(ev); ok {
				handle(e)
			}
		}
	}
}

// filter attaches the kernel-side event filter for l.Ports to c (a live
// socket), or removes it when l.Ports is nil. A policy whose ports the
// filter cannot hold gets no filter: every event reaches userspace.
func (l *Listener) filter(c *netlink.Conn) error {
	if l.Ports == nil {
		return nil
	}
	prog, err := eventFilter(l.Ports())
	if err != nil {
		if l.Log != nil {
			l.Log.Warn("conntrack events unfiltered", "err", err)
		}
		return c.RemoveBPF()
	}
	if err := c.SetBPF(prog); err != nil {
		return fmt.Errorf("conntrack: failed to attach the event filter: %w", err)
	}
	return nil
}

// Refilter applies l.Ports again to the live socket (after a reload); a
// socket made later applies it anyway.
func (l *Listener) Refilter() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		return nil
	}
	return l.filter(l.conn)
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
