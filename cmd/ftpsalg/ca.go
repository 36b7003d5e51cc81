package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/certs"
)

// defaultCADir is the policy's default mitm.ca_dir.
const defaultCADir = "/etc/ftpsalg/ca"

func caUsage(w io.Writer) {
	fmt.Fprint(w, `usage: ftpsalg ca <command> [flags]

commands:
  init [--dir DIR] [--cn NAME] [--force]   create the operator CA for mitm mode (ca.crt, ca.key)
  show [--dir DIR]                         print the CA certificate and check the key file

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

func cmdCAInit(args []string, stdout, stderr io.Writer) int {
	c := newCommand("ca init", "ca init [--dir DIR] [--cn NAME] [--force]",
		"Create the operator CA that mitm mode mints client-facing certificates from (ca.crt, and ca.key mode 0600).", stdout, stderr)
	fs := c.fs
	dir := fs.String("dir", defaultCADir, "directory to write ca.crt and ca.key to (created 0700)")
	cn := fs.String("cn", certs.DefaultCommonName, "common name of the CA, shown by clients")
	force := fs.Bool("force", false, "replace an existing CA (clients must then trust the new ca.crt)")
	pos, code, ok := c.parse(args)
	if !ok {
		return code
	}
	if !c.noArgs(pos) {
		return 2
	}
	ca, err := certs.InitCA(*dir, certs.InitOptions{CommonName: *cn, Force: *force})
	if err != nil {
		hint := ""
		if errors.Is(err, certs.ErrExists) {
			hint = "; --force replaces it"
		}
		fmt.Fprintf(stderr, "ftpsalg ca init: %v%s\n", err, hint)
		return 1
	}
	certPath := filepath.Join(*dir, certs.CertFile)
	fmt.Fprintf(stdout, "created CA %q, valid until %s\n", ca.Cert.Subject.CommonName, ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	fmt.Fprintf(stdout, "certificate: %s\n", certPath)
	fmt.Fprintf(stdout, "SHA-256 fingerprint: %s\n", certs.Fingerprint(ca.Cert))
	fmt.Fprintf(stdout, "key: %s (mode 0600; it never leaves this gateway)\n", filepath.Join(*dir, certs.KeyFile))
	fmt.Fprintf(stdout, "next: add %s to the trust store of every FTP client (docs/tls.md), checking the fingerprint\n", certPath)
	return 0
}

func cmdCAShow(args []string, stdout, stderr io.Writer) int {
	c := newCommand("ca show", "ca show [--dir DIR]",
		"Print the operator CA's certificate (subject, validity, fingerprint) and check its key file's mode.", stdout, stderr)
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
