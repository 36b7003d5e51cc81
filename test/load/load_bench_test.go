package load

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/test/ftpc"
	"github.com/ftpsalg/ftpsalg/test/harness"
	"github.com/ftpsalg/ftpsalg/test/lab"
)

// Environment of the benchmarks (all optional).
const (
	// envLevels lists the concurrencies of BenchmarkLoad, e.g. "1,10,100,1000".
	envLevels = "FTPSALG_LOAD_LEVELS"
	// envWindow is each level's measurement window (a Go duration).
	envWindow = "FTPSALG_LOAD_WINDOW"
	// envHeld is the number of idle sessions BenchmarkLoadIdle holds.
	envHeld = "FTPSALG_LOAD_HELD"
	// envDocs is where the pictures go (default: the repository's docs/).
	envDocs = "FTPSALG_BENCH_DOCS"
	// envServer picks BenchmarkLoad's server: labftpd (default) or vsftpd
	// (PAM logins and a process per session: then the server, not the
	// daemon, sets the pace, and its CPU is not counted).
	envServer = "FTPSALG_LOAD_SERVER"
)

func envInts(tb testing.TB, key string, def []int) []int {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			tb.Fatalf("%s: bad number %q", key, f)
		}
		out = append(out, n)
	}
	return out
}

func docsDir() string {
	if d := os.Getenv(envDocs); d != "" {
		return d
	}
	return filepath.Join("..", "..", "docs")
}

// caption says where a picture comes from.
func caption(what string) string {
	return fmt.Sprintf("%s · make bench (test/load) · %d CPUs · %s", what, runtime.NumCPU(), time.Now().UTC().Format("2006-01-02"))
}

func writeChart(tb testing.TB, name string, c Chart) {
	tb.Helper()
	doc, err := c.SVG()
	if err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
	p := filepath.Join(docsDir(), name)
	if err := os.WriteFile(p, doc, 0o644); err != nil {
		tb.Fatal(err)
	}
	tb.Logf("wrote %s", p)
}

// row is one level of BenchmarkLoad.
type row struct {
	mode string
	res  Result
	// daemon: RSS at the end of the window, peak RSS so far, CPU used
	// during the window, threads.
	rss, hwm  int64
	cpu       time.Duration
	threads   int
	serverCPU time.Duration // the embedded server process, in the window
	clientCPU time.Duration // this process (the clients), in the window
	conntrack int           // conntrack entries in the gateway afterwards
	pinholes  [3]int        // opened, used, expired during the run
}

func (r row) String() string {
	per := time.Duration(0)
	if r.res.Sessions > 0 {
		per = r.cpu / time.Duration(r.res.Sessions)
	}
	w := r.res.Window.Seconds()
	return fmt.Sprintf("%-7s %5d concurrent: %6.1f sessions/s  p50 %7.1f ms  p95 %7.1f ms  p99 %7.1f ms  failures %d  daemon RSS %5.1f MiB (peak %5.1f)  CPU %.2f cores = %.2f ms/session, %d threads  server %.2f cores  clients %.2f cores  pinholes opened/used/expired %d/%d/%d  conntrack %d",
		r.mode, r.res.Concurrency, r.res.Rate(), msf(r.res.Percentile(0.5)), msf(r.res.Percentile(0.95)), msf(r.res.Percentile(0.99)),
		r.res.Failures, mib(r.rss), mib(r.hwm), r.cpu.Seconds()/w, msf(per), r.threads,
		r.serverCPU.Seconds()/w, r.clientCPU.Seconds()/w, r.pinholes[0], r.pinholes[1], r.pinholes[2], r.conntrack)
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func mib(b int64) float64         { return float64(b) / (1 << 20) }

func mustProc(tb testing.TB, pid int) Proc {
	tb.Helper()
	p, err := ReadProc(pid)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// BenchmarkLoad runs full sessions from 1 to 1,000 concurrent clients for
// a fixed window each: FTPS through mitm mode (connect, AUTH TLS, login,
// PBSZ 0/PROT P, EPSV, RETR of a 16 KiB file over TLS, QUIT) and
// plaintext FTP through inspect mode (connect, login, PASV, RETR, QUIT),
// against the embedded server in a process of its own. It reports
// sessions/s, latency percentiles, failures and the daemon's RSS and CPU
// per level, and draws docs/bench-load-rate.svg and
// docs/bench-load-latency.svg.
func BenchmarkLoad(b *testing.B) {
	lab.RequirePrivileged(b)
	levels := envInts(b, envLevels, []int{1, 10, 100, 1000})
	window := 10 * time.Second
	if v := os.Getenv(envWindow); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatalf("%s: %v", envWindow, err)
		}
		window = d
	}
	server := serverLabftpd
	if v := os.Getenv(envServer); v != "" {
		server = v
	}
	rows := map[string][]row{}
	for _, mode := range []string{modeMITM, modeInspect} {
		tg := newTarget(b, mode, server)
		// Warm up: code paths, the minter's leaf cache, the daemon's pools.
		if res := Run(context.Background(), Config{Concurrency: 4, Window: time.Minute, SessionTimeout: 20 * time.Second, MaxSessions: 40}, tg.session); res.Failures > 0 {
			b.Fatalf("%s warm-up: %v\n%s", mode, res, res.ErrorSummary())
		}
		for _, n := range levels {
			var d0, d1, s0, s1, c0, c1 Proc
			m0 := tg.d.Metrics()
			res := Run(context.Background(), Config{Concurrency: n, Warmup: 3 * time.Second, Window: window, SessionTimeout: time.Minute,
				// CPU over exactly the window: the steady state, without
				// the burst of the start and the drain of the end.
				OnWindowStart: func() { d0, s0, c0 = mustProc(b, tg.d.Proc.PID()), mustProc(b, tg.srv.PID()), mustProc(b, os.Getpid()) },
				OnWindowEnd:   func() { d1, s1, c1 = mustProc(b, tg.d.Proc.PID()), mustProc(b, tg.srv.PID()), mustProc(b, os.Getpid()) }},
				tg.session)
			m1 := tg.d.Metrics()
			delta := func(k string) int { return int(m1[k] - m0[k]) }
			r := row{mode: mode, res: res, rss: d1.RSS, hwm: mustProc(b, tg.d.Proc.PID()).HWM, cpu: d1.CPU - d0.CPU, threads: d1.Threads,
				serverCPU: s1.CPU - s0.CPU, clientCPU: c1.CPU - c0.CPU, conntrack: tg.conntrackCount(b),
				pinholes: [3]int{delta(`ftpsalg_pinholes_opened_total{data_mode="passive"}`), delta("ftpsalg_pinholes_used_total"), delta("ftpsalg_pinholes_expired_total")}}
			b.Log(r)
			if res.Failures > 0 {
				b.Logf("%s at %d: %d failures:\n%s", mode, n, res.Failures, res.ErrorSummary())
			}
			rows[mode] = append(rows[mode], r)
		}
		tg.d.Stop()
	}
	var rate, lat []Series
	colors := map[string]string{modeMITM: palette[0], modeInspect: palette[1]}
	for _, mode := range []string{modeMITM, modeInspect} {
		s := Series{Name: mode, Color: colors[mode]}
		for _, r := range rows[mode] {
			s.Points = append(s.Points, Point{float64(r.res.Concurrency), r.res.Rate()})
		}
		rate = append(rate, s)
		for _, q := range []struct {
			p    float64
			dash string
		}{{0.50, ""}, {0.95, "7 4"}, {0.99, "2 3"}} {
			s := Series{Name: fmt.Sprintf("%s p%d", mode, int(q.p*100)), Color: colors[mode], Dash: q.dash}
			for _, r := range rows[mode] {
				if r.res.Sessions > 0 {
					s.Points = append(s.Points, Point{float64(r.res.Concurrency), msf(r.res.Percentile(q.p))})
				}
			}
			lat = append(lat, s)
		}
	}
	writeChart(b, "bench-load-rate.svg", Chart{Title: "Completed sessions per second vs concurrent sessions",
		Caption: caption(fmt.Sprintf("mitm: FTPS + 16 KiB PROT P RETR; inspect: FTP + 16 KiB RETR; %v window", window)),
		XLabel:  "concurrent sessions (log)", YLabel: "sessions/s", LogX: true, Series: rate})
	writeChart(b, "bench-load-latency.svg", Chart{Title: "Session latency percentiles vs concurrent sessions",
		Caption: caption("whole session, connect to QUIT reply"),
		XLabel:  "concurrent sessions (log)", YLabel: "session latency, ms (log)", LogX: true, LogY: true, Series: lat})
	for _, mode := range []string{modeMITM, modeInspect} {
		if rs := rows[mode]; len(rs) > 0 {
			last := rs[len(rs)-1]
			b.ReportMetric(last.res.Rate(), mode+"-sessions/s")
			b.ReportMetric(msf(last.res.Percentile(0.99)), mode+"-p99-ms")
			b.ReportMetric(float64(last.res.Failures), mode+"-failures")
		}
	}
}

// conntrackCount is the number of conntrack entries in the gateway.
func (tg *target) conntrackCount(tb testing.TB) int {
	tb.Helper()
	n := -1
	_ = tg.l.InNS(lab.Gateway, func() error {
		raw, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_count")
		if err == nil {
			n, _ = strconv.Atoi(strings.TrimSpace(string(raw)))
		}
		return err
	})
	return n
}

// goMemory returns the daemon's Go runtime figures from its /metrics.
func goMemory(tb testing.TB, d *harness.Daemon) map[string]float64 {
	tb.Helper()
	code, body, err := d.Get("/metrics")
	if err != nil || code != 200 {
		tb.Fatalf("failed to scrape metrics: %d %v", code, err)
	}
	m := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, "go_") && !strings.HasPrefix(line, "process_") && !strings.HasPrefix(line, "ftpsalg_control_sessions_active") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m
}

// heldPoint is the daemon's memory with some sessions held.
type heldPoint struct {
	held       int
	rss        int64
	anon       int64 // smaps_rollup Anonymous
	heapInuse  float64
	stackInuse float64
	goroutines float64
	fds        int
}

func (p heldPoint) String() string {
	return fmt.Sprintf("%6d held: RSS %7.1f MiB (anonymous %7.1f)  Go heap in use %7.1f MiB  stacks %6.1f MiB  goroutines %6.0f  fds %d",
		p.held, mib(p.rss), mib(p.anon), p.heapInuse/(1<<20), p.stackInuse/(1<<20), p.goroutines, p.fds)
}

func (tg *target) heldPoint(tb testing.TB, held int) heldPoint {
	tb.Helper()
	pid := tg.d.Proc.PID()
	p := mustProc(tb, pid)
	sm, err := ReadSmapsRollup(pid)
	if err != nil {
		tb.Fatal(err)
	}
	g := goMemory(tb, tg.d)
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return heldPoint{held: held, rss: p.RSS, anon: sm["Anonymous"], heapInuse: g["go_memstats_heap_inuse_bytes"],
		stackInuse: g["go_memstats_stack_inuse_bytes"], goroutines: g["go_goroutines"], fds: len(fds)}
}

// fileLimitOf reads a process's soft RLIMIT_NOFILE from /proc/PID/limits.
func fileLimitOf(pid int) string {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return err.Error()
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "Max open files") {
			return strings.Join(strings.Fields(line)[3:5], " soft, ") + " hard"
		}
	}
	return "unknown"
}

// BenchmarkLoadIdle holds up to 10,000 idle FTPS control sessions through
// mitm mode — connected, TLS up on both legs, logged in, then left alone —
// and reads the daemon's memory at checkpoints on the way: RSS, anonymous
// memory, the Go heap and stacks. Then it closes them all and reads RSS
// again right away, 10 s and 130 s later (the runtime returns freed memory
// to the OS in the background, and collects an idle heap every 2 minutes). It draws docs/bench-load-rss.svg.
func BenchmarkLoadIdle(b *testing.B) {
	lab.RequirePrivileged(b)
	target := 10000
	if v := envInts(b, envHeld, nil); len(v) == 1 {
		target = v[0]
	}
	limit, err := RaiseFileLimit(fileLimit)
	if err != nil {
		b.Fatal(err)
	}
	tg := newTarget(b, modeMITM, serverLabftpd)
	pid := tg.d.Proc.PID()
	b.Logf("file limits: this process %d; daemon %s; server %s", limit, fileLimitOf(pid), fileLimitOf(tg.srv.PID()))
	// Warm up as BenchmarkMITMIdleMemory does: code paths, the leaf cache.
	if res := Run(context.Background(), Config{Concurrency: 4, Window: time.Minute, SessionTimeout: 20 * time.Second, MaxSessions: 20}, tg.session); res.Failures > 0 {
		b.Fatalf("warm-up: %v\n%s", res, res.ErrorSummary())
	}
	var checkpoints []int
	for _, n := range []int{1000, 2000, 4000, 6000, 8000, 10000, 20000, 50000} {
		if n < target {
			checkpoints = append(checkpoints, n)
		}
	}
	checkpoints = append(checkpoints, target)

	points := []heldPoint{tg.heldPoint(b, 0)}
	b.Log(points[0])
	var (
		mu      sync.Mutex
		clients []*ftpc.Client
		errs    = map[string]int{}
	)
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	const openers = 32
	start := time.Now()
	failed := false
	for _, cp := range checkpoints {
		want := cp - len(clients)
		res := Run(context.Background(), Config{Concurrency: min(openers, want), Window: 30 * time.Minute, SessionTimeout: 15 * time.Second, MaxSessions: want},
			func(ctx context.Context) error {
				c, err := tg.open(ctx, 15*time.Second)
				if err != nil {
					return err
				}
				mu.Lock()
				clients = append(clients, c)
				mu.Unlock()
				return nil
			})
		for e, n := range res.Errors {
			errs[e] += n
		}
		p := tg.heldPoint(b, len(clients))
		b.Logf("%v  (opened %d in %v, %.0f/s)", p, res.Sessions, res.Elapsed.Round(time.Millisecond), float64(res.Sessions)/res.Elapsed.Seconds())
		points = append(points, p)
		if res.Failures > 0 {
			failed = true
			b.Logf("%d sessions failed to open at %d held (daemon fds %d, limit %s):\n%s", res.Failures, len(clients), p.fds, fileLimitOf(pid), res.ErrorSummary())
			break
		}
	}
	b.Logf("held %d sessions after %v", len(clients), time.Since(start).Round(time.Second))
	// Are they still alive? A NOOP on a sample of them, through the daemon.
	for i := 0; i < len(clients); i += max(1, len(clients)/50) {
		if _, err := clients[i].Cmd("NOOP"); err != nil {
			b.Errorf("held session %d: %v", i, err)
		}
	}

	held := points[len(points)-1]
	base := points[0]
	for _, p := range points[1:] {
		if p.held == 1000 || p == held {
			b.Logf("at %d held: %.1f KiB RSS per session over the idle daemon (%.1f KiB Go heap, %.1f KiB stacks, %.1f KiB anonymous)",
				p.held, float64(p.rss-base.rss)/1024/float64(p.held), (p.heapInuse-base.heapInuse)/1024/float64(p.held),
				(p.stackInuse-base.stackInuse)/1024/float64(p.held), float64(p.anon-base.anon)/1024/float64(p.held))
		}
	}
	b.ReportMetric(float64(held.held), "sessions-held")
	b.ReportMetric(mib(held.rss), "MiB-RSS-held")
	b.ReportMetric(float64(held.rss-base.rss)/1024/float64(max(held.held, 1)), "KiB-RSS/session")

	// Close everything and watch the memory go back.
	closeStart := time.Now()
	for _, c := range clients {
		c.Close()
	}
	clients = nil
	tg.d.WaitMetric(`ftpsalg_control_sessions_active{mode="mitm"}`, 0)
	b.Logf("all sessions ended in the daemon %v after the clients closed", time.Since(closeStart).Round(time.Millisecond))
	after := []heldPoint{tg.heldPoint(b, 0)}
	for _, wait := range []time.Duration{10 * time.Second, 130 * time.Second} {
		// Not synchronisation: the runtime returns memory over time (the
		// background scavenger; garbage an idle daemon leaves waits for
		// the forced GC every 2 minutes), and this measures how much
		// after how long.
		<-time.After(time.Until(closeStart.Add(wait)))
		after = append(after, tg.heldPoint(b, 0))
	}
	for i, label := range []string{"right after", "10 s after", "130 s after"} {
		b.Logf("%s close: %v", label, after[i])
	}
	b.ReportMetric(mib(after[len(after)-1].rss), "MiB-RSS-after-close")

	rss := Series{Name: "RSS (VmRSS)"}
	heap := Series{Name: "Go heap in use*"}
	stack := Series{Name: "goroutine stacks"}
	for _, p := range points {
		x := float64(p.held)
		rss.Points = append(rss.Points, Point{x, mib(p.rss)})
		heap.Points = append(heap.Points, Point{x, p.heapInuse / (1 << 20)})
		stack.Points = append(stack.Points, Point{x, p.stackInuse / (1 << 20)})
	}
	// Issue 12, goal 2: 10,000 idle sessions in at most 400 MiB.
	goal := Series{Name: "goal: 400 MiB at 10,000", Color: "#888888", Dash: "4 4", Points: []Point{{0, 400}, {10000, 400}}}
	writeChart(b, "bench-load-rss.svg", Chart{Title: "ftpsalg memory vs idle mitm sessions held",
		Caption: caption(fmt.Sprintf("TLS on both legs, logged in; %d held at most; *live and not yet collected", held.held)),
		XLabel:  "idle mitm sessions held", YLabel: "MiB", Series: []Series{rss, heap, stack, goal}})
	if failed {
		b.Logf("stopped short of %d: %s", target, strings.TrimSpace(fmt.Sprint(errs)))
	}
}
