package policy

import "crypto/tls"

// opaqueRefused are server keys that make no sense in opaque mode, with
// why.
var opaqueRefused = map[string]string{
	"active_mode":       "PORT and EPRT travel encrypted: use opaque.active_ports to admit the server's connections to the client",
	"allow_third_party": "announcements travel encrypted: data connections are only ever admitted between the client and the server",
	"public":            "announcements travel encrypted and cannot be translated: publish the server with mode: mitm",
	"public_ports":      "announcements travel encrypted and cannot be translated: publish the server with mode: mitm",
	"require_tls":       "only valid with mode: mitm, which reads the commands inside TLS",
	"allow_anonymous":   "only valid with mode: mitm, which reads the commands inside TLS",
	"upstream_source":   "only valid with mode: mitm: opaque mode never makes its own connection",
	"data":              "only valid with mode: mitm: opaque mode never relays data",
}

// opaque reads an opaque server's opaque-only keys from its fields f.
func (d *decoder) opaque(f map[string]node) *Opaque {
	o := &Opaque{MinVersion: tls.VersionTLS12}
	for _, k := range append(append([]string(nil), serverKeys...), mitmKeys...) {
		if why, bad := opaqueRefused[k]; bad {
			if v, ok := f[k]; ok {
				d.at(v, "not valid with mode: opaque: %s", why)
			}
		}
	}
	if v, ok := f["tls"]; ok {
		if tf, ok := d.section(v, tlsKeys); ok {
			for k, kv := range tf {
				if k != "min_version" {
					d.at(kv, "only min_version is valid with mode: opaque, which does not terminate TLS")
				}
			}
			if mv, ok := tf["min_version"]; ok {
				var t ServerTLS
				d.minVersion(mv, &t)
				if t.MinVersion != 0 {
					o.MinVersion = t.MinVersion
				}
			}
		}
	}
	if v, ok := f["opaque"]; ok {
		if of, ok := d.section(v, opaqueSectionKeys); ok {
			if av, ok := of["active_ports"]; ok {
				if lo, hi, ok := d.passivePorts(av); ok {
					o.ActiveMin, o.ActiveMax = lo, hi
				}
			}
		}
	}
	return o
}
