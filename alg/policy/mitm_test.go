package policy_test

import (
	"crypto/tls"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ftpsalg/ftpsalg/alg/policy"
)

// mitmBase is a valid one-server mitm policy on lines 1-4; cases append to
// it, so their first line is 5.
var mitmBase = []string{
	"servers:",
	"  - name: ftp",
	"    mode: mitm",
	"    addresses: [192.0.2.10]",
}

func withMITM(lines ...string) string {
	return doc(append(append([]string{}, mitmBase...), lines...)...)
}

// beforeMITM puts lines before mitmBase.
func beforeMITM(lines ...string) string {
	return doc(append(append([]string{}, lines...), mitmBase...)...)
}

// Pins used by the tests: base64 of 32 bytes, and a hex digest.
var (
	pinA   = base64.StdEncoding.EncodeToString([]byte(strings.Repeat("a", 32)))
	pinB   = base64.StdEncoding.EncodeToString([]byte(strings.Repeat("b", 32)))
	pinHex = strings.Repeat("ab", 32)
)

func b64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const (
	pinHowTo    = "openssl x509 -in server.crt -noout -pubkey | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64"
	inspectOnly = "only valid with mode: mitm (this server has mode: inspect, which does not terminate TLS)"
)

// mitmErrorCases are invalid mitm settings and every error each must
// produce. They also seed FuzzParse.
var mitmErrorCases = []struct {
	name string
	in   string
	want []policy.Error
}{
	// The mitm section.
	{"mitm section not a mapping", beforeBase("mitm: true"), []policy.Error{
		e(1, "mitm", "expected a mapping with keys: "+mitmKeys+", got boolean true"),
	}},
	{"unknown mitm key", beforeBase("mitm:", "  listen: 1"), []policy.Error{
		e(2, "mitm.listen", "unknown key (listen belongs under metrics); valid keys: "+mitmKeys),
	}},
	{"mitm values out of range", beforeBase(
		"mitm:",
		"  ca_dir: ca",
		"  leaf_lifetime: 30m",
		"  listen_port: 0",
		"  route_table: 254",
		"  rule_priority: 32766",
		"  tproxy_mark: 0",
	), []policy.Error{
		e(2, "mitm.ca_dir", `"ca" is not an absolute path: write it from / (such as /etc/ftpsalg/ca)`),
		e(3, "mitm.leaf_lifetime", "30m is out of range: must be from 1h to 720h"),
		e(4, "mitm.listen_port", "0 is out of range: must be from 1 to 65535"),
		e(5, "mitm.route_table", "table 254 is the kernel's (253 default, 254 main, 255 local): pick a table of ftpsalg's own"),
		e(6, "mitm.rule_priority", "32766 is out of range: must be from 1 to 32765"),
		e(7, "mitm.tproxy_mark", "must not be zero: ftpsalg needs bits of its own"),
	}},
	{"more mitm values out of range", beforeBase(
		"mitm:",
		"  ca_dir: 7",
		"  leaf_lifetime: 721h",
		"  listen_port: 65536",
		"  route_table: 0xfffffff1",
		"  rule_priority: 0",
		"  tproxy_mark: 0x100000000",
	), []policy.Error{
		e(2, "mitm.ca_dir", `expected an absolute path such as /etc/ftpsalg/ca, got integer 7`),
		e(3, "mitm.leaf_lifetime", "721h is out of range: must be from 1h to 720h"),
		e(4, "mitm.listen_port", "65536 is out of range: must be from 1 to 65535"),
		e(5, "mitm.route_table", "4294967281 is out of range: must be from 1 to 4294967280"),
		e(6, "mitm.rule_priority", "0 is out of range: must be from 1 to 32765"),
		e(7, "mitm.tproxy_mark", "0x100000000 does not fit in 32 bits"),
	}},
	{"relay port out of range", beforeBase("mitm:", "  relay_port: 0"), []policy.Error{
		e(2, "mitm.relay_port", "0 is out of range: must be from 1 to 65535"),
	}},
	{"relay port is listen port", beforeBase("mitm:", "  listen_port: 2121", "  relay_port: 2121"), []policy.Error{
		e(3, "mitm.relay_port", "2121 is also listen_port: the two listeners need ports of their own"),
	}},
	{"listen port on the default relay port", beforeBase("mitm:", "  listen_port: 15022"), []policy.Error{
		e(2, "mitm.listen_port", "15022 is also relay_port (default 15022): the two listeners need ports of their own"),
	}},
	{"reserved route tables and zero", beforeBase("mitm:", "  route_table: 0"), []policy.Error{
		e(2, "mitm.route_table", "0 is out of range: must be from 1 to 4294967280"),
	}},
	{"route table 253", beforeBase("mitm:", "  route_table: 253"), []policy.Error{
		e(2, "mitm.route_table", "table 253 is the kernel's (253 default, 254 main, 255 local): pick a table of ftpsalg's own"),
	}},
	{"route table 255", beforeBase("mitm:", "  route_table: 255"), []policy.Error{
		e(2, "mitm.route_table", "table 255 is the kernel's (253 default, 254 main, 255 local): pick a table of ftpsalg's own"),
	}},
	{"leaf lifetime without unit", beforeBase("mitm:", "  leaf_lifetime: 24"), []policy.Error{
		e(2, "mitm.leaf_lifetime", `"24" has no unit: use "24s"`),
	}},
	{"tproxy mark overlaps ct mark", beforeBase("mitm:", "  tproxy_mark: 0x10000001"), []policy.Error{
		e(2, "mitm.tproxy_mark", "0x10000001 shares bits 0x10000000 with nftables.ct_mark (0x10000000): the marks must not overlap"),
	}},
	{"tproxy mark overlaps both marks", beforeBase("nftables:", "  ct_mark: 0x1", "mitm:", "  tproxy_mark: 0x20000001"), []policy.Error{
		e(4, "mitm.tproxy_mark", "0x20000001 shares bits 0x00000001 with nftables.ct_mark (0x00000001): the marks must not overlap"),
		e(4, "mitm.tproxy_mark", "0x20000001 shares bits 0x20000000 with nftables.packet_mark (0x20000000): the marks must not overlap"),
	}},
	{"packet mark overlaps the default tproxy mark without a mitm section", beforeBase("nftables:", "  packet_mark: 0x40000000"), []policy.Error{
		e(2, "nftables.packet_mark", "0x40000000 shares bits 0x40000000 with mitm.tproxy_mark (0x40000000): the marks must not overlap"),
	}},
	{"ct mark overlaps the default tproxy mark", beforeBase("nftables:", "  ct_mark: 0xc0000000", "mitm:", "  listen_port: 2121"), []policy.Error{
		e(2, "nftables.ct_mark", "0xc0000000 shares bits 0x40000000 with mitm.tproxy_mark (0x40000000): the marks must not overlap"),
	}},
	{"no tproxy overlap check when the nftables marks are bad", beforeBase("nftables:", "  ct_mark: 0x50000000", "  packet_mark: 0x50000000"), []policy.Error{
		e(3, "nftables.packet_mark", "0x50000000 shares bits 0x50000000 with ct_mark (0x50000000): the two marks must not overlap"),
	}},
	{"tls at the top level", beforeBase("tls: {verify: none}"), []policy.Error{
		e(1, "tls", "unknown key (tls belongs in each mitm server); valid keys: "+rootKeys),
	}},
	{"tls key in the mitm section", beforeBase("mitm:", "  verify: none"), []policy.Error{
		e(2, "mitm.verify", "unknown key (verify belongs under a mitm server's tls); valid keys: "+mitmKeys),
	}},

	// Mitm-only server keys on an inspect server.
	{"mitm keys on an inspect server", withBase(
		"    tls: {verify: none}",
		"    require_tls: false",
		"    allow_anonymous: false",
		"    upstream_source: gateway",
	), []policy.Error{
		e(5, "servers[0].tls", inspectOnly),
		e(6, "servers[0].require_tls", inspectOnly),
		e(7, "servers[0].allow_anonymous", inspectOnly),
		e(8, "servers[0].upstream_source", inspectOnly),
	}},
	{"server mitm keys", withMITM("    require_tls: yes", "    allow_anonymous: 1", "    upstream_source: nat"), []policy.Error{
		e(5, "servers[0].require_tls", `expected true or false, got string "yes"`),
		e(6, "servers[0].allow_anonymous", "expected true or false, got integer 1"),
		e(7, "servers[0].upstream_source", `"nat" is not an upstream source; use client or gateway`),
	}},
	{"upstream source not a string", withMITM("    upstream_source: [client]"), []policy.Error{
		e(5, "servers[0].upstream_source", "expected client or gateway, got a list"),
	}},
	{"data path unknown", withMITM("    data: auto"), []policy.Error{
		e(5, "servers[0].data", `"auto" is not a data path; use passthrough or relay`),
	}},
	{"data path not a string", withMITM("    data: true"), []policy.Error{
		e(5, "servers[0].data", "expected passthrough or relay, got boolean true"),
	}},
	{"client reuse without relay", withMITM("    tls:", "      require_client_reuse: true"), []policy.Error{
		e(6, "servers[0].tls.require_client_reuse", "only used with data: relay (data is passthrough: the client's data connections reach the server, which decides)"),
	}},
	{"client reuse not a boolean", withMITM("    data: relay", "    tls: {require_client_reuse: yes}"), []policy.Error{
		e(6, "servers[0].tls.require_client_reuse", `expected true or false, got string "yes"`),
	}},
	{"data in an inspect server", withBase("    data: relay"), []policy.Error{
		e(5, "servers[0].data", inspectOnly),
	}},

	// tls.
	{"tls not a mapping", withMITM("    tls: system"), []policy.Error{
		e(5, "servers[0].tls", "expected a mapping with keys: "+tlsKeys+`, got string "system"`),
	}},
	{"unknown tls key", withMITM("    tls: {min_versoin: \"1.3\"}"), []policy.Error{
		e(5, "servers[0].tls.min_versoin", `unknown key (did you mean "min_version"?); valid keys: `+tlsKeys),
	}},
	{"tls key directly in the server", withMITM("    verify: none"), []policy.Error{
		e(5, "servers[0].verify", "unknown key (verify belongs under a mitm server's tls); valid keys: "+serverKeys),
	}},
	{"deprecated TLS version", withMITM("    tls:", "      min_version: 1.1"), []policy.Error{
		e(6, "servers[0].tls.min_version", `TLS 1.1 is deprecated (RFC 8996) and never accepted; use "1.2" or "1.3"`),
	}},
	{"quoted deprecated TLS version", withMITM("    tls:", `      min_version: "1.0"`), []policy.Error{
		e(6, "servers[0].tls.min_version", `TLS 1.0 is deprecated (RFC 8996) and never accepted; use "1.2" or "1.3"`),
	}},
	{"unknown TLS version", withMITM("    tls:", "      min_version: 1.20"), []policy.Error{
		e(6, "servers[0].tls.min_version", `"1.20" is not a TLS version; use "1.2" or "1.3"`),
	}},
	{"TLS version as text", withMITM("    tls:", "      min_version: TLSv1.3"), []policy.Error{
		e(6, "servers[0].tls.min_version", `"TLSv1.3" is not a TLS version; use "1.2" or "1.3"`),
	}},
	{"TLS version as a list", withMITM("    tls:", "      min_version: [1.2]"), []policy.Error{
		e(6, "servers[0].tls.min_version", `expected "1.2" or "1.3", got a list`),
	}},
	{"TLS version with no value", withMITM("    tls:", "      min_version:"), []policy.Error{
		e(6, "servers[0].tls.min_version", `no value; expected "1.2" or "1.3"`),
	}},
	{"bad verify", withMITM("    tls:", "      verify: strict"), []policy.Error{
		e(6, "servers[0].tls.verify", `"strict" is not a verification mode; use one of system, ca, pin, none`),
	}},
	{"verify as a boolean", withMITM("    tls:", "      verify: false", "      ca_file: /etc/ca.pem"), []policy.Error{
		e(6, "servers[0].tls.verify", "expected one of system, ca, pin, none, got boolean false"),
	}},
	{"verify ca without ca_file", withMITM("    tls:", "      verify: ca"), []policy.Error{
		e(5, "servers[0].tls.ca_file", "missing: verify: ca needs ca_file, the PEM file of CA certificates to trust"),
	}},
	{"ca_file with the default verify", withMITM("    tls:", "      ca_file: /etc/ca.pem"), []policy.Error{
		e(6, "servers[0].tls.ca_file", "only used with verify: ca (verify is system)"),
	}},
	{"relative ca_file", withMITM("    tls:", "      verify: ca", "      ca_file: ca.pem"), []policy.Error{
		e(7, "servers[0].tls.ca_file", `"ca.pem" is not an absolute path: write it from / (such as /etc/ftpsalg/upstream-ca.pem)`),
	}},
	{"verify pin without pins", withMITM("    tls:", "      verify: pin"), []policy.Error{
		e(5, "servers[0].tls.pin_sha256", "missing: verify: pin needs pin_sha256, the base64 SHA-256 digests of the accepted public keys"),
	}},
	{"pins with verify none", withMITM("    tls:", "      verify: none", "      pin_sha256: ["+pinA+"]"), []policy.Error{
		e(7, "servers[0].tls.pin_sha256", "only used with verify: pin (verify is none)"),
	}},
	{"bad pins", withMITM("    tls:", "      verify: pin", "      pin_sha256:",
		"        - "+pinA,
		"        - "+pinHex,
		"        - not base64!",
		"        - c2hvcnQ=",
		"        - 42",
		"        - "+pinA,
	), []policy.Error{
		e(9, "servers[0].tls.pin_sha256[1]", `"`+pinHex+`" is hex: pins are base64 (`+pinHowTo+`)`),
		e(10, "servers[0].tls.pin_sha256[2]", `"not base64!" is not base64: make a pin with `+pinHowTo),
		e(11, "servers[0].tls.pin_sha256[3]", `"c2hvcnQ=" decodes to 5 bytes: a SHA-256 digest is 32`),
		e(12, "servers[0].tls.pin_sha256[4]", "expected a base64 SHA-256 digest, got integer 42"),
		e(13, "servers[0].tls.pin_sha256[5]", "duplicate pin: already listed at line 8"),
	}},
	{"empty pins", withMITM("    tls:", "      verify: pin", "      pin_sha256: []"), []policy.Error{
		e(7, "servers[0].tls.pin_sha256", "empty list: give at least one pin"),
	}},
	{"pins not a list", withMITM("    tls:", "      verify: pin", "      pin_sha256: "+pinA), []policy.Error{
		e(7, "servers[0].tls.pin_sha256", `expected a list of base64 SHA-256 digests of public keys, got string "`+pinA[:40]+`…"`),
	}},
	{"server name is an address", withMITM("    tls:", "      server_name: 192.0.2.10"), []policy.Error{
		e(6, "servers[0].tls.server_name", `"192.0.2.10" is an IP address: leave server_name out to verify the address the client connected to`),
	}},
	{"server name with a wildcard", withMITM("    tls:", `      server_name: "*.example.com"`), []policy.Error{
		e(6, "servers[0].tls.server_name", `"*.example.com" is not a DNS name such as "ftp.example.com" (no wildcard, no trailing dot)`),
	}},
	{"server name with a trailing dot", withMITM("    tls:", "      server_name: ftp.example.com."), []policy.Error{
		e(6, "servers[0].tls.server_name", `"ftp.example.com." is not a DNS name such as "ftp.example.com" (no wildcard, no trailing dot)`),
	}},
	{"server name label too long", withMITM("    tls:", "      server_name: "+strings.Repeat("a", 64)+".example"), []policy.Error{
		e(6, "servers[0].tls.server_name", `"`+strings.Repeat("a", 64)+`.example" is not a DNS name such as "ftp.example.com" (no wildcard, no trailing dot)`),
	}},
	{"server name not a string", withMITM("    tls:", "      server_name: 42"), []policy.Error{
		e(6, "servers[0].tls.server_name", `expected a DNS name such as "ftp.example.com", got integer 42`),
	}},
	{"certificate without key", withMITM("    tls:", "      certificate: /etc/ftpsalg/ftp.crt"), []policy.Error{
		e(5, "servers[0].tls.key", "missing: certificate is given without its key; give both or neither"),
	}},
	{"key without certificate", withMITM("    tls:", "      key: /etc/ftpsalg/ftp.key"), []policy.Error{
		e(5, "servers[0].tls.certificate", "missing: key is given without its certificate; give both or neither"),
	}},
	{"relative certificate and key", withMITM("    tls:", "      certificate: ftp.crt", "      key: ./ftp.key"), []policy.Error{
		e(6, "servers[0].tls.certificate", `"ftp.crt" is not an absolute path: write it from / (such as /etc/ftpsalg/files.example.com.crt)`),
		e(7, "servers[0].tls.key", `"./ftp.key" is not an absolute path: write it from / (such as /etc/ftpsalg/files.example.com.key)`),
	}},
	{"handshake timeout too short", withMITM("    tls:", "      handshake_timeout: 500ms"), []policy.Error{
		e(6, "servers[0].tls.handshake_timeout", "500ms is out of range: must be from 1s to 60s"),
	}},
	{"handshake timeout too long", withMITM("    tls:", "      handshake_timeout: 2m"), []policy.Error{
		e(6, "servers[0].tls.handshake_timeout", "2m is out of range: must be from 1s to 60s"),
	}},
	{"every tls problem at once", withMITM("    tls:",
		"      min_version: 1.1",
		"      verify: ca",
		"      server_name: ftp..example",
		"      certificate: /etc/c.pem",
		"      handshake_timeout: 10",
	), []policy.Error{
		e(5, "servers[0].tls.key", "missing: certificate is given without its key; give both or neither"),
		e(5, "servers[0].tls.ca_file", "missing: verify: ca needs ca_file, the PEM file of CA certificates to trust"),
		e(6, "servers[0].tls.min_version", `TLS 1.1 is deprecated (RFC 8996) and never accepted; use "1.2" or "1.3"`),
		e(8, "servers[0].tls.server_name", `"ftp..example" is not a DNS name such as "ftp.example.com" (no wildcard, no trailing dot)`),
		e(10, "servers[0].tls.handshake_timeout", `"10" has no unit: use "10s"`),
	}},
}

func TestParseMITMErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range mitmErrorCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := policy.Parse("policy.yaml", []byte(tc.in))
			if cfg != nil {
				t.Errorf("Parse returned a config with error %v", err)
			}
			var errs *policy.Errors
			if !errors.As(err, &errs) {
				t.Fatalf("Parse error = %v (%T), want *policy.Errors", err, err)
			}
			if diff := cmp.Diff(tc.want, errs.List); diff != "" {
				t.Errorf("errors (-want +got):\n%s\nall errors:\n%v", diff, err)
			}
		})
	}
}

func TestParseMITM(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want func() policy.Config
	}{
		{"defaults", withMITM(), func() policy.Config { return defaults(mitmServer()) }},
		{"mitm section applies without mitm servers", beforeBase("mitm: {listen_port: 2121}"), func() policy.Config {
			c := defaults(defaultServer())
			c.MITM.ListenPort = 2121
			return c
		}},
		{"every mitm key, lowest", beforeMITM(
			"mitm:",
			"  ca_dir: /var/lib/ftpsalg//ca/",
			"  leaf_lifetime: 1h",
			"  listen_port: 1",
			"  route_table: 1",
			"  rule_priority: 1",
			"  tproxy_mark: 0x1",
		), func() policy.Config {
			c := defaults(mitmServer())
			c.MITM = policy.MITMGlobal{
				CADir:        "/var/lib/ftpsalg/ca",
				LeafLifetime: time.Hour,
				ListenPort:   1,
				RelayPort:    15022,
				RouteTable:   1,
				RulePriority: 1,
				TProxyMark:   1,
			}
			return c
		}},
		{"every mitm key, highest", beforeMITM(
			"mitm:",
			"  leaf_lifetime: 720h",
			"  listen_port: 65535",
			"  route_table: 0xfffffff0",
			"  rule_priority: 32765",
			"  tproxy_mark: 0x80000000",
		), func() policy.Config {
			c := defaults(mitmServer())
			c.MITM.LeafLifetime = 720 * time.Hour
			c.MITM.ListenPort = 65535
			c.MITM.RouteTable = 0xfffffff0
			c.MITM.RulePriority = 32765
			c.MITM.TProxyMark = 0x80000000
			return c
		}},
		{"route tables next to the kernel's", beforeMITM("mitm: {route_table: 252}"), func() policy.Config {
			c := defaults(mitmServer())
			c.MITM.RouteTable = 252
			return c
		}},
		{"marks moved together", beforeMITM("nftables: {ct_mark: 0x40000000}", "mitm: {tproxy_mark: 0x10000000}"), func() policy.Config {
			c := defaults(mitmServer())
			c.NFTables.CtMark = 0x40000000
			c.MITM.TProxyMark = 0x10000000
			return c
		}},
		{"every server key", withMITM(
			"    tls:",
			"      min_version: 1.3",
			"      verify: ca",
			"      ca_file: /etc/ftpsalg/../ftpsalg/partner.pem",
			"      server_name: Files_1.example.com",
			"      certificate: /etc/ftpsalg/ftp.crt",
			"      key: /etc/ftpsalg/ftp.key",
			"      handshake_timeout: 60s",
			"      require_client_reuse: true",
			"    require_tls: false",
			"    allow_anonymous: false",
			"    upstream_source: gateway",
			"    data: relay",
		), func() policy.Config {
			s := mitmServer()
			s.MITM = &policy.MITM{
				TLS: policy.ServerTLS{
					MinVersion:         tls.VersionTLS13,
					Verify:             policy.VerifyCA,
					CAFile:             "/etc/ftpsalg/partner.pem",
					ServerName:         "Files_1.example.com",
					Certificate:        "/etc/ftpsalg/ftp.crt",
					Key:                "/etc/ftpsalg/ftp.key",
					HandshakeTimeout:   60 * time.Second,
					RequireClientReuse: true,
				},
				RequireTLS:     false,
				AllowAnonymous: false,
				UpstreamSource: policy.UpstreamGateway,
				Data:           policy.DataRelay,
			}
			return defaults(s)
		}},
		{"quoted versions and the shortest timeout", withMITM("    tls:", `      min_version: "1.2"`, "      handshake_timeout: 1s"), func() policy.Config {
			s := mitmServer()
			s.MITM.TLS.HandshakeTimeout = time.Second
			return defaults(s)
		}},
		{"verify pin", withMITM("    tls:", "      verify: pin", "      pin_sha256: ["+pinA+", "+pinB+"]"), func() policy.Config {
			s := mitmServer()
			s.MITM.TLS.Verify = policy.VerifyPin
			s.MITM.TLS.PinSHA256 = [][]byte{[]byte(strings.Repeat("a", 32)), []byte(strings.Repeat("b", 32))}
			return defaults(s)
		}},
		{"verify none", withMITM("    tls: {verify: none}", "    upstream_source: client"), func() policy.Config {
			s := mitmServer()
			s.MITM.TLS.Verify = policy.VerifyNone
			return defaults(s)
		}},
		{"empty tls mapping", withMITM("    tls: {}"), func() policy.Config { return defaults(mitmServer()) }},
		{"relay without client reuse", withMITM("    data: relay", "    tls: {require_client_reuse: false}"), func() policy.Config {
			s := mitmServer()
			s.MITM.Data = policy.DataRelay
			return defaults(s)
		}},
		{"passthrough said explicitly", withMITM("    data: passthrough"), func() policy.Config { return defaults(mitmServer()) }},
		{"relay port moved, listen port on the old relay port", beforeMITM("mitm: {listen_port: 15022, relay_port: 15021}"), func() policy.Config {
			c := defaults(mitmServer())
			c.MITM.ListenPort, c.MITM.RelayPort = 15022, 15021
			return c
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := policy.Parse("policy.yaml", []byte(tc.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(tc.want(), *got, cmpOpts); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMITMStrings(t *testing.T) {
	t.Parallel()
	for v, want := range map[policy.VerifyMode]string{
		policy.VerifySystem: "system",
		policy.VerifyCA:     "ca",
		policy.VerifyPin:    "pin",
		policy.VerifyNone:   "none",
		0:                   "VerifyMode(0)",
	} {
		if got := v.String(); got != want {
			t.Errorf("VerifyMode(%d).String() = %q, want %q", uint8(v), got, want)
		}
	}
	for p, want := range map[policy.DataPath]string{
		policy.DataPassthrough: "passthrough",
		policy.DataRelay:       "relay",
		0:                      "DataPath(0)",
	} {
		if got := p.String(); got != want {
			t.Errorf("DataPath(%d).String() = %q, want %q", uint8(p), got, want)
		}
	}
	for u, want := range map[policy.UpstreamSource]string{
		policy.UpstreamClient:  "client",
		policy.UpstreamGateway: "gateway",
		0:                      "UpstreamSource(0)",
	} {
		if got := u.String(); got != want {
			t.Errorf("UpstreamSource(%d).String() = %q, want %q", uint8(u), got, want)
		}
	}
}
