package main

import (
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/certs"
	"github.com/ftpsalg/ftpsalg/alg/policy"
)

// defaultCADir is the policy's default mitm.ca_dir.
const defaultCADir = "/etc/ftpsalg/ca"

func caUsage(w io.Writer) {
	fmt.Fprint(w, `usage: ftpsalg ca <command> [flags]

commands:
  init [--dir DIR] [--cn NAME] [--force]   create the operator CA for mitm mode (ca.crt, ca.key)
       [--permit-dns NAMES] [--permit-ip RANGES] [--from-policy FILE]
                                           restrict it with name constraints to these names and addresses
       [--reuse-key]                       re-issue ca.crt for the existing ca.key (to add or change constraints)
  show [--dir DIR]                         print the CA certificate and its constraints, check the key file

DIR defaults to `+defaultCADir+` (the policy's mitm.ca_dir default). See docs/tls.md.
`)
}

// cmdCA runs "ftpsalg ca": the operator CA that mitm mode mints client-facing
// certificates from.
func cmdCA(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		caUsage(stderr)
		return 2
	}
	switch args[0] {
	case "init":
		return cmdCAInit(args[1:], stdout, stderr)
	case "show":
		return cmdCAShow(args[1:], stdout, stderr)
	case "help", "--help", "-h":
		caUsage(stdout)
		return 0
	}
	fmt.Fprintf(stderr, "ftpsalg ca: unknown command %q\n", args[0])
	caUsage(stderr)
	return 2
}

// listFlag is a flag of comma-separated values that may also be repeated.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

func cmdCAInit(args []string, stdout, stderr io.Writer) int {
	c := newCommand("ca init", "ca init [--dir DIR] [--cn NAME] [--force | --reuse-key] [--permit-dns NAMES] [--permit-ip RANGES] [--from-policy FILE]",
		"Create the operator CA that mitm mode mints client-facing certificates from (ca.crt, and ca.key mode 0600).\n"+
			"With --permit-dns, --permit-ip or --from-policy the CA may sign only for those names and addresses\n"+
			"(a critical name constraints extension; a form not given is forbidden). --reuse-key re-issues ca.crt\n"+
			"for the existing ca.key, keeping its subject: the way to constrain a CA already in use (docs/tls.md).", stdout, stderr)
	fs := c.fs
	dir := fs.String("dir", defaultCADir, "directory to write ca.crt and ca.key to (created 0700); with --from-policy, the policy's mitm.ca_dir by default")
	cn := fs.String("cn", certs.DefaultCommonName, "common name of the CA, shown by clients (with --reuse-key: the existing subject by default)")
	force := fs.Bool("force", false, "replace an existing CA (clients must then trust the new ca.crt)")
	reuse := fs.Bool("reuse-key", false, "keep the existing ca.key and re-issue ca.crt for it (clients must then replace the old ca.crt)")
	var permitDNS, permitIP listFlag
	fs.Var(&permitDNS, "permit-dns", "DNS names the CA may sign for, comma-separated: files.example.com (it and the names below), .example.com (the names below)")
	fs.Var(&permitIP, "permit-ip", "IP ranges the CA may sign for, comma-separated: 198.51.100.0/24, 2001:db8::/32, or one address")
	fromPolicy := fs.String("from-policy", "", "permit the names and addresses of the policy FILE's mitm servers: addresses, public addresses, tls.server_name")
	pos, code, ok := c.parse(args)
	if !ok {
		return code
	}
	if !c.noArgs(pos) {
		return 2
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "ftpsalg ca init: "+format+"\n", a...)
		return 1
	}
	if *force && *reuse {
		return fail("--force makes a new key and --reuse-key keeps the old one: give one of them")
	}
	var permit certs.Permitted
	for _, s := range permitDNS {
		d, err := certs.ParseDNSConstraint(s)
		if err != nil {
			return fail("--permit-dns: %v", err)
		}
		permit.DNS = appendNew(permit.DNS, d)
	}
	for _, s := range permitIP {
		p, err := certs.ParseIPConstraint(s)
		if err != nil {
			return fail("--permit-ip: %v", err)
		}
		permit.IPs = appendNew(permit.IPs, p)
	}
	if *fromPolicy != "" {
		cfg, err := policy.Load(*fromPolicy)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		derived, unnamed := policyPermit(cfg)
		if derived.IsZero() {
			return fail("%s has no mitm server to take names and addresses from", *fromPolicy)
		}
		for _, d := range derived.DNS {
			permit.DNS = appendNew(permit.DNS, d)
		}
		for _, p := range derived.IPs {
			permit.IPs = appendNew(permit.IPs, p)
		}
		for _, name := range unnamed {
			fmt.Fprintf(stderr, "ftpsalg ca init: note: server %q has no tls.server_name, so only its addresses are permitted for it;"+
				" give the DNS names its certificate carries with --permit-dns, or leaves for it will be refused\n", name)
		}
		if !set["dir"] {
			*dir = cfg.MITM.CADir
		}
	}
	opts := certs.InitOptions{CommonName: *cn, Force: *force, ReuseKey: *reuse, Permit: permit}
	var oldFP string
	if *reuse {
		if !set["cn"] {
			opts.CommonName = "" // keep the existing subject
		}
		if old, err := certs.ReadCertificate(filepath.Join(*dir, certs.CertFile)); err == nil {
			oldFP = certs.Fingerprint(old)
		}
	}
	ca, err := certs.InitCA(*dir, opts)
	if err != nil {
		hint := ""
		if errors.Is(err, certs.ErrExists) {
			hint = "; --force replaces it, --reuse-key re-issues the certificate for it"
		}
		return fail("%v%s", err, hint)
	}
	certPath := filepath.Join(*dir, certs.CertFile)
	verb := "created"
	if *reuse {
		verb = "re-issued, for the existing key,"
	}
	fmt.Fprintf(stdout, "%s CA %q, valid until %s\n", verb, ca.Cert.Subject.CommonName, ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	fmt.Fprintf(stdout, "certificate: %s\n", certPath)
	fmt.Fprintf(stdout, "SHA-256 fingerprint: %s\n", certs.Fingerprint(ca.Cert))
	if oldFP != "" {
		fmt.Fprintf(stdout, "replaces the certificate with SHA-256 fingerprint: %s\n", oldFP)
	}
	printConstraints(stdout, ca.Cert)
	fmt.Fprintf(stdout, "key: %s (mode 0600; it never leaves this gateway)\n", filepath.Join(*dir, certs.KeyFile))
	if *reuse {
		fmt.Fprintf(stdout, "next: replace the old ca.crt with %s in the trust store of every FTP client (docs/tls.md), checking the fingerprint;"+
			" leaves verify under either, and the constraints bind a client only once it no longer trusts the old one\n", certPath)
	} else {
		fmt.Fprintf(stdout, "next: add %s to the trust store of every FTP client (docs/tls.md), checking the fingerprint\n", certPath)
	}
	return 0
}

// printConstraints prints cert's name constraints, or says it has none.
func printConstraints(w io.Writer, cert *x509.Certificate) {
	nc := certs.ConstraintsOf(cert)
	if nc.IsZero() {
		fmt.Fprintln(w, "name constraints: none (unconstrained: it can sign for any name)")
		return
	}
	if nc.Critical {
		fmt.Fprintln(w, "name constraints (critical):")
	} else {
		fmt.Fprintln(w, "name constraints (not critical: clients that do not implement them trust the CA for any name):")
	}
	for _, l := range nc.Describe() {
		fmt.Fprintf(w, "  %s\n", l)
	}
	if nc.Other {
		fmt.Fprintln(w, "  (and constraints on e-mail addresses or URIs, which ftpsalg's leaves never carry)")
	}
}

// describeConstraints is nc on one line, for a log attribute.
func describeConstraints(nc certs.NameConstraints) string {
	if nc.IsZero() {
		return "none (unconstrained: it can sign for any name)"
	}
	return strings.Join(nc.Describe(), "; ")
}

// appendNew appends v to s unless s holds it.
func appendNew[T comparable](s []T, v T) []T {
	if slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}

// mitmNames are the names and addresses of a mitm server that clients
// connect by, and so that leaves minted for it may carry: its
// tls.server_name, its addresses and its public addresses. A server with a
// static certificate (tls.certificate) has none: no leaf is minted for it.
func mitmNames(srv *policy.Server) (dns []string, ips []netip.Addr) {
	if srv.MITM == nil || srv.MITM.TLS.Certificate != "" {
		return nil, nil
	}
	if n := srv.MITM.TLS.ServerName; n != "" {
		dns = append(dns, strings.ToLower(n))
	}
	return dns, slices.Concat(srv.Addresses, srv.Public)
}

// policyPermit is what --from-policy permits: the names and addresses of
// every mitm server (addresses as /32 or /128). unnamed are the mitm
// servers without tls.server_name.
func policyPermit(cfg *policy.Config) (p certs.Permitted, unnamed []string) {
	for i := range cfg.Servers {
		srv := &cfg.Servers[i]
		if srv.MITM == nil || srv.MITM.TLS.Certificate != "" {
			continue
		}
		dns, ips := mitmNames(srv)
		if len(dns) == 0 {
			unnamed = append(unnamed, srv.Name)
		}
		for _, d := range dns {
			p.DNS = appendNew(p.DNS, d)
		}
		for _, a := range ips {
			a = a.Unmap()
			p.IPs = appendNew(p.IPs, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return p, unnamed
}

// constraintWarning is a name or address of a mitm server that the CA's
// name constraints forbid: clients would refuse a leaf minted for it.
type constraintWarning struct {
	server string
	key    string // the policy key it comes from
	err    *certs.ConstraintError
}

func (w constraintWarning) constraint() string {
	if w.err.Excluded {
		return w.err.Constraint
	}
	return w.err.Constraint + " only"
}

func (w constraintWarning) String() string {
	return fmt.Sprintf("server %q: %s %s is outside the operator CA's name constraints (%s): clients would refuse a certificate minted for it",
		w.server, w.key, w.err.Name, w.constraint())
}

// constraintWarnings checks every mitm server's names and addresses
// against nc, except those of servers with a static certificate.
func constraintWarnings(cfg *policy.Config, nc certs.NameConstraints) []constraintWarning {
	if nc.IsZero() {
		return nil
	}
	var out []constraintWarning
	add := func(srv *policy.Server, key string, err error) {
		var ce *certs.ConstraintError
		if errors.As(err, &ce) {
			out = append(out, constraintWarning{server: srv.Name, key: key, err: ce})
		}
	}
	for i := range cfg.Servers {
		srv := &cfg.Servers[i]
		if srv.MITM == nil || srv.MITM.TLS.Certificate != "" {
			continue
		}
		dns, _ := mitmNames(srv)
		for _, n := range dns {
			add(srv, "tls.server_name", nc.CheckDNS(n))
		}
		for _, a := range srv.Addresses {
			add(srv, "address", nc.CheckIP(a))
		}
		for _, a := range srv.Public {
			add(srv, "public address", nc.CheckIP(a))
		}
	}
	return out
}

func cmdCAShow(args []string, stdout, stderr io.Writer) int {
	c := newCommand("ca show", "ca show [--dir DIR]",
		"Print the operator CA's certificate (subject, validity, fingerprint, name constraints) and check its key file's mode.", stdout, stderr)
	dir := c.fs.String("dir", defaultCADir, "directory holding ca.crt and ca.key")
	pos, code, ok := c.parse(args)
	if !ok {
		return code
	}
	if !c.noArgs(pos) {
		return 2
	}
	certPath, keyPath := filepath.Join(*dir, certs.CertFile), filepath.Join(*dir, certs.KeyFile)
	cert, err := certs.ReadCertificate(certPath)
	if err != nil {
		fmt.Fprintf(stderr, "ftpsalg ca show: %v\n", err)
		return 1
	}
	const layout = time.RFC3339
	left := time.Until(cert.NotAfter)
	fmt.Fprintf(stdout, "certificate: %s\n", certPath)
	fmt.Fprintf(stdout, "subject: %s\n", cert.Subject)
	fmt.Fprintf(stdout, "not before: %s\n", cert.NotBefore.UTC().Format(layout))
	fmt.Fprintf(stdout, "not after: %s (%d days left)\n", cert.NotAfter.UTC().Format(layout), int(left.Hours()/24))
	fmt.Fprintf(stdout, "SHA-256 fingerprint: %s\n", certs.Fingerprint(cert))
	printConstraints(stdout, cert)
	if fi, err := os.Stat(keyPath); err == nil {
		fmt.Fprintf(stdout, "key: %s (mode %04o)\n", keyPath, uint32(fi.Mode().Perm()))
	}
	// LoadCA checks what the daemon checks at start: the key's mode, that
	// it matches, that the certificate is a CA and is valid now.
	if _, err := certs.LoadCA(*dir); err != nil {
		fmt.Fprintf(stderr, "ftpsalg ca show: the daemon would refuse this CA: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, "status: ok")
	return 0
}
