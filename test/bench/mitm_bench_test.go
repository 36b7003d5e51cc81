package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/test/ftpc"
	"github.com/ftpsalg/ftpsalg/test/harness"
	"github.com/ftpsalg/ftpsalg/test/lab"
)

// BenchmarkMITMSession times full FTPS control sessions against vsftpd —
// connect, AUTH TLS, login, PBSZ/PROT P, EPSV + LIST (a TLS data
// connection), QUIT — with the Go client, routed directly and through
// mitm mode, in the same run.
func BenchmarkMITMSession(b *testing.B) {
	lab.RequirePrivileged(b)
	const n = 150
	res := map[string][]time.Duration{}
	for _, path := range []string{"direct", "mitm"} {
		b.Run(path, func(b *testing.B) {
			l := lab.New(b, lab.Options{})
			pki := harness.NewPKI(b, l.Dir(), harness.PKIOptions{})
			v := l.StartVsftpd(lab.VsftpdOptions{TLS: &lab.VsftpdTLS{CertFile: pki.ServerCert, KeyFile: pki.Server}})
			if path == "mitm" {
				l.InstallGatewayFirewall(harness.CtMark)
				harness.Start(b, l, binary, pki.MITMPolicy("info", ""))
			}
			ts := ftpsSessions(b, l, pki, v, n)
			res[path] = ts
			b.ReportMetric(float64(percentile(ts, 0.5).Microseconds())/1000, "p50-ms/session")
			b.ReportMetric(float64(percentile(ts, 0.99).Microseconds())/1000, "p99-ms/session")
		})
	}
	if d, m := res["direct"], res["mitm"]; d != nil && m != nil {
		b.Logf("full FTPS control session (connect, TLS, login, PROT P, EPSV+LIST, QUIT), %d sessions: direct p50 %v p99 %v; mitm p50 %v p99 %v",
			n, percentile(d, 0.5), percentile(d, 0.99), percentile(m, 0.5), percentile(m, 0.99))
	}
}

// responder is a minimal FTPS control-channel server (greeting, AUTH TLS,
// USER, PASS, QUIT) so that the daemon, not the server, is what these
// benchmarks load.
type responder struct {
	ln   net.Listener
	conf *tls.Config
	wg   sync.WaitGroup
}

func startResponder(b *testing.B, l *lab.Lab, pki *harness.PKI) *responder {
	b.Helper()
	cert, err := tls.LoadX509KeyPair(pki.ServerCert, pki.Server)
	if err != nil {
		b.Fatal(err)
	}
	ln, err := l.Listen(lab.Server, "tcp", "[::]:21")
	if err != nil {
		b.Fatal(err)
	}
	r := &responder{ln: ln, conf: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.wg.Add(1)
			go func() { defer r.wg.Done(); r.serve(c) }()
		}
	}()
	b.Cleanup(func() { ln.Close() })
	return r
}

func (r *responder) serve(c net.Conn) {
	defer c.Close()
	rd := bufio.NewReader(c)
	fmt.Fprint(c, "220 responder\r\n")
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			return
		}
		verb, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		switch verb {
		case "AUTH":
			fmt.Fprint(c, "234 go ahead\r\n")
			tc := tls.Server(c, r.conf)
			if tc.Handshake() != nil {
				return
			}
			c, rd = tc, bufio.NewReader(tc)
		case "USER":
			fmt.Fprint(c, "331 password\r\n")
		case "PASS":
			fmt.Fprint(c, "230 in\r\n")
		case "QUIT":
			fmt.Fprint(c, "221 bye\r\n")
			return
		default:
			fmt.Fprint(c, "200 ok\r\n")
		}
	}
}

// BenchmarkMITMHandshakes counts control connections per second that
// complete AUTH TLS (a full handshake with the client and, for each, a
// full handshake with the server) from 8 concurrent clients for 5 s.
func BenchmarkMITMHandshakes(b *testing.B) {
	lab.RequirePrivileged(b)
	const workers, duration = 8, 5 * time.Second
	l := lab.New(b, lab.Options{})
	pki := harness.NewPKI(b, l.Dir(), harness.PKIOptions{})
	startResponder(b, l, pki)
	l.InstallGatewayFirewall(harness.CtMark)
	d := harness.Start(b, l, binary, pki.MITMPolicy("warn", ""))
	nd := harness.NSDialer{L: l, NS: lab.Client}
	cpu0 := cpuSeconds(b, d)
	rate := sessionRate(b, workers, duration, func(ctx context.Context) error {
		c, err := ftpc.Dial(ctx, nd, nd, netip.AddrPortFrom(lab.ServerAddr4, 21).String())
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.AuthTLS(ctx, pki.ClientTLS()); err != nil {
			return err
		}
		return c.Quit()
	}, nil)
	// The daemon's own CPU per control session: what a gateway core
	// carries, apart from the clients and the responder that share the
	// machine's cores in the benchmark.
	perHandshake := (cpuSeconds(b, d) - cpu0) / (rate * duration.Seconds())
	b.ReportMetric(rate, "handshakes/s")
	b.ReportMetric(perHandshake*1e6, "daemon-µs/handshake")
	b.Logf("mitm TLS handshakes per second (client leg, each with its upstream handshake; %d clients, %v): %.0f; daemon CPU %.0f µs per control session (%.0f per core-second)",
		workers, duration, rate, perHandshake*1e6, 1/perHandshake)
}

// BenchmarkMITMIdleMemory holds 1,000 logged-in FTPS control sessions open
// through mitm mode and reports the daemon's resident memory per session.
func BenchmarkMITMIdleMemory(b *testing.B) {
	lab.RequirePrivileged(b)
	const sessions = 1000
	l := lab.New(b, lab.Options{})
	pki := harness.NewPKI(b, l.Dir(), harness.PKIOptions{})
	startResponder(b, l, pki)
	l.InstallGatewayFirewall(harness.CtMark)
	// One client address holds them all: lift the per-client cap.
	d := harness.Start(b, l, binary, "limits:\n  max_sessions_per_client: 2000\n"+pki.MITMPolicy("warn", ""))
	nd := harness.NSDialer{L: l, NS: lab.Client}
	open := func() (*ftpc.Client, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := ftpc.Dial(ctx, nd, nd, netip.AddrPortFrom(lab.ServerAddr4, 21).String())
		if err != nil {
			return nil, err
		}
		if err := c.AuthTLS(ctx, pki.ClientTLS()); err != nil {
			c.Close()
			return nil, err
		}
		if err := c.Login("u", "p"); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
	// Warm up: code paths, the leaf cache, runtime structures.
	for range 20 {
		c, err := open()
		if err != nil {
			b.Fatal(err)
		}
		c.Quit()
	}
	before := rss(b, d.Proc.PID())
	clients := make([]*ftpc.Client, 0, sessions)
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	b.ResetTimer()
	for range sessions {
		c, err := open()
		if err != nil {
			b.Fatalf("after %d sessions: %v", len(clients), err)
		}
		clients = append(clients, c)
	}
	b.StopTimer()
	after := rss(b, d.Proc.PID())
	per := float64(after-before) / sessions
	b.ReportMetric(per/1024, "KiB-RSS/session")
	b.Logf("daemon RSS: %d KiB before, %d KiB with %d idle mitm sessions: %.1f KiB per session", before>>10, after>>10, sessions, per/1024)
}

// rss returns a process's resident set size in bytes.
func rss(b *testing.B, pid int) int64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

// ftpsSessions runs ten warm-up then n full FTPS control sessions one at a
// time with the Go client — connect, AUTH TLS, login, PBSZ/PROT P, EPSV +
// LIST (a TLS data connection), QUIT — to the lab server's port 21, and
// returns the n sessions' times, sorted.
func ftpsSessions(b *testing.B, l *lab.Lab, pki *harness.PKI, v *lab.Vsftpd, n int) []time.Duration {
	b.Helper()
	nd := harness.NSDialer{L: l, NS: lab.Client}
	var ts []time.Duration
	b.ResetTimer()
	for i := range n + 10 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		start := time.Now()
		err := func() error {
			c, err := ftpc.Dial(ctx, nd, nd, netip.AddrPortFrom(lab.ServerAddr4, 21).String())
			if err != nil {
				return err
			}
			defer c.Close()
			if err := c.AuthTLS(ctx, pki.ClientTLS()); err != nil {
				return err
			}
			if err := c.Login(v.User, v.Password); err != nil {
				return err
			}
			if err := c.Protect(true); err != nil {
				return err
			}
			if _, err := c.List(ctx, ftpc.EPSV); err != nil {
				return err
			}
			return c.Quit()
		}()
		cancel()
		if err != nil {
			b.Fatalf("session %d: %v", i, err)
		}
		if i >= 10 { // the first ten warm up
			ts = append(ts, time.Since(start))
		}
	}
	b.StopTimer()
	slices.Sort(ts)
	return ts
}
