package route

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/ftpsalg/ftpsalg/test/lab"

	goldenfile "github.com/ftpsalg/ftpsalg/test/golden"
)

// golden compares got with testdata/name (go test -update rewrites it).
func golden(t *testing.T, name, got string) { t.Helper(); goldenfile.Check(t, name, got) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// The policy routing of the tests: mark as in mitmSpec, table 100, pref 100.
const (
	testRouteMark  = 0x40
	testRouteTable = 100
	testRoutePrio  = 100
)

// routeEmpty is the Dump of a Router with nothing installed.
const routeEmpty = `# ip -4 rule list table 100
# ip -4 route list table 100
# ip -6 rule list table 100
# ip -6 route list table 100
`

func TestFakeGolden(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	f, err := NewFake(testRouteMark, testRouteTable, testRoutePrio)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Remove(ctx); err != nil {
		t.Fatalf("Remove before Ensure: %v", err)
	}
	for range 2 { // idempotent
		if err := f.Ensure(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if !f.Installed() {
		t.Fatal("Installed is false after Ensure")
	}
	got, err := f.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "route.golden", got)

	boom := errors.New("boom")
	f.FailNext(boom)
	if err := f.Remove(ctx); !errors.Is(err, boom) {
		t.Fatalf("Remove with injected failure: %v", err)
	}
	if !f.Installed() {
		t.Fatal("a failed Remove changed the state")
	}
	if err := f.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.Dump(ctx); got != routeEmpty {
		t.Fatalf("Dump after Remove:\n%s", got)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name              string
		mark, table, prio uint32
		want              string
	}{
		{"valid", 0x40, 100, 100, ""},
		{"large table", 0x40, 1 << 20, 32765, ""},
		{"zero mark", 0, 100, 100, "mark"},
		{"main table", 0x40, unix.RT_TABLE_MAIN, 100, "reserved"},
		{"local table", 0x40, unix.RT_TABLE_LOCAL, 100, "reserved"},
		{"unspec table", 0x40, 0, 100, "reserved"},
		{"priority 0", 0x40, 100, 0, "priority"},
		{"after main", 0x40, 100, 32766, "priority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := NewFake(tc.mark, tc.table, tc.prio)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestDecodeRuleMessage checks that rules with attributes Router never sets
// (here FRA_DSCP, 24, new in Linux 6.13 and unknown to rtnetlink v2.2.0)
// are decoded, rendered and never taken for ours.
func TestDecodeRuleMessage(t *testing.T) {
	t.Parallel()
	s, err := newRouteSpec(testRouteMark, testRouteTable, testRoutePrio)
	if err != nil {
		t.Fatal(err)
	}
	want := s.rule(unix.AF_INET)
	b, err := ruleMessage(want).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeRuleMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	if !sameRule(got, want) || got.proto != Protocol || got.String() != want.String() {
		t.Fatalf("round trip: got %q, want %q", got, want)
	}
	dscp, err := netlink.MarshalAttributes([]netlink.Attribute{{Type: 24, Data: []byte{1}}})
	if err != nil {
		t.Fatal(err)
	}
	got, err = decodeRuleMessage(append(b, dscp...))
	if err != nil {
		t.Fatal(err)
	}
	if sameRule(got, want) {
		t.Error("a rule with an extra selector counts as ours")
	}
	if !strings.Contains(got.String(), "attribute(24)") {
		t.Errorf("extra selector not rendered: %q", got)
	}
	// rtnetlink's own decoder rejects it, which is why we decode rules.
	var rm rtnetlink.RuleMessage
	if err := rm.UnmarshalBinary(append(b, dscp...)); err == nil {
		t.Log("rtnetlink now decodes FRA_DSCP; decodeRuleMessage could be replaced")
	}
	if _, err := decodeRuleMessage(b[:8]); err == nil {
		t.Error("short message accepted")
	}
}

// testNS is the gateway namespace of a fresh lab (test/lab), in which a
// kernel test installs its routing.
type testNS struct {
	lab *lab.Lab
	f   *os.File // the namespace, open for the test's lifetime
}

// newNS builds a lab for one test and opens its gateway namespace; the lab
// removes everything when the test ends. Kernel tests skip under -short
// (make unit) and without root (unless CI or FTPSALG_PRIV_TESTS=1 require
// them).
func newNS(t *testing.T) *testNS {
	t.Helper()
	if testing.Short() {
		t.Skip("KERNEL TEST NOT RUN under -short: run go test as root without -short")
	}
	lab.RequirePrivileged(t)
	l := lab.New(t, lab.Options{})
	f, err := os.Open(l.NetNSPath(lab.Gateway))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return &testNS{lab: l, f: f}
}

// run runs a command in the namespace and returns its output.
func (n *testNS) run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := n.lab.Run(ctxT(t), lab.Gateway, args[0], args[1:]...)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func newRouter(t *testing.T, ns *testNS) *Kernel {
	t.Helper()
	r, err := New(testRouteMark, testRouteTable, testRoutePrio, Options{NetNS: int(ns.f.Fd())})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// TestKernelGolden installs the policy routing in an empty namespace,
// twice, and reads it back: through rtnetlink (the fake's golden) and
// through ip(8).
func TestKernelGolden(t *testing.T) {
	t.Parallel()
	ns := newNS(t)
	ctx := ctxT(t)
	r := newRouter(t, ns)
	if err := r.Remove(ctx); err != nil {
		t.Fatalf("Remove before Ensure: %v", err)
	}
	for range 2 {
		if err := r.Ensure(ctx); err != nil {
			t.Fatal(err)
		}
	}
	got, err := r.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "route.golden", got)
	var ipOut strings.Builder
	for _, args := range [][]string{
		{"ip", "-4", "rule", "list"}, {"ip", "-4", "route", "list", "table", "100"},
		{"ip", "-6", "rule", "list"}, {"ip", "-6", "route", "list", "table", "100"},
	} {
		ipOut.WriteString("# " + strings.Join(args, " ") + "\n" + ns.run(t, args...))
	}
	golden(t, "route.ip.golden", ipOut.String())

	for range 2 { // missing is fine
		if err := r.Remove(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := r.Dump(ctx); err != nil || got != routeEmpty {
		t.Fatalf("Dump after Remove: %v\n%s", err, got)
	}
}

// TestKernelForeign checks that Ensure does not duplicate a rule the
// operator made with the same selector, and that Remove leaves the
// operator's rules and routes alone, even identical ones.
func TestKernelForeign(t *testing.T) {
	t.Parallel()
	ns := newNS(t)
	ctx := ctxT(t)
	r := newRouter(t, ns)

	// An identical rule, made before Ensure: not duplicated, not removed.
	ns.run(t, "ip", "-4", "rule", "add", "fwmark", "0x40/0x40", "lookup", "100", "pref", "100")
	// An unrelated route in the same table and a rule with another mark.
	ns.run(t, "ip", "-4", "route", "add", "local", "203.0.113.0/24", "dev", "lo", "table", "100")
	ns.run(t, "ip", "-6", "rule", "add", "fwmark", "0x80/0x80", "lookup", "100", "pref", "100")
	if err := r.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(ns.run(t, "ip", "-4", "rule", "list"), "lookup 100"); n != 1 {
		t.Fatalf("%d IPv4 rules look up table 100 after Ensure, want the operator's only", n)
	}
	// An identical IPv6 rule, made after Ensure: Remove deletes ours only.
	ns.run(t, "ip", "-6", "rule", "add", "fwmark", "0x40/0x40", "lookup", "100", "pref", "100")
	if err := r.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := r.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "route-foreign.golden", got)
}

// TestKernelConflict checks that Ensure fails, instead of reporting
// success, when the table has another default route.
func TestKernelConflict(t *testing.T) {
	t.Parallel()
	ns := newNS(t)
	ctx := ctxT(t)
	r := newRouter(t, ns)
	ns.run(t, "ip", "-4", "route", "add", "unreachable", "default", "table", "100")
	err := r.Ensure(ctx)
	if err == nil || !strings.Contains(err.Error(), "another default route") {
		t.Fatalf("Ensure with a conflicting route: %v", err)
	}
}

// TestKernelContext checks that a cancelled context stops a call and
// that the Router works afterwards.
func TestKernelContext(t *testing.T) {
	t.Parallel()
	ns := newNS(t)
	r := newRouter(t, ns)
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	if err := r.Ensure(cancelled); !errors.Is(err, context.Canceled) {
		t.Fatalf("Ensure with a cancelled context: %v", err)
	}
	if err := r.Ensure(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	// A call without a deadline gets one (routeTimeout) and succeeds.
	if err := r.Remove(context.Background()); err != nil {
		t.Fatal(err)
	}
}
