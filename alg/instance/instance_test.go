package instance_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/ftpsalg/ftpsalg/alg/instance"
	"github.com/ftpsalg/ftpsalg/test/lab"
)

// acquire takes the lock inside namespace ns of the lab.
func acquire(t *testing.T, l *lab.Lab, ns, table string) (*instance.Lock, error) {
	t.Helper()
	var lk *instance.Lock
	err := l.InNS(ns, func() error {
		var err error
		lk, err = instance.Acquire(table)
		return err
	})
	if lk != nil {
		t.Cleanup(func() { _ = lk.Close() })
	}
	return lk, err
}

// TestLock checks, in fresh namespaces, that a second lock for the same
// table in the same namespace fails with a message that names the table and
// how to find the holder; that another namespace or another table is
// independent; and that Close frees the name.
func TestLock(t *testing.T) {
	if testing.Short() {
		t.Skip("NAMESPACE TEST NOT RUN under -short: run go test as root without -short")
	}
	lab.RequirePrivileged(t)
	t.Parallel()
	l := lab.New(t, lab.Options{})
	const table = "ftpsalg"
	first, err := acquire(t, l, lab.Gateway, table)
	if err != nil {
		t.Fatal(err)
	}
	_, err = acquire(t, l, lab.Gateway, table)
	if !errors.Is(err, instance.ErrRunning) {
		t.Fatalf("second lock in the same namespace: %v, want ErrRunning", err)
	}
	for _, want := range []string{"table inet ftpsalg", "ss -xlp | grep @ftpsalg/ftpsalg"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q does not say %q", err, want)
		}
	}
	t.Logf("second instance: %v", err)
	if _, err := acquire(t, l, lab.Client, table); err != nil {
		t.Fatalf("same table in another namespace: %v", err)
	}
	if _, err := acquire(t, l, lab.Gateway, "other"); err != nil {
		t.Fatalf("another table in the same namespace: %v", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := acquire(t, l, lab.Gateway, table); err != nil {
		t.Fatalf("lock after Close: %v", err)
	}
}
