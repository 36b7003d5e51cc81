package bench

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/test/ftpc"
	"github.com/ftpsalg/ftpsalg/test/harness"
	"github.com/ftpsalg/ftpsalg/test/lab"
)

// BenchmarkControlRTTInterleaved is BenchmarkControlRTT with the three
// paths measured in turn, one NOOP round trip each, in three labs that
// exist at the same time: whatever else the machine does (other jobs, CPU
// idle states, frequency) falls on all three alike, so the difference
// between paths is ftpsalg's, not the moment's. It reports the added
// latency per queued packet as half the median of the paired differences
// (ftpsalg minus routed, the same turn), and as half the difference of the
// medians.
func BenchmarkControlRTTInterleaved(b *testing.B) {
	lab.RequirePrivileged(b)
	const n = 3000
	paths := []string{pathRouted, pathFtpsalg, pathHelper}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	clients := make([]*ftpc.Client, len(paths))
	for i, path := range paths {
		l := lab.New(b, lab.Options{})
		v := l.StartVsftpd(lab.VsftpdOptions{})
		setupPath(b, l, path)
		c, err := harness.Client(ctx, l, netip.AddrPortFrom(lab.ServerAddr4, 21), v.User, v.Password)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		clients[i] = c
	}
	rtt := make([][]time.Duration, len(paths))
	b.ResetTimer()
	for turn := range n + 200 {
		for k := range paths {
			i := (turn + k) % len(paths) // each path first in a third of the turns
			start := time.Now()
			rep, err := clients[i].Cmd("NOOP")
			d := time.Since(start)
			if err != nil || rep.Code != 200 {
				b.Fatalf("%s: NOOP: %v %v", paths[i], rep, err)
			}
			if turn >= 200 { // warm-up
				rtt[i] = append(rtt[i], d)
			}
		}
	}
	b.StopTimer()
	diff := make([]time.Duration, n)
	for j := range n {
		diff[j] = rtt[1][j] - rtt[0][j]
	}
	slices.Sort(diff)
	for i, path := range paths {
		s := slices.Sorted(slices.Values(rtt[i]))
		b.Logf("%-14s RTT p50 %6.1f µs  p99 %6.1f µs", path, us(percentile(s, 0.5)), us(percentile(s, 0.99)))
		rtt[i] = s
	}
	added := us(percentile(diff, 0.5)) / 2
	b.ReportMetric(added, "added-µs/packet")
	b.Logf("ftpsalg added latency per queued control packet: p50 %.1f µs (half the median paired difference to routed), %.1f µs (half the difference of the medians); %d turns",
		added, (us(percentile(rtt[1], 0.5))-us(percentile(rtt[0], 0.5)))/2, n)
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
