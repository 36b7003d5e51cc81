package nft

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// opaqueSpec is testSpec with the opaque sets.
func opaqueSpec(kind QueueKind) Spec {
	s := testSpec(kind)
	s.Opaque = true
	return s
}

// goldenOpaque are a passive element per family and an active one.
var goldenOpaque = []Opaque{
	{Src: netip.MustParseAddr("192.0.2.2"), Dst: netip.MustParseAddr("198.51.100.2"), PortMin: 50000, PortMax: 50100, Timeout: time.Hour},
	{Src: netip.MustParseAddr("198.51.100.2"), Dst: netip.MustParseAddr("192.0.2.2"), PortMin: 40000, PortMax: 40100, Timeout: time.Hour},
	{Src: netip.MustParseAddr("2001:db8:c::2"), Dst: netip.MustParseAddr("2001:db8:5::2"), PortMin: 50000, PortMax: 50100, Timeout: 2 * time.Hour},
}

// opaqueTable is what the scenario needs of Fake and Kernel.
type opaqueTable interface {
	Table
	AddOpaque(ctx context.Context, o ...Opaque) error
	DeleteOpaque(ctx context.Context, o ...Opaque) error
	Opaques(ctx context.Context) ([]OpaqueElement, error)
}

// opaqueScenario: add, golden, refresh, delete; the fake and the kernel
// must agree.
func opaqueScenario(t *testing.T, tbl opaqueTable) {
	ctx := ctxT(t)
	if err := tbl.Apply(ctx, testSpec(QueueCompat)); err != nil {
		t.Fatal(err)
	}
	if err := tbl.AddOpaque(ctx, goldenOpaque[0]); !errors.Is(err, ErrNoOpaque) {
		t.Fatalf("AddOpaque without the opaque sets: %v, want ErrNoOpaque", err)
	}
	if err := tbl.Apply(ctx, opaqueSpec(QueueCompat)); err != nil {
		t.Fatal(err)
	}
	if err := tbl.AddOpaque(ctx, goldenOpaque...); err != nil {
		t.Fatal(err)
	}
	got, err := tbl.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "table-opaque.golden", got)

	// A refresh replaces the timeout.
	short := goldenOpaque[0]
	short.Timeout = 20 * time.Second
	if err := tbl.AddOpaque(ctx, short); err != nil {
		t.Fatal(err)
	}
	els, err := tbl.Opaques(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(els) != 3 || els[0].Opaque.Key() != short.Key() || els[0].Expires > 20*time.Second {
		t.Fatalf("after refresh: %+v", els)
	}
	if err := tbl.DeleteOpaque(ctx, goldenOpaque...); err != nil {
		t.Fatal(err)
	}
	if err := tbl.DeleteOpaque(ctx, goldenOpaque...); err != nil {
		t.Fatalf("deleting missing elements: %v", err)
	}
	els, err = tbl.Opaques(ctx)
	if err != nil || len(els) != 0 {
		t.Fatalf("after delete: %v %v", els, err)
	}
}

func TestFakeOpaque(t *testing.T) {
	t.Parallel()
	opaqueScenario(t, NewFake())
	ctx := ctxT(t)
	f := NewFake()
	if err := f.Apply(ctx, opaqueSpec(QueueCompat)); err != nil {
		t.Fatal(err)
	}
	o := goldenOpaque[0]
	if err := f.AddOpaque(ctx, o); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		src, dst netip.Addr
		port     uint16
		want     bool
	}{
		{o.Src, o.Dst, 50000, true}, {o.Src, o.Dst, 50000, true}, {o.Src, o.Dst, 50100, true},
		{o.Src, o.Dst, 50101, false}, {netip.MustParseAddr("192.0.2.3"), o.Dst, 50000, false},
		{o.Src, netip.MustParseAddr("198.51.100.3"), 50000, false},
	} {
		if got := f.Use(c.src, c.dst, c.port); got != c.want {
			t.Errorf("Use(%s, %s, %d) = %v, want %v", c.src, c.dst, c.port, got, c.want)
		}
	}
	f.Advance(o.Timeout)
	if f.Use(o.Src, o.Dst, 50000) {
		t.Error("opaque element outlived its timeout")
	}
}

func TestKernelOpaque(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	opaqueScenario(t, newKernel(t, ns))
	k := newKernel(t, ns)
	ctx := ctxT(t)
	if err := k.Apply(ctx, opaqueSpec(QueueCompat)); err != nil {
		t.Fatal(err)
	}
	if err := k.AddOpaque(ctx, goldenOpaque...); err != nil {
		t.Fatal(err)
	}
	requireTool(t, "nft", "nftables")
	stdout, stderr := ns.runSplit(t, "nft", "list", "table", "inet", DefaultTable)
	golden(t, "table-opaque.nft.golden", normalizeNFTList(stdout)+"# stderr:\n"+stderr)
	got, err := k.Opaques(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var keys []Opaque
	for _, e := range got {
		keys = append(keys, e.Opaque.Key())
	}
	want := []Opaque{goldenOpaque[0].Key(), goldenOpaque[1].Key(), goldenOpaque[2].Key()}
	if diff := cmp.Diff(want, keys, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Fatalf("Opaques (-want +got):\n%s", diff)
	}
}
