package nft

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	goldenfile "github.com/ftpsalg/ftpsalg/test/golden"
)

// golden compares got with testdata/name (go test -update rewrites it).
func golden(t *testing.T, name, got string) { t.Helper(); goldenfile.Check(t, name, got) }

func testSpec(kind QueueKind) Spec {
	return Spec{
		Table: DefaultTable, Queue: 7, QueueKind: kind, FailOpen: true,
		CtMark: 0x10, PacketMark: 0x20,
		Control: []netip.AddrPort{
			netip.MustParseAddrPort("198.51.100.3:990"),
			netip.MustParseAddrPort("[2001:db8:5::2]:21"),
			netip.MustParseAddrPort("198.51.100.2:21"),
			netip.MustParseAddrPort("[::ffff:198.51.100.2]:21"), // duplicate once unmapped
		},
	}
}

// goldenPinholes are in the golden files; their timeouts are long enough
// to outlive any test run.
var goldenPinholes = []Pinhole{
	{Src: netip.MustParseAddr("192.0.2.2"), Dst: netip.MustParseAddr("198.51.100.2"), DstPort: 50000, Timeout: time.Hour},
	{Src: netip.MustParseAddr("2001:db8:c::2"), Dst: netip.MustParseAddr("2001:db8:5::2"), DstPort: 50001, Timeout: 90 * time.Minute},
}

// ctxT is a test's deadline for kernel calls: generous, because a loaded
// CI machine (the whole suite in parallel on two cores) stretches netlink
// round trips and the tests' own waits; a passing test does not wait for
// it.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestFakeGolden(t *testing.T) {
	t.Parallel()
	type fakeCase struct {
		name   string
		spec   Spec
		holes  []Pinhole
		golden string
	}
	cases := []fakeCase{{"native", testSpec(QueueNative), goldenPinholes, "table-native.golden"}}
	for _, g := range goldenTables {
		cases = append(cases, fakeCase{g.name, g.spec(QueueCompat), g.holes, g.file + ".golden"})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := ctxT(t)
			f := NewFake()
			if err := f.Apply(ctx, tc.spec); err != nil {
				t.Fatal(err)
			}
			if err := f.AddPinholes(ctx, tc.holes...); err != nil {
				t.Fatal(err)
			}
			if tc.spec.Bans {
				if err := f.AddBans(ctx, goldenBans...); err != nil {
					t.Fatal(err)
				}
			}
			got, err := f.Dump(ctx)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tc.golden, got)
		})
	}
}

func TestSpecValidate(t *testing.T) {
	t.Parallel()
	ok := testSpec(QueueCompat)
	for _, tc := range []struct {
		name string
		edit func(*Spec)
		want string // substring of the error; empty means valid
	}{
		{"valid", func(*Spec) {}, ""},
		{"dotted name", func(s *Spec) { s.Table = "ftpsalg.edge-1" }, ""},
		{"empty name", func(s *Spec) { s.Table = "" }, "empty"},
		{"name with space", func(s *Spec) { s.Table = "ftp salg" }, "character ' '"},
		{"name starting with digit", func(s *Spec) { s.Table = "1ftp" }, "character '1'"},
		{"long name", func(s *Spec) { s.Table = strings.Repeat("a", 256) }, "longer than 255"},
		{"unset queue kind", func(s *Spec) { s.QueueKind = QueueUnset }, "probe the kernel"},
		{"bad queue kind", func(s *Spec) { s.QueueKind = 9 }, "QueueKind(9)"},
		{"zero ct mark", func(s *Spec) { s.CtMark = 0 }, "ct mark"},
		{"zero packet mark", func(s *Spec) { s.PacketMark = 0 }, "packet mark"},
		{"zero port", func(s *Spec) { s.Control = []netip.AddrPort{netip.MustParseAddrPort("198.51.100.2:0")} }, "port must not be zero"},
		{"unspecified address", func(s *Spec) { s.Control = []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:21")} }, "unicast"},
		{"zone", func(s *Spec) { s.Control = []netip.AddrPort{netip.MustParseAddrPort("[fe80::1%eth0]:21")} }, "zone"},
		{"invalid", func(s *Spec) { s.Control = []netip.AddrPort{{}} }, "invalid control endpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := ok
			s.Control = append([]netip.AddrPort(nil), ok.Control...)
			tc.edit(&s)
			err := NewFake().Apply(t.Context(), s)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Apply: unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Apply: error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestSpecNormalized(t *testing.T) {
	t.Parallel()
	s, err := testSpec(QueueCompat).validate()
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.AddrPort{
		netip.MustParseAddrPort("198.51.100.2:21"),
		netip.MustParseAddrPort("198.51.100.3:990"),
		netip.MustParseAddrPort("[2001:db8:5::2]:21"),
	}
	if diff := cmp.Diff(want, s.Control, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
		t.Errorf("control endpoints (-want +got):\n%s", diff)
	}
}

func TestPinholeValidate(t *testing.T) {
	t.Parallel()
	v4 := netip.MustParseAddr("192.0.2.2")
	v4b := netip.MustParseAddr("198.51.100.2")
	v6 := netip.MustParseAddr("2001:db8:5::2")
	for _, tc := range []struct {
		name string
		p    Pinhole
		want string
	}{
		{"valid", Pinhole{Src: v4, Dst: v4b, DstPort: 1, Timeout: time.Second}, ""},
		{"mapped", Pinhole{Src: netip.MustParseAddr("::ffff:192.0.2.2"), Dst: v4b, DstPort: 1, Timeout: time.Second}, ""},
		{"missing src", Pinhole{Dst: v4b, DstPort: 1, Timeout: time.Second}, "missing address"},
		{"mixed", Pinhole{Src: v4, Dst: v6, DstPort: 1, Timeout: time.Second}, "mixed address families"},
		{"zone", Pinhole{Src: netip.MustParseAddr("fe80::1%eth0"), Dst: v6, DstPort: 1, Timeout: time.Second}, "zone"},
		{"zero port", Pinhole{Src: v4, Dst: v4b, Timeout: time.Second}, "port"},
		{"no timeout", Pinhole{Src: v4, Dst: v4b, DstPort: 1}, "timeout"},
		{"huge timeout", Pinhole{Src: v4, Dst: v4b, DstPort: 1, Timeout: 25 * time.Hour}, "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := NewFake()
			if err := f.Apply(t.Context(), testSpec(QueueCompat)); err != nil {
				t.Fatal(err)
			}
			err := f.AddPinholes(t.Context(), goldenPinholes[0], tc.p)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("AddPinholes: unexpected error: %v", err)
			case tc.want != "":
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("AddPinholes: error %v, want one containing %q", err, tc.want)
				}
				// All or nothing, like a transaction.
				if got, _ := f.Pinholes(t.Context()); len(got) != 0 {
					t.Fatalf("a rejected request left pinholes: %v", got)
				}
			}
		})
	}
}

func TestFakeSemantics(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	f := NewFake()
	cli := netip.MustParseAddr("192.0.2.2")
	srv := netip.MustParseAddr("198.51.100.2")
	p1 := Pinhole{Src: cli, Dst: srv, DstPort: 50000, Timeout: 3 * time.Second}
	p2 := Pinhole{Src: cli, Dst: srv, DstPort: 50001, Timeout: time.Second}

	// No table before Apply.
	if err := f.AddPinholes(ctx, p1); !errors.Is(err, ErrNoTable) {
		t.Fatalf("AddPinholes before Apply: got %v, want ErrNoTable", err)
	}
	if _, err := f.Pinholes(ctx); !errors.Is(err, ErrNoTable) {
		t.Fatalf("Pinholes before Apply: got %v, want ErrNoTable", err)
	}
	if err := f.Delete(ctx); err != nil {
		t.Fatalf("Delete of a missing table: %v", err)
	}

	if err := f.Apply(ctx, testSpec(QueueCompat)); err != nil {
		t.Fatal(err)
	}
	if err := f.AddPinholes(ctx, p1, p2); err != nil {
		t.Fatal(err)
	}
	got, err := f.Pinholes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []Element{{Pinhole: p1, Expires: 3 * time.Second}, {Pinhole: p2, Expires: time.Second}}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
		t.Fatalf("Pinholes (-want +got):\n%s", diff)
	}

	// Timeouts.
	f.Advance(time.Second)
	if got, _ := f.Pinholes(ctx); len(got) != 1 || got[0].Pinhole != p1 || got[0].Expires != 2*time.Second {
		t.Fatalf("after 1s: got %v, want only %v expiring in 2s", got, p1)
	}
	// Re-adding refreshes the timeout, as the kernel does.
	if err := f.AddPinholes(ctx, p1); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.Pinholes(ctx); len(got) != 1 || got[0].Expires != 3*time.Second {
		t.Fatalf("after refresh: got %v, want one expiring in 3s", got)
	}

	// Single use.
	if !f.Use(cli, srv, 50000) {
		t.Fatal("Use: first connection not admitted")
	}
	if f.Use(cli, srv, 50000) {
		t.Fatal("Use: second connection admitted")
	}

	// Destroy semantics.
	if err := f.DeletePinholes(ctx, p1, p2); err != nil {
		t.Fatalf("DeletePinholes of missing pinholes: %v", err)
	}

	// Injected failures change nothing.
	boom := errors.New("boom")
	f.FailNext(boom)
	if err := f.AddPinholes(ctx, p1); !errors.Is(err, boom) {
		t.Fatalf("AddPinholes with injected failure: got %v", err)
	}
	if got, _ := f.Pinholes(ctx); len(got) != 0 {
		t.Fatalf("failed AddPinholes left %v", got)
	}

	// Apply rebuilds from scratch: pinholes are gone.
	if err := f.AddPinholes(ctx, p1); err != nil {
		t.Fatal(err)
	}
	if err := f.Apply(ctx, testSpec(QueueCompat)); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.Pinholes(ctx); len(got) != 0 {
		t.Fatalf("Apply kept pinholes: %v", got)
	}

	if err := f.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Dump(ctx); !errors.Is(err, ErrNoTable) {
		t.Fatalf("Dump after Delete: got %v, want ErrNoTable", err)
	}
	if err := f.DeletePinholes(ctx, p1); !errors.Is(err, ErrNoTable) {
		t.Fatalf("DeletePinholes after Delete: got %v, want ErrNoTable", err)
	}
	if _, ok := f.Spec(); ok {
		t.Fatal("Spec reports a table after Delete")
	}
}

func TestNFTDuration(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		0:                                    "0s",
		500 * time.Millisecond:               "500ms",
		3 * time.Second:                      "3s",
		90 * time.Second:                     "1m30s",
		time.Hour:                            "1h",
		25*time.Hour + 1500*time.Millisecond: "1d1h1s500ms",
	} {
		if got := nftDuration(d); got != want {
			t.Errorf("nftDuration(%s) = %q, want %q", d, got, want)
		}
	}
}

func TestQueueKindString(t *testing.T) {
	t.Parallel()
	for k, want := range map[QueueKind]string{QueueUnset: "unset", QueueNative: "native", QueueCompat: "compat", 7: "QueueKind(7)"} {
		if got := k.String(); got != want {
			t.Errorf("QueueKind(%d).String() = %q, want %q", int(k), got, want)
		}
	}
}

func TestPinholeKeyRoundTrip(t *testing.T) {
	t.Parallel()
	for _, p := range goldenPinholes {
		got, ok := decodePinholeKey(pinholeKey(p))
		p.Timeout = 0
		if !ok || got != p {
			t.Errorf("decodePinholeKey(pinholeKey(%v)) = %v, %v", p, got, ok)
		}
	}
	if _, ok := decodePinholeKey(make([]byte, 5)); ok {
		t.Error("decodePinholeKey accepted a 5-byte key")
	}
}
