package main

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
		s := spec(pol(tc.data), nft.QueueCompat)
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
