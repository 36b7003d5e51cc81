// Package bench measures ftpsalg against the real kernel in the lab: what a
// queued control packet costs, and how many control sessions per second the
// inspect path carries, each beside the same run without ftpsalg (routed)
// and through the kernel's own FTP helper. Run with `make bench` (root).
package bench

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/test/ftpc"
	"github.com/ftpsalg/ftpsalg/test/harness"
	"github.com/ftpsalg/ftpsalg/test/lab"
	"github.com/ftpsalg/ftpsalg/test/labftpd"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ftpsalg-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	if binary = os.Getenv("FTPSALG_BENCH_BINARY"); binary == "" {
		// FTPSALG_BENCH_BINARY runs the benchmarks against another build,
		// such as an earlier commit's, for A/B figures of one run.
		binary, err = harness.Build(ctx, "../..", dir, false)
	}
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Paths a control connection can take through the gateway.
const (
	pathRouted  = "routed"  // default-drop firewall, control port allowed, no ALG
	pathFtpsalg = "ftpsalg" // the same, plus ftpsalg in inspect mode
	pathHelper  = "kernel-helper"
)

// setupPath prepares the gateway for path; ftpsalg logs at info level as in
// production.
func setupPath(b *testing.B, l *lab.Lab, path string) *harness.Daemon {
	b.Helper()
	switch path {
	case pathRouted:
		l.InstallGatewayFirewall(harness.CtMark)
	case pathFtpsalg:
		l.InstallGatewayFirewall(harness.CtMark)
		pol := strings.Replace(harness.Policy([]int{21}, "", ""), "level: debug", "level: info", 1)
		return harness.Start(b, l, binary, pol)
	case pathHelper:
		l.GatewayHelperFirewall()
	}
	return nil
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	return sorted[int(float64(len(sorted)-1)*p)]
}

// BenchmarkControlRTT measures NOOP round trips on one logged-in control
// connection to vsftpd. Each round trip crosses the gateway twice (command
// and reply), so ftpsalg's added latency per queued packet is half the
// difference to the routed path.
func BenchmarkControlRTT(b *testing.B) {
	lab.RequirePrivileged(b)
	const n = 3000
	results := map[string][]time.Duration{}
	for _, path := range []string{pathRouted, pathFtpsalg, pathHelper} {
		b.Run(path, func(b *testing.B) {
			l := lab.New(b, lab.Options{})
			v := l.StartVsftpd(lab.VsftpdOptions{})
			setupPath(b, l, path)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			c, err := harness.Client(ctx, l, netip.AddrPortFrom(lab.ServerAddr4, 21), v.User, v.Password)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			for range 200 { // warm up caches and the daemon's allocations
				if _, err := c.Cmd("NOOP"); err != nil {
					b.Fatal(err)
				}
			}
			results[path] = roundTrips(b, c, n, "NOOP", "rtt", func(rep ftpc.Reply) error {
				if rep.Code != 200 {
					return fmt.Errorf("NOOP: %v", rep)
				}
				return nil
			})
		})
	}
	if r, f := results[pathRouted], results[pathFtpsalg]; r != nil && f != nil {
		b.Logf("ftpsalg added latency per queued control packet: p50 %.1f µs, p99 %.1f µs (half the RTT difference to routed, %d round trips)",
			float64(percentile(f, 0.5)-percentile(r, 0.5))/2e3, float64(percentile(f, 0.99)-percentile(r, 0.99))/2e3, n)
	}
}

// BenchmarkSessions runs complete plaintext control sessions (connect,
// login, PASV, LIST over the data connection, QUIT) from 4 concurrent
// clients for a fixed time against the embedded server, through ftpsalg
// and through the kernel helper.
func BenchmarkSessions(b *testing.B) {
	lab.RequirePrivileged(b)
	const (
		workers  = 4
		duration = 5 * time.Second
	)
	rates := map[string]float64{}
	for _, path := range []string{pathFtpsalg, pathHelper} {
		b.Run(path, func(b *testing.B) {
			l := lab.New(b, lab.Options{})
			l.StartLabftpd(lab.Server, 21, labftpd.Config{User: "u", Password: "p",
				Files:      map[string][]byte{"a.txt": []byte("a\n"), "b.txt": []byte("b\n")},
				PassiveMin: lab.DefaultPasvMinPort, PassiveMax: lab.DefaultPasvMaxPort,
				Logger: nil})
			d := setupPath(b, l, path)
			rate := sessionRate(b, workers, duration, func(ctx context.Context) error { return session(ctx, l) }, func() {
				if d == nil {
					return
				}
				for k, v := range d.Metrics() {
					if strings.Contains(k, "queue") || strings.Contains(k, "refusals") || strings.Contains(k, "evictions") {
						b.Logf("%s %v", k, v)
					}
				}
			})
			rates[path] = rate
			b.ReportMetric(rate, "sessions/s")
		})
	}
	b.Logf("control sessions per second (4 clients, %v): ftpsalg %.0f, kernel helper %.0f", duration, rates[pathFtpsalg], rates[pathHelper])
}

// roundTrips times n commands cmd on c, each checked by check, and
// reports the p50 and p99 as "p50-µs/<unit>" and "p99-µs/<unit>". It
// returns the sorted durations.
func roundTrips(b *testing.B, c *ftpc.Client, n int, cmd, unit string, check func(ftpc.Reply) error) []time.Duration {
	b.Helper()
	rtts := make([]time.Duration, 0, n)
	b.ResetTimer()
	for range n {
		start := time.Now()
		rep, err := c.Cmd(cmd)
		if err != nil {
			b.Fatalf("%s: %v", cmd, err)
		}
		rtts = append(rtts, time.Since(start))
		if err := check(rep); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	slices.Sort(rtts)
	b.ReportMetric(float64(percentile(rtts, 0.5).Microseconds()), "p50-µs/"+unit)
	b.ReportMetric(float64(percentile(rtts, 0.99).Microseconds()), "p99-µs/"+unit)
	return rtts
}

// sessionRate runs fn from workers goroutines, over and over, for
// duration (each call with a 10 s deadline), and returns the completed calls
// per second. Any failed call fails the benchmark, after report (which may
// be nil) has logged what helps explain it.
func sessionRate(b *testing.B, workers int, duration time.Duration, fn func(context.Context) error, report func()) float64 {
	b.Helper()
	var done, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	stop := start.Add(duration)
	for range workers {
		wg.Go(func() {
			for time.Now().Before(stop) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := fn(ctx)
				cancel()
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if f := failed.Load(); f > 0 {
		if report != nil {
			report()
		}
		b.Fatalf("%d sessions failed; first: %v", f, firstErr.Load())
	}
	return float64(done.Load()) / elapsed.Seconds()
}

func session(ctx context.Context, l *lab.Lab) error {
	c, err := harness.Client(ctx, l, netip.AddrPortFrom(lab.ServerAddr4, 21), "u", "p")
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.List(ctx, ftpc.PASV); err != nil {
		return err
	}
	return c.Quit()
}
