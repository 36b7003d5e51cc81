package conntrack_test

import (
	"context"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/conntrack"
	"github.com/ftpsalg/ftpsalg/test/lab"
)

// conntrackLab is a lab whose gateway tracks connections (conntrack is
// active in a namespace only once a rule needs it), and the gateway's
// namespace, open.
func conntrackLab(t *testing.T) (*lab.Lab, *os.File) {
	t.Helper()
	lab.RequirePrivileged(t)
	l := lab.New(t, lab.Options{})
	if err := l.NftScript(lab.Gateway, "table inet cttest {\n chain f {\n  type filter hook forward priority 0\n  ct state new counter\n }\n}\n"); err != nil {
		t.Fatal(err)
	}
	ns, err := os.Open(l.NetNSPath(lab.Gateway))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return l, ns
}

// TestListenerSeesDestroy follows a forwarded TCP connection through the
// gateway namespace's conntrack table: the listener reports its DESTROY
// when the entry is deleted (as `conntrack -D` would).
func TestListenerSeesDestroy(t *testing.T) {
	l, ns := conntrackLab(t)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	events := make(chan conntrack.Event, 16)
	lis := &conntrack.Listener{NetNS: int(ns.Fd()), Types: []conntrack.EventType{conntrack.EventNew, conntrack.EventDestroy}}
	done := make(chan error, 1)
	go func() { done <- lis.Run(ctx, func(e conntrack.Event) { events <- e }) }()

	ln, err := l.Listen(lab.Server, "tcp4", "198.51.100.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	srv := ln.Addr().(*net.TCPAddr).AddrPort()

	// The listener joins its groups asynchronously: dial until a NEW event
	// for one of our connections shows it is listening.
	var conn net.Conn
	var src netip.AddrPort
	for src.Port() == 0 {
		err := l.InNS(lab.Client, func() error {
			var err error
			conn, err = (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, "tcp4", srv.String())
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		local := conn.LocalAddr().(*net.TCPAddr).AddrPort()
		select {
		case e := <-events:
			if e.Type == conntrack.EventNew && e.Dst == srv {
				src = local
				break
			}
			conn.Close()
		case <-time.After(200 * time.Millisecond):
			conn.Close()
		case <-ctx.Done():
			t.Fatal("no NEW event")
		}
	}
	defer conn.Close()
	if _, err := l.Conntrack(lab.Gateway, "-D", "-p", "tcp", "--orig-src", src.Addr().String(),
		"--orig-port-src", itoa(src.Port())); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case e := <-events:
			if e.Type == conntrack.EventDestroy && e.Src == src && e.Dst == srv && e.Proto == 6 {
				cancel()
				if err := <-done; err != nil {
					t.Fatal(err)
				}
				return
			}
		case <-ctx.Done():
			t.Fatal("no DESTROY event for the deleted flow")
		}
	}
}

func itoa(p uint16) string { return strconv.Itoa(int(p)) }

// TestListenerFiltersEvents: with Ports, the kernel passes the events of
// connections to those ports and drops the others' before they reach the
// daemon; Refilter changes the ports of the live socket.
func TestListenerFiltersEvents(t *testing.T) {
	l, ns := conntrackLab(t)
	for _, port := range []string{"21", "8080"} {
		ln, err := l.ListenAndClose(lab.Server, "tcp4", "198.51.100.2:"+port)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var mu sync.Mutex
	ports := []uint16{21}
	events := make(chan conntrack.Event, 256)
	lis := &conntrack.Listener{NetNS: int(ns.Fd()), Types: []conntrack.EventType{conntrack.EventNew, conntrack.EventDestroy},
		Ports: func() []uint16 { mu.Lock(); defer mu.Unlock(); return slices.Clone(ports) }}
	done := make(chan error, 1)
	go func() { done <- lis.Run(ctx, func(e conntrack.Event) { events <- e }) }()
	dial := func(port uint16) {
		t.Helper()
		err := l.InNS(lab.Client, func() error {
			c, err := (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, "tcp4", "198.51.100.2:"+itoa(port))
			if err == nil {
				c.Close()
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// await dials port until an event for it arrives (the listener joins
	// its group asynchronously), and returns the events that came first.
	await := func(port uint16) []conntrack.Event {
		t.Helper()
		var before []conntrack.Event
		for {
			dial(port)
			select {
			case e := <-events:
				for {
					if e.Dst.Port() == port {
						return before
					}
					before = append(before, e)
					select {
					case e = <-events:
						continue
					case <-time.After(500 * time.Millisecond):
					}
					break
				}
			case <-time.After(500 * time.Millisecond):
			case <-ctx.Done():
				t.Fatalf("no event for port %d", port)
			}
		}
	}
	await(21) // the listener is up
	for range 20 {
		dial(8080)
	}
	if before := await(21); len(before) > 0 {
		t.Errorf("events of connections to ports the filter drops arrived: %v", before)
	}
	// DESTROY events pass too, and only those: delete the port-8080
	// entries, then the port-21 ones (as their end would), and expect a
	// destroy for 21 with nothing of 8080 before it.
	for _, port := range []string{"8080", "21"} {
		if _, err := l.Conntrack(lab.Gateway, "-D", "-p", "tcp", "--orig-port-dst", port); err != nil {
			t.Fatal(err)
		}
	}
	for destroyed := false; !destroyed; {
		select {
		case e := <-events:
			switch {
			case e.Dst.Port() == 8080:
				t.Fatalf("event of port 8080 passed the filter: %v", e)
			case e.Type == conntrack.EventDestroy && e.Dst.Port() == 21:
				destroyed = true
			}
		case <-ctx.Done():
			t.Fatal("no DESTROY event for port 21")
		}
	}
	mu.Lock()
	ports = []uint16{8080}
	mu.Unlock()
	if err := lis.Refilter(); err != nil {
		t.Fatal(err)
	}
	await(8080)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
