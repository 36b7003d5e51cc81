package nft

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Privileged tests run on the real kernel inside network namespaces that
// each test creates and deletes. They need root (CAP_SYS_ADMIN for netns,
// CAP_NET_ADMIN for nf_tables) and the ip(8) and nft(8) tools.

// privRequired reports whether privileged tests must run (CI, or asked for
// explicitly), in which case missing privileges fail instead of skipping.
func privRequired() bool {
	return os.Getenv("CI") == "true" || os.Getenv("FTPSALG_PRIV_TESTS") == "1"
}

// requirePriv is the one gate for privileged tests.
func requirePriv(tb testing.TB) {
	tb.Helper()
	if testing.Short() {
		// make unit: the kernel tests take minutes and build labs.
		tb.Skip("KERNEL TEST NOT RUN under -short: run go test as root without -short (make test)")
	}
	if os.Geteuid() == 0 {
		return
	}
	msg := "PRIVILEGED TEST NOT RUN: needs root for network namespaces and nf_tables " +
		"(run go test as root, e.g. sudo -E go test ./nft/); CI=true or FTPSALG_PRIV_TESTS=1 make this a failure"
	if privRequired() {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
}

// requireTool fails (CI) or skips when a command-line tool is missing.
func requireTool(tb testing.TB, name, pkg string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("TEST NOT RUN: %s not found (install the Debian package %s)", name, pkg)
	if privRequired() {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
	return ""
}

// netns is a named network namespace created for one test.
type netns struct {
	name string
	f    *os.File // /run/netns/NAME, open for the test's lifetime
}

func (n *netns) fd() int { return int(n.f.Fd()) }

// newNetns creates a network namespace with a random name and registers its
// deletion. Loopback is brought up.
func newNetns(tb testing.TB) *netns {
	tb.Helper()
	requirePriv(tb)
	requireTool(tb, "ip", "iproute2")
	var rnd [5]byte
	_, _ = rand.Read(rnd[:])
	name := "ftpsalg-t-" + hex.EncodeToString(rnd[:])
	run(tb, "ip", "netns", "add", name)
	tb.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			tb.Errorf("failed to delete netns %s: %v: %s", name, err, out)
		}
	})
	f, err := os.Open("/run/netns/" + name)
	if err != nil {
		tb.Fatalf("failed to open netns %s: %v", name, err)
	}
	tb.Cleanup(func() { _ = f.Close() })
	n := &netns{name: name, f: f}
	n.run(tb, "ip", "link", "set", "lo", "up")
	return n
}

// run runs a command inside the namespace.
func (n *netns) run(tb testing.TB, args ...string) string {
	tb.Helper()
	return run(tb, append([]string{"ip", "netns", "exec", n.name}, args...)...)
}

func run(tb testing.TB, args ...string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// runSplit runs a command inside the namespace and returns its stdout and
// stderr separately.
func (n *netns) runSplit(tb testing.TB, args ...string) (stdout, stderr string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var o, e strings.Builder
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.name}, args...)...)
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		tb.Fatalf("%s: %v\n%s%s", strings.Join(args, " "), err, o.String(), e.String())
	}
	return o.String(), e.String()
}

// runStdin runs a command inside the namespace with stdin.
func (n *netns) runStdin(tb testing.TB, stdin string, args ...string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.name}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// do runs fn on an OS thread switched into the namespace. Sockets created by
// fn stay in the namespace and can be used from any goroutine afterwards.
func (n *netns) do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := unix.Setns(n.fd(), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("failed to enter netns %s: %w", n.name, err)
			return
		}
		err = fn()
		if rerr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); rerr != nil {
			// Leave the thread locked: the runtime discards it when this
			// goroutine exits instead of reusing it in the wrong namespace.
			errc <- errors.Join(err, rerr)
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

// lab is the three-namespace topology of the kernel tests:
//
//	client 192.0.2.2/24 2001:db8:c::2/64  --  gateway 192.0.2.1 | 198.51.100.1
//	                                                  2001:db8:c::1 | 2001:db8:5::1  --  server 198.51.100.2/24 2001:db8:5::2/64
type lab struct {
	client, gw, server *netns
}

const (
	labClient4 = "192.0.2.2"
	labServer4 = "198.51.100.2"
	labClient6 = "2001:db8:c::2"
	labServer6 = "2001:db8:5::2"
)

func newLab(tb testing.TB) *lab {
	tb.Helper()
	l := &lab{client: newNetns(tb), gw: newNetns(tb), server: newNetns(tb)}
	// Without duplicate address detection IPv6 addresses, link-local ones
	// included, are usable at once; links created later inherit "default".
	for _, ns := range []*netns{l.client, l.gw, l.server} {
		ns.run(tb, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
	}
	l.gw.run(tb, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	// veth ends are created inside their namespaces; names are per netns.
	run(tb, "ip", "link", "add", "c0", "netns", l.client.name, "type", "veth", "peer", "name", "gc", "netns", l.gw.name)
	run(tb, "ip", "link", "add", "s0", "netns", l.server.name, "type", "veth", "peer", "name", "gs", "netns", l.gw.name)
	for _, c := range [][]string{
		{"client", "ip", "addr", "add", "192.0.2.2/24", "dev", "c0"},
		{"client", "ip", "-6", "addr", "add", "2001:db8:c::2/64", "dev", "c0"},
		{"client", "ip", "link", "set", "c0", "up"},
		{"client", "ip", "route", "add", "default", "via", "192.0.2.1"},
		{"client", "ip", "-6", "route", "add", "default", "via", "2001:db8:c::1"},
		{"gw", "ip", "addr", "add", "192.0.2.1/24", "dev", "gc"},
		{"gw", "ip", "addr", "add", "198.51.100.1/24", "dev", "gs"},
		{"gw", "ip", "-6", "addr", "add", "2001:db8:c::1/64", "dev", "gc"},
		{"gw", "ip", "-6", "addr", "add", "2001:db8:5::1/64", "dev", "gs"},
		{"gw", "ip", "link", "set", "gc", "up"},
		{"gw", "ip", "link", "set", "gs", "up"},
		{"server", "ip", "addr", "add", "198.51.100.2/24", "dev", "s0"},
		{"server", "ip", "-6", "addr", "add", "2001:db8:5::2/64", "dev", "s0"},
		{"server", "ip", "link", "set", "s0", "up"},
		{"server", "ip", "route", "add", "default", "via", "198.51.100.1"},
		{"server", "ip", "-6", "route", "add", "default", "via", "2001:db8:5::1"},
	} {
		ns := map[string]*netns{"client": l.client, "gw": l.gw, "server": l.server}[c[0]]
		ns.run(tb, c[1:]...)
	}
	// The first IPv6 neighbour solicitation after setup goes unanswered
	// (its retry comes after 1s): wait until both paths work end to end.
	waitReachable(tb, l.client, labServer4)
	waitReachable(tb, l.client, labServer6)
	return l
}

// waitReachable polls until a TCP connection from ns to a closed port of
// addr is refused, which proves the path works in both directions.
func waitReachable(tb testing.TB, ns *netns, addr string) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := dial(ns, net.JoinHostPort(addr, "9"), 200*time.Millisecond)
		if err == nil || errors.Is(err, unix.ECONNREFUSED) {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s unreachable from %s: %v", addr, ns.name, err)
		}
	}
}

// listen opens a TCP listener in ns that accepts and closes connections
// until the test ends.
func listen(tb testing.TB, ns *netns, addr string) net.Listener {
	tb.Helper()
	var ln net.Listener
	if err := ns.do(func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		tb.Fatalf("failed to listen on %s in %s: %v", addr, ns.name, err)
	}
	done := make(chan struct{})
	tb.Cleanup(func() {
		_ = ln.Close()
		<-done
	})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	return ln
}

// dial tries one TCP connection from ns; a dropped SYN shows as a timeout.
func dial(ns *netns, addr string, timeout time.Duration) error {
	return ns.do(func() error {
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err != nil {
			return err
		}
		return c.Close()
	})
}
