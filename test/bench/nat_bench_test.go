package bench

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/test/ftpc"
	"github.com/ftpsalg/ftpsalg/test/harness"
	"github.com/ftpsalg/ftpsalg/test/lab"
	"github.com/ftpsalg/ftpsalg/test/labftpd"
)

// Paths an announcement can take in the NAT benchmarks.
const (
	natRouted     = "routed"            // no ftpsalg: the client reaches the server's own address
	natPacketPath = "inspect-packet"    // ftpsalg inspect mode on the packet path, no translation
	natStreamPath = "inspect-translate" // ftpsalg inspect mode, published server: stream path, 227 rewritten
)

// natPublicAddr is the published address in the NAT benchmarks.
var natPublicAddr = lab.GatewayClientAddr4

// setupNATPath prepares the gateway for path and returns the address the
// client connects to. The published server keeps the default public_ports
// (its passive range): its ports are announced unchanged when free.
func setupNATPath(b *testing.B, l *lab.Lab, path string) netip.Addr {
	b.Helper()
	if path == natRouted {
		return lab.ServerAddr4 // plain routing: no firewall, no ftpsalg
	}
	l.InstallGatewayFirewall(harness.CtMark)
	info := func(p string) string { return strings.Replace(p, "level: debug", "level: info", 1) }
	switch path {
	case natPacketPath:
		harness.Start(b, l, binary, info(harness.Policy([]int{21}, "", "")))
	case natStreamPath:
		harness.Start(b, l, binary, info(harness.Policy([]int{21},
			fmt.Sprintf("    public: [%s]\n", natPublicAddr), "")))
		return natPublicAddr
	}
	return lab.ServerAddr4
}

// BenchmarkNATAnnouncement measures the PASV → 227 round trip on one
// logged-in control connection to vsftpd: routed, on the packet path (no
// rewrite) and on the stream path with the 227 rewritten to the public
// address and a pinhole with its translation committed before the reply
// leaves. The difference to routed is what an announcement costs.
func BenchmarkNATAnnouncement(b *testing.B) {
	lab.RequirePrivileged(b)
	const n = 2000
	results := map[string][]time.Duration{}
	for _, path := range []string{natRouted, natPacketPath, natStreamPath} {
		b.Run(path, func(b *testing.B) {
			l := lab.New(b, lab.Options{})
			v := l.StartVsftpd(lab.VsftpdOptions{})
			target := setupNATPath(b, l, path)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			c, err := harness.Client(ctx, l, netip.AddrPortFrom(target, 21), v.User, v.Password)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			for range 100 {
				if _, err := c.Cmd("PASV"); err != nil {
					b.Fatal(err)
				}
			}
			results[path] = roundTrips(b, c, n, "PASV", "pasv", func(rep ftpc.Reply) error {
				if rep.Code != 227 {
					return fmt.Errorf("PASV: %v", rep)
				}
				if a, err := ftpc.ParsePASV(rep.Text); err != nil || a.Addr() != target {
					return fmt.Errorf("227 %q names %s (%v); want %s", rep.Text, a, err, target)
				}
				return nil
			})
		})
	}
	r := results[natRouted]
	for _, path := range []string{natPacketPath, natStreamPath} {
		if f := results[path]; r != nil && f != nil {
			b.Logf("%s: PASV→227 p50 %v p99 %v; added to routed (p50 %v, p99 %v): p50 %.1f µs, p99 %.1f µs (%d announcements)",
				path, percentile(f, 0.5).Round(time.Microsecond), percentile(f, 0.99).Round(time.Microsecond),
				percentile(r, 0.5).Round(time.Microsecond), percentile(r, 0.99).Round(time.Microsecond),
				float64(percentile(f, 0.5)-percentile(r, 0.5))/1e3, float64(percentile(f, 0.99)-percentile(r, 0.99))/1e3, n)
		}
	}
}

// BenchmarkNATSessions runs complete plaintext control sessions (connect,
// login, PASV, LIST, QUIT) from 4 clients for a fixed time against the
// embedded server: on the packet path, and on the stream path with every
// 227 translated.
func BenchmarkNATSessions(b *testing.B) {
	lab.RequirePrivileged(b)
	const (
		workers  = 4
		duration = 5 * time.Second
	)
	rates := map[string]float64{}
	for _, path := range []string{natPacketPath, natStreamPath} {
		b.Run(path, func(b *testing.B) {
			l := lab.New(b, lab.Options{})
			l.StartLabftpd(lab.Server, 21, labftpd.Config{User: "u", Password: "p",
				Files:      map[string][]byte{"a.txt": []byte("a\n")},
				PassiveMin: lab.DefaultPasvMinPort, PassiveMax: lab.DefaultPasvMaxPort})
			target := setupNATPath(b, l, path)
			rate := sessionRate(b, workers, duration, func(ctx context.Context) error { return natSession(ctx, l, target) }, nil)
			rates[path] = rate
			b.ReportMetric(rate, "sessions/s")
		})
	}
	b.Logf("control sessions per second (4 clients, %v): packet path %.0f, stream path with translation %.0f",
		duration, rates[natPacketPath], rates[natStreamPath])
}

func natSession(ctx context.Context, l *lab.Lab, target netip.Addr) error {
	c, err := harness.Client(ctx, l, netip.AddrPortFrom(target, 21), "u", "p")
	if err != nil {
		return err
	}
	defer c.Close()
	c.TrustPASV = true
	if _, err := c.List(ctx, ftpc.PASV); err != nil {
		return err
	}
	return c.Quit()
}

// BenchmarkNATThroughput downloads 50 MiB five times over one data
// connection each: routed to the server's own address, and through a
// translated pinhole of a published server (client → public:port, DNAT to
// the server). The median is reported.
func BenchmarkNATThroughput(b *testing.B) {
	lab.RequirePrivileged(b)
	const size = 50 << 20
	medians := map[string]time.Duration{}
	for _, path := range []string{natRouted, natStreamPath} {
		b.Run(path, func(b *testing.B) {
			l := lab.New(b, lab.Options{})
			v := l.StartVsftpd(lab.VsftpdOptions{})
			if _, err := v.CreateFile("big.bin", size); err != nil {
				b.Fatal(err)
			}
			want, err := v.SHA256("big.bin")
			if err != nil {
				b.Fatal(err)
			}
			target := setupNATPath(b, l, path)
			var times []time.Duration
			b.ResetTimer()
			for range 5 {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				c, err := harness.Client(ctx, l, netip.AddrPortFrom(target, 21), v.User, v.Password)
				if err != nil {
					cancel()
					b.Fatal(err)
				}
				c.TrustPASV = true
				start := time.Now()
				sum, _, err := c.Retrieve(ctx, ftpc.PASV, "big.bin")
				el := time.Since(start)
				c.Close()
				cancel()
				if err != nil || sum != want {
					b.Fatalf("download: %v (sha256 %s, want %s)", err, sum, want)
				}
				times = append(times, el)
			}
			b.StopTimer()
			slices.Sort(times)
			medians[path] = times[len(times)/2]
			b.ReportMetric(float64(size)/(1<<20)/times[len(times)/2].Seconds(), "MiB/s")
		})
	}
	if r, t := medians[natRouted], medians[natStreamPath]; r > 0 && t > 0 {
		b.Logf("50 MiB download, median of 5: routed %v (%.0f MiB/s), translated pinhole %v (%.0f MiB/s)",
			r.Round(time.Millisecond), float64(size)/(1<<20)/r.Seconds(), t.Round(time.Millisecond), float64(size)/(1<<20)/t.Seconds())
	}
}
