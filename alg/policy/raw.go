package policy

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Known keys of each mapping. A key not listed is an error that names the
// valid keys, so these lists are also what operators see.
var (
	rootKeys       = []string{"log", "admin", "metrics", "nftables", "queue", "pinholes", "limits", "throttle", "mitm", "servers", "clients"}
	clientNATKeys  = []string{"name", "prefixes", "nat_addresses", "nat_ports"}
	logKeys        = []string{"level", "format"}
	adminKeys      = []string{"socket"}
	metricsKeys    = []string{"listen"}
	nftablesKeys   = []string{"table", "ct_mark", "packet_mark"}
	queueKeys      = []string{"number", "length", "failure"}
	pinholesKeys   = []string{"timeout"}
	limitsKeys     = []string{"max_flows", "max_line", "max_sessions_per_client", "first_command_timeout", "idle_timeout"}
	throttleKeys   = []string{"max_failures", "window", "ban", "allow"}
	mitmGlobalKeys = []string{
		"ca_dir", "leaf_lifetime", "listen_port", "relay_port", "route_table", "rule_priority", "tproxy_mark",
	}
	// serverKeys are valid in every mode. Keys valid in mitm mode only
	// (TLS settings) go in mitmKeys and are read by decoder.mitm.
	serverKeys = []string{
		"name", "addresses", "control_ports", "implicit_tls_ports", "passive_ports",
		"mode", "active_mode", "allow_third_party", "clients", "public", "public_ports",
	}
	mitmKeys = []string{"tls", "require_tls", "allow_anonymous", "upstream_source", "data"}
	// opaqueKeys are valid in opaque mode only (read by decoder.opaque),
	// as is tls with min_version alone.
	opaqueKeys        = []string{"opaque"}
	opaqueSectionKeys = []string{"active_ports"}
	tlsKeys           = []string{
		"min_version", "verify", "ca_file", "pin_sha256", "server_name",
		"certificate", "key", "handshake_timeout", "require_client_reuse",
	}
)

// node is a YAML value with its place in the policy: the key path that names
// it in errors and the line it is reported at. For a mapping value that line
// is the key's; for a list item, the item's. Aliases are resolved, but the
// line stays where the alias was written.
type node struct {
	*yaml.Node
	path string
	line int
}

// decoder walks the YAML tree and collects every problem it meets. It never
// stops at the first one: operators fix a policy in one round.
type decoder struct {
	file string
	errs []Error
	// srvSrcs are where each server was written, for checks across
	// sections (parallel to Config.Servers).
	srvSrcs []serverSrc
}

func (d *decoder) errorf(line int, key, format string, args ...any) {
	d.errs = append(d.errs, Error{File: d.file, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

// at reports a problem with n's value.
func (d *decoder) at(n node, format string, args ...any) {
	d.errorf(n.line, n.path, format, args...)
}

// errors returns the problems found, sorted by line (stable, so problems on
// one line keep the order they were found in).
func (d *decoder) errors() *Errors {
	list := slices.Clone(d.errs)
	slices.SortStableFunc(list, func(a, b Error) int { return cmp.Compare(a.Line, b.Line) })
	return &Errors{List: list}
}

// syntaxLine matches the position yaml.v3 puts in its syntax errors.
var syntaxLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parserProblems are the messages of yaml.v3's parser (as opposed to its
// scanner) errors. yaml.v3 v3.0.1 reports their line 0-based, and scanner
// errors' 1-based; syntax adds the missing 1.
var parserProblems = []string{
	"did not find expected <stream-start>",
	"did not find expected <document start>",
	"did not find expected node content",
	"did not find expected key",
	"did not find expected '-' indicator",
	"did not find expected ',' or ']'",
	"did not find expected ',' or '}'",
	"found duplicate %YAML directive",
	"found incompatible YAML document",
	"found duplicate %TAG directive",
	"found undefined tag handle",
}

// unplacedProblems are yaml.v3 errors raised after parsing, which carry no
// position at all. Every other error without a line is a parser or scanner
// error on the first line (yaml.v3 omits "line 1").
var unplacedProblems = []string{
	"unknown anchor",
	"attempted to go past the end of stream",
	"document contains excessive aliasing",
	"cannot decode node",
}

// syntax reports an error from the YAML parser, with its line when it can
// be known.
func (d *decoder) syntax(err error, data []byte) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := syntaxLine.FindStringSubmatch(err.Error()); m != nil {
		if line, err := strconv.Atoi(m[1]); err == nil && line > 0 {
			if slices.Contains(parserProblems, m[2]) {
				line++
			}
			d.errorf(line, "", "invalid YAML: %s%s", m[2], ipv6Hint(data, line))
			return
		}
	}
	line := 1
	for _, p := range unplacedProblems {
		if strings.HasPrefix(msg, p) {
			line = 0
		}
	}
	d.errorf(line, "", "invalid YAML: %s", msg)
}

// unquotedIPv6RE finds an IPv6 address written unquoted at the start of a
// flow sequence item, e.g. "[::1]" or "[192.0.2.1, ::1]": YAML reads a
// leading ':' as a mapping indicator, so the parser fails on it.
var unquotedIPv6RE = regexp.MustCompile(`[\[,]\s*(::|[0-9A-Fa-f]{1,4}::?)[0-9A-Fa-f:.]*(/[0-9]+)?\s*[\],]`)

// ipv6Hint returns a hint for a syntax error on line (1-based) or the line
// before it when one of them holds an unquoted IPv6 address in a flow list.
func ipv6Hint(data []byte, line int) string {
	lines := strings.Split(string(data), "\n")
	for _, l := range []int{line - 1, line - 2} {
		if l < 0 || l >= len(lines) {
			continue
		}
		if m := unquotedIPv6RE.FindString(lines[l]); m != "" && strings.Contains(m, "::") {
			addr := strings.Trim(m, "[], \t")
			where := ""
			if l+1 != line {
				where = fmt.Sprintf("line %d: ", l+1)
			}
			return fmt.Sprintf(`; %squote IPv6 addresses in flow lists: ["%s"]`, where, addr)
		}
	}
	return ""
}

// badCharacter finds the first byte sequence that is not valid UTF-8 or is a
// character YAML does not allow (YAML 1.2 section 5.1, as yaml.v3 checks
// it), and reports it with its line; yaml.v3 itself gives no position.
func (d *decoder) badCharacter(data []byte) bool {
	line := 1
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			d.errorf(line, "", "invalid UTF-8 (byte 0x%02x): a policy is UTF-8 text", data[i])
			return true
		case !printable(r):
			d.errorf(line, "", "character %U is not allowed in YAML", r)
			return true
		case r == '\n':
			line++
		}
		i += size
	}
	return false
}

// printable reports whether YAML allows r in a document.
func printable(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D ||
		(r >= 0x20 && r <= 0x7E) || r == 0x85 ||
		(r >= 0xA0 && r <= 0xD7FF) || (r >= 0xE000 && r <= 0xFFFD) ||
		(r >= 0x10000 && r <= 0x10FFFF)
}

// document parses data as a single YAML document and returns its root.
// ok is false when there is nothing to validate (a syntax error, an empty
// document); the reason has been reported.
func (d *decoder) document(data []byte) (root node, ok bool) {
	if d.badCharacter(data) {
		return node{}, false
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	err := dec.Decode(&doc)
	if errors.Is(err, io.EOF) {
		d.errorf(1, "servers", "no servers: nothing to do (the policy is empty)")
		return node{}, false
	}
	if err != nil {
		d.syntax(err, data)
		return node{}, false
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		d.errorf(next.Line, "", "a second YAML document: a policy is one document (remove the \"---\")")
	case !errors.Is(err, io.EOF):
		d.syntax(err, data)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		// yaml.v3 always returns a document with one root; anything else
		// is a parser change this code has not been taught.
		d.errorf(doc.Line, "", "invalid YAML: unexpected document structure")
		return node{}, false
	}
	root = node{Node: resolve(doc.Content[0]), line: doc.Content[0].Line}
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		// The empty value's line is where parsing stopped; the document's
		// own line is where the operator looks.
		d.errorf(max(doc.Line, 1), "servers", "no servers: nothing to do (the policy is empty)")
		return node{}, false
	}
	return root, true
}

// resolve follows aliases to the node they name.
func resolve(n *yaml.Node) *yaml.Node {
	// An alias always names an anchored node, which is never itself an
	// alias; the bound only guards against a parser that changes that.
	for i := 0; i < 8 && n.Kind == yaml.AliasNode && n.Alias != nil; i++ {
		n = n.Alias
	}
	return n
}

// childPath is the key path of key inside the mapping at path.
func childPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// fields checks that n is a mapping whose keys are all in known, each given
// once, and returns its values by key. what describes the mapping for a
// wrong-type error. ok is false when n is not a mapping.
func (d *decoder) fields(n node, what string, known []string) (map[string]node, bool) {
	if n.Kind != yaml.MappingNode {
		d.wrongType(n, what)
		return nil, false
	}
	out := make(map[string]node, len(n.Content)/2)
	seen := make(map[string]int)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), n.Content[i+1]
		line := n.Content[i].Line
		if k.Kind != yaml.ScalarNode {
			d.errorf(line, n.path, "a key must be a plain name, not %s", describe(k))
			continue
		}
		if k.ShortTag() == "!!merge" {
			d.errorf(line, childPath(n.path, k.Value), "merge keys are not supported: write the keys out")
			continue
		}
		path := childPath(n.path, k.Value)
		if !slices.Contains(known, k.Value) {
			d.errorf(line, path, "unknown key%s; valid keys: %s", hint(k.Value, known), validKeys(known))
			continue
		}
		if first, dup := seen[k.Value]; dup {
			d.errorf(line, path, "duplicate key: already given at line %d", first)
			continue
		}
		seen[k.Value] = line
		out[k.Value] = node{Node: resolve(v), path: path, line: line}
	}
	return out, true
}

// validKeys lists known keys for an error message, sorted.
func validKeys(known []string) string {
	s := slices.Clone(known)
	slices.Sort(s)
	return strings.Join(s, ", ")
}

// sections names every mapping's keys, for hints about misplaced keys.
var sections = []struct {
	where string
	keys  []string
}{
	{"at the top level", rootKeys},
	{"under log", logKeys},
	{"under admin", adminKeys},
	{"under metrics", metricsKeys},
	{"under nftables", nftablesKeys},
	{"under queue", queueKeys},
	{"under pinholes", pinholesKeys},
	{"under limits", limitsKeys},
	{"under throttle", throttleKeys},
	{"in each server", serverKeys},
	{"in each item of the top-level clients", clientNATKeys},
	{"under mitm", mitmGlobalKeys},
	{"in each mitm server", mitmKeys},
	{"under a mitm server's tls", tlsKeys},
}

// hint returns a hint for the unknown key: where it belongs when it is a
// valid key of another mapping, or the likely key it misspells.
func hint(key string, known []string) string {
	for _, s := range sections {
		// key is not in known, so a mapping that has it is another one.
		if slices.Contains(s.keys, key) {
			return fmt.Sprintf(" (%s belongs %s)", key, s.where)
		}
	}
	best, bestDist := "", 3 // at most two edits away
	for _, k := range known {
		if dist := editDistance(strings.ToLower(key), k); dist < bestDist {
			best, bestDist = k, dist
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance between a and b in bytes.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return max(len(a), len(b)) // not a typo of a key; skip the work
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// items checks that n is a list and returns its items, each with its own
// path (path[i]) and line. what describes the list for a wrong-type error.
func (d *decoder) items(n node, what string) ([]node, bool) {
	if n.Kind != yaml.SequenceNode {
		d.wrongType(n, what)
		return nil, false
	}
	out := make([]node, len(n.Content))
	for i, c := range n.Content {
		out[i] = node{Node: resolve(c), path: fmt.Sprintf("%s[%d]", n.path, i), line: c.Line}
	}
	return out, true
}

// str returns n's value when it is a string. what describes the expected
// value for errors.
func (d *decoder) str(n node, what string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		d.wrongType(n, what)
		return "", false
	}
	return n.Value, true
}

// integer returns n's value when it is an integer (decimal, or 0x, 0o, 0b
// prefixed).
func (d *decoder) integer(n node, what string) (int64, bool) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		if n.Kind == yaml.ScalarNode && n.Style&(yaml.SingleQuotedStyle|yaml.DoubleQuotedStyle) == 0 &&
			bigIntRE.MatchString(n.Value) {
			// yaml.v3 resolves integers beyond 64 bits as strings or floats.
			d.at(n, "%s is out of range; expected %s", n.Value, what)
		} else {
			d.wrongType(n, what)
		}
		return 0, false
	}
	var v int64
	if err := n.Decode(&v); err != nil {
		d.at(n, "%s is out of range; expected %s", n.Value, what)
		return 0, false
	}
	return v, true
}

// bigIntRE matches what a YAML integer looks like, whatever its size.
var bigIntRE = regexp.MustCompile(`^[-+]?(0x[0-9a-fA-F_]+|0o[0-7_]+|0b[01_]+|[0-9_]+)$`)

// boolean returns n's value when it is true or false. YAML 1.1 spellings
// (yes, no, on, off) are strings in YAML 1.2 and are refused.
func (d *decoder) boolean(n node) (bool, bool) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
		d.wrongType(n, "true or false")
		return false, false
	}
	var v bool
	if err := n.Decode(&v); err != nil {
		d.wrongType(n, "true or false")
		return false, false
	}
	return v, true
}

// wrongType reports that n is not what was expected.
func (d *decoder) wrongType(n node, what string) {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		d.at(n, "no value; expected %s", what)
		return
	}
	d.at(n, "expected %s, got %s", what, describe(n.Node))
}

// describe names the kind and value of n for error messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.DocumentNode:
		return "a document"
	case yaml.ScalarNode:
		v := n.Value
		if r := []rune(v); len(r) > 40 {
			v = string(r[:40]) + "…"
		}
		switch tag := n.ShortTag(); tag {
		case "!!str":
			return fmt.Sprintf("string %q", v)
		case "!!int":
			return "integer " + v
		case "!!float":
			return "number " + v
		case "!!bool":
			return "boolean " + v
		case "!!null":
			return "no value"
		default:
			return fmt.Sprintf("%s %q", tag, v)
		}
	}
	return "an unknown YAML node"
}
