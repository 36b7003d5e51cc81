package bench

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/test/harness"
	"github.com/ftpsalg/ftpsalg/test/lab"
)

// BenchmarkUnrelatedConnections measures what the gateway's other traffic
// costs ftpsalg: short TCP connections from the client to a port no policy
// names (8080, let through by the operator's firewall) for 5 s from 4
// workers, with ftpsalg running in inspect mode, and the daemon's CPU time
// per connection. None of these connections is queued; whatever the
// daemon spends on them is overhead a busy edge gateway pays for every
// connection it forwards.
func BenchmarkUnrelatedConnections(b *testing.B) {
	lab.RequirePrivileged(b)
	const workers, duration = 4, 5 * time.Second
	l := lab.New(b, lab.Options{})
	l.InstallGatewayFirewall(harness.CtMark, 8080)
	pol := strings.Replace(harness.Policy([]int{21}, "", ""), "level: debug", "level: info", 1)
	d := harness.Start(b, l, binary, pol)
	ln, err := l.ListenAndClose(lab.Server, "tcp4", "198.51.100.2:8080")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	nd := harness.NSDialer{L: l, NS: lab.Client}
	target := netip.MustParseAddrPort("198.51.100.2:8080").String()
	cpu0 := cpuSeconds(b, d)
	rate := sessionRate(b, workers, duration, func(ctx context.Context) error {
		c, err := nd.DialContext(ctx, "tcp4", target)
		if err != nil {
			return err
		}
		// Wait for the server's close, so that the connection's conntrack
		// entry goes through its states as a real one does.
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Read(make([]byte, 1))
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // no TIME_WAIT pile-up on the client's ports
		}
		return c.Close()
	}, nil)
	per := (cpuSeconds(b, d) - cpu0) / (rate * duration.Seconds())
	b.ReportMetric(rate, "conns/s")
	b.ReportMetric(per*1e6, "daemon-µs/conn")
	b.Logf("unrelated connections: %.0f/s; daemon CPU %.1f µs per connection", rate, per*1e6)
}
