package conntrack_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/conntrack"
	"github.com/ftpsalg/ftpsalg/test/lab"
)

// TestLookupReplyDestination reads a masqueraded connection's reply
// destination through one Lookup several times: every answer is the
// gateway's address, the unknown flow is ErrNoFlow, and the Lookup keeps
// one socket across them instead of dialling per look-up.
func TestLookupReplyDestination(t *testing.T) {
	lab.RequirePrivileged(t)
	l := lab.New(t, lab.Options{})
	if err := l.NftScript(lab.Gateway, "table ip lookuptest {\n chain post {\n  type nat hook postrouting priority 100\n  ip daddr 198.51.100.2 masquerade\n }\n}\n"); err != nil {
		t.Fatal(err)
	}
	ln, err := l.Listen(lab.Server, "tcp4", "198.51.100.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	srv := ln.Addr().(*net.TCPAddr).AddrPort()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var conn net.Conn
	if err := l.InNS(lab.Client, func() error {
		var err error
		conn, err = (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp4", srv.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var seen net.Conn
	select {
	case seen = <-accepted:
		defer seen.Close()
	case <-ctx.Done():
		t.Fatal("the server accepted nothing")
	}
	src := conn.LocalAddr().(*net.TCPAddr).AddrPort()
	want := seen.RemoteAddr().(*net.TCPAddr).AddrPort() // as the server knows the client
	if want.Addr() != netip.MustParseAddr("198.51.100.1") {
		t.Fatalf("the server sees the client as %v: not masqueraded", want)
	}

	var lk conntrack.Lookup
	defer lk.Close()
	err = l.InNS(lab.Gateway, func() error {
		for i := range 3 {
			got, err := lk.ReplyDestination(ctx, src, srv)
			if err != nil {
				return err
			}
			if got != want {
				t.Errorf("look-up %d: reply destination %v, want %v", i, got, want)
			}
		}
		unknown := netip.AddrPortFrom(src.Addr(), src.Port()^0x8000)
		if _, err := lk.ReplyDestination(ctx, unknown, srv); !errors.Is(err, conntrack.ErrNoFlow) {
			t.Errorf("unknown flow: %v, want ErrNoFlow", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := conntrack.IdleSockets(&lk); n != 1 {
		t.Errorf("%d sockets kept after four sequential look-ups, want 1", n)
	}
	// A look-up whose context has ended fails and keeps nothing.
	done, stop := context.WithCancel(ctx)
	stop()
	lk.Close()
	if err := l.InNS(lab.Gateway, func() error {
		_, err := lk.ReplyDestination(done, src, srv)
		return err
	}); err == nil {
		t.Error("look-up with an ended context succeeded")
	}
	if n := conntrack.IdleSockets(&lk); n != 0 {
		t.Errorf("%d sockets kept after a cancelled look-up, want 0", n)
	}
}
