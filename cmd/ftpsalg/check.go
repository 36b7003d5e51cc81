package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/ftpsalg/ftpsalg/alg/policy"
)

func cmdCheckConfig(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "/etc/ftpsalg/ftpsalg.yaml", "policy file")
	skipHost := fs.Bool("skip-host-check", false, "do not check that public and NAT addresses are this host's (when checking a policy for another machine)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
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
	}
	fmt.Fprintf(stdout, "%s: ok (%d servers)\n", *path, len(cfg.Servers))
	return 0
}
