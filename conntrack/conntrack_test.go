package conntrack_test

import (
	"context"
	"net"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/conntrack"
	"github.com/ftpsalg/ftpsalg/test/lab"
)

// TestListenerSeesDestroy follows a forwarded TCP connection through the
// gateway namespace's conntrack table: the listener reports its DESTROY
// when the entry is deleted (as `conntrack -D` would).
func TestListenerSeesDestroy(t *testing.T) {
	lab.RequirePrivileged(t)
	l := lab.New(t, lab.Options{})
	// Conntrack is active in a namespace only once a rule needs it.
	if err := l.NftScript(lab.Gateway, "table inet cttest {\n chain f {\n  type filter hook forward priority 0\n  ct state new counter\n }\n}\n"); err != nil {
		t.Fatal(err)
	}
	ns, err := os.Open(l.NetNSPath(lab.Gateway))
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()

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
