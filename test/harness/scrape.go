package harness

import (
	"strconv"
	"strings"
)

// Get fetches path from the daemon's metrics server inside the gateway
// (/readyz, /metrics) and returns the status code and the body.
func (d *Daemon) Get(path string) (int, string, error) { return d.get(path) }

// Sample returns one sample of any metric the daemon exports, ftpsalg's
// own or the Go runtime's (go_goroutines), keyed name{labels}; ok is false
// when the daemon does not export it.
func (d *Daemon) Sample(key string) (v float64, ok bool) {
	d.t.Helper()
	code, body, err := d.get("/metrics")
	if err != nil || code != 200 {
		d.t.Fatalf("failed to scrape metrics: %d %v", code, err)
	}
	for _, line := range strings.Split(body, "\n") {
		i := strings.LastIndexByte(line, ' ')
		if i < 0 || line[:i] != key {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			return v, true
		}
	}
	return 0, false
}
