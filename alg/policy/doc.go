// Package policy loads and validates the ftpsalg policy file.
//
// The policy is one YAML document that the operator owns. Parsing is strict:
// the YAML tree is walked node by node, every key must be known, every value
// must have the expected type and range, and cross-server rules (unique
// names, one owner per address and control port) are checked. All problems
// are collected and returned together as an *Errors, each naming the file,
// the line and the key path, for example:
//
//	policy.yaml:12: servers[0].passive_ports: "5000-4000": start is above end
//
// A successful parse yields a typed [Config] with every default filled in.
// Defaults live in defaults.go, each with the reason it was chosen; the
// operator-facing reference is docs/config.md.
//
// Layout: raw.go walks YAML nodes (mapping keys, lists, scalar types),
// validate.go turns them into a Config section by section (mitm.go: the mitm
// section and the keys valid in mitm servers only), errors.go holds the
// error types.
package policy
