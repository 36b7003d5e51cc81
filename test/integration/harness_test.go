package integration

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/test/ftpc"
	"github.com/ftpsalg/ftpsalg/test/harness"
	"github.com/ftpsalg/ftpsalg/test/lab"
)

// binary is the ftpsalg binary under test, built with -race by TestMain.
var binary string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "ftpsalg-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	binary, err = harness.Build(ctx, "../..", dir, true)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

const ctMark = harness.CtMark

func policyFor(ports []int, extraServer, extraTop string) string {
	return harness.Policy(ports, extraServer, extraTop)
}

func startDaemon(t *testing.T, l *lab.Lab, policy string) *harness.Daemon {
	t.Helper()
	return harness.Start(t, l, binary, policy)
}

// goClient logs in to addr from the client namespace.
func goClient(t *testing.T, l *lab.Lab, addr netip.AddrPort, user, pass string) *ftpc.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := harness.Client(ctx, l, addr, user, pass)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
