package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"syscall"
)

// defaultConfig is the policy file the commands read when given none.
const defaultConfig = "/etc/ftpsalg/ftpsalg.yaml"

// command is one subcommand's flag set with its usage line and
// description, for `ftpsalg <sub> --help`.
type command struct {
	fs          *flag.FlagSet
	usage, desc string
	stdout      io.Writer
	stderr      io.Writer
}

func newCommand(name, usage, desc string, stdout, stderr io.Writer) *command {
	c := &command{fs: flag.NewFlagSet(name, flag.ContinueOnError), usage: usage, desc: desc, stdout: stdout, stderr: stderr}
	c.fs.SetOutput(stderr)
	c.fs.Usage = func() {} // parse prints it: on stdout for --help, on stderr after an error
	return c
}

func (c *command) printUsage(w io.Writer) {
	fmt.Fprintf(w, "usage: ftpsalg %s\n\n%s\n\nflags:\n", c.usage, c.desc)
	out := c.fs.Output()
	c.fs.SetOutput(w)
	c.fs.PrintDefaults()
	c.fs.SetOutput(out)
}

// parse parses args, flags and positional arguments in any order. It
// returns the positional arguments, or an exit code when the command
// should end: 0 after --help (usage on stdout), 2 after a bad flag (usage
// on stderr).
func (c *command) parse(args []string) ([]string, int, bool) {
	var pos []string
	for {
		if err := c.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				c.printUsage(c.stdout)
				return nil, 0, false
			}
			c.printUsage(c.stderr)
			return nil, 2, false
		}
		if c.fs.NArg() == 0 {
			return pos, 0, true
		}
		pos = append(pos, c.fs.Arg(0))
		args = c.fs.Args()[1:]
	}
}

// configFlag adds --config and returns a function that resolves the policy
// path from it and at most one positional argument: `ftpsalg run my.yaml`
// is `ftpsalg run --config my.yaml`; two different paths, or more than one
// positional argument, are an error (never silently ignored).
func (c *command) configFlag() func(pos []string) (string, bool) {
	path := c.fs.String("config", defaultConfig, "policy file (also accepted as the one positional argument)")
	return func(pos []string) (string, bool) {
		set := false
		c.fs.Visit(func(f *flag.Flag) { set = set || f.Name == "config" })
		switch {
		case len(pos) == 0:
			return *path, true
		case len(pos) > 1:
			fmt.Fprintf(c.stderr, "ftpsalg %s: one policy file at most, got %q\n", c.fs.Name(), pos)
		case set && pos[0] != *path:
			fmt.Fprintf(c.stderr, "ftpsalg %s: two policy files: --config %s and %s\n", c.fs.Name(), *path, pos[0])
		default:
			return pos[0], true
		}
		return "", false
	}
}

// noArgs reports an error when there are positional arguments.
func (c *command) noArgs(pos []string) bool {
	if len(pos) > 0 {
		fmt.Fprintf(c.stderr, "ftpsalg %s: unexpected argument %q (see ftpsalg %s --help)\n", c.fs.Name(), pos[0], c.fs.Name())
		return false
	}
	return true
}

// stopAttrs are the attributes of the daemon's last log line: the error,
// and for an EPERM or EACCES from the kernel (netlink, nftables,
// transparent sockets) a hint that the daemon needs root or CAP_NET_ADMIN.
func stopAttrs(err error) []any {
	attrs := []any{"err", err}
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) || errors.Is(err, os.ErrPermission) {
		attrs = append(attrs, "hint", privilegeHint)
	}
	return attrs
}

const privilegeHint = "ftpsalg needs root, or CAP_NET_ADMIN and CAP_NET_RAW (nftables, NFQUEUE, conntrack and transparent sockets); the shipped systemd unit grants exactly these"
