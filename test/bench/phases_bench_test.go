package bench

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/metrics"
	"github.com/ftpsalg/ftpsalg/test/ftpc"
	"github.com/ftpsalg/ftpsalg/test/harness"
	"github.com/ftpsalg/ftpsalg/test/lab"
	"github.com/ftpsalg/ftpsalg/test/labftpd"
)

// BenchmarkSessionPhases times the phases of sequential plaintext sessions
// (one client) against the embedded server, through ftpsalg and through
// the kernel helper: where a session's added latency goes.
func BenchmarkSessionPhases(b *testing.B) {
	lab.RequirePrivileged(b)
	const n = 300
	phases := []string{"connect+220", "USER+PASS", "PASV+LIST+226", "QUIT", "total"}
	for _, path := range []string{pathFtpsalg, pathHelper} {
		b.Run(path, func(b *testing.B) {
			l := lab.New(b, lab.Options{})
			l.StartLabftpd(lab.Server, 21, labftpd.Config{User: "u", Password: "p",
				Files:      map[string][]byte{"a.txt": []byte("a\n")},
				PassiveMin: lab.DefaultPasvMinPort, PassiveMax: lab.DefaultPasvMaxPort})
			d := setupPath(b, l, path)
			nd := harness.NSDialer{L: l, NS: lab.Client}
			times := make([][]time.Duration, len(phases))
			for i := range n + 20 {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				t0 := time.Now()
				c, err := ftpc.Dial(ctx, nd, nd, netip.AddrPortFrom(lab.ServerAddr4, 21).String())
				if err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if err := c.Login("u", "p"); err != nil {
					b.Fatal(err)
				}
				t2 := time.Now()
				if _, err := c.List(ctx, ftpc.PASV); err != nil {
					b.Fatal(err)
				}
				t3 := time.Now()
				if err := c.Quit(); err != nil {
					b.Fatal(err)
				}
				t4 := time.Now()
				c.Close()
				cancel()
				if i < 20 {
					continue
				}
				for j, d := range []time.Duration{t1.Sub(t0), t2.Sub(t1), t3.Sub(t2), t4.Sub(t3), t4.Sub(t0)} {
					times[j] = append(times[j], d)
				}
			}
			if d != nil {
				// The daemon's own time: per queued packet from its batch's
				// arrival to the verdicts' send, and per pinhole commit.
				m := d.Metrics()
				for _, h := range []string{metrics.NameVerdictLatency, metrics.NamePinholeCommit} {
					if c := m[h+"_count"]; c > 0 {
						b.Logf("%-14s %-34s mean %6.1f µs over %.0f", path, h, m[h+"_sum"]/c*1e6, c)
					}
				}
			}
			for j, p := range phases {
				slices.Sort(times[j])
				b.Logf("%-14s %-14s p50 %7.0f µs  p90 %7.0f µs", path, p, float64(percentile(times[j], 0.5).Nanoseconds())/1e3, float64(percentile(times[j], 0.9).Nanoseconds())/1e3)
			}
		})
	}
}
