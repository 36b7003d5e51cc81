package metrics

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestLint(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := New(reg, BuildInfo{Version: "v0-test"})
	m.Commands.WithLabelValues("PASV").Inc()
	m.Refusals.WithLabelValues("third_party_address").Inc()
	m.RelayConnections.WithLabelValues(RelayOK).Inc()
	m.RelayBytes.WithLabelValues(DirServerToClient).Add(1)
	m.RelayHandshakes.WithLabelValues("client", "true").Inc()
	probs, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range probs {
		if strings.HasPrefix(p.Metric, "ftpsalg_") {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
}

func TestLabels(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"PASV": "PASV", "XCUP": "XCUP", "XYZZY": "other", "pasv": "other", "": "other"} {
		if got := VerbLabel(in); got != want {
			t.Errorf("VerbLabel(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[int]string{227: "2xx", 150: "1xx", 530: "5xx", 99: "invalid", 600: "invalid"} {
		if got := ReplyClassLabel(in); got != want {
			t.Errorf("ReplyClassLabel(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestQueueStats(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "q")
	data := "    0  23400     0 2 65531     0     0        0  1\n 4040  23401    11 2 65531     3   105     5559  1\n"
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := ReadQueueStats(p, 4040)
	if err != nil {
		t.Fatal(err)
	}
	if st != (KernelQueueStats{Waiting: 11, Dropped: 3, UserDropped: 105}) {
		t.Fatalf("got %+v", st)
	}
	if _, err := ReadQueueStats(p, 7); err == nil {
		t.Fatal("want error for a queue that is not bound")
	}
	c := NewQueueStats(4040)
	c.Path = p
	want := `
# HELP ftpsalg_queue_kernel_user_dropped_packets_total Packets the kernel could not deliver to the daemon's socket, e.g. ENOBUFS (queue_user_dropped).
# TYPE ftpsalg_queue_kernel_user_dropped_packets_total counter
ftpsalg_queue_kernel_user_dropped_packets_total{queue="4040"} 105
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), NameQueueUserDropped); err != nil {
		t.Fatal(err)
	}
}

func TestEndpoints(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	New(reg, BuildInfo{Version: "v1", Commit: "abc", GoVersion: "go1.26", BuildDate: "2026-01-01T00:00:00Z"})
	ready := false
	s := &Server{Gath: reg, Ready: func() error {
		if !ready {
			return context.Canceled
		}
		return nil
	}}
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	if code, _ := get("/readyz"); code != 503 {
		t.Errorf("/readyz before ready = %d, want 503", code)
	}
	ready = true
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("/readyz after ready = %d, want 200", code)
	}
	code, body := get("/metrics")
	if code != 200 || !strings.Contains(body, `ftpsalg_build_info{build_date="2026-01-01T00:00:00Z",commit="abc",goversion="go1.26",version="v1"} 1`) {
		t.Errorf("/metrics = %d, body lacks build info", code)
	}
}
