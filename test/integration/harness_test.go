package integration

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/test/ftpc"
	"github.com/ftpsalg/ftpsalg/test/lab"
)

// binary is the ftpsalg binary under test, built with -race by TestMain.
var binary string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "ftpsalg-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "ftpsalg")
	cmd := exec.Command("go", "build", "-race", "-o", binary, "../../cmd/ftpsalg")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "failed to build ftpsalg:", err)
		return 1
	}
	return m.Run()
}

// ctMark is the lab policy's conntrack mark (the default).
const ctMark = 0x10000000

// daemon is ftpsalg running in the lab's gateway namespace.
type daemon struct {
	t      *testing.T
	l      *lab.Lab
	config string
	proc   *lab.Process
}

// policyFor returns a policy for the lab's server with extra top-level
// YAML appended and the server's control ports.
func policyFor(ports []int, extraServer, extraTop string) string {
	ps := make([]string, len(ports))
	for i, p := range ports {
		ps[i] = strconv.Itoa(p)
	}
	return fmt.Sprintf(`log:
  level: debug
%s
servers:
  - name: lab
    addresses: [%s, "%s"]
    control_ports: [%s]
    passive_ports: "%d-%d"
    mode: inspect
    clients: ["192.0.2.0/24", "2001:db8:c::/64"]
%s`, extraTop, lab.ServerAddr4, lab.ServerAddr6, strings.Join(ps, ", "),
		lab.DefaultPasvMinPort, lab.DefaultPasvMaxPort, extraServer)
}

func startDaemon(t *testing.T, l *lab.Lab, policy string) *daemon {
	t.Helper()
	path := filepath.Join(l.Dir(), "policy.yaml")
	if err := os.WriteFile(path, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	d := &daemon{t: t, l: l, config: path}
	d.start()
	return d
}

func (d *daemon) start() {
	d.t.Helper()
	d.proc = d.l.Start(lab.Gateway, binary, "run", "--config", d.config)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		out, err := d.l.Run(ctx, lab.Gateway, "curl", "-sf", "http://127.0.0.1:9641/readyz")
		if err == nil && strings.Contains(string(out), "ready") {
			return
		}
		select {
		case <-d.proc.Done():
			d.t.Fatalf("ftpsalg exited during start-up: %v\n%s", d.proc.Err(), d.proc.Log())
		case <-ctx.Done():
			d.t.Fatalf("ftpsalg not ready: %v\n%s", err, d.proc.Log())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop ends the daemon with SIGTERM and checks it exited cleanly.
func (d *daemon) stop() {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.proc.Stop(ctx); err != nil {
		d.t.Fatalf("ftpsalg did not exit cleanly: %v\n%s", err, d.proc.Log())
	}
	if strings.Contains(d.proc.Log(), "DATA RACE") {
		d.t.Fatalf("race detected in ftpsalg:\n%s", d.proc.Log())
	}
}

// metrics returns ftpsalg's own samples, keyed by name{labels}.
func (d *daemon) metrics() map[string]float64 {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := d.l.Run(ctx, lab.Gateway, "curl", "-sf", "http://127.0.0.1:9641/metrics")
	if err != nil {
		d.t.Fatalf("failed to scrape metrics: %v", err)
	}
	m := map[string]float64{}
	s := bufio.NewScanner(strings.NewReader(string(out)))
	s.Buffer(make([]byte, 64<<10), 4<<20)
	for s.Scan() {
		line := s.Text()
		if !strings.HasPrefix(line, "ftpsalg_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			m[line[:i]] = v
		}
	}
	return m
}

// waitMetric polls until key reaches want (or more, when atLeast).
func (d *daemon) waitMetric(key string, want float64) {
	d.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := d.metrics()[key]
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("metric %s = %v, want %v", key, got, want)
		}
		time.Sleep(100 * time.Millisecond) // polling interval, not synchronisation
	}
}

// pinholeElements lists the elements of ftpsalg's pinhole sets as nft prints them.
func (d *daemon) pinholeElements() string {
	d.t.Helper()
	var b strings.Builder
	for _, set := range []string{"pinholes4", "pinholes6"} {
		out, err := d.l.Nft(lab.Gateway, "list", "set", "inet", "ftpsalg", set)
		if err != nil {
			d.t.Fatalf("nft list set %s: %v", set, err)
		}
		in := false
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "elements = {") {
				in = true
			}
			if in {
				b.WriteString(strings.TrimSpace(line) + "\n")
				if strings.Contains(line, "}") {
					in = false
				}
			}
		}
	}
	return b.String()
}

// nsDialer creates client sockets in a lab namespace.
type nsDialer struct {
	l  *lab.Lab
	ns string
}

func (n nsDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, err
	}
	return n.l.Dial(ctx, n.ns, network, netip.AddrPort{}, ap)
}

func (n nsDialer) Listen(ctx context.Context, network, addr string) (net.Listener, error) {
	return n.l.ListenFunc(n.ns)(ctx, network, addr)
}

// goClient logs in to addr from the client namespace.
func goClient(t *testing.T, l *lab.Lab, addr netip.AddrPort, user, pass string) *ftpc.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	nd := nsDialer{l: l, ns: lab.Client}
	c, err := ftpc.Dial(ctx, nd, nd, addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.Timeout = 5 * time.Second
	if err := c.Login(user, pass); err != nil {
		t.Fatal(err)
	}
	return c
}
