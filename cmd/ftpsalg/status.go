package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/policy"
	"github.com/ftpsalg/ftpsalg/alg/status"
)

// cmdStatus reads a running daemon's live sessions and pending pinholes
// from its admin socket.
func cmdStatus(args []string, stdout, stderr io.Writer) int {
	c := newCommand("status", "status [--json] [--socket PATH | --config FILE]",
		"Print a running daemon's live control sessions (client, server, mode, user, age, pinholes) and its\n"+
			"pending pinholes (tuple, seconds left), read from its root-only admin socket. Metrics are on\n"+
			"the metrics endpoint (docs/metrics.md).", stdout, stderr)
	asJSON := c.fs.Bool("json", false, "print the daemon's JSON as is")
	socket := c.fs.String("socket", "", "the admin socket (default: the policy's admin.socket, else /run/ftpsalg/admin.sock)")
	config := c.fs.String("config", "", "read admin.socket from this policy file")
	pos, code, ok := c.parse(args)
	if !ok {
		return code
	}
	if !c.noArgs(pos) {
		return 2
	}
	path := *socket
	if path == "" {
		path = defaultAdminSocket
		cfgPath := *config
		if cfgPath == "" {
			cfgPath = defaultConfig
		}
		if cfg, err := policy.Load(cfgPath); err == nil {
			path = cfg.Admin.Socket
		} else if *config != "" {
			fmt.Fprintln(stderr, err)
			return 1
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	snap, raw, err := status.Fetch(ctx, path)
	if err != nil {
		fmt.Fprintf(stderr, "ftpsalg status: %v (is the daemon running? the socket is root's)\n", err)
		return 1
	}
	if *asJSON {
		_, err = stdout.Write(raw)
	} else {
		err = snap.WriteTable(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "ftpsalg status: %v\n", err)
		return 1
	}
	return 0
}

// defaultAdminSocket is the policy's default admin.socket.
const defaultAdminSocket = "/run/ftpsalg/admin.sock"
