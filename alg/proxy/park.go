package proxy

import (
	"bufio"
	"errors"
	"net"
	"os"
	"syscall"
	"time"
)

// Idle control sessions hold no goroutine (issue 12, goal 2). Each
// direction of a session (clientToServer, serverToClient) runs on a
// goroutine only while something is in flight; after parkAfter with
// nothing to read — its line reader empty, and crypto/tls holding no
// plaintext — it parks: its line reader goes back to a pool, its socket to
// the Proxy's poller, and its goroutine exits. Readiness (data, the peer's
// FIN or RST), the leg's read deadline (first_command_timeout,
// idle_timeout) or the session's end resumes it on a fresh goroutine, which
// reads on exactly where the direction stopped: nothing is read while
// parked, so nothing is lost or reordered.
//
// What makes it sound:
//   - The probe is a read under a short deadline. crypto/tls treats a
//     deadline error as temporary (the connection stays usable, a partly
//     received record stays in its buffer) and recordConn keeps a partly
//     read record header, so an interrupted read resumes byte-exact.
//   - A direction parks only at the top of its loop, between lines, with
//     its reader empty: a partial line keeps its goroutine until the line
//     completes or the deadline ends it. Its state across lines (the first
//     command, held announcement lines, the line's deadline) lives in the
//     session.
//   - The poller registers the raw TCP socket EPOLLONESHOT, level
//     triggered: bytes that arrived between the probe and the
//     registration wake it at once. TLS records that carry no plaintext
//     (session tickets after the upstream handshake, key updates) wake it
//     too; the direction reads them through crypto/tls and parks again.
//   - closeAll marks the session closed under pmu before it closes the
//     sockets: a direction parks only while the session is open, and every
//     parked direction is resumed after the close, reads the closed socket
//     and ends as it would have blocked in a read. The session's end (its
//     gateway end, audit line, metrics, the Proxy's WaitGroup) runs when
//     both directions have ended, on whichever goroutine ends last.

// defaultParkAfter is how long a direction waits with nothing to read
// before it parks. Long enough that an active session (a command and its
// reply, a listing) never parks between lines; short on the scale of idle
// control connections (minutes, for the length of a transfer).
const defaultParkAfter = 500 * time.Millisecond

// direction is one direction of a control session.
type direction struct {
	s      *session
	client bool          // the client's direction (clientToServer), else the server's
	loop   func() string // runs until the direction ends (its reason) or parks ("")
	rc     syscall.RawConn
	armed  bool // the socket is in the poller's epoll set (an earlier park)

	// Guarded by s.pmu.
	key   uint64      // the poller's key while parked, else 0
	timer *time.Timer // while parked with a read deadline: resumes at it
}

// newDirection returns the direction reading raw (the leg's TCP socket);
// one whose socket the poller cannot watch never parks.
func (s *session) newDirection(client bool, raw net.Conn, loop func() string) *direction {
	d := &direction{s: s, client: client, loop: loop}
	if sc, ok := raw.(syscall.Conn); ok && s.p.parkAfter > 0 {
		if rc, err := sc.SyscallConn(); err == nil {
			d.rc = rc
		}
	}
	return d
}

// getLineReader returns a line reader over c, from the pool when it can.
func (p *Proxy) getLineReader(c net.Conn) *bufio.Reader {
	if r, ok := p.lineReaders.Get().(*bufio.Reader); ok {
		r.Reset(c)
		return r
	}
	return newLineReader(c)
}

// putLineReader returns an empty line reader to the pool.
func (p *Proxy) putLineReader(r *bufio.Reader) {
	r.Reset(nil)
	p.lineReaders.Put(r)
}

// quiet waits up to parkAfter for the next line of d to start. It returns
// true when d has parked (the caller's goroutine returns ""); otherwise the
// leg's read deadline is deadline and the caller reads its line — which may
// meet the error the probe met (readLine reads again; EOF, a closed socket
// and TLS errors are sticky, an expired deadline expires again).
//
// *rp is the leg's line reader over conn: after a park it is nil and a
// pooled one takes its place here.
func (s *session) quiet(d *direction, raw, conn net.Conn, rp **bufio.Reader, deadline time.Time) bool {
	if *rp == nil {
		*rp = s.p.getLineReader(conn)
	}
	r := *rp
	probe := time.Now().Add(s.p.parkAfter)
	if d.rc == nil || r.Buffered() > 0 || !deadline.IsZero() && !deadline.After(probe) {
		_ = raw.SetReadDeadline(deadline)
		return false
	}
	_ = raw.SetReadDeadline(probe)
	_, err := r.Peek(1)
	_ = raw.SetReadDeadline(deadline)
	if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) || r.Buffered() > 0 {
		return false
	}
	return s.park(d, rp, deadline)
}

// park hands d's socket to the poller and its empty line reader to the
// pool. It reports false (d reads on, blocking) when the session is closing
// or the socket cannot be watched.
func (s *session) park(d *direction, rp **bufio.Reader, deadline time.Time) bool {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	if s.closed {
		return false
	}
	key, err := s.p.poller.add(d.rc, d.armed, func(key uint64) { s.unpark(d, key) })
	if err != nil {
		s.gs.Log.Debug("cannot park an idle direction", "err", err)
		d.rc = nil // do not try again
		return false
	}
	d.armed = true
	d.key = key
	if !deadline.IsZero() {
		d.timer = time.AfterFunc(time.Until(deadline), func() { s.unpark(d, key) })
	}
	s.p.putLineReader(*rp)
	*rp = nil
	s.p.parks.Add(1)
	s.p.parked.Add(1)
	s.m.MITMParked.Inc()
	return true
}

// unpark resumes d, parked under key, on a new goroutine; it does nothing
// when d is no longer parked under key (another wake came first).
func (s *session) unpark(d *direction, key uint64) {
	s.pmu.Lock()
	if key == 0 || d.key != key {
		s.pmu.Unlock()
		return
	}
	d.key = 0
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	s.pmu.Unlock()
	s.p.poller.forget(key)
	s.p.parked.Add(-1)
	s.m.MITMParked.Dec()
	go s.runDirection(d)
}

// runDirection runs d until it parks or ends.
func (s *session) runDirection(d *direction) {
	if r := d.loop(); r != "" {
		s.ended(d, r)
	}
}

// pair runs the two directions of the session, the client's on this
// goroutine (until it first parks) and the server's on one more; either
// resumes on a goroutine of its own after a park. The session ends (end)
// when both have ended, for the reason of the one that ended first: when
// the server's direction ends, the session is closed at once; when the
// client closes its side, the server may still have replies in flight that
// explain the end (a refused data connection, say), so its direction is
// given a little time to read them.
func (s *session) pair(fromClient, fromServer func() string) {
	cd := s.newDirection(true, s.rawC, fromClient)
	sd := s.newDirection(false, s.rawU, fromServer)
	s.pmu.Lock()
	s.dirs = [2]*direction{cd, sd}
	s.pmu.Unlock()
	go s.runDirection(sd)
	s.runDirection(cd)
}

// halfCloseGrace is how long the server's direction may read on after the
// client closed its side.
const halfCloseGrace = 2 * time.Second

// ended records that d ended for reason r, and ends the session when both
// directions have.
func (s *session) ended(d *direction, r string) {
	s.pmu.Lock()
	first := s.reason == ""
	if first {
		s.reason = r
	}
	s.dirsEnded++
	both := s.dirsEnded == 2
	halfClose := first && !both && d.client && r == "client_closed"
	if halfClose {
		s.grace = time.AfterFunc(halfCloseGrace, s.closeAll)
	}
	if both && s.grace != nil {
		s.grace.Stop()
	}
	s.pmu.Unlock()
	switch {
	case both:
		s.end()
	case halfClose:
		s.closeUpstreamWrite()
	case first:
		s.closeAll() // the other direction reads on, or is parked: end it
	}
}

// end ends a session whose directions have both ended.
func (s *session) end() {
	s.stop()
	s.closeAll()
	s.finish(s.reason)
	s.p.active.Add(-1)
	s.p.wg.Done()
}

// closeAll closes both legs; parked directions resume, read the closed
// sockets and end.
func (s *session) closeAll() {
	s.pmu.Lock()
	wasClosed := s.closed
	s.closed = true
	var keys [2]uint64
	for i, d := range s.dirs {
		if d != nil {
			keys[i] = d.key
		}
	}
	s.pmu.Unlock()
	if !wasClosed {
		close(s.done)
	}
	s.rawC.Close()
	if s.rawU != nil {
		s.rawU.Close()
	}
	for i, d := range s.dirs {
		if d != nil {
			s.unpark(d, keys[i])
		}
	}
}
