package integration

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/test/lab"
)

// TestQueueRange: with queue.number a range of two queues the daemon binds
// both (one reader each, sharing the engine), the queue rule spreads flows
// over them by the kernel's flow hash, and inspected sessions of both
// families work: pinholes open and are used, nothing is refused.
func TestQueueRange(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	l := lab.New(t, lab.Options{})
	l.InstallGatewayFirewall(ctMark)
	v := l.StartVsftpd(lab.VsftpdOptions{})
	d := startDaemon(t, l, policyFor([]int{21}, "", "queue:\n  number: 4060-4061\n"))
	if _, err := v.CreateFile("down.bin", 64<<10); err != nil {
		t.Fatal(err)
	}
	want, err := v.SHA256("down.bin")
	if err != nil {
		t.Fatal(err)
	}

	// Both queues are bound by the daemon: the kernel lists them, and
	// the daemon's per-queue kernel counters exist for both.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	proc, err := l.Run(ctx, lab.Gateway, "cat", "/proc/net/netfilter/nfnetlink_queue")
	if err != nil {
		t.Fatal(err)
	}
	bound := map[string]bool{}
	for _, line := range strings.Split(string(proc), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			bound[f[0]] = true
		}
	}
	if !bound["4060"] || !bound["4061"] {
		t.Fatalf("queues bound in the gateway:\n%s\nwant 4060 and 4061", proc)
	}
	m := d.Metrics()
	for _, q := range []string{"4060", "4061"} {
		if _, ok := m[fmt.Sprintf(`ftpsalg_queue_kernel_waiting_packets{queue="%s"}`, q)]; !ok {
			t.Errorf("no kernel counters for queue %s", q)
		}
	}

	n := 0
	for _, fam := range []netip.Addr{lab.ServerAddr4, lab.ServerAddr6} {
		for _, mode := range []lab.Mode{lab.EPSV, lab.EPRT} {
			tr, err := l.DownloadCurl(ctx, v.URL(fam, "down.bin"), mode)
			if err != nil {
				t.Fatalf("%v %v: %v\n%s", fam, mode, err, d.Proc.Log())
			}
			if tr.SHA256 != want {
				t.Fatalf("%v %v: sha256 %s, want %s", fam, mode, tr.SHA256, want)
			}
			n++
		}
	}
	m = d.Metrics()
	opened := m[`ftpsalg_pinholes_opened_total{data_mode="passive"}`] + m[`ftpsalg_pinholes_opened_total{data_mode="active"}`]
	if opened < float64(n) {
		t.Errorf("pinholes opened %v, want at least %d", opened, n)
	}
	for k, v := range m {
		if strings.HasPrefix(k, "ftpsalg_policy_refusals_total") && v != 0 {
			t.Errorf("%s = %v, want 0", k, v)
		}
	}
	proc, _ = l.Run(ctx, lab.Gateway, "cat", "/proc/net/netfilter/nfnetlink_queue")
	t.Logf("queues after the sessions (queue portid waiting copy_mode range dropped user_dropped id_seq 1):\n%s", proc)
}
