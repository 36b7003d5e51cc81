package lab

import (
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
)

// StandaloneTB adapts the lab to a program (the demo): Logf and Fatalf go to
// a logger, and the cleanups registered by the lab run on Close.
type StandaloneTB struct {
	log  *slog.Logger
	name string

	mu       sync.Mutex
	cleanups []func()
	failed   bool
	closed   bool
}

var _ TB = (*StandaloneTB)(nil)

// Standalone returns a TB for programs. A nil logger discards. The program
// must call Close (e.g. deferred in main and on SIGINT) to delete the
// namespaces.
func Standalone(logger *slog.Logger) *StandaloneTB {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &StandaloneTB{log: logger, name: "standalone"}
}

// Helper does nothing.
func (s *StandaloneTB) Helper() {}

// Name returns "standalone".
func (s *StandaloneTB) Name() string { return s.name }

// Cleanup registers f to run on Close, last registered first.
func (s *StandaloneTB) Cleanup(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cleanups = append(s.cleanups, f)
}

// Logf logs at info level.
func (s *StandaloneTB) Logf(format string, args ...any) {
	s.log.Info(fmt.Sprintf(format, args...))
}

// Errorf logs at error level and marks the run as failed.
func (s *StandaloneTB) Errorf(format string, args ...any) {
	s.mu.Lock()
	s.failed = true
	s.mu.Unlock()
	s.log.Error(fmt.Sprintf(format, args...))
}

// Fatalf logs at error level, runs the cleanups and exits the program with
// status 1 (a program has no test goroutine to stop).
func (s *StandaloneTB) Fatalf(format string, args ...any) {
	s.Errorf(format, args...)
	s.Close()
	os.Exit(1)
}

// Failed reports whether Errorf or Fatalf was called; when true the lab
// logs its processes' output during cleanup.
func (s *StandaloneTB) Failed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

// Close runs the registered cleanups once, last registered first.
func (s *StandaloneTB) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	cleanups := slices.Clone(s.cleanups)
	s.mu.Unlock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	return nil
}
