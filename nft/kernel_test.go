package nft

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// These tests run on the real kernel, each in fresh network namespaces
// (see priv_test.go for the gate and the lab topology).

func newKernel(t testing.TB, ns *netns) *Kernel {
	t.Helper()
	k, err := New(WithNetNS(ns.fd()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Close() })
	return k
}

var (
	reExpires = regexp.MustCompile(` expires [0-9dhms]+`)
	reCounter = regexp.MustCompile(`counter packets \d+ bytes \d+`)
)

func normalizeNFTList(s string) string {
	s = reExpires.ReplaceAllString(s, "")
	return reCounter.ReplaceAllString(s, "counter")
}

// goldenTables are the specs whose tables are pinned by golden files: the
// fake and the kernel (read back through netlink) must render the same
// text, and nft(8) must show operators what table.*.nft.golden says.
var goldenTables = []struct {
	name  string
	spec  func(QueueKind) Spec
	holes []Pinhole
	file  string // without .golden
}{
	{"inspect", testSpec, goldenPinholes, "table"},
	{"mitm", mitmSpec, goldenSNATPinholes, "table-mitm"},
	{"relay", relaySpec, goldenRelayPinholes, "table-relay"},
	{"throttle", throttleSpec, goldenSNATPinholes, "table-throttle"},
}

// TestKernelGolden applies each golden spec in an empty namespace and reads
// the table back: through netlink (the same golden as the fake) and through
// nft(8) (what operators see).
func TestKernelGolden(t *testing.T) {
	t.Parallel()
	for _, tc := range goldenTables {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := newNetns(t)
			ctx := ctxT(t)
			k := newKernel(t, ns)
			if err := k.Apply(ctx, tc.spec(QueueCompat)); err != nil {
				t.Fatal(err)
			}
			if err := k.AddPinholes(ctx, tc.holes...); err != nil {
				t.Fatal(err)
			}
			if tc.spec(QueueCompat).Bans {
				if err := k.AddBans(ctx, goldenBans...); err != nil {
					t.Fatal(err)
				}
			}
			got, err := k.Dump(ctx)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tc.file+".golden", got)

			requireTool(t, "nft", "nftables")
			stdout, stderr := ns.runSplit(t, "nft", "list", "table", "inet", DefaultTable)
			golden(t, tc.file+".nft.golden", normalizeNFTList(stdout)+"# stderr:\n"+stderr)
		})
	}
}

// TestKernelNativeQueue applies the native-queue table where the kernel has
// nft_queue; elsewhere it checks that Apply fails as a whole.
func TestKernelNativeQueue(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	requireTool(t, "nft", "nftables")
	ctx := ctxT(t)
	kind, err := ProbeQueue(ctx, WithNetNS(ns.fd()))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ProbeQueue: %s", kind)
	k := newKernel(t, ns)
	// The probe leaves nothing behind.
	if out := ns.run(t, "nft", "list", "tables"); out != "" {
		t.Fatalf("ProbeQueue left tables behind:\n%s", out)
	}
	err = k.Apply(ctx, testSpec(QueueNative))
	if kind == QueueCompat {
		if err == nil {
			t.Fatal("Apply with a native queue succeeded although the probe said compat")
		}
		if out := ns.run(t, "nft", "list", "tables"); out != "" {
			t.Fatalf("failed Apply left tables behind:\n%s", out)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := k.AddPinholes(ctx, goldenPinholes...); err != nil {
		t.Fatal(err)
	}
	got, err := k.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "table-native.golden", got)
}

// labfw is the operator's own table in the lab gateway: default drop, plus
// the rules docs/integration.md asks for (ct mark 0x10 as in testSpec, and
// the control port as an ordinary service).
const labfw = `table inet labfw {
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		ct mark & 0x10 == 0x10 accept comment "ftpsalg pinholes"
		tcp dport 2121 accept comment "ftp control"
	}
}
`

// TestKernelLab runs real traffic through the gateway namespace.
func TestKernelLab(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	requireTool(t, "nft", "nftables")
	l.gw.runStdin(t, labfw, "nft", "-f", "-")
	// One deadline for all the subtests below, which run one after the
	// other and wait for dials and expiries of their own (about 10 s in
	// all): ctxT's 10 s was too short under a loaded CI machine.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	k := labPinholeSetup(t, l)
	kind, err := ProbeQueue(ctx, WithNetNS(l.gw.fd()))
	if err != nil {
		t.Fatal(err)
	}
	// Control on port 2121 too, which labfw lets through as a service.
	spec := testSpec(kind)
	spec.Control = append(spec.Control,
		netip.MustParseAddrPort(labServer4+":2121"), netip.AddrPortFrom(netip.MustParseAddr(labServer6), 2121))
	if err := k.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	listen(t, l.server, ":2121")
	const blocked = 500 * time.Millisecond

	t.Run("pinhole", func(t *testing.T) { checkPinholes(t, l, k) })

	t.Run("expiry", func(t *testing.T) {
		p := Pinhole{Src: netip.MustParseAddr(labClient4), Dst: netip.MustParseAddr(labServer4), DstPort: 50010, Timeout: time.Second}
		if err := k.AddPinholes(ctx, p); err != nil {
			t.Fatal(err)
		}
		els := pinholesFor(t, k, p)
		if len(els) != 1 || els[0].Timeout != time.Second || els[0].Expires <= 0 || els[0].Expires > time.Second {
			t.Fatalf("fresh pinhole: got %+v, want one with timeout 1s expiring within 1s", els)
		}
		deadline := time.Now().Add(5 * time.Second)
		for len(pinholesFor(t, k, p)) != 0 {
			if time.Now().After(deadline) {
				t.Fatal("pinhole with a 1s timeout still present after 5s")
			}
			time.Sleep(50 * time.Millisecond) // polling interval, not synchronisation
		}
	})

	t.Run("delete", func(t *testing.T) {
		cli := netip.MustParseAddr(labClient6)
		srv := netip.MustParseAddr(labServer6)
		a := Pinhole{Src: cli, Dst: srv, DstPort: 50020, Timeout: time.Minute}
		b := Pinhole{Src: cli, Dst: srv, DstPort: 50021, Timeout: time.Minute}
		missing := Pinhole{Src: netip.MustParseAddr(labClient4), Dst: netip.MustParseAddr(labServer4), DstPort: 50022}
		if err := k.AddPinholes(ctx, a, b); err != nil {
			t.Fatal(err)
		}
		if err := k.DeletePinholes(ctx, a, missing); err != nil {
			t.Fatalf("DeletePinholes with a missing pinhole: %v", err)
		}
		if els := pinholesFor(t, k, a); len(els) != 0 {
			t.Fatalf("deleted pinhole still present: %v", els)
		}
		if els := pinholesFor(t, k, b); len(els) != 1 {
			t.Fatalf("the other pinhole is gone: %v", els)
		}
		if err := k.DeletePinholes(ctx, a, b); err != nil {
			t.Fatalf("DeletePinholes again: %v", err)
		}
	})

	// The queue rule matches control traffic: with FailOpen (bypass) and no
	// queue reader it passes; without it, it is dropped.
	t.Run("failopen", func(t *testing.T) {
		addr := net.JoinHostPort(labServer4, "2121")
		if err := dial(l.client, addr, 2*time.Second); err != nil {
			t.Fatalf("fail-open control connection: %v", err)
		}
		closed := spec
		closed.FailOpen = false
		if err := k.Apply(ctx, closed); err != nil {
			t.Fatal(err)
		}
		if err := dial(l.client, addr, blocked); err == nil {
			t.Fatal("fail-closed control connection succeeded without a queue reader")
		}
		if err := k.Apply(ctx, spec); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("rebuild", func(t *testing.T) {
		if err := k.AddPinholes(ctx, goldenPinholes...); err != nil {
			t.Fatal(err)
		}
		if err := k.Apply(ctx, spec); err != nil {
			t.Fatal(err)
		}
		first, err := k.Dump(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(first, "50000 timeout") {
			t.Errorf("Apply kept pinholes:\n%s", first)
		}
		// A restarted daemon has a new Kernel and applies again.
		k2 := newKernel(t, l.gw)
		if err := k2.Apply(ctx, spec); err != nil {
			t.Fatal(err)
		}
		second, err := k.Dump(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if first != second {
			t.Errorf("second Apply changed the table:\n--- first\n%s\n--- second\n%s", first, second)
		}
		if n := strings.Count(second, "comment \"control ipv4: client"); n != 1 {
			t.Errorf("queue rule appears %d times, want 1", n)
		}
	})

	t.Run("delete table", func(t *testing.T) {
		if err := k.Delete(ctx); err != nil {
			t.Fatal(err)
		}
		if err := k.Delete(ctx); err != nil {
			t.Fatalf("Delete of a missing table: %v", err)
		}
		if out := l.gw.run(t, "nft", "list", "tables"); out != "table inet labfw\n" {
			t.Fatalf("tables after Delete: %q, want only labfw", out)
		}
		if _, err := k.Dump(ctx); !errors.Is(err, ErrNoTable) {
			t.Fatalf("Dump after Delete: %v, want ErrNoTable", err)
		}
		err := k.AddPinholes(ctx, goldenPinholes...)
		if !errors.Is(err, ErrNoTable) {
			t.Fatalf("AddPinholes after Delete: %v, want ErrNoTable", err)
		}
	})
}

// labPinholeSetup applies the table in the lab gateway and starts the
// server's listener; the operator's ruleset must already be in place.
func labPinholeSetup(t *testing.T, l *lab) *Kernel {
	t.Helper()
	ctx := ctxT(t)
	kind, err := ProbeQueue(ctx, WithNetNS(l.gw.fd()))
	if err != nil {
		t.Fatal(err)
	}
	k := newKernel(t, l.gw)
	if err := k.Apply(ctx, testSpec(kind)); err != nil {
		t.Fatal(err)
	}
	listen(t, l.server, ":50000")
	return k
}

// checkPinholes asserts, for IPv4 and IPv6, that a new connection from the
// client to the server's port 50000 is dropped without a pinhole, passes
// with one, and that the pinhole serves exactly one connection.
func checkPinholes(t *testing.T, l *lab, k *Kernel) {
	const blocked = 500 * time.Millisecond
	for _, fam := range []struct{ name, cli, srv string }{
		{"ipv4", labClient4, labServer4},
		{"ipv6", labClient6, labServer6},
	} {
		t.Run(fam.name, func(t *testing.T) {
			t.Parallel()
			ctx := ctxT(t)
			addr := net.JoinHostPort(fam.srv, "50000")
			if err := dial(l.client, addr, blocked); err == nil {
				t.Fatal("connected to the server without a pinhole")
			} else if !isTimeout(err) {
				t.Fatalf("dial without a pinhole: %v, want a timeout (dropped SYN)", err)
			}
			p := Pinhole{Src: netip.MustParseAddr(fam.cli), Dst: netip.MustParseAddr(fam.srv), DstPort: 50000, Timeout: 3 * time.Second}
			if err := k.AddPinholes(ctx, p); err != nil {
				t.Fatal(err)
			}
			if err := dial(l.client, addr, 2*time.Second); err != nil {
				t.Fatalf("dial through the pinhole: %v", err)
			}
			// The kernel deleted the element (dynset delete).
			if els := pinholesFor(t, k, p); len(els) != 0 {
				t.Fatalf("pinhole still in the set after use: %v", els)
			}
			if err := dial(l.client, addr, blocked); err == nil {
				t.Fatal("second connection through a used pinhole succeeded")
			}
		})
	}
}

// labIptables is the operator ruleset of docs/integration.md for
// iptables-nft.
var labIptables = [][]string{
	{"-P", "FORWARD", "DROP"},
	{"-A", "FORWARD", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"},
	{"-A", "FORWARD", "-m", "connmark", "--mark", "0x10/0x10", "-j", "ACCEPT"},
}

// TestKernelLabIptables checks the iptables-nft variant of the operator
// rule. iptables is optional on our machines, so this test only skips.
func TestKernelLabIptables(t *testing.T) {
	t.Parallel()
	requirePriv(t)
	for _, tool := range []string{"iptables-nft", "ip6tables-nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("TEST NOT RUN: %s not found (Debian package iptables)", tool)
		}
	}
	l := newLab(t)
	for _, args := range labIptables {
		l.gw.run(t, append([]string{"iptables-nft"}, args...)...)
		l.gw.run(t, append([]string{"ip6tables-nft"}, args...)...)
	}
	k := labPinholeSetup(t, l)
	checkPinholes(t, l, k)
}

func pinholesFor(t *testing.T, k *Kernel, p Pinhole) []Element {
	t.Helper()
	all, err := k.Pinholes(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	var out []Element
	for _, e := range all {
		if e.key() == p.key() {
			out = append(out, e)
		}
	}
	return out
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestKernelContext checks that a cancelled context stops a call and that
// the Kernel keeps working afterwards.
func TestKernelContext(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	k := newKernel(t, ns)
	ctx := ctxT(t)
	if err := k.Apply(ctx, testSpec(QueueCompat)); err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := k.AddPinholes(cancelled, goldenPinholes...); !errors.Is(err, context.Canceled) {
		t.Fatalf("AddPinholes with a cancelled context: %v", err)
	}
	short, cancel2 := context.WithTimeout(ctx, time.Minute)
	defer cancel2()
	if err := k.AddPinholes(short, goldenPinholes...); err != nil {
		t.Fatalf("AddPinholes with a deadline: %v", err)
	}
	if got, err := k.Pinholes(ctx); err != nil || len(got) != 2 {
		t.Fatalf("Pinholes: %v, %v", got, err)
	}
}

// TestKernelConcurrent adds and deletes pinholes from several goroutines,
// as the packet path and session teardown do, for the race detector and to
// check that batches from different callers never mix.
func TestKernelConcurrent(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ctx := ctxT(t)
	k := newKernel(t, ns)
	if err := k.Apply(ctx, testSpec(QueueCompat)); err != nil {
		t.Fatal(err)
	}
	const workers, ops = 4, 100
	errc := make(chan error, workers)
	for w := range workers {
		go func() {
			errc <- func() error {
				src := netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + w)})
				for i := range ops {
					p := Pinhole{Src: src, Dst: netip.MustParseAddr(labServer4), DstPort: uint16(40000 + i), Timeout: time.Minute}
					if err := k.AddPinholes(ctx, p); err != nil {
						return err
					}
					if i%2 == 0 {
						if err := k.DeletePinholes(ctx, p); err != nil {
							return err
						}
					}
					if i%25 == 0 {
						if _, err := k.Pinholes(ctx); err != nil {
							return err
						}
					}
				}
				return nil
			}()
		}()
	}
	for range workers {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	got, err := k.Pinholes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := workers * ops / 2; len(got) != want {
		t.Fatalf("%d pinholes left, want %d", len(got), want)
	}
}

// TestKernelRename checks that applying a spec with another table name
// replaces the old table instead of leaving it behind.
func TestKernelRename(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	requireTool(t, "nft", "nftables")
	ctx := ctxT(t)
	k := newKernel(t, ns)
	s := testSpec(QueueCompat)
	if err := k.Apply(ctx, s); err != nil {
		t.Fatal(err)
	}
	s.Table = "ftpsalg_renamed"
	if err := k.Apply(ctx, s); err != nil {
		t.Fatal(err)
	}
	if out := ns.run(t, "nft", "list", "tables"); out != "table inet ftpsalg_renamed\n" {
		t.Fatalf("tables after rename: %q", out)
	}
	if err := k.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if out := ns.run(t, "nft", "list", "tables"); out != "" {
		t.Fatalf("tables after Delete: %q", out)
	}
}

// BenchmarkAddPinhole measures AddPinholes with one pinhole, the call on
// the latency path of every PASV/EPSV reply.
func BenchmarkAddPinhole(b *testing.B) {
	ns := newNetns(b)
	k, err := New(WithNetNS(ns.fd()))
	if err != nil {
		b.Fatal(err)
	}
	defer k.Close()
	ctx := context.Background()
	if err := k.Apply(ctx, testSpec(QueueCompat)); err != nil {
		b.Fatal(err)
	}
	src := netip.MustParseAddr(labClient4)
	dst := netip.MustParseAddr(labServer4)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		p := Pinhole{Src: src, Dst: dst, DstPort: uint16(1024 + i%60000), Timeout: time.Minute}
		if err := k.AddPinholes(ctx, p); err != nil {
			b.Fatal(fmt.Errorf("iteration %d: %w", i, err))
		}
		i++
	}
}

// BenchmarkPinholeScale fills the pinhole sets with 100,000 live pinholes
// (1h timeouts; 50,000 per family, as one set holds MaxPinholes) in a
// fresh namespace, then measures at that size:
// a listing of every pinhole (what a poll of the whole table costs), the
// commit of one pinhole (p50/p99 over 2,000 commits at 1,000/s, 500 while
// listing: alone,
// while another goroutine lists the table every 500 ms as the gateway's
// poll did, and while it makes the gateway's poll's look-ups now), and one
// session's end: Live and DeletePinholes of its 2 pinholes.
func BenchmarkPinholeScale(b *testing.B) {
	requirePriv(b)
	ns := newNetns(b)
	k, err := New(WithNetNS(ns.fd()))
	if err != nil {
		b.Fatal(err)
	}
	defer k.Close()
	ctx := context.Background()
	if err := k.Apply(ctx, testSpec(QueueCompat)); err != nil {
		b.Fatal(err)
	}
	const live = 100_000
	// Documentation prefixes only: 192.0.2.x . 198.51.100.y . port, and
	// 2001:db8:c::x . 2001:db8:5::y . port.
	ph := func(i int) Pinhole {
		x, y, port := byte(i/2%250), byte(i/2/60000%250), uint16(1024+i/2%60000)
		if i%2 == 1 {
			return Pinhole{Src: netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0x0c, 15: x}),
				Dst: netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0x05, 15: y}), DstPort: port, Timeout: time.Hour}
		}
		return Pinhole{Src: netip.AddrFrom4([4]byte{192, 0, 2, x}), Dst: netip.AddrFrom4([4]byte{198, 51, 100, y}),
			DstPort: port, Timeout: time.Hour}
	}
	fill := time.Now()
	for i := 0; i < live; i += 1000 {
		batch := make([]Pinhole, 0, 1000)
		for j := i; j < i+1000; j++ {
			batch = append(batch, ph(j))
		}
		if err := k.AddPinholes(ctx, batch...); err != nil {
			b.Fatalf("fill at %d: %v", i, err)
		}
	}
	b.Logf("filled %d pinholes in %v", live, time.Since(fill).Round(time.Millisecond))

	b.ResetTimer()
	start := time.Now()
	els, err := k.Pinholes(ctx)
	if err != nil {
		b.Fatal(err)
	}
	listing := time.Since(start)
	if len(els) != live {
		b.Fatalf("listed %d pinholes, want %d", len(els), live)
	}
	b.ReportMetric(float64(listing.Milliseconds()), "ms/listing")

	// commits makes n commits of new pinholes, one per millisecond (a
	// steady announcement rate, not synchronisation), while background
	// (if any) runs every 500 ms, and returns the sorted latencies.
	commits := func(n, from int, background func()) []time.Duration {
		stop, done := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			if background == nil {
				return
			}
			t := time.NewTicker(500 * time.Millisecond)
			defer t.Stop()
			for {
				background()
				select {
				case <-stop:
					return
				case <-t.C:
				}
			}
		}()
		d := make([]time.Duration, 0, n)
		pace := time.NewTicker(time.Millisecond)
		defer pace.Stop()
		for i := from; i < from+n; i++ {
			<-pace.C
			p := Pinhole{Src: netip.MustParseAddr("203.0.113.7"), Dst: netip.MustParseAddr("198.51.100.2"),
				DstPort: uint16(1024 + i%60000), Timeout: time.Minute}
			t0 := time.Now()
			if err := k.AddPinholes(ctx, p); err != nil {
				b.Fatal(err)
			}
			d = append(d, time.Since(t0))
		}
		close(stop)
		<-done
		slices.Sort(d)
		return d
	}
	pct := func(d []time.Duration, p float64) float64 {
		return float64(d[int(float64(len(d)-1)*p)].Microseconds())
	}
	alone := commits(2000, 0, nil)
	b.ReportMetric(pct(alone, 0.5), "p50-µs/commit")
	b.ReportMetric(pct(alone, 0.99), "p99-µs/commit")

	// The gateway's poll before: a listing of the whole table.
	listed := commits(500, 2000, func() {
		if _, err := k.Pinholes(ctx); err != nil {
			b.Error(err)
		}
	})
	b.ReportMetric(pct(listed, 0.5), "p50-µs/commit-listing")
	b.ReportMetric(pct(listed, 0.99), "p99-µs/commit-listing")

	// The gateway's poll now (alg/gateway ledger.go): at most 1,024
	// look-ups, liveChunk (8) per Live call.
	var lookups time.Duration
	looked := commits(2000, 4000, func() {
		t0 := time.Now()
		for c := 0; c < 1024; c += 8 {
			ps := make([]Pinhole, 8)
			for j := range ps {
				ps[j] = ph((c + j) * 97 % live)
			}
			if _, err := k.Live(ctx, ps...); err != nil {
				b.Error(err)
			}
		}
		lookups = time.Since(t0)
	})
	b.ReportMetric(pct(looked, 0.5), "p50-µs/commit-lookups")
	b.ReportMetric(pct(looked, 0.99), "p99-µs/commit-lookups")
	b.ReportMetric(float64(lookups.Microseconds()), "µs/1024-lookups")

	own := []Pinhole{ph(4242), ph(77777)}
	t0 := time.Now()
	l, err := k.Live(ctx, own...)
	if err != nil || !l[0] || !l[1] {
		b.Fatalf("Live: %v %v", l, err)
	}
	lookup := time.Since(t0)
	t0 = time.Now()
	if err := k.DeletePinholes(ctx, own...); err != nil {
		b.Fatal(err)
	}
	del := time.Since(t0)
	b.ReportMetric(float64(lookup.Microseconds()), "µs/live-2")
	b.ReportMetric(float64(del.Microseconds()), "µs/delete-2")
	b.StopTimer()
}
