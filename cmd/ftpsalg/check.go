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
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := policy.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok (%d servers)\n", *path, len(cfg.Servers))
	return 0
}
