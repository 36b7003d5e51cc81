package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"
)

// cmdStatus reads a running daemon's /readyz and /metrics and prints the
// figures an operator looks at first.
func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("metrics", "127.0.0.1:9641", "the daemon's metrics listen address")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	get := func(path string) (int, string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+*addr+path, nil)
		if err != nil {
			return 0, "", err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
		return resp.StatusCode, string(b), err
	}
	code, body, err := get("/readyz")
	if err != nil {
		fmt.Fprintf(stderr, "ftpsalg: failed to reach the daemon at %s: %v\n", *addr, err)
		return 1
	}
	fmt.Fprintf(stdout, "ready: %s\n", strings.TrimSpace(body))
	_, body, err = get("/metrics")
	if err != nil {
		fmt.Fprintf(stderr, "ftpsalg: failed to read metrics: %v\n", err)
		return 1
	}
	for _, l := range summarise(body) {
		fmt.Fprintln(stdout, l)
	}
	if code != http.StatusOK {
		return 1
	}
	return 0
}

// summarise picks ftpsalg's own samples out of an exposition, sorted.
func summarise(exposition string) []string {
	var out []string
	s := bufio.NewScanner(strings.NewReader(exposition))
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		l := s.Text()
		if !strings.HasPrefix(l, "ftpsalg_") || strings.Contains(l, "_bucket{") {
			continue
		}
		out = append(out, l)
	}
	sort.Strings(out)
	return out
}
