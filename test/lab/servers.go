package lab

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ftpsalg/ftpsalg/test/labftpd"
)

// StartLabftpd serves cfg with the embedded FTP server on [::]:port in ns
// (IPv4 clients arrive as mapped addresses; passive listeners are bound to
// the unmapped local address). Unless set, cfg.Listen and cfg.Dial are
// bound to ns, and cfg.Logger writes a debug log under the lab's logs. The
// server is closed in cleanup. It calls t.Fatalf on failure.
func (l *Lab) StartLabftpd(ns string, port uint16, cfg labftpd.Config) *labftpd.Server {
	l.t.Helper()
	if cfg.Listen == nil {
		cfg.Listen = l.ListenFunc(ns)
	}
	if cfg.Dial == nil {
		cfg.Dial = l.DialFunc(ns)
	}
	var logFile *os.File
	if cfg.Logger == nil {
		if err := os.MkdirAll(filepath.Join(l.dir, "logs"), 0o755); err != nil {
			l.t.Fatalf("lab: %v", err)
		}
		f, err := os.Create(filepath.Join(l.dir, "logs", fmt.Sprintf("%03d-%s-labftpd.log", l.nextSeq(), ns)))
		if err != nil {
			l.t.Fatalf("lab: %v", err)
		}
		logFile = f
		cfg.Logger = slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ln, err := l.Listen(ns, "tcp", fmt.Sprintf("[::]:%d", port))
	if err != nil {
		l.t.Fatalf("lab: failed to listen in %s: %v", ns, err)
	}
	srv := labftpd.New(cfg)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	l.addCleanup(func() error {
		err := srv.Close()
		select {
		case serr := <-done:
			if !errors.Is(serr, labftpd.ErrServerClosed) && err == nil {
				err = serr
			}
		case <-time.After(cleanupTimeout):
			err = errors.New("labftpd did not stop")
		}
		if logFile != nil {
			logFile.Close()
		}
		return err
	})
	return srv
}

// Sink is a TCP listener that accepts everything and counts connections and
// bytes: the stand-in for a third-party host that must receive nothing.
type Sink struct {
	ln    net.Listener
	addr  netip.AddrPort
	conns atomic.Int64
	bytes atomic.Int64
	wg    sync.WaitGroup
	mu    sync.Mutex
	open  map[net.Conn]struct{}
}

// StartSink listens on addr in ns (port 0 picks one) and counts what
// arrives until cleanup. It calls t.Fatalf on failure.
func (l *Lab) StartSink(ns string, addr netip.AddrPort) *Sink {
	l.t.Helper()
	ln, err := l.Listen(ns, "tcp", addr.String())
	if err != nil {
		l.t.Fatalf("lab: failed to start sink on %s in %s: %v", addr, ns, err)
	}
	s := &Sink{ln: ln, open: make(map[net.Conn]struct{})}
	s.addr, _ = netip.ParseAddrPort(ln.Addr().String())
	s.wg.Add(1)
	go s.serve()
	l.addCleanup(s.Close)
	return s
}

func (s *Sink) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.conns.Add(1)
		s.mu.Lock()
		s.open[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.open, c)
				s.mu.Unlock()
				c.Close()
			}()
			c.SetDeadline(time.Now().Add(time.Minute))
			n, _ := io.Copy(io.Discard, c)
			s.bytes.Add(n)
		}()
	}
}

// Addr is the address the sink listens on.
func (s *Sink) Addr() netip.AddrPort { return s.addr }

// Conns is the number of connections accepted so far.
func (s *Sink) Conns() int64 { return s.conns.Load() }

// Bytes is the number of bytes received on closed connections so far.
func (s *Sink) Bytes() int64 { return s.bytes.Load() }

// Close stops the sink and waits for its goroutines. It is idempotent.
func (s *Sink) Close() error {
	err := s.ln.Close()
	s.mu.Lock()
	for c := range s.open {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
