package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ftpsalg/ftpsalg/metrics"
)

// Tests of idle sessions parking (park.go). A short parkAfter makes the
// sessions park within milliseconds.
const testParkAfter = 20 * time.Millisecond

// Parking is a state of the proxy, not an event anything waits on; the
// parked-leg count (the gauge operators read) is its observable form, so
// these tests poll it, bounded (waitFor), rather than add a hook to the
// proxy's path.

// waitParked waits until n legs are parked and at least parks parks have
// happened since the rig started.
func (rg *rig) waitParked(n, parks int64) {
	rg.t.Helper()
	waitFor(rg.t, func() bool { return rg.p.ParkedLegs() == n && rg.p.parks.Load() >= parks })
}

// login opens an explicit FTPS session through the proxy and logs in. wrap,
// if set, wraps the client's socket under its TLS layer.
func (rg *rig) login(wrap func(net.Conn) net.Conn) *client {
	rg.t.Helper()
	c := rg.startTLS(wrap)
	for _, step := range [][2]string{{"USER alice", "331"}, {"PASS secret", "230"}} {
		if r := c.cmd(step[0]); !strings.HasPrefix(r, step[1]) {
			rg.t.Fatalf("%s: %q, want %s", step[0], r, step[1])
		}
	}
	return c
}

// startTLS opens an explicit FTPS session through the proxy.
func (rg *rig) startTLS(wrap func(net.Conn) net.Conn) *client {
	rg.t.Helper()
	c := rg.dial()
	if g := c.read(); !strings.HasPrefix(g, "220") {
		rg.t.Fatalf("greeting %q", g)
	}
	if r := c.cmd("AUTH TLS"); !strings.HasPrefix(r, "234") {
		rg.t.Fatalf("AUTH: %q", r)
	}
	raw := c.c
	if wrap != nil {
		c.c = wrap(raw)
	}
	if err := c.startTLS(rg.caPool); err != nil {
		rg.t.Fatal(err)
	}
	c.raw = raw
	return c
}

// TestParkIdleSessions: idle sessions hold no goroutine in the proxy, and a
// command to a parked session is relayed; the session parks again.
func TestParkIdleSessions(t *testing.T) {
	rg := newRig(t, rigOpts{parkAfter: testParkAfter})
	base := runtime.NumGoroutine()
	const n = 10
	cs := make([]*client, n)
	for i := range cs {
		cs[i] = rg.login(nil)
	}
	rg.waitParked(2*n, 2*n)
	// Left: the scripted server's goroutine per session and the poller's.
	if g := runtime.NumGoroutine() - base; g > n+2 {
		t.Errorf("%d goroutines more than before %d idle sessions, want at most %d (the server's and the poller)", g, n, n+2)
	}
	if got := testutil.ToFloat64(rg.m.MITMParked); got != 2*n {
		t.Errorf("%s = %v, want %d", metrics.NameMITMParked, got, 2*n)
	}
	for _, c := range cs {
		if r := c.cmd("PBSZ 0"); r != "200 ok." {
			t.Fatalf("PBSZ from a parked session: %q", r)
		}
	}
	rg.waitParked(2*n, 4*n)
	for _, c := range cs {
		if r := c.cmd("QUIT"); !strings.HasPrefix(r, "221") {
			t.Fatalf("QUIT: %q", r)
		}
	}
	waitFor(t, func() bool { return rg.p.Sessions() == 0 })
	if got := rg.p.ParkedLegs(); got != 0 {
		t.Errorf("%d legs parked after the sessions ended", got)
	}
}

// TestParkIdleTimeout: a parked session still ends after idle_timeout.
func TestParkIdleTimeout(t *testing.T) {
	t.Parallel()
	rg := newRig(t, rigOpts{parkAfter: testParkAfter, idle: 300 * time.Millisecond})
	c := rg.login(nil)
	rg.waitParked(2, 2)
	if r := c.read(); !strings.HasPrefix(r, "421") || !strings.Contains(r, "idle") {
		t.Fatalf("after idle_timeout: %q, want a 421", r)
	}
	if _, err := c.r.ReadString('\n'); err == nil {
		t.Fatal("the connection is still open after idle_timeout")
	}
	waitFor(t, func() bool { return rg.p.Sessions() == 0 })
	if got := testutil.ToFloat64(rg.m.Refusals.WithLabelValues("idle_timeout")); got != 1 {
		t.Fatalf("idle_timeout refusals %v, want 1", got)
	}
}

// TestParkShutdown: the Proxy's context ending closes parked sessions, and
// Serve returns once they have ended (gateway end, metrics).
func TestParkShutdown(t *testing.T) {
	t.Parallel()
	rg := newRig(t, rigOpts{parkAfter: testParkAfter})
	cs := []*client{rg.login(nil), rg.login(nil)}
	rg.waitParked(4, 4)
	if err := rg.stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if n := rg.p.Sessions(); n != 0 {
		t.Fatalf("%d sessions after Serve returned", n)
	}
	if got := testutil.ToFloat64(rg.m.SessionsActive.WithLabelValues(metrics.ModeMITM)); got != 0 {
		t.Fatalf("active mitm sessions %v after shutdown", got)
	}
	if got := rg.p.ParkedLegs(); got != 0 {
		t.Fatalf("%d legs parked after shutdown", got)
	}
	for _, c := range cs {
		if l, err := c.r.ReadString('\n'); err == nil {
			t.Fatalf("read %q after shutdown, want the connection closed", l)
		}
	}
}

// TestParkServerLine: a reply the server sends while both directions are
// parked reaches the client.
func TestParkServerLine(t *testing.T) {
	t.Parallel()
	rg := newRig(t, rigOpts{parkAfter: testParkAfter})
	c := rg.login(nil)
	rg.waitParked(2, 2)
	if _, err := io.WriteString(c.c, "SLOW\r\n"); err != nil {
		t.Fatal(err)
	}
	// The client's direction woke, forwarded it and parked again; the
	// server's stayed parked: the server has not answered.
	rg.waitParked(2, 3)
	close(rg.srv.release)
	if r := c.read(); r != "200 slow done." {
		t.Fatalf("the reply sent while parked: %q", r)
	}
}

// capConn holds back what is written to it while capturing.
type capConn struct {
	net.Conn
	mu        sync.Mutex
	capturing bool
	buf       []byte
}

func (c *capConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	if c.capturing {
		c.buf = append(c.buf, b...)
		c.mu.Unlock()
		return len(b), nil
	}
	c.mu.Unlock()
	return c.Conn.Write(b)
}

// capture starts capturing; the returned function stops and returns what
// was written meanwhile.
func (c *capConn) capture() func() []byte {
	c.mu.Lock()
	c.capturing = true
	c.mu.Unlock()
	return func() []byte {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.capturing = false
		b := c.buf
		c.buf = nil
		return b
	}
}

// TestParkPartialRecord: a TLS record that arrives in pieces, its header
// split, with the direction parking between the pieces, is read whole: the
// command is relayed once and intact.
func TestParkPartialRecord(t *testing.T) {
	t.Parallel()
	rg := newRig(t, rigOpts{parkAfter: testParkAfter})
	var cc *capConn
	c := rg.login(func(raw net.Conn) net.Conn { cc = &capConn{Conn: raw}; return cc })
	rg.waitParked(2, 2)
	stop := cc.capture()
	if _, err := io.WriteString(c.c, "PBSZ 0\r\n"); err != nil {
		t.Fatal(err)
	}
	rec := stop()
	if len(rec) < 12 {
		t.Fatalf("a record of %d bytes", len(rec))
	}
	parks := rg.p.parks.Load()
	for i, piece := range [][]byte{rec[:3], rec[3:10], rec[10:]} {
		if _, err := cc.Conn.Write(piece); err != nil {
			t.Fatal(err)
		}
		if i < 2 {
			// The client's direction woke, read the piece into
			// crypto/tls (via recordConn), found no plaintext and parked
			// again.
			parks++
			rg.waitParked(2, parks)
		}
	}
	if r := c.read(); r != "200 ok." {
		t.Fatalf("PBSZ sent in pieces: %q", r)
	}
	if r := c.cmd("PBSZ 0"); r != "200 ok." {
		t.Fatalf("PBSZ after: %q", r)
	}
}

// TestParkSessionTicket: the server's TLS 1.3 session ticket, a record with
// no plaintext, arriving while the server's direction is parked, is read
// by crypto/tls; the direction parks again and the stream stays in
// sequence.
func TestParkSessionTicket(t *testing.T) {
	t.Parallel()
	rg := newRig(t, rigOpts{parkAfter: testParkAfter, holdTicket: true})
	c := rg.startTLS(nil)
	select {
	case <-rg.srv.ticketHeld:
	default:
		t.Fatal("the server held back no session ticket")
	}
	rg.waitParked(2, 2)
	parks := rg.p.parks.Load()
	if err := rg.srv.releaseTicket(); err != nil {
		t.Fatal(err)
	}
	rg.waitParked(2, parks+1)
	// The ticket was read in order: a record lost or read out of
	// sequence fails the next one's decryption.
	for _, step := range [][2]string{{"USER alice", "331"}, {"PASS secret", "230"}} {
		if r := c.cmd(step[0]); !strings.HasPrefix(r, step[1]) {
			t.Fatalf("%s after the ticket: %q, want %s", step[0], r, step[1])
		}
	}
}

// TestTLSReadAfterDeadline checks what parking relies on: a read of a
// crypto/tls connection (over recordConn, through a line reader) that
// fails with its deadline, part of a record (and of its header) received,
// leaves the connection usable, and the next read returns the record's
// plaintext.
func TestTLSReadAfterDeadline(t *testing.T) {
	t.Parallel()
	_, _, cert := issue(t, "files.test", nil, []string{"files.test"}, false, nil, nil)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type server struct {
		tc *tls.Conn
		cc *capConn
	}
	srvc := make(chan server, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			close(srvc)
			return
		}
		cc := &capConn{Conn: raw}
		tc := tls.Server(cc, &tls.Config{Certificates: []tls.Certificate{cert}})
		if tc.Handshake() != nil {
			close(srvc)
			return
		}
		srvc <- server{tc, cc}
	}()
	raw, err := net.DialTimeout("tcp4", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetWriteDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(newRecordConn(raw, nil), &tls.Config{InsecureSkipVerify: true})
	_ = raw.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	srv, ok := <-srvc
	if !ok {
		t.Fatal("server handshake failed")
	}
	defer srv.tc.Close()
	stop := srv.cc.capture()
	if _, err := io.WriteString(srv.tc, "221 Goodbye.\r\n"); err != nil {
		t.Fatal(err)
	}
	rec := stop()
	r := newLineReader(tc)
	for _, piece := range [][]byte{rec[:2], rec[2:9]} {
		if _, err := srv.cc.Conn.Write(piece); err != nil {
			t.Fatal(err)
		}
		_ = raw.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if _, err := r.Peek(1); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Peek with a piece of %d bytes of the record: %v, want a deadline error", len(piece), err)
		}
	}
	if _, err := srv.cc.Conn.Write(rec[9:]); err != nil {
		t.Fatal(err)
	}
	_ = raw.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := readLine(r, 1024)
	if err != nil || string(line) != "221 Goodbye.\r\n" {
		t.Fatalf("after the deadlines: %q, %v", line, err)
	}
}

// BenchmarkCommandRoundTrip times one command and its reply through a
// logged-in mitm session, back to back (the session never idles long
// enough to park), with parking on (the default parkAfter: each line is
// probed under a deadline first) and off (the read path before parking):
//
//	go test -run '^$' -bench CommandRoundTrip ./alg/proxy
func BenchmarkCommandRoundTrip(b *testing.B) {
	for _, bc := range []struct {
		name      string
		parkAfter time.Duration
	}{{"parking", 0}, {"never_parks", -1}} {
		b.Run(bc.name, func(b *testing.B) {
			rg := newRig(b, rigOpts{parkAfter: bc.parkAfter, timeout: 30 * time.Second})
			c := rg.login(nil)
			_ = c.raw.SetDeadline(time.Time{})
			b.ResetTimer()
			for range b.N {
				if _, err := io.WriteString(c.c, "PBSZ 0\r\n"); err != nil {
					b.Fatal(err)
				}
				if l, err := c.r.ReadString('\n'); err != nil || l != "200 ok.\r\n" {
					b.Fatalf("PBSZ: %q %v", l, err)
				}
			}
		})
	}
}
