package policy_test

import (
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/ftpsalg/ftpsalg/alg/policy"
)

// FuzzParse checks that Parse never panics, that it fails exactly with an
// *Errors whose every problem is placed (a line, whenever the input is YAML
// the parser can position), and that what it accepts keeps the Config
// invariants the rest of the daemon relies on.
func FuzzParse(f *testing.F) {
	for _, tc := range errorCases {
		f.Add([]byte(tc.in))
	}
	for _, tc := range mitmErrorCases {
		f.Add([]byte(tc.in))
	}
	for _, name := range []string{"minimal.yaml", "full.yaml"} {
		data, err := os.ReadFile(filepath.Join("..", "..", "examples", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := policy.Parse("policy.yaml", data)
		if err != nil {
			checkErrors(t, data, cfg, err)
			return
		}
		checkConfig(t, cfg)
	})
}

func checkErrors(t *testing.T, data []byte, cfg *policy.Config, err error) {
	t.Helper()
	if cfg != nil {
		t.Fatalf("Parse returned both a config and %v", err)
	}
	var errs *policy.Errors
	if !errors.As(err, &errs) || len(errs.List) == 0 {
		t.Fatalf("Parse error %v (%T) is not a non-empty *policy.Errors", err, err)
	}
	// Input yaml.v3 parses is YAML with positions: every problem has one.
	var n yaml.Node
	placed := yaml.Unmarshal(data, &n) == nil
	last := 0
	for _, e := range errs.List {
		if e.File != "policy.yaml" || e.Msg == "" {
			t.Errorf("problem without file or message: %#v", e)
		}
		if placed && e.Line <= 0 {
			t.Errorf("problem without a line in parseable YAML: %#v", e)
		}
		if e.Line < last {
			t.Errorf("problems out of line order: %v", err)
		}
		last = e.Line
	}
}

func checkConfig(t *testing.T, cfg *policy.Config) {
	t.Helper()
	if len(cfg.Servers) == 0 {
		t.Fatal("accepted a policy without servers")
	}
	if cfg.NFTables.CtMark == 0 || cfg.NFTables.PacketMark == 0 || cfg.NFTables.CtMark&cfg.NFTables.PacketMark != 0 {
		t.Errorf("marks %#x, %#x: zero or overlapping", cfg.NFTables.CtMark, cfg.NFTables.PacketMark)
	}
	if m := cfg.MITM.TProxyMark; m == 0 || m&(cfg.NFTables.CtMark|cfg.NFTables.PacketMark) != 0 {
		t.Errorf("tproxy mark %#x: zero or overlapping the nftables marks", m)
	}
	names := make(map[string]bool)
	for i := range cfg.Servers {
		s := &cfg.Servers[i]
		if s.Name == "" || names[s.Name] {
			t.Errorf("server %d: empty or duplicate name %q", i, s.Name)
		}
		names[s.Name] = true
		if len(s.Addresses) == 0 || len(s.Clients) == 0 || len(s.ControlPorts)+len(s.ImplicitTLSPorts) == 0 {
			t.Errorf("server %q: no addresses, clients or ports", s.Name)
		}
		if s.PassiveMin < 1024 || s.PassiveMin > s.PassiveMax {
			t.Errorf("server %q: passive ports %d-%d", s.Name, s.PassiveMin, s.PassiveMax)
		}
		if (s.Mode == policy.ModeMITM) != (s.MITM != nil) || (s.Mode != policy.ModeMITM && s.Mode != policy.ModeInspect) {
			t.Errorf("server %q: mode %v with MITM %v", s.Name, s.Mode, s.MITM)
		}
		if s.MITM != nil {
			checkMITM(t, s.Name, s.MITM)
		}
		for _, p := range s.Clients {
			if p != p.Masked() {
				t.Errorf("server %q: unmasked client prefix %v", s.Name, p)
			}
		}
		// Every address and port leads back to this server, and only to it.
		for _, a := range s.Addresses {
			for _, port := range append(append([]uint16{}, s.ControlPorts...), s.ImplicitTLSPorts...) {
				if got, ok := cfg.ServerFor(a, port); !ok || got != s {
					t.Errorf("ServerFor(%v, %d) = %v, want server %q", a, port, got, s.Name)
				}
			}
		}
	}
}

// checkMITM checks the invariants of a mitm server's settings.
func checkMITM(t *testing.T, name string, m *policy.MITM) {
	t.Helper()
	p := m.TLS
	if p.MinVersion != tls.VersionTLS12 && p.MinVersion != tls.VersionTLS13 {
		t.Errorf("server %q: min version %#x", name, p.MinVersion)
	}
	if (p.Verify == policy.VerifyCA) != (p.CAFile != "") {
		t.Errorf("server %q: verify %v with ca_file %q", name, p.Verify, p.CAFile)
	}
	if (p.Verify == policy.VerifyPin) != (len(p.PinSHA256) > 0) {
		t.Errorf("server %q: verify %v with %d pins", name, p.Verify, len(p.PinSHA256))
	}
	for _, pin := range p.PinSHA256 {
		if len(pin) != 32 {
			t.Errorf("server %q: pin of %d bytes", name, len(pin))
		}
	}
	if (p.Certificate == "") != (p.Key == "") {
		t.Errorf("server %q: certificate %q with key %q", name, p.Certificate, p.Key)
	}
	if p.HandshakeTimeout < time.Second || p.HandshakeTimeout > time.Minute {
		t.Errorf("server %q: handshake timeout %v", name, p.HandshakeTimeout)
	}
	if m.UpstreamSource != policy.UpstreamClient && m.UpstreamSource != policy.UpstreamGateway {
		t.Errorf("server %q: upstream source %v", name, m.UpstreamSource)
	}
}
