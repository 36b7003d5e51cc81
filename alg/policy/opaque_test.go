package policy_test

import (
	"crypto/tls"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ftpsalg/ftpsalg/alg/policy"
)

// opaqueBase is a valid one-server opaque policy on lines 1-5.
var opaqueBase = []string{
	"servers:",
	"  - name: ftp",
	"    mode: opaque",
	"    addresses: [192.0.2.10]",
	"    passive_ports: 50000-50100",
}

func withOpaque(lines ...string) string {
	return doc(append(append([]string{}, opaqueBase...), lines...)...)
}

func TestOpaqueParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want policy.Opaque
	}{
		{"defaults", withOpaque(), policy.Opaque{MinVersion: tls.VersionTLS12}},
		{"tls 1.3 and active ports", withOpaque(
			"    tls: {min_version: \"1.3\"}",
			"    opaque: {active_ports: 40000-40100}"),
			policy.Opaque{MinVersion: tls.VersionTLS13, ActiveMin: 40000, ActiveMax: 40100}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := policy.Parse("policy.yaml", []byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			s := cfg.Servers[0]
			if s.Mode != policy.ModeOpaque || s.MITM != nil || s.Opaque == nil {
				t.Fatalf("server %+v", s)
			}
			if diff := cmp.Diff(tc.want, *s.Opaque); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestOpaqueErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want []policy.Error
	}{
		{"passive range required", doc(opaqueBase[:4]...), []policy.Error{
			e(2, "servers[0].passive_ports", "missing: an opaque server needs its passive range: it is what a TLS session's client may reach"),
		}},
		{"active_mode", withOpaque("    active_mode: true"), []policy.Error{
			e(6, "servers[0].active_mode", "not valid with mode: opaque: PORT and EPRT travel encrypted: use opaque.active_ports to admit the server's connections to the client"),
		}},
		{"public", withOpaque("    public: [198.51.100.1]"), []policy.Error{
			e(6, "servers[0].public", "not valid with mode: opaque: announcements travel encrypted and cannot be translated: publish the server with mode: mitm"),
		}},
		{"tls keys of mitm", withOpaque("    tls:", "      verify: none"), []policy.Error{
			e(7, "servers[0].tls.verify", "only min_version is valid with mode: opaque, which does not terminate TLS"),
		}},
		{"opaque in inspect mode", withBase("    opaque: {active_ports: 40000-40100}"), []policy.Error{
			e(5, "servers[0].opaque", "only valid with mode: opaque (this server has mode: inspect)"),
		}},
		{"old TLS", withOpaque("    tls: {min_version: \"1.1\"}"), []policy.Error{
			e(6, "servers[0].tls.min_version", `TLS 1.1 is deprecated (RFC 8996) and never accepted; use "1.2" or "1.3"`),
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := policy.Parse("policy.yaml", []byte(tc.in))
			var errs *policy.Errors
			if !errors.As(err, &errs) {
				t.Fatalf("Parse error = %v", err)
			}
			if diff := cmp.Diff(tc.want, errs.List); diff != "" {
				t.Errorf("(-want +got):\n%s\n%v", diff, err)
			}
		})
	}
}
