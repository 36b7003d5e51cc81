// Package netns runs a function inside another network namespace, for
// the few sockets the daemon (and its test lab) must create there.
package netns

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// Do runs fn on a goroutine locked to an OS thread that has been switched
// into the network namespace nsfd with setns(2), waits for it and returns
// fn's error.
//
// Sockets created inside fn belong to that namespace for their whole life
// and may be used from any goroutine afterwards. Goroutines started inside
// fn do not inherit the namespace (they run on other threads).
//
// The thread is switched back afterwards; if that fails, Do returns an
// error (when fn did not) and leaves the thread locked, so that the
// runtime discards it with the goroutine instead of reusing it in the
// wrong namespace. A panic in fn is re-raised in the caller.
func Do(nsfd int, fn func() error) error {
	type result struct {
		err      error
		panicked bool
		value    any
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("netns: failed to open the thread's own namespace: %w", err)}
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("netns: failed to enter the namespace: %w", err)}
			return
		}
		var res result
		func() {
			defer func() {
				if r := recover(); r != nil {
					res = result{panicked: true, value: r}
				}
			}()
			res.err = fn()
		}()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err == nil {
			runtime.UnlockOSThread()
		} else if res.err == nil {
			res.err = fmt.Errorf("netns: failed to leave the namespace: %w", err)
		}
		done <- res
	}()
	res := <-done
	if res.panicked {
		panic(res.value)
	}
	return res.err
}
