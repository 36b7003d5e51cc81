// Command ftpsalg is the FTP/FTPS application-level gateway daemon.
//
//	ftpsalg run [--config] FILE          run the daemon
//	ftpsalg check-config [--config] FILE validate a policy file
//	ftpsalg status [--json]              a running daemon's sessions and pinholes
//	ftpsalg ca init|show [--dir DIR]   create or inspect the mitm-mode CA
//	ftpsalg version                    print the version
package main

import (
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/ftpsalg/ftpsalg/metrics"
)

// Stamped at build time by the Makefile with -ldflags "-X main.version=..."
// (and main.commit, main.buildDate); `go build` alone leaves these.
var (
	version   = "dev"
	commit    = "unknown"
	buildDate = "unknown"
)

// buildInfo is what `ftpsalg version` prints and ftpsalg_build_info carries.
func buildInfo() metrics.BuildInfo {
	return metrics.BuildInfo{Version: version, Commit: commit, GoVersion: runtime.Version(), BuildDate: buildDate}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: ftpsalg <command> [flags]

commands:
  run [--config] FILE            run the gateway daemon (as root, on the gateway)
  check-config [--config] FILE   validate a policy file; exit 1 with one error per line
               [--skip-host-check]  (public and NAT addresses need not be this host's)
  status [--json] [--socket PATH]  print a running daemon's live sessions and pending pinholes
  ca init|show [--dir DIR]       create or inspect the operator CA for mitm mode (ftpsalg ca help)
  version                        print the version, commit, Go version and build date

FILE defaults to `+defaultConfig+`. ftpsalg <command> --help describes each command.
`)
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stdout, stderr)
	case "check-config":
		return cmdCheckConfig(args[1:], stdout, stderr)
	case "status":
		return cmdStatus(args[1:], stdout, stderr)
	case "ca":
		return cmdCA(args[1:], stdout, stderr)
	case "version", "--version", "-v":
		b := buildInfo()
		fmt.Fprintf(stdout, "ftpsalg %s\ncommit: %s\ngo: %s\nbuilt: %s\n", b.Version, b.Commit, b.GoVersion, b.BuildDate)
		return 0
	case "help", "--help", "-h":
		usage(stdout)
		return 0
	}
	fmt.Fprintf(stderr, "ftpsalg: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}
