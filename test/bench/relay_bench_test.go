package bench

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/certs"
	"github.com/ftpsalg/ftpsalg/test/harness"
	"github.com/ftpsalg/ftpsalg/test/lab"
)

// Data paths of an FTPS download.
const (
	dataRouted      = "routed"      // no ftpsalg, no firewall: the gateway forwards everything
	dataPassthrough = "passthrough" // ftpsalg mitm, data forwarded by the kernel through a pinhole
	dataRelay       = "relay"       // ftpsalg mitm with data: relay
	dataRelayNAT    = "relay-nat"   // the same, the server published at a gateway address (docs/nat.md)
	// Clear data (PROT C, TLS on the control connection only): routed,
	// and through a relay server, whose clear data the kernel forwards.
	dataRoutedClear = "routed-protc"
	dataRelayClear  = "relay-protc"
	// The stateful firewall operators run without an ALG: the same
	// default-drop forward chain, with vsftpd's whole passive range open
	// and no ftpsalg. Against it, relay-protc shows ftpsalg's own cost.
	dataFirewallClear = "firewall-protc"
)

// BenchmarkFTPSDownload downloads a 50 MiB file with curl, PROT P over
// EPSV, five times per path, in the same run: routed without ftpsalg,
// through ftpsalg's mitm mode with passthrough data connections (vsftpd
// require_ssl_reuse=NO, which passthrough needs), and through the data
// relay (vsftpd's default require_ssl_reuse=YES). For ftpsalg it also
// reads the daemon's CPU time (/proc/PID/stat utime+stime) before and
// after the downloads and reports it per GiB downloaded.
func BenchmarkFTPSDownload(b *testing.B) {
	lab.RequirePrivileged(b)
	const (
		size   = 50 << 20
		rounds = 5
	)
	type result struct {
		median, best time.Duration
		data         time.Duration // median of the data phase alone (curl: time_total - time_starttransfer)
		cpuPerGiB    float64
		suite        string // what curl negotiated on the data connection
	}
	results := map[string]result{}
	for _, path := range []string{dataRouted, dataPassthrough, dataRelay, dataRelayNAT, dataRoutedClear, dataFirewallClear, dataRelayClear} {
		b.Run(path, func(b *testing.B) {
			l := lab.New(b, lab.Options{})
			caDir, caFile, certFile, keyFile := operatorCA(b, l)
			v := l.StartVsftpd(lab.VsftpdOptions{TLS: &lab.VsftpdTLS{CertFile: certFile, KeyFile: keyFile,
				RequireSSLReuse: path == dataRelay || path == dataRelayNAT || path == dataRelayClear}})
			want, err := v.CreateFile("big.bin", size)
			if err != nil {
				b.Fatal(err)
			}
			var d *harness.Daemon
			if path == dataFirewallClear {
				var passive []uint16
				for p := lab.DefaultPasvMinPort; p <= lab.DefaultPasvMaxPort; p++ {
					passive = append(passive, uint16(p))
				}
				l.InstallGatewayFirewall(harness.CtMark, passive...)
			}
			if path != dataRouted && path != dataRoutedClear && path != dataFirewallClear {
				l.InstallGatewayFirewall(harness.CtMark)
				data := ""
				switch path {
				case dataRelay, dataRelayClear:
					data = "    data: relay\n"
				case dataRelayNAT:
					data = fmt.Sprintf("    data: relay\n    public: [%s]\n", natPublicAddr)
				}
				d = harness.Start(b, l, binary, mitmPolicy(caDir, caFile, data))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			// One warm-up download (page cache, the daemon's leaf cache).
			var suite string
			var phases []time.Duration
			download := func() time.Duration {
				target := lab.ServerAddr4
				if path == dataRelayNAT {
					target = natPublicAddr
				}
				args := []string{"--cacert", caFile, "--ssl-reqd"}
				if path == dataRoutedClear || path == dataFirewallClear || path == dataRelayClear {
					args = []string{"--cacert", caFile, "--ftp-ssl-control"} // PROT C
				}
				args = append(args, "-w", "\ncurl-times %{time_starttransfer} %{time_total}\n")
				tr, err := l.DownloadCurl(ctx, v.URL(target, "big.bin"), lab.EPSV, args...)
				if err != nil {
					b.Fatalf("download: %v", err)
				}
				if tr.SHA256 != want {
					b.Fatal("sha256 mismatch")
				}
				os.Remove(tr.Local)
				// The last "SSL connection using" line is the data connection's.
				if i := strings.LastIndex(tr.Output, "SSL connection using "); i >= 0 {
					suite, _, _ = strings.Cut(tr.Output[i+len("SSL connection using "):], "\n")
				}
				var start, total float64
				if i := strings.LastIndex(tr.Output, "curl-times "); i < 0 {
					b.Fatalf("no curl-times line in curl's output")
				} else if _, err := fmt.Sscanf(tr.Output[i:], "curl-times %g %g", &start, &total); err != nil {
					b.Fatalf("curl-times: %v", err)
				}
				phases = append(phases, time.Duration((total-start)*float64(time.Second)))
				return tr.Elapsed
			}
			download()
			phases = phases[:0]
			cpu0 := cpuSeconds(b, d)
			b.ResetTimer()
			var times []time.Duration
			for range rounds {
				times = append(times, download())
			}
			b.StopTimer()
			cpu := cpuSeconds(b, d) - cpu0
			slices.Sort(times)
			slices.Sort(phases)
			r := result{median: times[len(times)/2], best: times[0], data: phases[len(phases)/2], suite: suite}
			b.ReportMetric(size/(1<<20)/r.data.Seconds(), "data-MiB/s")
			b.ReportMetric(size/(1<<20)/r.median.Seconds(), "MiB/s")
			if d != nil {
				r.cpuPerGiB = cpu / (rounds * size / float64(1<<30))
				b.ReportMetric(r.cpuPerGiB, "cpu-s/GiB")
				if path == dataRelayClear {
					if n := d.Metrics()[`ftpsalg_relay_connections_total{result="ok"}`]; n != 0 {
						b.Fatalf("%v clear data connections relayed, want 0 (forwarded by the kernel)", n)
					}
				}
				if path == dataRelay || path == dataRelayNAT {
					if m := d.Metrics(); m[`ftpsalg_relay_connections_total{result="ok"}`] < rounds+1 {
						b.Fatalf("relayed connections %v, want %d", m[`ftpsalg_relay_connections_total{result="ok"}`], rounds+1)
					}
				}
			}
			results[path] = r
		})
	}
	for _, path := range []string{dataRouted, dataPassthrough, dataRelay, dataRelayNAT, dataRoutedClear, dataFirewallClear, dataRelayClear} {
		r, ok := results[path]
		if !ok {
			continue // not selected by -bench
		}
		b.Logf("%-12s median %v (%.0f MiB/s), best %v, data phase %v (%.0f MiB/s), daemon CPU %.2f s/GiB; curl's data connection: %s", path, r.median.Round(time.Millisecond),
			float64(size)/(1<<20)/r.median.Seconds(), r.best.Round(time.Millisecond), r.data.Round(time.Millisecond),
			float64(size)/(1<<20)/r.data.Seconds(), r.cpuPerGiB, r.suite)
	}
}

// cpuSeconds returns the daemon's user and system CPU time so far, from
// /proc/PID/stat (fields 14 and 15, in clock ticks of 1/100 s on Linux);
// 0 without a daemon.
func cpuSeconds(b *testing.B, d *harness.Daemon) float64 {
	b.Helper()
	if d == nil {
		return 0
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", d.Proc.PID()))
	if err != nil {
		b.Fatal(err)
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("bad /proc/PID/stat: %s", raw)
	}
	const clockTicks = 100 // sysconf(_SC_CLK_TCK) on Linux
	return (utime + stime) / clockTicks
}

// operatorCA creates the operator CA in the lab and a certificate for the
// lab server issued by it: clients trusting the CA verify the minted
// control leaf and the server's own certificate alike.
func operatorCA(b *testing.B, l *lab.Lab) (caDir, caFile, certFile, keyFile string) {
	b.Helper()
	caDir = filepath.Join(l.Dir(), "ca")
	ca, err := certs.InitCA(caDir, certs.InitOptions{CommonName: "bench operator CA"})
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: "files.lab"}, DNSNames: []string{"files.lab"},
		IPAddresses: []net.IP{lab.ServerAddr4.AsSlice(), lab.ServerAddr6.AsSlice(), natPublicAddr.AsSlice()}, NotAfter: time.Now().Add(48 * time.Hour)}
	leaf, err := certs.NewMinter(ca, 24*time.Hour, nil).Leaf(tmpl)
	if err != nil {
		b.Fatal(err)
	}
	var cb []byte
	for _, der := range leaf.Certificate {
		cb = append(cb, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(leaf.PrivateKey)
	if err != nil {
		b.Fatal(err)
	}
	certFile, keyFile = filepath.Join(l.Dir(), "server.crt"), filepath.Join(l.Dir(), "server.key")
	if err := os.WriteFile(certFile, cb, 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		b.Fatal(err)
	}
	return caDir, filepath.Join(caDir, certs.CertFile), certFile, keyFile
}

// mitmPolicy is a mitm policy for the lab server at info level, with
// serverKeys appended to the server.
func mitmPolicy(caDir, caFile, serverKeys string) string {
	return fmt.Sprintf(`log:
  level: info
mitm:
  ca_dir: %s
servers:
  - name: lab
    addresses: [%s, "%s"]
    passive_ports: "%d-%d"
    mode: mitm
    clients: ["192.0.2.0/24", "2001:db8:c::/64"]
    tls:
      verify: ca
      ca_file: %s
%s`, caDir, lab.ServerAddr4, lab.ServerAddr6, lab.DefaultPasvMinPort, lab.DefaultPasvMaxPort, caFile, serverKeys)
}
