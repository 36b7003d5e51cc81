// Package journald builds the daemon's slog handler: JSON or text records
// on a stream, each line prefixed with its syslog priority ("<4>") when the
// stream is connected to systemd's journal, the sd-daemon(3) convention
// journald understands (SyslogLevelPrefix=yes, its default): it strips the
// prefix and records the priority, so `journalctl -p warning` filters.
package journald

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Syslog priorities (sd-daemon.h SD_*) for slog's levels.
const (
	PriErr     = 3
	PriWarning = 4
	PriInfo    = 6
	PriDebug   = 7
)

// Priority maps a slog level to a syslog priority.
func Priority(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return PriErr
	case l >= slog.LevelWarn:
		return PriWarning
	case l >= slog.LevelInfo:
		return PriInfo
	}
	return PriDebug
}

// IsJournal reports whether f is the stream systemd connected to the
// journal: JOURNAL_STREAM (journalStream) holds "DEV:INODE" of that
// stream, and f's must match (a redirected stream in a child does not).
func IsJournal(f *os.File, journalStream string) bool {
	devS, inoS, ok := strings.Cut(journalStream, ":")
	if !ok || f == nil {
		return false
	}
	dev, err1 := strconv.ParseUint(devS, 10, 64)
	ino, err2 := strconv.ParseUint(inoS, 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return uint64(st.Dev) == dev && st.Ino == ino
}

// NewHandler returns a handler writing format ("json" or "text") records
// to w, with syslog priority prefixes when w is an *os.File that is the
// journal stream named by journalStream (os.Getenv("JOURNAL_STREAM")).
func NewHandler(w io.Writer, format string, opts *slog.HandlerOptions, journalStream string) slog.Handler {
	f, _ := w.(*os.File)
	return newHandler(w, format, opts, IsJournal(f, journalStream))
}

func newHandler(w io.Writer, format string, opts *slog.HandlerOptions, prefix bool) slog.Handler {
	mk := func(w io.Writer) slog.Handler {
		if format == "text" {
			return slog.NewTextHandler(w, opts)
		}
		return slog.NewJSONHandler(w, opts)
	}
	if !prefix {
		return mk(w)
	}
	pw := &prefixWriter{w: w}
	return &Handler{inner: mk(pw), pw: pw}
}

// Handler prefixes each record's line with its priority. slog's built-in
// handlers write a record with one Write, so the prefix is set for that
// Write under a lock shared by the handlers WithAttrs and WithGroup derive.
type Handler struct {
	inner slog.Handler
	pw    *prefixWriter
}

type prefixWriter struct {
	mu  sync.Mutex
	w   io.Writer
	pri int
	buf []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.buf = append(p.buf[:0], '<', byte('0'+p.pri), '>')
	p.buf = append(p.buf, b...)
	if _, err := p.w.Write(p.buf); err != nil {
		return 0, err
	}
	return len(b), nil
}

// Enabled implements slog.Handler.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool { return h.inner.Enabled(ctx, l) }

// Handle implements slog.Handler.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	h.pw.mu.Lock()
	defer h.pw.mu.Unlock()
	h.pw.pri = Priority(r.Level)
	return h.inner.Handle(ctx, r)
}

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	return &Handler{inner: h.inner.WithAttrs(as), pw: h.pw}
}

// WithGroup implements slog.Handler.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{inner: h.inner.WithGroup(name), pw: h.pw}
}
