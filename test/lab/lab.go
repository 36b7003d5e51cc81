package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// TB is the part of testing.TB the lab needs. *testing.T and *testing.B
// satisfy it, and so does Standalone for programs. Fatalf must be called
// from the goroutine running the test, as with testing.T.
type TB interface {
	Helper()
	Cleanup(func())
	Logf(format string, args ...any)
	Fatalf(format string, args ...any)
	Name() string
}

// Logical namespace names, as passed to every method taking ns.
const (
	Client  = "client"
	Gateway = "gw"
	Server  = "server"
	// Other is a third-party host behind the gateway (Options.Other), the
	// target of bounce attempts that must receive nothing.
	Other = "other"
)

// Interface names. Hosts have one interface each; the gateway has one per
// host, named after it.
const (
	HostLink          = "eth0"
	GatewayClientLink = "to-client"
	GatewayServerLink = "to-server"
	GatewayOtherLink  = "to-other"
)

// Addresses of the lab (RFC 5737 and RFC 3849 documentation ranges). They
// are constants in spirit: never modify them.
var (
	ClientAddr4 = netip.MustParseAddr("192.0.2.2")
	ClientAddr6 = netip.MustParseAddr("2001:db8:c::2")
	ServerAddr4 = netip.MustParseAddr("198.51.100.2")
	ServerAddr6 = netip.MustParseAddr("2001:db8:5::2")
	OtherAddr4  = netip.MustParseAddr("203.0.113.2")
	OtherAddr6  = netip.MustParseAddr("2001:db8:3::2")

	GatewayClientAddr4 = netip.MustParseAddr("192.0.2.1")
	GatewayClientAddr6 = netip.MustParseAddr("2001:db8:c::1")
	GatewayServerAddr4 = netip.MustParseAddr("198.51.100.1")
	GatewayServerAddr6 = netip.MustParseAddr("2001:db8:5::1")
	GatewayOtherAddr4  = netip.MustParseAddr("203.0.113.1")
	GatewayOtherAddr6  = netip.MustParseAddr("2001:db8:3::1")
)

// Timeouts for the lab's own steps. Commands run by tests take a context.
const (
	// setupTimeout bounds building the namespaces (normally ~50 ms).
	setupTimeout = 30 * time.Second
	// cleanupTimeout bounds killing processes and deleting namespaces.
	cleanupTimeout = 20 * time.Second
	// commandTimeout bounds wrappers without a context (Nft, Conntrack).
	commandTimeout = 30 * time.Second
	// logTail is how much of each log a failed test prints.
	logTail = 16 << 10
)

// KeepEnv, when set to 1, keeps the lab's temporary directory (configs,
// logs, files) after the test; the namespaces are deleted regardless.
const KeepEnv = "FTPSALG_LAB_KEEP"

// Options configures New.
type Options struct {
	// Other adds the third-party namespace Other (203.0.113.2/24,
	// 2001:db8:3::2/64) behind the gateway.
	Other bool
}

// Lab is one instance of the topology. Its methods are safe for concurrent
// use, except that those which call TB.Fatalf must run on the test's
// goroutine.
type Lab struct {
	t   TB
	id  string
	dir string
	ns  map[string]string // logical name -> real name

	mu       sync.Mutex
	procs    []*Process
	cleanups []func() error
	seq      int
}

// New builds the lab and registers its removal with t.Cleanup. It calls
// t.Fatalf when not root or when any step fails; whatever was created up to
// then is removed.
func New(t TB, opts Options) *Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("lab: network namespaces need root (call lab.RequirePrivileged first)")
	}
	id := randomHex(3)
	dir, err := os.MkdirTemp("", "ftpsalg-lab-"+id+"-")
	if err != nil {
		t.Fatalf("lab: failed to create temp dir: %v", err)
	}
	// Traversable by the throw-away FTP user whose home lives inside.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("lab: failed to chmod %s: %v", dir, err)
	}
	l := &Lab{t: t, id: id, dir: dir, ns: make(map[string]string)}
	t.Cleanup(l.cleanup)
	start := time.Now()
	if err := l.setup(opts); err != nil {
		t.Fatalf("lab: %v", err)
	}
	t.Logf("lab %s ready in %v (namespaces %s)", id, time.Since(start).Round(time.Millisecond), strings.Join(l.realNames(), " "))
	return l
}

// ID is the random part of the namespace names ("ftpsalg-<id>-client").
func (l *Lab) ID() string { return l.id }

// Dir is the lab's temporary directory (logs, configs, files).
func (l *Lab) Dir() string { return l.dir }

// Name returns the real name of logical namespace ns, as `ip netns` shows
// it. It panics for a namespace the lab does not have: that is a bug in
// the test.
func (l *Lab) Name(ns string) string {
	name, ok := l.ns[ns]
	if !ok {
		panic(fmt.Sprintf("lab: no namespace %q in this lab", ns))
	}
	return name
}

// NetNSPath returns the bind-mount path of ns (/run/netns/NAME), to open for
// setns(2) or to hand to libraries that take a netns file.
func (l *Lab) NetNSPath(ns string) string {
	return filepath.Join("/run/netns", l.Name(ns))
}

// HasNS reports whether the lab has namespace ns (Other is optional).
func (l *Lab) HasNS(ns string) bool {
	_, ok := l.ns[ns]
	return ok
}

func (l *Lab) realNames() []string {
	var out []string
	for _, n := range []string{Client, Gateway, Server, Other} {
		if name, ok := l.ns[n]; ok {
			out = append(out, name)
		}
	}
	return out
}

// link describes one gateway-to-host veth pair.
type link struct {
	host         string
	gwLink       string
	gw4, gw6     netip.Addr
	host4, host6 netip.Addr
	bits4, bits6 int
}

func (l *Lab) setup(opts Options) error {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	names := []string{Client, Gateway, Server}
	if opts.Other {
		names = append(names, Other)
	}
	for _, n := range names {
		name := "ftpsalg-" + l.id + "-" + n
		if out, err := l.command(ctx, "", "ip", "netns", "add", name).CombinedOutput(); err != nil {
			return fmt.Errorf("failed to add namespace %s: %w: %s", name, err, out)
		}
		l.ns[n] = name
	}
	for _, n := range names {
		// DAD off before the interfaces exist so that they inherit it:
		// addresses, link-local ones included, are usable at once.
		if err := l.Sysctl(n, map[string]string{
			"net.ipv6.conf.all.accept_dad":     "0",
			"net.ipv6.conf.default.accept_dad": "0",
		}); err != nil {
			return err
		}
	}
	links := []link{
		{Client, GatewayClientLink, GatewayClientAddr4, GatewayClientAddr6, ClientAddr4, ClientAddr6, 24, 64},
		{Server, GatewayServerLink, GatewayServerAddr4, GatewayServerAddr6, ServerAddr4, ServerAddr6, 24, 64},
	}
	if opts.Other {
		links = append(links, link{Other, GatewayOtherLink, GatewayOtherAddr4, GatewayOtherAddr6, OtherAddr4, OtherAddr6, 24, 64})
	}
	gw := []string{"link set lo up"}
	for _, k := range links {
		gw = append(gw,
			fmt.Sprintf("link add %s type veth peer name %s netns %s", k.gwLink, HostLink, l.Name(k.host)),
			fmt.Sprintf("address add %s/%d dev %s", k.gw4, k.bits4, k.gwLink),
			fmt.Sprintf("address add %s/%d dev %s nodad", k.gw6, k.bits6, k.gwLink),
			fmt.Sprintf("link set %s up", k.gwLink),
		)
	}
	if err := l.ipBatch(ctx, Gateway, gw); err != nil {
		return err
	}
	for _, k := range links {
		if err := l.ipBatch(ctx, k.host, []string{
			"link set lo up",
			fmt.Sprintf("address add %s/%d dev %s", k.host4, k.bits4, HostLink),
			fmt.Sprintf("address add %s/%d dev %s nodad", k.host6, k.bits6, HostLink),
			fmt.Sprintf("link set %s up", HostLink),
			fmt.Sprintf("route add 0.0.0.0/0 via %s", k.gw4),
			fmt.Sprintf("route add ::/0 via %s", k.gw6),
		}); err != nil {
			return err
		}
	}
	return l.Sysctl(Gateway, map[string]string{
		"net.ipv4.ip_forward":          "1",
		"net.ipv6.conf.all.forwarding": "1",
	})
}

// ipBatch runs `ip -n NS -batch -` with one command per line.
func (l *Lab) ipBatch(ctx context.Context, ns string, cmds []string) error {
	cmd := l.command(ctx, "", "ip", "-n", l.Name(ns), "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("failed to configure %s (%s): %w: %s", ns, strings.Join(cmds, "; "), err, out)
	}
	return nil
}

// Sysctl sets sysctls inside ns by writing /proc/sys from a thread switched
// into it (the net.* keys are per network namespace).
func (l *Lab) Sysctl(ns string, kv map[string]string) error {
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range kv {
			if !yield(k) {
				return
			}
		}
	})
	return l.InNS(ns, func() error {
		for _, k := range keys {
			p := "/proc/sys/" + strings.ReplaceAll(k, ".", "/")
			if err := os.WriteFile(p, []byte(kv[k]), 0o644); err != nil {
				return fmt.Errorf("failed to set %s=%s in %s: %w", k, kv[k], ns, err)
			}
		}
		return nil
	})
}

// addCleanup registers f to run during the lab's cleanup, after its
// processes are killed and before its namespaces are deleted (LIFO).
func (l *Lab) addCleanup(f func() error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cleanups = append(l.cleanups, f)
}

// cleanup kills every process started in the lab and every other process
// found in its namespaces (vsftpd forks per session), runs the registered
// cleanups, prints logs when the test failed and deletes the namespaces.
func (l *Lab) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	l.mu.Lock()
	procs := slices.Clone(l.procs)
	cleanups := slices.Clone(l.cleanups)
	l.mu.Unlock()

	for _, p := range procs {
		p.kill()
	}
	for _, p := range procs {
		select {
		case <-p.done:
		case <-ctx.Done():
			l.errorf("lab: %s (pid %d) did not exit after SIGKILL", p.Name, p.PID())
		}
	}
	for _, n := range l.logicalNames() {
		if err := l.killNamespace(ctx, n); err != nil {
			l.errorf("lab: %v", err)
		}
	}
	for i := len(cleanups) - 1; i >= 0; i-- {
		if err := cleanups[i](); err != nil {
			l.errorf("lab: cleanup: %v", err)
		}
	}
	if failed(l.t) {
		l.printLogs(procs)
	}
	for _, n := range l.logicalNames() {
		name := l.ns[n]
		if out, err := l.command(ctx, "", "ip", "netns", "delete", name).CombinedOutput(); err != nil {
			l.errorf("lab: failed to delete namespace %s: %v: %s", name, err, out)
		}
	}
	if os.Getenv(KeepEnv) == "1" {
		l.t.Logf("lab: kept %s (%s=1)", l.dir, KeepEnv)
		return
	}
	if err := os.RemoveAll(l.dir); err != nil {
		l.errorf("lab: failed to remove %s: %v", l.dir, err)
	}
}

func (l *Lab) logicalNames() []string {
	var out []string
	for _, n := range []string{Client, Gateway, Server, Other} {
		if _, ok := l.ns[n]; ok {
			out = append(out, n)
		}
	}
	return out
}

// killNamespace SIGKILLs every process in ns, as listed by `ip netns pids`,
// until none is left. The test process itself is skipped: a thread of ours
// may be inside the namespace through InNS, which makes us show up.
func (l *Lab) killNamespace(ctx context.Context, ns string) error {
	self := os.Getpid()
	for {
		out, err := l.command(ctx, "", "ip", "netns", "pids", l.Name(ns)).Output()
		if err != nil {
			return fmt.Errorf("failed to list processes in %s: %w", ns, err)
		}
		var left []int
		for f := range strings.FieldsSeq(string(out)) {
			pid, err := strconv.Atoi(f)
			if err != nil || pid == self {
				continue
			}
			left = append(left, pid)
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("failed to kill pid %d in %s: %w", pid, ns, err)
			}
		}
		if len(left) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("processes %v still in %s: %w", left, ns, ctx.Err())
		case <-time.After(10 * time.Millisecond): // poll until they are gone
		}
	}
}

func (l *Lab) printLogs(procs []*Process) {
	logs, _ := filepath.Glob(filepath.Join(l.dir, "logs", "*"))
	for _, p := range logs {
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 {
			continue
		}
		if len(b) > logTail {
			b = append([]byte("[...]\n"), b[len(b)-logTail:]...)
		}
		l.t.Logf("lab: --- %s ---\n%s", filepath.Base(p), b)
	}
}

// errorf reports a cleanup problem: as an error when the TB can (t.Errorf),
// as a log line otherwise.
func (l *Lab) errorf(format string, args ...any) {
	if e, ok := l.t.(interface{ Errorf(string, ...any) }); ok {
		e.Errorf(format, args...)
		return
	}
	l.t.Logf(format, args...)
}

// failed reports whether t says its test failed (testing.T and Standalone
// do; a TB without Failed counts as failed so that logs are not lost).
func failed(t TB) bool {
	if f, ok := t.(interface{ Failed() bool }); ok {
		return f.Failed()
	}
	return true
}

// nextSeq returns a number unique within the lab, for file names.
func (l *Lab) nextSeq() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	return l.seq
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b)
}
