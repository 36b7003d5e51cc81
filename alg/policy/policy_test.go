package policy_test

import (
	"crypto/tls"
	"errors"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/ftpsalg/ftpsalg/alg/policy"
)

// cmpOpts compares netip values by ==, which is what they are designed for.
var cmpOpts = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

// doc joins lines with newlines: the k-th argument is line k of the policy,
// so expected line numbers can be read off the test.
func doc(lines ...string) string { return strings.Join(lines, "\n") + "\n" }

// base is a valid one-server policy on lines 1-4; cases append to it.
var base = []string{
	"servers:",
	"  - name: ftp",
	"    mode: inspect",
	"    addresses: [192.0.2.10]",
}

func withBase(lines ...string) string { return doc(append(append([]string{}, base...), lines...)...) }

// beforeBase puts lines before base, so base starts at line len(lines)+1.
func beforeBase(lines ...string) string { return doc(append(append([]string{}, lines...), base...)...) }

func e(line int, key, msg string) policy.Error {
	return policy.Error{File: "policy.yaml", Line: line, Key: key, Msg: msg}
}

const (
	rootKeys   = "admin, clients, limits, log, metrics, mitm, nftables, pinholes, queue, servers, throttle"
	serverKeys = "active_mode, addresses, allow_anonymous, allow_third_party, clients, control_ports, data, implicit_tls_ports, mode, name, opaque, passive_ports, public, public_ports, require_tls, tls, upstream_source"
	mitmKeys   = "ca_dir, leaf_lifetime, listen_port, relay_port, route_table, rule_priority, tproxy_mark"
	tlsKeys    = "ca_file, certificate, handshake_timeout, key, min_version, pin_sha256, require_client_reuse, server_name, verify"
	everyone   = "expected a mapping with keys: " + rootKeys
)

// errorCases are invalid policies and every error each must produce. They
// also seed FuzzParse.
var errorCases = []struct {
	name string
	in   string
	want []policy.Error
}{
	// The document.
	{"empty file", "", []policy.Error{e(1, "servers", "no servers: nothing to do (the policy is empty)")}},
	{"comments only", doc("# nothing yet"), []policy.Error{e(1, "servers", "no servers: nothing to do (the policy is empty)")}},
	{"null document", doc("---"), []policy.Error{e(1, "servers", "no servers: nothing to do (the policy is empty)")}},
	{"no servers key", doc("log:", "  level: info"), []policy.Error{e(1, "servers", "no servers: nothing to do (add a servers list)")}},
	{"empty servers", doc("servers: []"), []policy.Error{e(1, "servers", "no servers: nothing to do")}},
	{"servers not a list", doc("servers:", "  name: ftp"), []policy.Error{e(1, "servers", "expected a list of servers, got a mapping")}},
	{"root is a list", doc("- servers"), []policy.Error{e(1, "", everyone+", got a list")}},
	{"root is a string", doc("servers"), []policy.Error{e(1, "", everyone+`, got string "servers"`)}},
	{"second document", withBase("---", "servers: []"), []policy.Error{
		e(5, "", `a second YAML document: a policy is one document (remove the "---")`),
	}},
	{"parser error line", doc("servers:", "  - name: ftp", "    mode: inspect", "    addresses: [::1]"), []policy.Error{
		e(4, "", `invalid YAML: did not find expected node content; quote IPv6 addresses in flow lists: ["::1"]`),
	}},
	{"unquoted IPv6 after an IPv4 address", doc("servers:", "  - name: ftp", "    mode: inspect", "    clients: [192.0.2.0/24, ::/0]"), []policy.Error{
		e(4, "", `invalid YAML: did not find expected node content; quote IPv6 addresses in flow lists: ["::/0"]`),
	}},
	{"scanner error line", doc("servers:", "\t- name: ftp"), []policy.Error{
		e(2, "", "invalid YAML: found character that cannot start any token"),
	}},
	{"syntax error on line 1", doc("servers: ]"), []policy.Error{
		e(1, "", "invalid YAML: did not find expected node content"),
	}},
	{"unknown anchor", withBase("    clients: *nets"), []policy.Error{
		{File: "policy.yaml", Line: 0, Msg: "invalid YAML: unknown anchor 'nets' referenced"},
	}},
	{"invalid UTF-8", doc("servers:", "  - name: ftp\xff"), []policy.Error{
		e(2, "", "invalid UTF-8 (byte 0xff): a policy is UTF-8 text"),
	}},
	{"control character", doc("servers:", "  - name: f\x01tp"), []policy.Error{
		e(2, "", "character U+0001 is not allowed in YAML"),
	}},

	// Keys.
	{"unknown root key with suggestion", doc("server:", "  - name: ftp"), []policy.Error{
		e(1, "server", `unknown key (did you mean "servers"?); valid keys: `+rootKeys),
		e(1, "servers", "no servers: nothing to do (add a servers list)"),
	}},
	{"misplaced key", beforeBase("timeout: 5s"), []policy.Error{
		e(1, "timeout", "unknown key (timeout belongs under pinholes); valid keys: "+rootKeys),
	}},
	{"unknown server key", withBase("    pasive_ports: 50000-50100"), []policy.Error{
		e(5, "servers[0].pasive_ports", `unknown key (did you mean "passive_ports"?); valid keys: `+serverKeys),
	}},
	{"unknown section key without suggestion", beforeBase("log:", "  colour: json"), []policy.Error{
		e(2, "log.colour", "unknown key; valid keys: format, level"),
	}},
	{"duplicate key", withBase("    mode: mitm"), []policy.Error{
		e(5, "servers[0].mode", "duplicate key: already given at line 3"),
	}},
	{"merge key", doc("x: &d {active_mode: false}", "servers:", "  - <<: *d", "    name: ftp", "    mode: inspect", "    addresses: [192.0.2.10]"), []policy.Error{
		e(1, "x", "unknown key; valid keys: "+rootKeys),
		e(3, "servers[0].<<", "merge keys are not supported: write the keys out"),
	}},
	{"non-scalar key", withBase("    ? [a]", "    : b"), []policy.Error{
		e(5, "servers[0]", "a key must be a plain name, not a list"),
	}},
	{"section not a mapping", beforeBase("log: debug"), []policy.Error{
		e(1, "log", `expected a mapping with keys: format, level, got string "debug"`),
	}},
	{"section with no value", beforeBase("limits:"), []policy.Error{
		e(1, "limits", "no value; expected a mapping with keys: first_command_timeout, idle_timeout, max_flows, max_line, max_sessions_per_client"),
	}},

	// log, metrics.
	{"bad log level", beforeBase("log:", "  level: verbose"), []policy.Error{
		e(2, "log.level", `"verbose" is not a level; use one of debug, info, warn, error`),
	}},
	{"bad log format", beforeBase("log:", "  format: xml"), []policy.Error{
		e(2, "log.format", `"xml" is not a log format; use json or text`),
	}},
	{"admin socket not absolute", beforeBase("admin:", "  socket: admin.sock"), []policy.Error{
		e(2, "admin.socket", `"admin.sock" is not an absolute path such as "/run/ftpsalg/admin.sock" of at most 107 bytes`),
	}},
	{"listen not a string", beforeBase("metrics:", "  listen: 9641"), []policy.Error{
		e(2, "metrics.listen", `expected a host:port string such as "127.0.0.1:9641" or "[::1]:9641", got integer 9641`),
	}},
	{"listen without port", beforeBase("metrics:", "  listen: localhost"), []policy.Error{
		e(2, "metrics.listen", `"localhost" is not host:port; use an address and a port such as "127.0.0.1:9641" or "[::1]:9641"`),
	}},
	{"listen with a named port", beforeBase("metrics:", `  listen: "[::1]:http"`), []policy.Error{
		e(2, "metrics.listen", `"[::1]:http": port "http" is not a number from 1 to 65535`),
	}},
	{"listen on port 0", beforeBase("metrics:", `  listen: "127.0.0.1:0"`), []policy.Error{
		e(2, "metrics.listen", `"127.0.0.1:0": port "0" is not a number from 1 to 65535`),
	}},

	// nftables.
	{"bad table names", beforeBase("nftables:", "  table: 1ftp"), []policy.Error{
		e(2, "nftables.table", `"1ftp" is not a valid table name: use 1 to 32 of a-z, 0-9, _ and -, starting with a letter`),
	}},
	{"table too long", beforeBase("nftables:", "  table: "+strings.Repeat("a", 33)), []policy.Error{
		e(2, "nftables.table", `"`+strings.Repeat("a", 33)+`" is not a valid table name: use 1 to 32 of a-z, 0-9, _ and -, starting with a letter`),
	}},
	{"zero and oversized marks", beforeBase("nftables:", "  ct_mark: 0", "  packet_mark: 0x100000000"), []policy.Error{
		e(2, "nftables.ct_mark", "must not be zero: ftpsalg needs bits of its own"),
		e(3, "nftables.packet_mark", "0x100000000 does not fit in 32 bits"),
	}},
	{"negative mark", beforeBase("nftables:", "  ct_mark: -1"), []policy.Error{
		e(2, "nftables.ct_mark", "-1 does not fit in 32 bits"),
	}},
	{"mark as a string", beforeBase("nftables:", `  ct_mark: "0x1"`), []policy.Error{
		e(2, "nftables.ct_mark", `expected a nonzero 32-bit integer such as 0x10000000, got string "0x1"`),
	}},
	{"packet mark overlaps ct mark", beforeBase("nftables:", "  ct_mark: 0x3", "  packet_mark: 0x6"), []policy.Error{
		e(3, "nftables.packet_mark", "0x00000006 shares bits 0x00000002 with ct_mark (0x00000003): the two marks must not overlap"),
	}},
	{"ct mark overlaps default packet mark", beforeBase("nftables:", "  ct_mark: 0x30000000"), []policy.Error{
		e(2, "nftables.ct_mark", "0x30000000 shares bits 0x20000000 with packet_mark (0x20000000): the two marks must not overlap"),
	}},

	// queue, pinholes, limits.
	{"queue values", beforeBase("queue:", "  number: 70000", "  length: 8", "  failure: maybe"), []policy.Error{
		e(2, "queue.number", "70000 is out of range: must be from 0 to 65535"),
		e(3, "queue.length", "8 is out of range: must be from 16 to 65536"),
		e(4, "queue.failure", `"maybe" is not a failure mode; use closed or open`),
	}},
	{"queue number as a string", beforeBase("queue:", `  number: "4040"`), []policy.Error{
		e(2, "queue.number", `"4040" is not a queue number or range; use N or N-M (0 to 65535)`),
	}},
	{"queue range 5-3", beforeBase("queue:", "  number: 5-3"), []policy.Error{
		e(2, "queue.number", `queue range 5-3 ends before it starts`),
	}},
	{"queue range 0-64", beforeBase("queue:", "  number: 0-64"), []policy.Error{
		e(2, "queue.number", `queue range 0-64 has 65 queues; at most 64`),
	}},
	{"queue range 65500-65536", beforeBase("queue:", "  number: 65500-65536"), []policy.Error{
		e(2, "queue.number", `queue range 65500-65536 is out of range: queues are from 0 to 65535`),
	}},
	{"queue range a-b", beforeBase("queue:", "  number: a-b"), []policy.Error{
		e(2, "queue.number", `"a-b" is not a queue number or range; use N or N-M (0 to 65535)`),
	}},
	{"queue range 1-2-3", beforeBase("queue:", "  number: 1-2-3"), []policy.Error{
		e(2, "queue.number", `"1-2-3" is not a queue number or range; use N or N-M (0 to 65535)`),
	}},
	{"failure as a boolean", beforeBase("queue:", "  failure: false"), []policy.Error{
		e(2, "queue.failure", "expected closed or open, got boolean false"),
	}},
	{"duration without unit", beforeBase("pinholes:", "  timeout: 5"), []policy.Error{
		e(2, "pinholes.timeout", `"5" has no unit: use "5s"`),
	}},
	{"quoted duration without unit", beforeBase("pinholes:", `  timeout: "2.5"`), []policy.Error{
		e(2, "pinholes.timeout", `"2.5" has no unit: use "2.5s"`),
	}},
	{"not a duration", beforeBase("pinholes:", "  timeout: soon"), []policy.Error{
		e(2, "pinholes.timeout", `"soon" is not a duration: use a duration such as "5s" or "500ms"`),
	}},
	{"duration too short", beforeBase("pinholes:", "  timeout: 500ms"), []policy.Error{
		e(2, "pinholes.timeout", "500ms is out of range: must be from 1s to 120s"),
	}},
	{"duration too long", beforeBase("pinholes:", "  timeout: 5m"), []policy.Error{
		e(2, "pinholes.timeout", "5m is out of range: must be from 1s to 120s"),
	}},
	{"duration with no value", beforeBase("pinholes:", "  timeout:"), []policy.Error{
		e(2, "pinholes.timeout", `no value; expected a duration such as "5s" or "500ms"`),
	}},
	{"limits out of range", beforeBase("limits:", "  max_flows: 0", "  max_line: 100"), []policy.Error{
		e(2, "limits.max_flows", "0 is out of range: must be from 1 to 1000000"),
		e(3, "limits.max_line", "100 is out of range: must be from 512 to 65536"),
	}},
	{"throttle out of range", beforeBase("throttle:", "  max_failures: -1", "  window: 500ms", "  ban: 200h", "  allow: [192.0.2.1/24]"), []policy.Error{
		e(2, "throttle.max_failures", "-1 is out of range: must be from 0 to 1000"),
		e(3, "throttle.window", "500ms is out of range: must be from 1s to 24h"),
		e(4, "throttle.ban", "200h is out of range: must be from 1s to 168h"),
		e(5, "throttle.allow[0]", `"192.0.2.1/24" has host bits set: did you mean "192.0.2.0/24"?`),
	}},
	{"integer out of int64", beforeBase("limits:", "  max_flows: 0xffffffffffffffffff", "  max_line: 99999999999999999999"), []policy.Error{
		e(2, "limits.max_flows", "0xffffffffffffffffff is out of range; expected an integer from 1 to 1000000"),
		e(3, "limits.max_line", "99999999999999999999 is out of range; expected an integer from 512 to 65536"),
	}},
	{"quoted number is a string", beforeBase("limits:", `  max_flows: "99999999999999999999"`), []policy.Error{
		e(2, "limits.max_flows", `expected an integer from 1 to 1000000, got string "99999999999999999999"`),
	}},

	// One server.
	{"server missing required keys", doc("servers:", "  - active_mode: true"), []policy.Error{
		e(2, "servers[0].name", "missing: every server needs a name"),
		e(2, "servers[0].mode", "missing: every server needs a mode: inspect, mitm or opaque"),
		e(2, "servers[0].addresses", "missing: every server needs at least one address"),
	}},
	{"server not a mapping", doc("servers:", "  - ftp"), []policy.Error{
		e(2, "servers[0]", "expected a mapping with keys: "+serverKeys+`, got string "ftp"`),
	}},
	{"bad server names", doc("servers:", "  - name: ftp server", "    mode: inspect", "    addresses: [192.0.2.10]",
		"  - name: 2024", "    mode: inspect", "    addresses: [192.0.2.11]"), []policy.Error{
		e(2, "servers[0].name", `"ftp server" is not a valid name: use 1 to 64 of A-Z, a-z, 0-9, _, . and -`),
		e(5, "servers[1].name", "expected a name, got integer 2024"),
	}},
	{"bad mode", doc("servers:", "  - name: ftp", "    mode: proxy", "    addresses: [192.0.2.10]"), []policy.Error{
		e(3, "servers[0].mode", `"proxy" is not a mode; use inspect, mitm or opaque`),
	}},
	{"addresses not a list", doc("servers:", "  - name: ftp", "    mode: inspect", "    addresses: 192.0.2.10"), []policy.Error{
		e(4, "servers[0].addresses", `expected a list of IP addresses such as ["192.0.2.10", "2001:db8::10"], got string "192.0.2.10"`),
	}},
	{"empty addresses", doc("servers:", "  - name: ftp", "    mode: inspect", "    addresses: []"), []policy.Error{
		e(4, "servers[0].addresses", "empty list: a server needs at least one address"),
	}},
	{"bad addresses", doc("servers:", "  - name: ftp", "    mode: inspect", "    addresses:",
		"      - 192.0.2.10",
		"      - 192.0.2.0/24",
		"      - 0.0.0.0",
		"      - '::'",
		"      - 224.0.0.1",
		"      - ff02::1",
		"      - ::ffff:192.0.2.1",
		"      - fe80::1%eth0",
		"      - 255.255.255.255",
		"      - ftp.example.com",
		"      - 21",
		"      - 192.0.2.10",
	), []policy.Error{
		e(6, "servers[0].addresses[1]", `"192.0.2.0/24" is a prefix: list single addresses, such as "192.0.2.0"`),
		e(7, "servers[0].addresses[2]", `"0.0.0.0" is the unspecified address: list the server's own addresses`),
		e(8, "servers[0].addresses[3]", `"::" is the unspecified address: list the server's own addresses`),
		e(9, "servers[0].addresses[4]", `"224.0.0.1" is a multicast address: FTP servers have unicast addresses`),
		e(10, "servers[0].addresses[5]", `"ff02::1" is a multicast address: FTP servers have unicast addresses`),
		e(11, "servers[0].addresses[6]", `"::ffff:192.0.2.1" is IPv4-mapped IPv6: write it as "192.0.2.1"`),
		e(12, "servers[0].addresses[7]", `"fe80::1%eth0" has a zone: zones are not allowed`),
		e(13, "servers[0].addresses[8]", `"255.255.255.255" is the broadcast address: FTP servers have unicast addresses`),
		e(14, "servers[0].addresses[9]", `"ftp.example.com" is not an IP address`),
		e(15, "servers[0].addresses[10]", `expected an IP address such as "192.0.2.10", got integer 21`),
		e(16, "servers[0].addresses[11]", "duplicate address 192.0.2.10: already listed at line 5"),
	}},
	{"bad control ports", withBase("    control_ports: [21, 0, 70000, \"2121\", 21]"), []policy.Error{
		e(5, "servers[0].control_ports[1]", "0 is out of range: must be from 1 to 65535"),
		e(5, "servers[0].control_ports[2]", "70000 is out of range: must be from 1 to 65535"),
		e(5, "servers[0].control_ports[3]", `expected an integer from 1 to 65535, got string "2121"`),
		e(5, "servers[0].control_ports[4]", "duplicate port 21: already listed at line 5"),
	}},
	{"control ports not a list", withBase("    control_ports: 21"), []policy.Error{
		e(5, "servers[0].control_ports", "expected a list of ports, such as [21], got integer 21"),
	}},
	{"implicit port is the default control port", withBase("    implicit_tls_ports: [990, 21]"), []policy.Error{
		e(5, "servers[0].implicit_tls_ports[1]", "port 21 is also in control_ports (control_ports defaults to [21]): a port is either plain/explicit TLS or implicit TLS"),
	}},
	{"implicit port is a control port", withBase("    control_ports: [2121]", "    implicit_tls_ports:", "      - 2121"), []policy.Error{
		e(7, "servers[0].implicit_tls_ports[0]", "port 2121 is also in control_ports: a port is either plain/explicit TLS or implicit TLS"),
	}},
	{"no ports", withBase("    control_ports: []"), []policy.Error{
		e(5, "servers[0].control_ports", "no ports: list at least one port in control_ports or implicit_tls_ports"),
	}},
	{"passive start above end", withBase(`    passive_ports: "5000-4000"`), []policy.Error{
		e(5, "servers[0].passive_ports", `"5000-4000": start is above end`),
	}},
	{"privileged passive ports", withBase("    passive_ports: 80-100"), []policy.Error{
		e(5, "servers[0].passive_ports", `"80-100": ports below 1024 are privileged and always refused; start at 1024 or above`),
	}},
	{"privileged single passive port", withBase("    passive_ports: 20"), []policy.Error{
		e(5, "servers[0].passive_ports", `"20": ports below 1024 are privileged and always refused; start at 1024 or above`),
	}},
	{"passive port above 65535", withBase("    passive_ports: 50000-70000"), []policy.Error{
		e(5, "servers[0].passive_ports", `"50000-70000": ports are from 1 to 65535`),
	}},
	{"passive ports not a range", withBase("    passive_ports: 50000:50100"), []policy.Error{
		e(5, "servers[0].passive_ports", `"50000:50100" is not a port range: use a port range such as "50000-50100", or a single port`),
	}},
	{"passive ports as a list", withBase("    passive_ports: [50000, 50100]"), []policy.Error{
		e(5, "servers[0].passive_ports", `expected a port range such as "50000-50100", or a single port, got a list`),
	}},
	{"YAML 1.1 boolean", withBase("    active_mode: yes", "    allow_third_party: 1"), []policy.Error{
		e(5, "servers[0].active_mode", `expected true or false, got string "yes"`),
		e(6, "servers[0].allow_third_party", "expected true or false, got integer 1"),
	}},
	{"empty clients", withBase("    clients: []"), []policy.Error{
		e(5, "servers[0].clients", "empty list: no client could connect (remove the key to allow all clients)"),
	}},
	{"bad clients", withBase("    clients:",
		"      - 192.0.2.1/24",
		"      - 2001:db8::1/32",
		"      - ::ffff:198.51.100.0/120",
		"      - ::ffff:0:0/95",
		"      - everyone",
		"      - fe80::1%eth0",
		"      - 198.51.100.0/24",
		"      - 198.51.100.0/24",
	), []policy.Error{
		e(6, "servers[0].clients[0]", `"192.0.2.1/24" has host bits set: did you mean "192.0.2.0/24"?`),
		e(7, "servers[0].clients[1]", `"2001:db8::1/32" has host bits set: did you mean "2001:db8::/32"?`),
		e(8, "servers[0].clients[2]", `"::ffff:198.51.100.0/120" is IPv4-mapped IPv6: write it as "198.51.100.0/24"`),
		e(9, "servers[0].clients[3]", `"::ffff:0:0/95" is IPv4-mapped IPv6: write the IPv4 prefix instead`),
		e(10, "servers[0].clients[4]", `"everyone" is not an IP prefix such as "192.0.2.0/24" or "2001:db8::/32"`),
		e(11, "servers[0].clients[5]", `"fe80::1%eth0" has a zone: zones are not allowed`),
		e(13, "servers[0].clients[7]", "duplicate prefix 198.51.100.0/24: already listed at line 12"),
	}},
	{"error at an alias is reported where the alias is", doc(
		"servers:",
		"  - name: ftp",
		"    mode: inspect",
		"    addresses: &addrs [192.0.2.10]",
		"    control_ports: &ports [21]",
		"  - name: ftp2",
		"    mode: &m inspect",
		"    addresses: [192.0.2.11]",
		"    clients: *m",
	), []policy.Error{
		e(9, "servers[1].clients", `expected a list of IP prefixes such as ["192.0.2.0/24", "2001:db8::/32"], got string "inspect"`),
	}},
	{"self-referencing anchor", doc("servers: &s [*s]"), []policy.Error{
		e(1, "servers[0]", "expected a mapping with keys: "+serverKeys+", got a list"),
	}},

	// Across servers.
	{"duplicate server names", doc(
		"servers:",
		"  - name: ftp",
		"    mode: inspect",
		"    addresses: [192.0.2.10]",
		"  - name: ftp",
		"    mode: bad",
		"    addresses: [192.0.2.11]",
	), []policy.Error{
		e(5, "servers[1].name", `duplicate server name "ftp": already used by servers[0] at line 2`),
		e(6, "servers[1].mode", `"bad" is not a mode; use inspect, mitm or opaque`),
	}},
	{"address and port in two servers", doc(
		"servers:",
		"  - name: ftp",
		"    mode: inspect",
		"    addresses: [192.0.2.10, \"2001:db8::10\"]",
		"    implicit_tls_ports: [990]",
		"  - name: ftps",
		"    mode: mitm",
		"    addresses:",
		"      - 192.0.2.11",
		"      - 2001:db8::10",
		"    implicit_tls_ports: [990]",
		"  - name: other",
		"    mode: inspect",
		"    addresses: [192.0.2.11]",
		"    control_ports: [2121, 990]",
	), []policy.Error{
		e(10, "servers[1].addresses[1]", `2001:db8::10 ports 21, 990 already belong to server "ftp" (servers[0], line 2): an address and control port may belong to one server only`),
		e(14, "servers[2].addresses[0]", `192.0.2.11 port 990 already belongs to server "ftps" (servers[1], line 6): an address and control port may belong to one server only`),
	}},
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range errorCases {
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

// defaultServer is a server as parsed from base, with every default.
func defaultServer() policy.Server {
	return policy.Server{
		Name:         "ftp",
		Addresses:    []netip.Addr{netip.MustParseAddr("192.0.2.10")},
		ControlPorts: []uint16{21},
		PassiveMin:   1024,
		PassiveMax:   65535,
		Mode:         policy.ModeInspect,
		ActiveMode:   true,
		ThirdParty:   false,
		Clients:      []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")},
	}
}

// defaults is the documented default of every global key (docs/config.md).
func defaults(servers ...policy.Server) policy.Config {
	return policy.Config{
		Log:      policy.Log{Level: slog.LevelInfo, Format: "json"},
		Admin:    policy.Admin{Socket: "/run/ftpsalg/admin.sock"},
		Metrics:  policy.Metrics{Listen: "127.0.0.1:9641"},
		NFTables: policy.NFTables{Table: "ftpsalg", CtMark: 0x10000000, PacketMark: 0x20000000},
		Queue:    policy.Queue{Number: 4040, Count: 1, Length: 4096, FailOpen: false},
		Pinholes: policy.Pinholes{Timeout: 5 * time.Second},
		Limits: policy.Limits{MaxFlows: 16384, MaxLine: 2048, MaxSessionsPerClient: 64,
			FirstCommandTimeout: 30 * time.Second, IdleTimeout: 30 * time.Minute},
		Throttle: policy.Throttle{MaxFailures: 10, Window: 10 * time.Minute, Ban: 30 * time.Minute},
		MITM: policy.MITMGlobal{
			CADir:        "/etc/ftpsalg/ca",
			LeafLifetime: 24 * time.Hour,
			ListenPort:   15021,
			RelayPort:    15022,
			RouteTable:   2121,
			RulePriority: 2121,
			TProxyMark:   0x40000000,
		},
		Servers: servers,
	}
}

// defaultMITM is a mitm server's documented defaults (docs/config.md).
func defaultMITM() *policy.MITM {
	return &policy.MITM{
		TLS: policy.ServerTLS{
			MinVersion:       tls.VersionTLS12,
			Verify:           policy.VerifySystem,
			HandshakeTimeout: 10 * time.Second,
		},
		RequireTLS:     true,
		AllowAnonymous: true,
		UpstreamSource: policy.UpstreamClient,
		Data:           policy.DataPassthrough,
	}
}

// mitmServer is base's server in mitm mode with every default.
func mitmServer() policy.Server {
	s := defaultServer()
	s.Mode = policy.ModeMITM
	s.MITM = defaultMITM()
	return s
}

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want func() policy.Config
	}{
		{"defaults", withBase(), func() policy.Config { return defaults(defaultServer()) }},
		{"every global key", beforeBase(
			"log: {level: debug, format: text}",
			"admin: {socket: /run/alg.sock}",
			`metrics: {listen: "[::1]:9100"}`,
			"nftables:",
			"  table: edge_ftp-1",
			"  ct_mark: 0x1",
			"  packet_mark: 0b10",
			"queue: {number: 0-63, length: 65536, failure: open}",
			"pinholes: {timeout: 1500ms}",
			"limits: {max_flows: 1, max_line: 512, max_sessions_per_client: 3, first_command_timeout: 5s, idle_timeout: 10m}",
			`throttle: {max_failures: 3, window: 1m, ban: 3s, allow: [192.0.2.0/28, "2001:db8::7"]}`,
		), func() policy.Config {
			c := defaults(defaultServer())
			c.Log = policy.Log{Level: slog.LevelDebug, Format: "text"}
			c.Admin.Socket = "/run/alg.sock"
			c.Metrics.Listen = "[::1]:9100"
			c.NFTables = policy.NFTables{Table: "edge_ftp-1", CtMark: 1, PacketMark: 2}
			c.Queue = policy.Queue{Number: 0, Count: 64, Length: 65536, FailOpen: true}
			c.Pinholes.Timeout = 1500 * time.Millisecond
			c.Limits = policy.Limits{MaxFlows: 1, MaxLine: 512, MaxSessionsPerClient: 3,
				FirstCommandTimeout: 5 * time.Second, IdleTimeout: 10 * time.Minute}
			c.Throttle = policy.Throttle{MaxFailures: 3, Window: time.Minute, Ban: 3 * time.Second,
				Allow: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/28"), netip.MustParsePrefix("2001:db8::7/128")}}
			return c
		}},
		{"throttle off", beforeBase("throttle: {max_failures: 0}"), func() policy.Config {
			c := defaults(defaultServer())
			c.Throttle.MaxFailures = 0
			return c
		}},
		{"log levels", beforeBase("log: {level: error}"), func() policy.Config {
			c := defaults(defaultServer())
			c.Log.Level = slog.LevelError
			return c
		}},
		{"listen on all addresses", beforeBase(`metrics: {listen: ":9641"}`), func() policy.Config {
			c := defaults(defaultServer())
			c.Metrics.Listen = ":9641"
			return c
		}},
		{"server values", doc(
			"servers:",
			"  - name: ftp",
			"    mode: mitm",
			"    addresses:",
			"      - 2001:db8::10",
			"      - 192.0.2.10",
			"    control_ports: []",
			"    implicit_tls_ports: [990, 8990]",
			"    passive_ports: 60000",
			"    active_mode: false",
			"    allow_third_party: true",
			"    clients: [198.51.100.7, 2001:db8:1::/48, 203.0.113.0/24]",
		), func() policy.Config {
			return defaults(policy.Server{
				Name:             "ftp",
				Addresses:        []netip.Addr{netip.MustParseAddr("2001:db8::10"), netip.MustParseAddr("192.0.2.10")},
				ImplicitTLSPorts: []uint16{990, 8990},
				PassiveMin:       60000,
				PassiveMax:       60000,
				Mode:             policy.ModeMITM,
				ActiveMode:       false,
				ThirdParty:       true,
				Clients: []netip.Prefix{
					netip.MustParsePrefix("198.51.100.7/32"),
					netip.MustParsePrefix("2001:db8:1::/48"),
					netip.MustParsePrefix("203.0.113.0/24"),
				},
				MITM: defaultMITM(),
			})
		}},
		{"one address on two servers with different ports", doc(
			"servers:",
			"  - name: ftp",
			"    mode: inspect",
			"    addresses: &a [192.0.2.10]",
			"  - name: ftps",
			"    mode: mitm",
			"    addresses: *a",
			"    control_ports: []",
			"    implicit_tls_ports: [990]",
			`    passive_ports: " 40000 - 40100 "`,
		), func() policy.Config {
			ftps := defaultServer()
			ftps.Name = "ftps"
			ftps.Mode = policy.ModeMITM
			ftps.ControlPorts = nil
			ftps.ImplicitTLSPorts = []uint16{990}
			ftps.PassiveMin, ftps.PassiveMax = 40000, 40100
			ftps.MITM = defaultMITM()
			return defaults(defaultServer(), ftps)
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

// TestExamples parses the shipped examples, so that they stay valid and say
// what docs/config.md says they say.
func TestExamples(t *testing.T) {
	t.Parallel()
	t.Run("minimal", func(t *testing.T) {
		t.Parallel()
		got, err := policy.Load(filepath.Join("..", "..", "examples", "minimal.yaml"))
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		if diff := cmp.Diff(defaults(defaultServer()), *got, cmpOpts); diff != "" {
			t.Errorf("config (-want +got):\n%s", diff)
		}
	})
	t.Run("full", func(t *testing.T) {
		t.Parallel()
		got, err := policy.Load(filepath.Join("..", "..", "examples", "full.yaml"))
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		want := defaults(
			policy.Server{
				Name:         "files",
				Addresses:    []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")},
				ControlPorts: []uint16{21},
				PassiveMin:   50000,
				PassiveMax:   50100,
				Mode:         policy.ModeInspect,
				ActiveMode:   true,
				ThirdParty:   false,
				Clients:      []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8:1::/48")},
			},
			policy.Server{
				Name:             "secure-files",
				Addresses:        []netip.Addr{netip.MustParseAddr("203.0.113.20"), netip.MustParseAddr("2001:db8::20")},
				ControlPorts:     []uint16{21},
				ImplicitTLSPorts: []uint16{990},
				PassiveMin:       40000,
				PassiveMax:       40999,
				Mode:             policy.ModeMITM,
				ActiveMode:       false,
				ThirdParty:       false,
				Clients:          []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("203.0.113.0/24")},
				MITM: &policy.MITM{
					TLS: policy.ServerTLS{
						MinVersion:       tls.VersionTLS12,
						Verify:           policy.VerifyCA,
						CAFile:           "/etc/ftpsalg/partner-ca.pem",
						ServerName:       "secure-files.example.com",
						HandshakeTimeout: 15 * time.Second,
					},
					RequireTLS:     true,
					AllowAnonymous: false,
					UpstreamSource: policy.UpstreamClient,
					Data:           policy.DataRelay,
				},
			},
			policy.Server{
				Name:         "own-files",
				Addresses:    []netip.Addr{netip.MustParseAddr("203.0.113.30")},
				ControlPorts: []uint16{21},
				PassiveMin:   41000,
				PassiveMax:   41999,
				Mode:         policy.ModeMITM,
				ActiveMode:   true,
				Clients:      []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")},
				MITM: &policy.MITM{
					TLS: policy.ServerTLS{
						MinVersion:       tls.VersionTLS13,
						Verify:           policy.VerifyPin,
						PinSHA256:        [][]byte{b64(t, "euK4JLyGwcDRib/mstmM7wn75HMmDo3HC7amjD8WxzI="), b64(t, "74+IRlvjshU3XK4S6GiwWMMekGClLtuu5xiJQubvR9c=")},
						Certificate:      "/etc/ftpsalg/own-files.crt",
						Key:              "/etc/ftpsalg/own-files.key",
						HandshakeTimeout: 10 * time.Second,
					},
					RequireTLS:     true,
					AllowAnonymous: true,
					UpstreamSource: policy.UpstreamGateway,
					Data:           policy.DataPassthrough,
				},
			},
		)
		want.MITM.LeafLifetime = 12 * time.Hour
		want.Queue.Length = 8192
		want.Pinholes.Timeout = 10 * time.Second
		want.Limits.MaxFlows = 4096
		want.Throttle.Allow = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/28"), netip.MustParsePrefix("2001:db8:100::/48")}
		if diff := cmp.Diff(want, *got, cmpOpts); diff != "" {
			t.Errorf("config (-want +got):\n%s", diff)
		}
	})
}

func TestLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()

	_, err := policy.Load(filepath.Join(dir, "missing.yaml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing) error = %v, want fs.ErrNotExist", err)
	}

	path := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(path, []byte(doc("servers: []")), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = policy.Load(path)
	want := path + ":1: servers: no servers: nothing to do"
	if err == nil || err.Error() != want {
		t.Errorf("Load error = %v, want %s", err, want)
	}
}

func TestErrorsFormat(t *testing.T) {
	t.Parallel()
	errs := &policy.Errors{List: []policy.Error{
		{File: "p.yaml", Line: 0, Msg: "invalid YAML: unknown anchor 'x' referenced"},
		{File: "p.yaml", Line: 3, Msg: "invalid YAML: did not find expected key"},
		{File: "p.yaml", Line: 12, Key: "servers[0].passive_ports", Msg: `"5000-4000": start is above end`},
	}}
	want := `p.yaml: invalid YAML: unknown anchor 'x' referenced
p.yaml:3: invalid YAML: did not find expected key
p.yaml:12: servers[0].passive_ports: "5000-4000": start is above end`
	if got := errs.Error(); got != want {
		t.Errorf("Error() =\n%s\nwant\n%s", got, want)
	}
	var one policy.Error
	if !errors.As(error(errs), &one) || one.Line != 0 {
		t.Errorf("errors.As(*Errors, *Error) = %v, want the first problem", one)
	}
}

func TestServerFor(t *testing.T) {
	t.Parallel()
	cfg, err := policy.Parse("policy.yaml", []byte(doc(
		"servers:",
		"  - name: ftp",
		"    mode: inspect",
		"    addresses: [192.0.2.10, \"2001:db8::10\"]",
		"  - name: ftps",
		"    mode: mitm",
		"    addresses: [192.0.2.10]",
		"    control_ports: [2121]",
		"    implicit_tls_ports: [990]",
		"    clients: [198.51.100.0/24]",
	)))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		addr string
		port uint16
		want string // server name, "" for none
	}{
		{"192.0.2.10", 21, "ftp"},
		{"2001:db8::10", 21, "ftp"},
		{"::ffff:192.0.2.10", 21, "ftp"},
		{"192.0.2.10", 2121, "ftps"},
		{"192.0.2.10", 990, "ftps"},
		{"2001:db8::10", 990, ""},
		{"192.0.2.11", 21, ""},
		{"192.0.2.10", 22, ""},
	}
	for _, tc := range tests {
		s, ok := cfg.ServerFor(netip.MustParseAddr(tc.addr), tc.port)
		got := ""
		if ok {
			got = s.Name
		}
		if got != tc.want || ok != (s != nil) {
			t.Errorf("ServerFor(%s, %d) = %v, %v; want server %q", tc.addr, tc.port, s, ok, tc.want)
		}
	}

	ftps, _ := cfg.ServerFor(netip.MustParseAddr("192.0.2.10"), 990)
	for addr, want := range map[string]bool{
		"198.51.100.1":        true,
		"::ffff:198.51.100.1": true,
		"203.0.113.1":         false,
		"2001:db8::1":         false,
	} {
		if got := ftps.ClientAllowed(netip.MustParseAddr(addr)); got != want {
			t.Errorf("ftps.ClientAllowed(%s) = %v, want %v", addr, got, want)
		}
	}
	ftp, _ := cfg.ServerFor(netip.MustParseAddr("192.0.2.10"), 21)
	for _, addr := range []string{"203.0.113.1", "2001:db8::1", "fe80::1%eth0"} {
		if !ftp.ClientAllowed(netip.MustParseAddr(addr)) {
			t.Errorf("ftp.ClientAllowed(%s) = false, want true (default: all clients)", addr)
		}
	}
}

func TestModeString(t *testing.T) {
	t.Parallel()
	for m, want := range map[policy.Mode]string{
		policy.ModeInspect: "inspect",
		policy.ModeMITM:    "mitm",
		0:                  "Mode(0)",
	} {
		if got := m.String(); got != want {
			t.Errorf("Mode(%d).String() = %q, want %q", uint8(m), got, want)
		}
	}
}

// TestPacketPathPorts: the control ports of inspect and opaque servers,
// implicit TLS ones included, once each; mitm servers' are not the packet
// path's.
func TestPacketPathPorts(t *testing.T) {
	t.Parallel()
	cfg, err := policy.Parse("policy.yaml", []byte(doc(
		"servers:",
		"  - name: ftp",
		"    mode: inspect",
		"    addresses: [192.0.2.10]",
		"  - name: ftp2",
		"    mode: inspect",
		"    addresses: [192.0.2.11]",
		"    control_ports: [21, 2121]",
		"  - name: dark",
		"    mode: opaque",
		"    addresses: [192.0.2.12]",
		"    control_ports: [2021]",
		"    implicit_tls_ports: [990]",
		"    passive_ports: \"40000-40100\"",
		"  - name: ftps",
		"    mode: mitm",
		"    addresses: [192.0.2.13]",
		"    control_ports: [3021]",
		"    implicit_tls_ports: [3990]",
	)))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.PacketPathPorts(), []uint16{21, 990, 2021, 2121}; !slices.Equal(got, want) {
		t.Errorf("PacketPathPorts() = %v, want %v", got, want)
	}
}
