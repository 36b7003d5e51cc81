package bench

import (
	"fmt"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/test/harness"
	"github.com/ftpsalg/ftpsalg/test/lab"
)

// BenchmarkOpaqueSessions times full FTPS control sessions against
// vsftpd — connect, AUTH TLS, login, PBSZ/PROT P, EPSV + LIST (a TLS data
// connection admitted by the session's opaque range), QUIT — with the Go
// client, routed directly (no firewall) and through opaque mode, one at
// a time, and reports sessions per second.
func BenchmarkOpaqueSessions(b *testing.B) {
	lab.RequirePrivileged(b)
	const n = 200
	res := map[string][]time.Duration{}
	for _, path := range []string{"direct", "opaque"} {
		b.Run(path, func(b *testing.B) {
			l := lab.New(b, lab.Options{})
			pki := harness.NewPKI(b, l.Dir(), harness.PKIOptions{})
			v := l.StartVsftpd(lab.VsftpdOptions{TLS: &lab.VsftpdTLS{CertFile: pki.ServerCert, KeyFile: pki.Server}})
			if path == "opaque" {
				l.InstallGatewayFirewall(harness.CtMark)
				harness.Start(b, l, binary, fmt.Sprintf(`log:
  level: info
servers:
  - name: lab
    addresses: [%s, "%s"]
    control_ports: [21]
    passive_ports: "%d-%d"
    mode: opaque
    clients: ["192.0.2.0/24", "2001:db8:c::/64"]
`, lab.ServerAddr4, lab.ServerAddr6, lab.DefaultPasvMinPort, lab.DefaultPasvMaxPort))
			}
			ts := ftpsSessions(b, l, pki, v, n)
			var total time.Duration
			for _, d := range ts {
				total += d
			}
			res[path] = ts
			b.ReportMetric(float64(percentile(ts, 0.5).Microseconds())/1000, "p50-ms/session")
			b.ReportMetric(float64(percentile(ts, 0.99).Microseconds())/1000, "p99-ms/session")
			b.ReportMetric(float64(n)/total.Seconds(), "sessions/s")
		})
	}
	if d, o := res["direct"], res["opaque"]; d != nil && o != nil {
		b.Logf("full FTPS session (connect, TLS, login, PROT P, EPSV+LIST, QUIT), %d sequential: direct p50 %v p99 %v; opaque p50 %v p99 %v",
			n, percentile(d, 0.5), percentile(d, 0.99), percentile(o, 0.5), percentile(o, 0.99))
	}
}
