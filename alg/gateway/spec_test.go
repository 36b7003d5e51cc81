package gateway

import (
	"net/netip"
	"testing"

	"github.com/ftpsalg/ftpsalg/alg/policy"
	"github.com/ftpsalg/ftpsalg/nft"
)

// TestSpecRelayPort: the table gets the relay objects only when a mitm
// server relays its data connections.
func TestSpecRelayPort(t *testing.T) {
	t.Parallel()
	pol := func(data string) *policy.Config {
		doc := "servers:\n  - name: a\n    mode: mitm\n    addresses: [198.51.100.10]\n" + data +
			"  - name: b\n    mode: inspect\n    addresses: [198.51.100.11]\n"
		cfg, err := policy.Parse("policy.yaml", []byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	for _, tc := range []struct {
		data string
		want uint16
	}{
		{"", 0},
		{"    data: passthrough\n", 0},
		{"    data: relay\n", 15022},
	} {
		s := Spec(pol(tc.data), nft.QueueCompat)
		if s.RelayPort != tc.want {
			t.Errorf("with %q: RelayPort %d, want %d", tc.data, s.RelayPort, tc.want)
		}
		if len(s.MITM) != 1 || s.MITM[0] != netip.MustParseAddrPort("198.51.100.10:21") {
			t.Errorf("with %q: MITM %v", tc.data, s.MITM)
		}
		if err := nft.NewFake().Apply(t.Context(), s); err != nil {
			t.Errorf("with %q: Apply: %v", tc.data, err)
		}
	}
}

// TestSpecNAT: published addresses are diverted like mitm endpoints, the
// clients' prefixes are masqueraded, and the table applies.
func TestSpecNAT(t *testing.T) {
	t.Parallel()
	cfg, err := policy.Load("../../examples/nat.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := Spec(cfg, nft.QueueCompat)
	want := []netip.AddrPort{
		netip.MustParseAddrPort("192.0.2.1:21"),
		netip.MustParseAddrPort("192.0.2.20:21"),
		netip.MustParseAddrPort("198.51.100.20:21"),
	}
	if len(s.MITM) != len(want) {
		t.Fatalf("MITM %v, want %v", s.MITM, want)
	}
	for _, ap := range want {
		found := false
		for _, got := range s.MITM {
			found = found || got == ap
		}
		if !found {
			t.Errorf("MITM %v lacks %s", s.MITM, ap)
		}
	}
	if len(s.Control) != 1 || s.Control[0] != netip.MustParseAddrPort("198.51.100.2:21") {
		t.Errorf("Control %v, want the inspect server's own endpoint", s.Control)
	}
	if len(s.Masqueraded) != 1 || s.Masqueraded[0] != netip.MustParsePrefix("203.0.113.0/25") {
		t.Errorf("Masqueraded %v", s.Masqueraded)
	}
	if err := nft.NewFake().Apply(t.Context(), s); err != nil {
		t.Errorf("Apply: %v", err)
	}
	if !cfg.Stream() {
		t.Error("Stream() = false")
	}
}
