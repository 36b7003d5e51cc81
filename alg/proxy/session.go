package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/ftp"
	"github.com/ftpsalg/ftpsalg/alg/gateway"
	"github.com/ftpsalg/ftpsalg/alg/policy"
	"github.com/ftpsalg/ftpsalg/metrics"
)

// session is one diverted control connection and its upstream twin. What
// the gateway does around the protocol (admission, pinholes and their
// translation, audit) is its gateway session's; this holds the
// connections and what the stream path alone knows (TLS, the relay).
type session struct {
	p   *Proxy
	gs  *gateway.Session
	srv *policy.Server // gs.Server
	m   *metrics.Metrics

	rawC, rawU net.Conn      // TCP connections (closed at the end)
	crec, urec *recordConn   // what the TLS layers read from, per leg
	cconn      net.Conn      // client leg: rawC, or TLS over it
	uconn      net.Conn      // upstream leg
	cr, ur     *bufio.Reader // line readers over cconn and uconn

	cw sync.Mutex // serialises writes to the client

	mu    sync.Mutex // guards core and the fields below
	core  *ftp.Session
	tlsOn bool
	sni   string
	// upPending is the upstream leg's TLS connection, verified by
	// serverToClient before it relays a 234; the client's handshake that
	// follows uses it.
	upPending *tls.Conn

	// Data relay (data: relay). prot is the protection level in force
	// (RFC 4217 PROT: "C" or "P"), pendingProt the one last asked for.
	prot, pendingProt string
	// srvTLS is the client-facing TLS config of the control connection,
	// reused for the relay's data connections: same certificate (leaf),
	// same session ticket keys, so the client can resume its control
	// session on them. upData is the upstream config for data
	// connections, resuming the upstream control session from upCache.
	srvTLS   *tls.Config
	leaf     *tls.Certificate
	upData   *tls.Config
	upCache  *sessionCache
	relayed  []relayKey // expectations registered, for cleanup
	dataNote dataNote   // why the server will refuse the current data connection

	transition chan finalReply // s2c → c2s: the final reply to AUTH or CCC
	resume     chan error      // c2s → s2c: the legs switched (or failed)

	// What a direction keeps across its parks (park.go). The client's:
	// whether a complete command came yet, whether it is waiting for a
	// line, and that line's read deadline (first_command_timeout, then
	// idle_timeout from the last complete command). The server's: the
	// held lines of a multi-line announcement (serverToClient).
	cStarted, cWaiting bool
	cDeadline          time.Time
	held               []byte
	holding, overflow  bool

	stop func() bool   // stops closing the session with the Proxy's context
	done chan struct{} // closed by closeAll

	pmu       sync.Mutex // guards the fields below and the directions' park state
	closed    bool       // closeAll ran: directions no longer park
	dirs      [2]*direction
	reason    string // why the session ended: the first direction to end says
	dirsEnded int
	grace     *time.Timer // after the client's half-close: closes the session
}

// finalReply is the server's final reply to a command that switches the
// legs between clear text and TLS.
type finalReply struct {
	verb string
	code int
}

func (p *Proxy) handle(ctx context.Context, c net.Conn) {
	orig := addrPort(c.LocalAddr())
	var gs *gateway.Session
	var refused *gateway.Refusal
	if od, ok := originalDst(c); ok && od != orig {
		// The operator's dnat sent this connection here (the follow
		// chain diverts it by its translated destination): conntrack's
		// original tuple names the address the client asked for.
		gs, refused = p.gw.AdmitFollowed(addrPort(c.RemoteAddr()), od, orig)
	} else {
		gs, refused = p.gw.Admit(gateway.Stream, addrPort(c.RemoteAddr()), orig)
	}
	if refused != nil {
		// A client of an explicit port reads why; one of an implicit
		// port speaks TLS first and would read garbage.
		if !refused.Implicit {
			_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, _ = io.WriteString(c, refused.Reply)
		}
		c.Close()
		return
	}
	s := &session{p: p, gs: gs, srv: gs.Server, m: p.o.Metrics, rawC: c, cconn: c, prot: "C",
		transition: make(chan finalReply, 1), resume: make(chan error, 1), done: make(chan struct{})}
	s.core = ftp.NewSession(gs.CoreConfig(gateway.Stream, false))
	// From accept to the first complete command (the ClientHello of an
	// implicit port included): a client that trickles bytes is not held.
	if d := gs.Policy.Limits.FirstCommandTimeout; d > 0 {
		s.cDeadline = time.Now().Add(d)
		_ = c.SetReadDeadline(s.cDeadline)
	}
	p.active.Add(1)
	reason, started := s.run(ctx)
	if started {
		return // the directions end the session (park.go)
	}
	s.closeAll() // whatever path run took, both legs end with the session
	s.finish(reason)
	p.active.Add(-1)
}

// terminatesTLS reports whether the session terminates TLS (mitm mode).
// A translated inspect session relays TLS untouched, as bytes.
func (s *session) terminatesTLS() bool { return s.srv.Mode == policy.ModeMITM }

func (s *session) implicit() bool { return s.gs.Implicit() }

func (s *session) maxLine() int { return s.gs.MaxLine() }

// closeUpstreamWrite sends the server end-of-stream (TLS close_notify
// first when the leg is TLS) while leaving its replies readable.
func (s *session) closeUpstreamWrite() {
	type closeWriter interface{ CloseWrite() error }
	if cw, ok := s.uconn.(closeWriter); ok {
		_ = cw.CloseWrite()
	}
	if s.uconn != s.rawU {
		if cw, ok := s.rawU.(closeWriter); ok {
			_ = cw.CloseWrite()
		}
	}
}

func (s *session) handshakeTimeout() time.Duration {
	if s.srv.MITM != nil && s.srv.MITM.TLS.HandshakeTimeout > 0 {
		return s.srv.MITM.TLS.HandshakeTimeout
	}
	return 10 * time.Second
}

func (s *session) writeClient(line string) error {
	s.cw.Lock()
	defer s.cw.Unlock()
	_ = s.cconn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	_, err := io.WriteString(s.cconn, line)
	return err
}

func (s *session) writeUp(line []byte) error {
	_ = s.uconn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	_, err := s.uconn.Write(line)
	return err
}

var errLineTooLong = errors.New("line too long")

// lineBufSize is the buffer of a control connection's line reader.
// Control lines are short (commands and replies of a few dozen bytes); a
// longer one, up to the policy's max_line, is assembled from fragments.
// An idle session keeps two of these, so they are small.
const lineBufSize = 512

func newLineReader(c net.Conn) *bufio.Reader { return bufio.NewReaderSize(c, lineBufSize) }

// readLine reads one control line of at most max bytes, terminator
// included.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err == nil && len(line) <= max {
		return slices.Clone(line), nil
	}
	var buf []byte
	for errors.Is(err, bufio.ErrBufferFull) && len(buf)+len(line) <= max {
		buf = append(buf, line...)
		line, err = r.ReadSlice('\n')
	}
	switch {
	case len(buf)+len(line) > max:
		return nil, errLineTooLong
	case err != nil:
		return nil, err
	}
	return append(buf, line...), nil
}

// finish ends the session: its relay expectations go, and the gateway
// settles its pinholes and writes its end line.
func (s *session) finish(reason string) {
	s.mu.Lock()
	keys := s.relayed
	s.relayed = nil
	s.mu.Unlock()
	s.p.forget(s, keys...)
	s.gs.End(reason)
}

// bufferedConn reads first what a line reader already buffered, so that a
// TLS handshake starting after a clear-text line loses no bytes.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) {
	if b.r != nil {
		if b.r.Buffered() > 0 {
			return b.r.Read(p)
		}
		// Drained: the clear-text reader is not read again (its leg
		// has a new one over TLS); let it go rather than keep its
		// buffer for the session's life.
		b.r = nil
	}
	return b.Conn.Read(p)
}
