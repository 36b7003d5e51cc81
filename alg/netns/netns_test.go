package netns_test

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ftpsalg/ftpsalg/alg/netns"
	"github.com/ftpsalg/ftpsalg/test/lab"
)

// TestDo enters a lab namespace: fn runs there, its error comes back, the
// caller stays where it was, and a panic in fn reaches the caller.
func TestDo(t *testing.T) {
	lab.RequirePrivileged(t)
	l := lab.New(t, lab.Options{})
	f, err := os.Open(l.NetNSPath(lab.Gateway))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	own := inode(t, "/proc/thread-self/ns/net")
	target := inode(t, l.NetNSPath(lab.Gateway))
	var inside uint64
	if err := netns.Do(int(f.Fd()), func() error {
		inside = inode(t, "/proc/thread-self/ns/net")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if inside != target || inside == own {
		t.Errorf("fn ran in namespace %d, want %d (the caller's is %d)", inside, target, own)
	}
	if now := inode(t, "/proc/self/ns/net"); now != own {
		t.Errorf("the process's namespace changed from %d to %d", own, now)
	}
	want := errors.New("fn failed")
	if err := netns.Do(int(f.Fd()), func() error { return want }); !errors.Is(err, want) {
		t.Errorf("Do returned %v, want fn's error", err)
	}
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v, want fn's panic", r)
			}
		}()
		_ = netns.Do(int(f.Fd()), func() error { panic("boom") })
	}()
	if err := netns.Do(-1, func() error { return nil }); err == nil {
		t.Error("Do with a bad descriptor succeeded")
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}
