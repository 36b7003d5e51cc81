package policy

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Allowed ranges of the mitm keys. The reasons are in docs/config.md.
const (
	minLeafLifetime, maxLeafLifetime         = time.Hour, 720 * time.Hour
	minHandshakeTimeout, maxHandshakeTimeout = time.Second, 60 * time.Second
	// maxRouteTable leaves the top of the 32-bit table space alone; tables
	// 253 (default), 254 (main) and 255 (local) are the kernel's and are
	// refused separately.
	maxRouteTable = 0xfffffff0
	// maxRulePriority keeps the rule ahead of the kernel's "lookup main"
	// (32766) and "lookup default" (32767) rules; priority 0 is "lookup
	// local", which must stay first.
	maxRulePriority = 32765
)

// hostnameRE matches a DNS name of dot-separated labels as certificates
// carry them (underscores included, as crypto/x509 accepts them), with no
// wildcard and no trailing dot.
var hostnameRE = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*$`)

// tlsVersions are the accepted values of tls.min_version.
var tlsVersions = []struct {
	name    string
	version uint16
}{
	{"1.2", tls.VersionTLS12},
	{"1.3", tls.VersionTLS13},
}

// verifyModes are the accepted values of tls.verify, in the order shown to
// operators.
var verifyModes = []VerifyMode{VerifySystem, VerifyCA, VerifyPin, VerifyNone}

// upstreamSources are the accepted values of upstream_source.
var upstreamSources = []UpstreamSource{UpstreamClient, UpstreamGateway}

// dataPaths are the accepted values of data.
var dataPaths = []DataPath{DataPassthrough, DataRelay}

// mitmGlobal validates the top-level mitm section into m. It returns the
// tproxy_mark node when the key was given, and whether the mark in m is
// valid (given and valid, or the default).
func (d *decoder) mitmGlobal(n node, m *MITMGlobal) (tproxy node, ok bool) {
	f, ok := d.section(n, mitmGlobalKeys)
	if !ok {
		return node{}, false
	}
	if v, ok := f["ca_dir"]; ok {
		if p, ok := d.absPath(v, "/etc/ftpsalg/ca"); ok {
			m.CADir = p
		}
	}
	if v, ok := f["leaf_lifetime"]; ok {
		if x, ok := d.duration(v, minLeafLifetime, maxLeafLifetime); ok {
			m.LeafLifetime = x
		}
	}
	listen, listenGiven := f["listen_port"]
	listenOK := true
	if listenGiven {
		var x int64
		if x, listenOK = d.intRange(listen, 1, 65535); listenOK {
			m.ListenPort = uint16(x)
		}
	}
	relay, relayGiven := f["relay_port"]
	relayOK := true
	if relayGiven {
		var x int64
		if x, relayOK = d.intRange(relay, 1, 65535); relayOK {
			m.RelayPort = uint16(x)
		}
	}
	if listenOK && relayOK && m.ListenPort == m.RelayPort {
		// Reported where the operator changed something.
		if relayGiven {
			d.at(relay, "%d is also listen_port: the two listeners need ports of their own", m.RelayPort)
		} else {
			d.at(listen, "%d is also relay_port (default %d): the two listeners need ports of their own", m.ListenPort, defaultRelayPort)
		}
	}
	if v, ok := f["route_table"]; ok {
		if x, ok := d.intRange(v, 1, maxRouteTable); ok {
			if x >= 253 && x <= 255 {
				d.at(v, "table %d is the kernel's (253 default, 254 main, 255 local): pick a table of ftpsalg's own", x)
			} else {
				m.RouteTable = uint32(x)
			}
		}
	}
	if v, ok := f["rule_priority"]; ok {
		if x, ok := d.intRange(v, 1, maxRulePriority); ok {
			m.RulePriority = uint32(x)
		}
	}
	v, given := f["tproxy_mark"]
	if !given {
		return node{}, true
	}
	x, ok := d.mark(v)
	if ok {
		m.TProxyMark = x
	}
	return v, ok
}

// tproxyMarkOverlap reports a TPROXY mark that shares bits with the
// nftables marks. tproxy is the tproxy_mark node, zero when the key was not
// given; nft holds the nftables section's fields, nil when it is absent.
// The problem is reported where the operator changed something: at
// tproxy_mark if given, else at the nftables mark (the defaults are
// disjoint, so that one was given).
func (d *decoder) tproxyMarkOverlap(nft map[string]node, tproxy node, cfg *Config) {
	mark := cfg.MITM.TProxyMark
	for _, o := range []struct {
		key  string
		mark uint32
	}{
		{"ct_mark", cfg.NFTables.CtMark},
		{"packet_mark", cfg.NFTables.PacketMark},
	} {
		if o.mark&mark == 0 {
			continue
		}
		if tproxy.Node != nil {
			d.at(tproxy, "0x%08x shares bits 0x%08x with nftables.%s (0x%08x): the marks must not overlap",
				mark, mark&o.mark, o.key, o.mark)
			continue
		}
		if v, ok := nft[o.key]; ok {
			d.at(v, "0x%08x shares bits 0x%08x with mitm.tproxy_mark (0x%08x): the marks must not overlap",
				o.mark, mark&o.mark, mark)
		}
	}
}

// mitm reads a mitm server's mitm-only keys from its fields f.
func (d *decoder) mitm(f map[string]node) *MITM {
	m := defaultMITM()
	var reuse node
	if v, ok := f["tls"]; ok {
		reuse = d.serverTLS(v, &m.TLS)
	}
	if v, ok := f["require_tls"]; ok {
		if b, ok := d.boolean(v); ok {
			m.RequireTLS = b
		}
	}
	if v, ok := f["allow_anonymous"]; ok {
		if b, ok := d.boolean(v); ok {
			m.AllowAnonymous = b
		}
	}
	if v, ok := f["upstream_source"]; ok {
		const want = "client or gateway"
		if s, ok := d.str(v, want); ok {
			found := false
			for _, u := range upstreamSources {
				if u.String() == s {
					m.UpstreamSource, found = u, true
				}
			}
			if !found {
				d.at(v, "%q is not an upstream source; use %s", s, want)
			}
		}
	}
	dataOK := true
	if v, ok := f["data"]; ok {
		const want = "passthrough or relay"
		s, ok := d.str(v, want)
		dataOK = false
		if ok {
			for _, p := range dataPaths {
				if p.String() == s {
					m.Data, dataOK = p, true
				}
			}
			if !dataOK {
				d.at(v, "%q is not a data path; use %s", s, want)
			}
		}
	}
	if dataOK && reuse.Node != nil && m.TLS.RequireClientReuse && m.Data != DataRelay {
		d.at(reuse, "only used with data: relay (data is %s: the client's data connections reach the server, which decides)", m.Data)
	}
	return m
}

// serverTLS validates a mitm server's tls mapping into t, which holds the
// defaults. It returns the require_client_reuse node, zero when the key is
// not given: whether it applies depends on the server's data key.
func (d *decoder) serverTLS(n node, t *ServerTLS) (reuse node) {
	f, ok := d.section(n, tlsKeys)
	if !ok {
		return node{}
	}
	if v, ok := f["require_client_reuse"]; ok {
		if b, ok := d.boolean(v); ok {
			t.RequireClientReuse = b
			reuse = v
		}
	}
	if v, ok := f["min_version"]; ok {
		d.minVersion(v, t)
	}
	verifyOK := true
	if v, ok := f["verify"]; ok {
		names := make([]string, len(verifyModes))
		for i, m := range verifyModes {
			names[i] = m.String()
		}
		want := "one of " + strings.Join(names, ", ")
		s, ok := d.str(v, want)
		verifyOK = false
		if ok {
			for _, m := range verifyModes {
				if m.String() == s {
					t.Verify, verifyOK = m, true
				}
			}
			if !verifyOK {
				d.at(v, "%q is not a verification mode; use %s", s, want)
			}
		}
	}
	caFile, caGiven := f["ca_file"]
	if caGiven {
		if p, ok := d.absPath(caFile, "/etc/ftpsalg/upstream-ca.pem"); ok {
			t.CAFile = p
		}
	}
	pins, pinsGiven := f["pin_sha256"]
	if pinsGiven {
		t.PinSHA256 = d.pins(pins)
	}
	if v, ok := f["server_name"]; ok {
		if s, ok := d.str(v, `a DNS name such as "ftp.example.com"`); ok {
			switch _, err := netip.ParseAddr(s); {
			case err == nil:
				d.at(v, "%q is an IP address: leave server_name out to verify the address the client connected to", s)
			case len(s) > 253 || !hostnameRE.MatchString(s):
				d.at(v, "%q is not a DNS name such as \"ftp.example.com\" (no wildcard, no trailing dot)", s)
			default:
				t.ServerName = s
			}
		}
	}
	cert, certGiven := f["certificate"]
	if certGiven {
		if p, ok := d.absPath(cert, "/etc/ftpsalg/files.example.com.crt"); ok {
			t.Certificate = p
		}
	}
	key, keyGiven := f["key"]
	if keyGiven {
		if p, ok := d.absPath(key, "/etc/ftpsalg/files.example.com.key"); ok {
			t.Key = p
		}
	}
	switch {
	case certGiven && !keyGiven:
		d.errorf(n.line, childPath(n.path, "key"), "missing: certificate is given without its key; give both or neither")
	case keyGiven && !certGiven:
		d.errorf(n.line, childPath(n.path, "certificate"), "missing: key is given without its certificate; give both or neither")
	}
	if v, ok := f["handshake_timeout"]; ok {
		if x, ok := d.duration(v, minHandshakeTimeout, maxHandshakeTimeout); ok {
			t.HandshakeTimeout = x
		}
	}

	if !verifyOK {
		return reuse
	}
	switch {
	case t.Verify == VerifyCA && !caGiven:
		d.errorf(n.line, childPath(n.path, "ca_file"), "missing: verify: ca needs ca_file, the PEM file of CA certificates to trust")
	case t.Verify != VerifyCA && caGiven:
		d.at(caFile, "only used with verify: ca (verify is %s)", t.Verify)
	}
	switch {
	case t.Verify == VerifyPin && !pinsGiven:
		d.errorf(n.line, childPath(n.path, "pin_sha256"), "missing: verify: pin needs pin_sha256, the base64 SHA-256 digests of the accepted public keys")
	case t.Verify != VerifyPin && pinsGiven:
		d.at(pins, "only used with verify: pin (verify is %s)", t.Verify)
	}
	return reuse
}

// minVersion reads tls.min_version: "1.2" or "1.3", quoted or not (unquoted,
// YAML reads them as numbers).
func (d *decoder) minVersion(n node, t *ServerTLS) {
	const want = `"1.2" or "1.3"`
	tag := n.ShortTag()
	if n.Kind != yaml.ScalarNode || (tag != "!!str" && tag != "!!float" && tag != "!!int") {
		d.wrongType(n, want)
		return
	}
	for _, v := range tlsVersions {
		if n.Value == v.name {
			t.MinVersion = v.version
			return
		}
	}
	switch n.Value {
	case "1", "1.0", "1.1":
		d.at(n, "TLS %s is deprecated (RFC 8996) and never accepted; use %s", n.Value, want)
	default:
		d.at(n, "%q is not a TLS version; use %s", n.Value, want)
	}
}

// pins reads pin_sha256: a non-empty list of distinct base64 SHA-256
// digests. It returns nil when any item was bad.
func (d *decoder) pins(n node) [][]byte {
	const example = "openssl x509 -in server.crt -noout -pubkey | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64"
	items, ok := d.items(n, "a list of base64 SHA-256 digests of public keys")
	if !ok {
		return nil
	}
	if len(items) == 0 {
		d.at(n, "empty list: give at least one pin")
		return nil
	}
	var out [][]byte
	seen := make(map[string]int)
	bad := false
	for _, it := range items {
		s, ok := d.str(it, "a base64 SHA-256 digest")
		if !ok {
			bad = true
			continue
		}
		b, err := base64.StdEncoding.DecodeString(s)
		switch {
		case err == nil && len(b) == sha256.Size:
			if first, dup := seen[string(b)]; dup {
				d.at(it, "duplicate pin: already listed at line %d", first)
				break
			}
			seen[string(b)] = it.line
			out = append(out, b)
			continue
		case len(s) == 2*sha256.Size && isHex(s):
			d.at(it, "%q is hex: pins are base64 (%s)", s, example)
		case err != nil:
			d.at(it, "%q is not base64: make a pin with %s", s, example)
		default:
			d.at(it, "%q decodes to %d bytes: a SHA-256 digest is %d", s, len(b), sha256.Size)
		}
		bad = true
	}
	if bad {
		return nil
	}
	return out
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

// absPath reads an absolute file or directory path. The daemon's working
// directory is not the policy's, so a relative path would be ambiguous.
func (d *decoder) absPath(n node, example string) (string, bool) {
	s, ok := d.str(n, "an absolute path such as "+example)
	if !ok {
		return "", false
	}
	if !filepath.IsAbs(s) {
		d.at(n, "%q is not an absolute path: write it from / (such as %s)", s, example)
		return "", false
	}
	return filepath.Clean(s), true
}
