// Package harness runs the ftpsalg binary in a lab's gateway namespace for
// integration tests, benchmarks and the demo, and reads its metrics and
// kernel state back.
package harness

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
	"syscall"
	"time"

	"github.com/ftpsalg/ftpsalg/test/ftpc"
	"github.com/ftpsalg/ftpsalg/test/lab"
)

// CtMark is the conntrack mark the lab firewall accepts (the default).
const CtMark = 0x10000000

// MetricsAddr is the daemon's default metrics address inside the gateway.
const MetricsAddr = "127.0.0.1:9641"

// Build compiles ftpsalg from the module at root into dir, with the race
// detector when race is set.
func Build(ctx context.Context, root, dir string, race bool) (string, error) {
	bin := filepath.Join(dir, "ftpsalg")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.CommandContext(ctx, "go", append(args, "./cmd/ftpsalg")...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("failed to build ftpsalg: %w\n%s", err, out)
	}
	return bin, nil
}

// Policy returns a policy for the lab's server (IPv4 and IPv6) on ports,
// with extraServer appended to the server's keys and extraTop to the top
// level.
func Policy(ports []int, extraServer, extraTop string) string {
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

// AdminSocket is the admin socket Start gives the lab's daemon.
func AdminSocket(l *lab.Lab) string { return filepath.Join(l.Dir(), "admin.sock") }

// Daemon is ftpsalg running in the lab's gateway namespace.
type Daemon struct {
	t      lab.TB
	L      *lab.Lab
	Bin    string
	Config string
	Proc   *lab.Process
}

// Start writes policy and starts bin in the gateway, waiting until ready.
func Start(t lab.TB, l *lab.Lab, bin, policy string) *Daemon {
	t.Helper()
	// Each lab's daemon has its own admin socket (the file system is
	// shared by every lab), unless the policy names one.
	if !strings.HasPrefix(policy, "admin:") && !strings.Contains(policy, "\nadmin:") {
		policy += "\nadmin:\n  socket: " + AdminSocket(l) + "\n"
	}
	path := filepath.Join(l.Dir(), "policy.yaml")
	if err := os.WriteFile(path, []byte(policy), 0o600); err != nil {
		t.Fatalf("harness: %v", err)
	}
	d := &Daemon{t: t, L: l, Bin: bin, Config: path}
	d.Restart()
	return d
}

// Restart starts the daemon again (after it was stopped or killed).
func (d *Daemon) Restart() {
	d.t.Helper()
	d.Proc = d.L.Start(lab.Gateway, d.Bin, "run", "--config", d.Config)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		err := d.ready()
		if err == nil {
			return
		}
		select {
		case <-d.Proc.Done():
			d.t.Fatalf("ftpsalg exited during start-up: %v\n%s", d.Proc.Err(), d.Proc.Log())
		case <-ctx.Done():
			d.t.Fatalf("ftpsalg not ready: %v\n%s", err, d.Proc.Log())
		case <-time.After(50 * time.Millisecond): // poll interval
		}
	}
}

// get fetches path from the daemon's metrics server inside the gateway.
func (d *Daemon) get(path string) (int, string, error) {
	var code int
	var body string
	err := d.L.InNS(lab.Gateway, func() error {
		c, err := net.DialTimeout("tcp", MetricsAddr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: ftpsalg\r\n\r\n", path)
		r := bufio.NewReader(c)
		status, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		f := strings.Fields(status)
		if len(f) < 2 {
			return fmt.Errorf("bad status line %q", status)
		}
		code, _ = strconv.Atoi(f[1])
		var b strings.Builder
		inBody := false
		for {
			line, err := r.ReadString('\n')
			if inBody {
				b.WriteString(line)
			} else if line == "\r\n" {
				inBody = true
			}
			if err != nil {
				break
			}
		}
		body = b.String()
		return nil
	})
	return code, body, err
}

func (d *Daemon) ready() error {
	code, body, err := d.get("/readyz")
	if err != nil {
		return err
	}
	if code != 200 {
		return fmt.Errorf("/readyz: %d %s", code, strings.TrimSpace(body))
	}
	return nil
}

// Stop ends the daemon with SIGTERM and fails the test unless it exits
// cleanly and without a data race report.
func (d *Daemon) Stop() {
	d.t.Helper()
	if err := d.Proc.Signal(syscall.SIGTERM); err != nil {
		d.t.Fatalf("failed to signal ftpsalg: %v", err)
	}
	select {
	case <-d.Proc.Done():
	case <-time.After(10 * time.Second):
		// Hung: a goroutine dump (Go prints it on SIGQUIT) says where.
		_ = d.Proc.Signal(syscall.SIGQUIT)
		select {
		case <-d.Proc.Done():
		case <-time.After(5 * time.Second):
		}
		d.t.Fatalf("ftpsalg did not exit within 10 s of SIGTERM:\n%s", d.Proc.Log())
	}
	if err := d.Proc.Err(); err != nil {
		d.t.Fatalf("ftpsalg did not exit cleanly: %v\n%s", err, d.Proc.Log())
	}
	if strings.Contains(d.Proc.Log(), "DATA RACE") {
		d.t.Fatalf("race detected in ftpsalg:\n%s", d.Proc.Log())
	}
}

// Metrics returns ftpsalg's own samples, keyed by name{labels}.
func (d *Daemon) Metrics() map[string]float64 {
	d.t.Helper()
	code, body, err := d.get("/metrics")
	if err != nil || code != 200 {
		d.t.Fatalf("failed to scrape metrics: %d %v", code, err)
	}
	m := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, "ftpsalg_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m
}

// WaitMetric polls until the sample key equals want.
func (d *Daemon) WaitMetric(key string, want float64) {
	d.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := d.Metrics()[key]
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("metric %s = %v, want %v", key, got, want)
		}
		time.Sleep(100 * time.Millisecond) // poll interval
	}
}

// PinholeElements lists the elements of ftpsalg's pinhole sets as nft
// prints them; empty when there are none.
func (d *Daemon) PinholeElements() string {
	d.t.Helper()
	var b strings.Builder
	for _, set := range []string{"pinholes4", "pinholes6"} {
		out, err := d.L.Nft(lab.Gateway, "list", "set", "inet", "ftpsalg", set)
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

// NSDialer creates sockets in a lab namespace; it serves ftpc as both
// Dialer and Listener.
type NSDialer struct {
	L  *lab.Lab
	NS string
}

// DialContext implements ftpc.Dialer.
func (n NSDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, err
	}
	return n.L.Dial(ctx, n.NS, network, netip.AddrPort{}, ap)
}

// Listen implements ftpc.Listener.
func (n NSDialer) Listen(ctx context.Context, network, addr string) (net.Listener, error) {
	return n.L.ListenFunc(n.NS)(ctx, network, addr)
}

// Client connects from the client namespace to addr and logs in.
func Client(ctx context.Context, l *lab.Lab, addr netip.AddrPort, user, pass string) (*ftpc.Client, error) {
	nd := NSDialer{L: l, NS: lab.Client}
	c, err := ftpc.Dial(ctx, nd, nd, addr.String())
	if err != nil {
		return nil, err
	}
	c.Timeout = 5 * time.Second
	if err := c.Login(user, pass); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}
