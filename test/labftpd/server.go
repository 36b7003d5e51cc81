package labftpd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Defaults for the zero values of Config fields, with their reasons.
const (
	// DefaultIdleTimeout bounds the wait for the next command; long enough
	// for a debugger pause, short enough that a stuck test ends.
	DefaultIdleTimeout = 60 * time.Second
	// DefaultDataTimeout bounds accepting/dialling a data connection, each
	// read or write on it, each reply and each TLS handshake. Negative tests
	// that expect a blocked data connection wait for the client, not for
	// this.
	DefaultDataTimeout = 20 * time.Second
	// DefaultMaxLine bounds one command line. RFC 959 sets no limit; 4 KiB
	// holds any real command and path while keeping garbage cheap.
	DefaultMaxLine = 4096
	// DefaultGreeting is the text of the 220 reply.
	DefaultGreeting = "labftpd ready"
)

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("labftpd: server closed")

// Action tells the server what to do with one command, as decided by
// Config.Script. The zero Action means: handle the command normally.
type Action struct {
	// Before is written verbatim (include the CRLFs) before the normal reply.
	Before string
	// Replace skips the normal handling: the command has no other effect
	// (a replaced PASS does not log in, a replaced PASV opens no listener).
	Replace bool
	// After is written verbatim after the normal reply, e.g. an unsolicited
	// "227 Entering Passive Mode (...)" after a successful PASS.
	After string
	// Close ends the control connection once everything is written.
	Close bool
}

// Config configures a Server. The zero value serves an empty in-memory
// tree to any user.
type Config struct {
	// Root is the directory served. When empty, Files is served instead.
	Root string
	// Files is an in-memory tree: slash-separated paths (relative to "/")
	// to contents. It is copied by New; uploads go to the copy.
	Files map[string][]byte

	// User and Password are the only accepted login. An empty User accepts
	// any USER/PASS.
	User, Password string

	// PassiveMin and PassiveMax bound the ports of passive listeners
	// (inclusive). Zero means an ephemeral port chosen by the kernel.
	PassiveMin, PassiveMax uint16

	// AnnounceAddr, when valid and IPv4, is announced in 227 replies instead
	// of the control connection's local address (a lying or misconfigured
	// server; EPSV has no address to lie about).
	AnnounceAddr netip.Addr
	// AnnouncePort, when set, maps the real passive port to the announced
	// one in 227 and 229 replies (e.g. 22, or 0).
	AnnouncePort func(real uint16) uint16

	// AllowForeignData lets PORT/EPRT name any address and any port, and
	// passive listeners accept connections from any peer. Off (the default)
	// behaves like vsftpd: PORT/EPRT must name the client's own address and
	// a port >= 1024, passive accepts only the client (RFC 2577 §3-4).
	AllowForeignData bool

	// Script, when set, is called for every command line with the verb in
	// upper case and the argument as sent; its Action can add raw replies
	// around the normal one or replace it. It is called from the session's
	// goroutine; sessions run concurrently.
	Script func(verb, arg string) Action

	// SplitWrites, when > 0, writes every reply in chunks of at most this
	// many bytes, one Write call each, to exercise reply reassembly.
	SplitWrites int
	// SplitDelay is slept between two chunks of a split reply, so that the
	// chunks leave in separate TCP segments even with autocorking.
	SplitDelay time.Duration

	// Greeting is the text of the 220 reply (DefaultGreeting when empty).
	Greeting string
	// IdleTimeout, DataTimeout and MaxLine default to the constants above.
	IdleTimeout time.Duration
	DataTimeout time.Duration
	MaxLine     int

	// Listen creates passive data listeners; it is called with "tcp4" or
	// "tcp6" and "ip:port". Defaults to net.ListenConfig.Listen. Set it to
	// create the listener in the control listener's network namespace.
	Listen func(ctx context.Context, network, address string) (net.Listener, error)
	// Dial creates active data connections from laddr (port 0) to raddr.
	// Defaults to net.Dialer with LocalAddr. Set it like Listen.
	Dial func(ctx context.Context, network string, laddr, raddr netip.AddrPort) (net.Conn, error)

	// TLS, when set, enables FTPS (RFC 4217): AUTH TLS (or SSL, TLS-C)
	// upgrades the control connection, PBSZ and PROT P protect the data
	// connections, CCC returns the control connection to clear text. The
	// server is the TLS server on every connection, data ones included.
	// Sessions are resumable as crypto/tls allows by default (session
	// tickets), never required to be. Nil means plain FTP only: AUTH, PBSZ,
	// PROT and CCC are unknown commands.
	TLS *tls.Config
	// ImplicitTLS makes every control connection TLS from its first byte
	// (the "ftps" port 990 convention); AUTH is then refused with 503 and
	// data connections are still clear until PROT P. It needs TLS.
	ImplicitTLS bool
	// RequireTLS refuses USER and PASS with 530 unless the control
	// connection is under TLS (before AUTH, or after CCC). It needs TLS.
	RequireTLS bool

	// Logger receives one line per session event; nil discards.
	Logger *slog.Logger
}

// Server is an FTP server. Create it with New, run it with Serve and stop
// it with Close.
type Server struct {
	cfg   Config
	log   *slog.Logger
	store store
	err   error // from New, returned by Serve

	mu       sync.Mutex
	closed   bool
	closers  map[io.Closer]struct{}
	sessions sync.WaitGroup
}

// New returns a Server for cfg. A bad Root, or ImplicitTLS or RequireTLS
// without TLS, is reported by Serve.
func New(cfg Config) *Server {
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.DataTimeout <= 0 {
		cfg.DataTimeout = DefaultDataTimeout
	}
	if cfg.MaxLine <= 0 {
		cfg.MaxLine = DefaultMaxLine
	}
	if cfg.Greeting == "" {
		cfg.Greeting = DefaultGreeting
	}
	if cfg.Listen == nil {
		var lc net.ListenConfig
		cfg.Listen = lc.Listen
	}
	if cfg.Dial == nil {
		cfg.Dial = defaultDial
	}
	s := &Server{cfg: cfg, closers: make(map[io.Closer]struct{})}
	s.log = cfg.Logger
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	switch {
	case cfg.TLS == nil && cfg.ImplicitTLS:
		s.err = errors.New("labftpd: ImplicitTLS needs Config.TLS")
		return s
	case cfg.TLS == nil && cfg.RequireTLS:
		s.err = errors.New("labftpd: RequireTLS needs Config.TLS")
		return s
	}
	if cfg.Root != "" {
		st, err := newDirStore(cfg.Root)
		if err != nil {
			s.err = fmt.Errorf("failed to open root %q: %w", cfg.Root, err)
		} else {
			s.store = st
		}
	} else {
		s.store = newMemStore(cfg.Files, time.Now())
	}
	return s
}

func defaultDial(ctx context.Context, network string, laddr, raddr netip.AddrPort) (net.Conn, error) {
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(laddr)}
	return d.DialContext(ctx, network, raddr.String())
}

// Serve accepts control connections on ln and serves each in its own
// goroutine until Close is called or ln fails (with Config.ImplicitTLS,
// that goroutine starts with the TLS handshake). It closes ln on return
// and returns ErrServerClosed after Close. Serve may be called for several
// listeners (e.g. one IPv4 and one IPv6).
func (s *Server) Serve(ln net.Listener) error {
	if s.err != nil {
		ln.Close()
		return s.err
	}
	if !s.track(ln) {
		ln.Close()
		return ErrServerClosed
	}
	defer s.untrack(ln)
	defer ln.Close()
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			return fmt.Errorf("failed to accept: %w", err)
		}
		if !s.track(c) {
			c.Close()
			return ErrServerClosed
		}
		s.sessions.Add(1)
		go func() {
			defer s.sessions.Done()
			defer s.untrack(c)
			defer c.Close()
			s.serveConn(c)
		}()
	}
}

// Close stops all Serve loops, closes every control and data connection and
// passive listener, and waits for the sessions to end.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for c := range s.closers {
		c.Close()
	}
	s.mu.Unlock()
	s.sessions.Wait()
	if s.store != nil {
		return s.store.close()
	}
	return nil
}

// track registers c to be closed by Close; false means the server is
// already closed.
func (s *Server) track(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.closers[c] = struct{}{}
	return true
}

func (s *Server) untrack(c io.Closer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.closers, c)
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}
