package journald

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func TestPriorityPrefix(t *testing.T) {
	t.Parallel()
	for _, format := range []string{"json", "text"} {
		var b bytes.Buffer
		log := slog.New(newHandler(&b, format, &slog.HandlerOptions{Level: slog.LevelDebug}, true)).With("server_name", "files")
		log.Debug("d")
		log.Info("i")
		log.WithGroup("g").Warn("w", "k", 1)
		log.Error("e")
		var pris []string
		for _, l := range strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n") {
			pris = append(pris, l[:3])
			if !strings.Contains(l, "files") {
				t.Errorf("%s: line lacks the handler's attributes: %q", format, l)
			}
			rest := l[3:]
			if format == "json" && !strings.HasPrefix(rest, "{") || format == "text" && !strings.HasPrefix(rest, "time=") {
				t.Errorf("%s: record after the prefix: %q", format, rest)
			}
		}
		if diff := cmp.Diff([]string{"<7>", "<6>", "<4>", "<3>"}, pris); diff != "" {
			t.Errorf("%s: priorities (-want +got):\n%s", format, diff)
		}
	}
}

func TestNoPrefix(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	slog.New(newHandler(&b, "json", nil, false)).Warn("w")
	if !strings.HasPrefix(b.String(), "{") {
		t.Errorf("not the journal: %q", b.String())
	}
	b.Reset()
	// A buffer is never the journal, whatever JOURNAL_STREAM says.
	slog.New(NewHandler(&b, "text", nil, "1:2")).Info("i")
	if !strings.HasPrefix(b.String(), "time=") {
		t.Errorf("text to a buffer: %q", b.String())
	}
}

// TestIsJournal: the stream matches JOURNAL_STREAM by device and inode.
func TestIsJournal(t *testing.T) {
	t.Parallel()
	f, err := os.Create(filepath.Join(t.TempDir(), "stream"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	match := fmt.Sprintf("%d:%d", st.Dev, st.Ino)
	for env, want := range map[string]bool{
		match:                                  true,
		fmt.Sprintf("%d:%d", st.Dev, st.Ino+1): false,
		"":                                     false, "garbage": false, "1:x": false,
	} {
		if got := IsJournal(f, env); got != want {
			t.Errorf("IsJournal(%q) = %v, want %v", env, got, want)
		}
	}
	slog.New(NewHandler(f, "json", nil, match)).Error("e")
	got, _ := os.ReadFile(f.Name())
	if !strings.HasPrefix(string(got), "<3>{") {
		t.Errorf("journal file got %q", got)
	}
}

// TestConcurrent: records from many goroutines keep their own prefix.
func TestConcurrent(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var b bytes.Buffer
	w := writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return b.Write(p) })
	log := slog.New(newHandler(w, "json", nil, true))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 100 {
				if i%2 == 0 {
					log.Warn("warn")
				} else {
					log.With("k", i).Error("error")
				}
			}
		})
	}
	wg.Wait()
	for _, l := range strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n") {
		if strings.HasPrefix(l, "<4>") != strings.Contains(l, `"level":"WARN"`) {
			t.Fatalf("prefix does not match level: %q", l)
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
