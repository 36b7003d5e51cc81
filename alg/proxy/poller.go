package proxy

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// poller watches the sockets of parked control-session directions (see
// park.go) so that an idle session holds no goroutine: one epoll instance
// per Proxy, each socket registered EPOLLIN|EPOLLRDHUP|EPOLLONESHOT under a
// key that names one park. The epoll descriptor is itself non-blocking and
// waited on through the Go runtime's netpoller, so the poller's goroutine
// holds no OS thread while nothing is ready; it exits when nothing is
// parked and starts again with the next park.
//
// Keys, not descriptors, identify parks: a socket closed while parked
// leaves the epoll set by itself (the kernel drops a closed file's
// registrations), and an event for a key no longer waited on is ignored, so
// a descriptor number reused by another connection can never wake the
// wrong session. epoll_ctl runs only inside the socket's RawConn.Control,
// while the descriptor is guaranteed open.
type poller struct {
	mu      sync.Mutex
	ep      *os.File // the epoll instance; nil until the first park
	next    uint64
	waiting map[uint64]func(uint64) // key → what to run when its socket is ready
	running bool                    // the wait loop's goroutine exists
}

// idleExit is how long the wait loop lingers with nothing parked before its
// goroutine exits.
const idleExit = 5 * time.Second

// add registers rc for one readiness event (readable, or the peer closed
// its side) and returns the park's key; ready runs on the poller's
// goroutine, with key, when the socket is ready, unless forget(key) came
// first. armed
// tells whether the socket is already in the epoll set (an earlier park):
// a one-shot registration stays in the set, disarmed, after its event.
func (p *poller) add(rc syscall.RawConn, armed bool, ready func(key uint64)) (uint64, error) {
	p.mu.Lock()
	if p.ep == nil {
		fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			p.mu.Unlock()
			return 0, fmt.Errorf("failed to create an epoll instance: %w", err)
		}
		if err := unix.SetNonblock(fd, true); err != nil {
			unix.Close(fd)
			p.mu.Unlock()
			return 0, fmt.Errorf("failed to make the epoll instance non-blocking: %w", err)
		}
		p.ep = os.NewFile(uintptr(fd), "epoll")
		p.waiting = map[uint64]func(uint64){}
	}
	p.next++
	key := p.next
	p.waiting[key] = ready
	ep := p.ep
	if !p.running {
		p.running = true
		go p.loop(ep)
	}
	p.mu.Unlock()

	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(key), Pad: int32(key >> 32)}
	var cerr error
	err := rc.Control(func(fd uintptr) {
		epfd := -1
		if rerr := withFd(ep, func(e int) { epfd = e }); rerr != nil {
			cerr = rerr
			return
		}
		op := unix.EPOLL_CTL_MOD
		if !armed {
			op = unix.EPOLL_CTL_ADD
		}
		cerr = unix.EpollCtl(epfd, op, int(fd), &ev)
		if errors.Is(cerr, unix.ENOENT) && armed {
			cerr = unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
		} else if errors.Is(cerr, unix.EEXIST) && !armed {
			cerr = unix.EpollCtl(epfd, unix.EPOLL_CTL_MOD, int(fd), &ev)
		}
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		p.forget(key)
		return 0, fmt.Errorf("failed to watch a socket: %w", err)
	}
	return key, nil
}

// withFd runs f with the descriptor of an *os.File.
func withFd(f *os.File, fn func(int)) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(func(fd uintptr) { fn(int(fd)) })
}

// forget drops a park's key: its event, if one still comes, is ignored.
func (p *poller) forget(key uint64) {
	p.mu.Lock()
	delete(p.waiting, key)
	p.mu.Unlock()
}

// loop waits for events and runs the ready functions of their keys until
// nothing has been parked for idleExit.
func (p *poller) loop(ep *os.File) {
	rc, err := ep.SyscallConn()
	if err != nil {
		p.mu.Lock()
		p.running = false
		p.mu.Unlock()
		return
	}
	events := make([]unix.EpollEvent, 128)
	for {
		_ = ep.SetReadDeadline(time.Now().Add(idleExit))
		n := 0
		err := rc.Read(func(fd uintptr) bool {
			var werr error
			for {
				n, werr = unix.EpollWait(int(fd), events, 0)
				if werr != unix.EINTR {
					break
				}
			}
			return werr != nil || n > 0
		})
		for _, ev := range events[:max(n, 0)] {
			key := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			p.mu.Lock()
			ready := p.waiting[key]
			delete(p.waiting, key)
			p.mu.Unlock()
			if ready != nil {
				ready(key)
			}
		}
		p.mu.Lock()
		if len(p.waiting) == 0 && n <= 0 || err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			// Idle (the deadline passed with nothing parked), or the
			// epoll descriptor failed: the next park starts a new loop
			// (parks still waiting end with their deadline or session).
			p.running = false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
	}
}
