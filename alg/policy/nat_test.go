package policy_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ftpsalg/ftpsalg/alg/policy"
)

func TestParseNAT(t *testing.T) {
	t.Parallel()
	in := doc(
		"servers:",
		"  - name: ftp",
		"    mode: inspect",
		"    addresses: [198.51.100.2, \"2001:db8:5::2\"]",
		"    passive_ports: \"50000-50100\"",
		"    public: [192.0.2.1]",
		"  - name: other",
		"    mode: inspect",
		"    addresses: [198.51.100.3]",
		"    public: [192.0.2.1]",
		"    control_ports: [2121]",
		"    public_ports: \"40000-40099\"",
		"clients:",
		"  - name: office",
		"    prefixes: [\"203.0.113.0/25\", \"2001:db8:c::/64\"]",
		"    nat_addresses: [198.51.100.1, \"2001:db8:5::1\"]",
		"    nat_ports: \"52000-52099\"",
		"  - name: lab",
		"    prefixes: [\"203.0.113.128/25\"]",
		"    nat_addresses: [198.51.100.1]",
	)
	cfg, err := policy.Parse("nat.yaml", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	pub := netip.MustParseAddr("192.0.2.1")
	s := cfg.Servers[0]
	if diff := cmp.Diff([]netip.Addr{pub}, s.Public, cmpOpts); diff != "" {
		t.Errorf("public (-want +got):\n%s", diff)
	}
	if s.PublicPortMin != 50000 || s.PublicPortMax != 50100 {
		t.Errorf("public_ports default = %d-%d; want the passive range", s.PublicPortMin, s.PublicPortMax)
	}
	if o := cfg.Servers[1]; o.PublicPortMin != 40000 || o.PublicPortMax != 40099 {
		t.Errorf("public_ports = %d-%d; want 40000-40099", o.PublicPortMin, o.PublicPortMax)
	}
	if a, ok := s.Private(pub); !ok || a != netip.MustParseAddr("198.51.100.2") {
		t.Errorf("Private(%s) = %s, %v", pub, a, ok)
	}
	if _, ok := s.Private(netip.MustParseAddr("192.0.2.9")); ok {
		t.Error("Private of a non-public address succeeded")
	}
	// The public address serves both servers, on their own control ports.
	if got, ok := cfg.ServerFor(pub, 21); !ok || got.Name != "ftp" {
		t.Errorf("ServerFor(public, 21) = %v, %v; want ftp", got, ok)
	}
	if got, ok := cfg.ServerFor(netip.MustParseAddr("::ffff:192.0.2.1"), 2121); !ok || got.Name != "other" {
		t.Errorf("ServerFor(public, 2121) = %v, %v; want other", got, ok)
	}
	if len(cfg.Clients) != 2 {
		t.Fatalf("clients = %+v", cfg.Clients)
	}
	c, ok := cfg.ClientNAT(netip.MustParseAddr("203.0.113.100"))
	if !ok || c.Name != "office" || c.PortMin != 52000 || c.PortMax != 52099 {
		t.Fatalf("ClientNAT(203.0.113.100) = %+v, %v", c, ok)
	}
	if a, ok := c.Address(netip.MustParseAddr("203.0.113.100")); !ok || a != netip.MustParseAddr("198.51.100.1") {
		t.Errorf("Address(v4) = %s, %v", a, ok)
	}
	if a, ok := c.Address(netip.MustParseAddr("2001:db8:c::2")); !ok || a != netip.MustParseAddr("2001:db8:5::1") {
		t.Errorf("Address(v6) = %s, %v", a, ok)
	}
	if c, _ := cfg.ClientNAT(netip.MustParseAddr("203.0.113.200")); c == nil || c.PortMin != 61000 || c.PortMax != 61999 {
		t.Errorf("nat_ports default = %+v; want 61000-61999", c)
	}
	if _, ok := cfg.ClientNAT(netip.MustParseAddr("192.0.2.200")); ok {
		t.Error("ClientNAT matched an address outside every prefix")
	}
	if !cfg.Stream() {
		t.Error("Stream() = false with public servers and clients")
	}
	if err := policy.CheckHost(cfg, []netip.Addr{pub, netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("2001:db8:5::1")}); err != nil {
		t.Errorf("CheckHost with both addresses: %v", err)
	}
	err = policy.CheckHost(cfg, []netip.Addr{netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("2001:db8:5::1")})
	if err == nil || !strings.Contains(err.Error(), `server "ftp": public address 192.0.2.1`) {
		t.Errorf("CheckHost without the public address: %v", err)
	}
	err = policy.CheckHost(cfg, []netip.Addr{pub})
	if err == nil || !strings.Contains(err.Error(), `clients "office": nat address 198.51.100.1`) {
		t.Errorf("CheckHost without the NAT address: %v", err)
	}
}

func TestStream(t *testing.T) {
	t.Parallel()
	cfg, err := policy.Parse("p.yaml", []byte(withBase()))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Stream() {
		t.Error("Stream() = true for a plain inspect policy")
	}
}

// natErr is one expected problem: its line, key path and a part of its
// message.
type natErr struct {
	line int
	key  string
	msg  string
}

func TestParseNATErrors(t *testing.T) {
	t.Parallel()
	srv := func(extra ...string) []string {
		return append([]string{
			"servers:",
			"  - name: ftp",
			"    mode: inspect",
			"    addresses: [198.51.100.2]",
		}, extra...)
	}
	cases := []struct {
		name string
		in   []string
		want []natErr
	}{
		{"public is the server's own address", srv("    public: [198.51.100.2]"),
			[]natErr{{5, "servers[0].public[0]", "also one of this server's addresses"}}},
		{"public of a family the server lacks", srv("    public: [\"2001:db8::1\"]"),
			[]natErr{{5, "servers[0].public[0]", "no IPv6 address"}}},
		{"two public addresses of one family", srv("    public: [192.0.2.1, 192.0.2.2]"),
			[]natErr{{5, "servers[0].public[1]", "at most one per family"}}},
		{"public_ports without public", srv("    public_ports: \"40000-40010\""),
			[]natErr{{5, "servers[0].public_ports", "only valid with public"}}},
		{"privileged public_ports", srv("    public: [192.0.2.1]", "    public_ports: \"80-90\""),
			[]natErr{{6, "servers[0].public_ports", "privileged"}}},
		{"public is another server's address", srv("    public: [198.51.100.3]",
			"  - name: two", "    mode: inspect", "    addresses: [198.51.100.3]"),
			[]natErr{{5, "servers[0].public[0]", `an address of server "two"`}}},
		{"shared public address on the same port", srv("    public: [192.0.2.1]",
			"  - name: two", "    mode: inspect", "    addresses: [198.51.100.3]", "    public: [192.0.2.1]"),
			[]natErr{{9, "servers[1].public[0]", `port 21 already belongs to server "ftp"`}}},
		{"overlapping clients prefixes", srv("clients:",
			"  - name: a", "    prefixes: [\"192.0.2.0/24\"]", "    nat_addresses: [198.51.100.1]",
			"  - name: b", "    prefixes: [\"192.0.2.128/25\"]", "    nat_addresses: [198.51.100.1]"),
			[]natErr{{10, "clients[1].prefixes[0]", `overlaps 192.0.2.0/24 of clients "a"`}}},
		{"server inside a clients prefix", srv("clients:",
			"  - name: a", "    prefixes: [\"198.51.100.0/24\"]", "    nat_addresses: [203.0.113.1]"),
			[]natErr{{7, "clients[0].prefixes[0]", `contains 198.51.100.2 of server "ftp"`}}},
		{"NAT address inside the prefix", srv("clients:",
			"  - name: a", "    prefixes: [\"192.0.2.0/24\"]", "    nat_addresses: [192.0.2.1]"),
			[]natErr{{8, "clients[0].nat_addresses[0]", "is inside 192.0.2.0/24"}}},
		{"NAT address is a server's", srv("clients:",
			"  - name: a", "    prefixes: [\"192.0.2.0/24\"]", "    nat_addresses: [198.51.100.2]"),
			[]natErr{{8, "clients[0].nat_addresses[0]", `an address of server "ftp"`}}},
		{"NAT address of a family without prefixes", srv("clients:",
			"  - name: a", "    prefixes: [\"192.0.2.0/24\"]", "    nat_addresses: [198.51.100.1, \"2001:db8:5::1\"]"),
			[]natErr{{8, "clients[0].nat_addresses[1]", "has no IPv6 prefix"}}},
		{"prefix of a family without a NAT address", srv("clients:",
			"  - name: a", "    prefixes: [\"192.0.2.0/24\", \"2001:db8:c::/64\"]", "    nat_addresses: [198.51.100.1]"),
			[]natErr{{7, "clients[0].prefixes[1]", "has no IPv6 NAT address"}}},
		{"clients entry without nat_addresses", srv("clients:", "  - name: a", "    prefixes: [\"192.0.2.0/24\"]"),
			[]natErr{{6, "clients[0].nat_addresses", "missing"}}},
		{"unknown key in a clients entry", srv("clients:", "  - name: a", "    prefixes: [\"192.0.2.0/24\"]",
			"    nat_addresses: [198.51.100.1]", "    nat_port: \"50000-50010\""),
			[]natErr{{9, "clients[0].nat_port", `did you mean "nat_ports"`}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := policy.Parse("p.yaml", []byte(doc(tc.in...)))
			var errs *policy.Errors
			if !errors.As(err, &errs) {
				t.Fatalf("Parse error = %v; want *policy.Errors", err)
			}
			if len(errs.List) != len(tc.want) {
				t.Fatalf("errors:\n%v\nwant %d like %+v", err, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				g := errs.List[i]
				if g.Line != w.line || g.Key != w.key || !strings.Contains(g.Msg, w.msg) {
					t.Errorf("error %d = %d %s %q; want %d %s containing %q", i, g.Line, g.Key, g.Msg, w.line, w.key, w.msg)
				}
			}
		})
	}
}

// TestRelayWithNAT: the data relay combines with both layouts (issue 10):
// a relay server may be published and its clients masqueraded.
func TestRelayWithNAT(t *testing.T) {
	t.Parallel()
	for name, in := range map[string][]string{
		"public": {"servers:", "  - name: ftp", "    mode: mitm", "    addresses: [198.51.100.2]",
			"    public: [192.0.2.1]", "    data: relay"},
		"masqueraded clients": {"servers:", "  - name: ftp", "    mode: mitm", "    addresses: [198.51.100.2]", "    data: relay",
			"clients:", "  - name: a", "    prefixes: [\"192.0.2.0/24\"]", "    nat_addresses: [198.51.100.1]"},
	} {
		if _, err := policy.Parse("p.yaml", []byte(doc(in...))); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestExampleNAT(t *testing.T) {
	t.Parallel()
	cfg, err := policy.Load("../../examples/nat.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Servers) != 2 || len(cfg.Clients) != 1 {
		t.Fatalf("servers %d, clients %d", len(cfg.Servers), len(cfg.Clients))
	}
	s := cfg.Servers[0]
	if a, ok := s.Private(netip.MustParseAddr("192.0.2.1")); !ok || a != netip.MustParseAddr("198.51.100.2") || s.PublicPortMin != 50000 || s.PublicPortMax != 50100 {
		t.Errorf("files: %+v", s)
	}
	c := cfg.Clients[0]
	if c.Name != "office" || c.PortMin != 61000 || c.PortMax != 61999 || len(c.NAT) != 1 || c.NAT[0] != netip.MustParseAddr("198.51.100.1") {
		t.Errorf("office: %+v", c)
	}
}
