package proxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
)

// BenchmarkIdleSessionMemory measures what the proxy holds per idle mitm
// control session: sessions logged in over explicit FTPS, then held. The
// same number of sessions made straight to the scripted server is measured
// first and subtracted, so the figure is the proxy's own (its goroutine
// stacks and heap: both legs' TLS state, line readers, the FTP core, the
// gateway session), once they have parked. The heap and stacks are read
// after a GC; b.N is not
// used: the figure is per session at -sessions, not per iteration.
//
//	go test -run '^$' -bench IdleSessionMemory -benchtime 1x ./alg/proxy
func BenchmarkIdleSessionMemory(b *testing.B) {
	const n = 1000
	rg := newRig(b, rigOpts{timeout: 30 * time.Second, maxFlows: 2 * n})
	login := func(addr string, viaProxy bool) net.Conn {
		c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(60 * time.Second))
		r := bufio.NewReader(c)
		expect := func(line, want string) {
			if line != "" {
				if _, err := io.WriteString(c, line+"\r\n"); err != nil {
					b.Fatal(err)
				}
			}
			got, err := r.ReadString('\n')
			if err != nil || !strings.HasPrefix(got, want) {
				b.Fatalf("%q: %q %v", line, got, err)
			}
		}
		expect("", "220")
		expect("AUTH TLS", "234")
		conf := &tls.Config{RootCAs: rg.caPool, ServerName: "files.test", MinVersion: tls.VersionTLS12}
		if !viaProxy {
			conf.InsecureSkipVerify = true // the scripted server's own certificate
		}
		tc := tls.Client(newRecordConn(c, nil), conf)
		if err := tc.Handshake(); err != nil {
			b.Fatal(err)
		}
		c, r = tc, bufio.NewReader(tc)
		expect("USER a", "331")
		expect("PASS b", "230")
		return c
	}
	var stacks [2]uint64
	held := func(addr string, viaProxy bool) uint64 {
		before := inUse()
		s0 := stackInUse()
		conns := make([]net.Conn, n)
		for i := range conns {
			conns[i] = login(addr, viaProxy)
		}
		if viaProxy {
			// Idle sessions park after parkAfter (park.go): measure
			// them parked, as they are held.
			deadline := time.Now().Add(30 * time.Second)
			for rg.p.ParkedLegs() < 2*n && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			b.Logf("%d of %d legs parked", rg.p.ParkedLegs(), 2*n)
		}
		after := inUse()
		stacks[map[bool]int{false: 0, true: 1}[viaProxy]] = stackInUse() - min(s0, stackInUse())
		for _, c := range conns {
			c.Close()
		}
		if after < before {
			return 0
		}
		return after - before
	}
	b.ResetTimer()
	direct := held(rg.srv.ln.Addr().String(), false)
	proxied := held(rg.proxy, true)
	b.StopTimer()
	per := float64(proxied-min(direct, proxied)) / n
	b.ReportMetric(per/1024, "KiB/session")
	b.Logf("%d idle sessions: %.1f KiB each in the proxy (heap+stacks; direct %d B, proxied %d B; stacks %.1f KiB per session in the proxy)",
		n, per/1024, direct, proxied, float64(stacks[1]-min(stacks[0], stacks[1]))/n/1024)
}

// stackInUse is the goroutine stack memory in use.
func stackInUse() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.StackInuse
}

// inUse is the heap and stack memory in use after a collection.
func inUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}

// TestReadLine: a line longer than the reader's buffer is assembled up to
// the bound, one over it is refused, EOF is passed on.
func TestReadLine(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 1500) + "\r\n" // three buffers' worth
	for _, tc := range []struct {
		in   string
		max  int
		want string
		err  error
	}{
		{"USER a\r\n", 2048, "USER a\r\n", nil},
		{long, 2048, long, nil},
		{long, len(long), long, nil},
		{long, len(long) - 1, "", errLineTooLong},
		{strings.Repeat("b", 5000), 2048, "", errLineTooLong},
		{"QUIT", 2048, "", io.EOF},
	} {
		r := bufio.NewReaderSize(strings.NewReader(tc.in), lineBufSize)
		got, err := readLine(r, tc.max)
		if string(got) != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("readLine(%.20q…, %d) = %.20q, %v; want %.20q, %v", tc.in, tc.max, got, err, tc.want, tc.err)
		}
	}
}

// BenchmarkHandshake measures explicit FTPS control connections through
// the proxy, each AUTH TLS (a full TLS handshake with the client and the
// upstream one it needs) then QUIT, against an in-process server whose
// tickets the proxy can resume. Profile it to see where the CPU goes:
//
//	go test -run '^$' -bench Handshake -cpuprofile bin/handshake.prof ./alg/proxy
//	go tool pprof -top bin/handshake.prof
func BenchmarkHandshake(b *testing.B) {
	rg := newRig(b, rigOpts{timeout: 30 * time.Second, maxFlows: 1000})
	conf := &tls.Config{RootCAs: rg.caPool, ServerName: "files.test", MinVersion: tls.VersionTLS12}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c, err := net.DialTimeout("tcp4", rg.proxy, 5*time.Second)
			if err != nil {
				b.Fatal(err)
			}
			r := bufio.NewReader(c)
			if l, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "220") {
				b.Fatalf("greeting %q %v", l, err)
			}
			io.WriteString(c, "AUTH TLS\r\n")
			if l, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "234") {
				b.Fatalf("AUTH %q %v", l, err)
			}
			tc := tls.Client(newRecordConn(c, nil), conf)
			if err := tc.Handshake(); err != nil {
				b.Fatal(err)
			}
			io.WriteString(tc, "QUIT\r\n")
			if l, err := bufio.NewReader(tc).ReadString('\n'); err != nil || !strings.HasPrefix(l, "221") {
				b.Fatalf("QUIT %q %v", l, err)
			}
			c.Close()
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
}
