package main

import (
	"fmt"
	"io"
	"path/filepath"
	"slices"

	"github.com/ftpsalg/ftpsalg/alg/certs"
	"github.com/ftpsalg/ftpsalg/alg/policy"
)

func cmdCheckConfig(args []string, stdout, stderr io.Writer) int {
	c := newCommand("check-config", "check-config [--config] [FILE] [--skip-host-check]",
		"Validate the policy FILE (default "+defaultConfig+"): exit 0 and print a summary when it is valid,\nexit 1 with one error per line (file:line: key: problem) otherwise. Warnings (a mitm server outside\nthe operator CA's name constraints) and notes go to stderr and do not fail the check.", stdout, stderr)
	config := c.configFlag()
	skipHost := c.fs.Bool("skip-host-check", false, "do not check that public and NAT addresses are this host's (when checking a policy for another machine)")
	pos, code, ok := c.parse(args)
	if !ok {
		return code
	}
	p, ok := config(pos)
	if !ok {
		return 2
	}
	path := &p
	cfg, err := policy.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if !*skipHost {
		local, err := hostAddrs()
		if err == nil {
			err = policy.CheckHost(cfg, local)
		}
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v (use --skip-host-check to check a policy for another machine)\n", *path, err)
			return 1
		}
		// The host's own NAT rules (reading them needs CAP_NET_ADMIN;
		// the daemon has it and checks them at start-up too).
		if ops, err := readOperatorNAT(cfg.NFTables.Table); err != nil {
			fmt.Fprintf(stderr, "%s: warning: the host's NAT rules were not checked: %v\n", *path, err)
		} else if err := policy.CheckOperatorNAT(cfg, ops); err != nil {
			fmt.Fprintf(stderr, "%s: %v (use --skip-host-check to check a policy for another machine)\n", *path, err)
			return 1
		}
	}
	checkCAConstraints(cfg, *path, stderr)
	queues := ""
	if cfg.Queue.Count > 1 {
		queues = fmt.Sprintf(", queues %d-%d", cfg.Queue.Number, int(cfg.Queue.Number)+int(cfg.Queue.Count)-1)
	}
	fmt.Fprintf(stdout, "%s: ok (%d servers%s)\n", *path, len(cfg.Servers), queues)
	return 0
}

// checkCAConstraints warns, without failing the check, about each mitm
// server name or address outside the operator CA's name constraints. The
// CA's certificate (public, mode 0644) is all it reads; when it cannot be
// read (checking a policy on another machine, or before ca init) it says
// so in a note.
func checkCAConstraints(cfg *policy.Config, path string, stderr io.Writer) {
	if !slices.ContainsFunc(cfg.Servers, func(s policy.Server) bool { return s.MITM != nil }) {
		return
	}
	cert, err := certs.ReadCertificate(filepath.Join(cfg.MITM.CADir, certs.CertFile))
	if err != nil {
		fmt.Fprintf(stderr, "%s: note: the operator CA was not checked against the mitm servers: %v\n", path, err)
		return
	}
	for _, w := range constraintWarnings(cfg, certs.ConstraintsOf(cert)) {
		fmt.Fprintf(stderr, "%s: warning: %s\n", path, w)
	}
}
