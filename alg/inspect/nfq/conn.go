package nfq

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ftpsalg/ftpsalg/alg/netns"
)

// Config says which queue to bind and how.
type Config struct {
	Queue    uint16
	MaxLen   uint32 // kernel queue length in packets; 0 keeps the kernel's default (1024)
	FailOpen bool   // the kernel accepts packets uninspected when the queue is full
	NetNS    int    // network namespace fd; 0 means the current one
	// ReadBuffer is the socket receive buffer in bytes (SO_RCVBUFFORCE);
	// 0 means 8 MiB. Overflow shows as ENOBUFS from Read.
	ReadBuffer int
	// Batch is the most messages one Read takes from the socket; 0 means 16.
	Batch int
}

const (
	defaultReadBuffer = 8 << 20
	defaultBatch      = 16
	// A slot holds one message: the largest packet the kernel copies plus
	// its headers and metadata attributes, with room to spare.
	slotSize = MaxCopyRange + 4096
	// pollEvery bounds how long a blocked read takes to notice a cancelled
	// context (SO_RCVTIMEO).
	pollEvery = 100 * time.Millisecond
	ackWait   = 5 * time.Second
)

// mmsghdr is struct mmsghdr from <sys/socket.h>.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// Conn is a netlink socket bound to one NFQUEUE. Read, Verdict, Flush and
// Close belong to one goroutine: Close after Read has returned, since a
// read blocked in the kernel is not woken by closing its socket.
type Conn struct {
	fd    int
	queue uint16
	seq   uint32

	bufs  [][]byte
	iovs  []unix.Iovec
	msgs  []mmsghdr
	pkts  []Packet
	kerrs []KernelError
	out   []byte
}

// Batch is what one Read returned. Its slices are reused by the next Read.
type Batch struct {
	Packets []Packet
	// Errors are the kernel's error answers to earlier verdicts; they
	// arrive asynchronously, between packets.
	Errors []KernelError
	// Malformed counts messages that could not be decoded.
	Malformed int
}

// Open creates the socket (in cfg.NetNS), binds the queue and configures
// it, waiting for the kernel's acknowledgement. A queue already bound by
// another socket gives an error that wraps unix.EPERM.
func Open(cfg Config) (*Conn, error) {
	if cfg.Batch <= 0 {
		cfg.Batch = defaultBatch
	}
	if cfg.ReadBuffer <= 0 {
		cfg.ReadBuffer = defaultReadBuffer
	}
	fd, err := socketIn(cfg.NetNS)
	if err != nil {
		return nil, err
	}
	c := &Conn{fd: fd, queue: cfg.Queue}
	if err := c.setup(cfg); err != nil {
		_ = unix.Close(fd)
		return nil, err
	}
	return c, nil
}

// socketIn opens a NETLINK_NETFILTER socket in the namespace nsfd (0: the
// current one). Sockets keep the namespace they were created in, so only
// the creating thread switches, and only for this call.
func socketIn(nsfd int) (int, error) {
	open := func() (int, error) {
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		if err != nil {
			return -1, fmt.Errorf("nfq: failed to open netlink socket: %w", err)
		}
		return fd, nil
	}
	if nsfd == 0 {
		return open()
	}
	fd, openErr := -1, error(nil)
	err := netns.Do(nsfd, func() error {
		fd, openErr = open()
		return nil
	})
	switch {
	case openErr != nil:
		return -1, openErr
	case err != nil:
		// Left the namespace badly: the socket may be fine, the thread
		// is discarded; refuse all the same rather than guess.
		if fd >= 0 {
			_ = unix.Close(fd)
		}
		return -1, fmt.Errorf("nfq: %w", err)
	}
	return fd, nil
}

func (c *Conn) setup(cfg Config) error {
	if err := unix.Bind(c.fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("nfq: failed to bind netlink socket: %w", err)
	}
	// Privileged: beyond net.core.rmem_max. Unprivileged: capped by it.
	if err := unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, cfg.ReadBuffer); err != nil {
		if err := unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, cfg.ReadBuffer); err != nil {
			return fmt.Errorf("nfq: failed to set receive buffer: %w", err)
		}
	}
	// Error answers carry only the header of the refused message, not a
	// copy of a verdict's packet.
	if err := unix.SetsockoptInt(c.fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1); err != nil {
		return fmt.Errorf("nfq: failed to set NETLINK_CAP_ACK: %w", err)
	}
	c.bufs = make([][]byte, cfg.Batch)
	c.iovs = make([]unix.Iovec, cfg.Batch)
	c.msgs = make([]mmsghdr, cfg.Batch)
	c.pkts = make([]Packet, 0, cfg.Batch)
	c.kerrs = make([]KernelError, 0, cfg.Batch)
	c.out = make([]byte, 0, 64<<10)
	for i := range c.bufs {
		c.bufs[i] = make([]byte, slotSize)
		c.iovs[i].Base = &c.bufs[i][0]
		c.iovs[i].SetLen(slotSize)
		c.msgs[i].hdr.Iov = &c.iovs[i]
		c.msgs[i].hdr.SetIovlen(1)
	}
	if err := c.setTimeout(ackWait); err != nil {
		return err
	}
	var flags uint32
	if cfg.FailOpen {
		flags |= FlagFailOpen
	}
	c.seq++
	seq := c.seq
	if _, err := unix.Write(c.fd, appendConfig(c.out[:0], seq, cfg.Queue, MaxCopyRange, cfg.MaxLen, flags)); err != nil {
		return fmt.Errorf("nfq: failed to send queue %d config: %w", cfg.Queue, err)
	}
	if err := c.awaitAck(seq); err != nil {
		switch {
		case errors.Is(err, unix.EPERM):
			return fmt.Errorf("nfq: failed to bind queue %d: another process holds it (or no CAP_NET_ADMIN): %w", cfg.Queue, err)
		case errors.Is(err, unix.EOPNOTSUPP):
			return fmt.Errorf("nfq: failed to bind queue %d: the kernel does not support its flags: %w", cfg.Queue, err)
		}
		return fmt.Errorf("nfq: failed to bind queue %d: %w", cfg.Queue, err)
	}
	return c.setTimeout(pollEvery)
}

func (c *Conn) setTimeout(d time.Duration) error {
	tv := unix.NsecToTimeval(d.Nanoseconds())
	if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("nfq: failed to set receive timeout: %w", err)
	}
	return nil
}

// awaitAck reads until the answer to message seq. Packets queued between
// the bind and that answer may have been copied before the copy mode was
// set; they go back through their hook (NF_REPEAT) and return complete.
func (c *Conn) awaitAck(seq uint32) error {
	deadline := time.Now().Add(ackWait)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(c.fd, c.bufs[0], 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return fmt.Errorf("failed to receive acknowledgement: %w", err)
		}
		b := c.bufs[0][:n]
		for len(b) > 0 {
			h, body, rest, err := nextMsg(b)
			if err != nil {
				return err
			}
			b = rest
			switch h.Type {
			case unix.NLMSG_ERROR:
				ke, err := parseError(body)
				if err != nil {
					return err
				}
				if ke.Seq != seq {
					continue
				}
				if ke.Errno != 0 {
					return ke.Errno
				}
				return nil
			case typePacket:
				var p Packet
				if parsePacket(body, &p) == nil {
					c.seq++
					out := appendVerdict(nil, c.seq, c.queue, p.ID, Repeat, false, 0, nil)
					if _, err := unix.Write(c.fd, out); err != nil {
						return fmt.Errorf("failed to requeue packet %d: %w", p.ID, err)
					}
				}
			}
		}
	}
	return fmt.Errorf("no acknowledgement within %v: %w", ackWait, unix.ETIMEDOUT)
}

// Close closes the socket; the kernel unbinds the queue and drops (or,
// with fail-open rules, bypasses) what it still holds.
func (c *Conn) Close() error {
	if c.fd < 0 {
		return nil
	}
	err := unix.Close(c.fd)
	c.fd = -1
	return err
}

// Read blocks until at least one message arrives, then returns every
// message the socket holds, up to the batch size, all taken with one
// recvmmsg(2). It returns ctx.Err() once ctx is done, and an error
// wrapping unix.ENOBUFS when the kernel dropped messages because the
// receive buffer was full (the socket stays usable).
func (c *Conn) Read(ctx context.Context) (Batch, error) {
	for {
		if err := ctx.Err(); err != nil {
			return Batch{}, err
		}
		// MSG_WAITFORONE: block for the first message, then take only what
		// is already there.
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(c.fd), uintptr(unsafe.Pointer(&c.msgs[0])),
			uintptr(len(c.msgs)), unix.MSG_WAITFORONE, 0, 0)
		switch errno {
		case 0:
			return c.parse(int(n)), nil
		case unix.EAGAIN, unix.EINTR:
			continue // the receive timeout: look at ctx again
		case unix.ENOBUFS:
			return Batch{}, fmt.Errorf("nfq: queue %d: %w", c.queue, errno)
		default:
			return Batch{}, fmt.Errorf("nfq: failed to receive from queue %d: %w", c.queue, errno)
		}
	}
}

func (c *Conn) parse(n int) Batch {
	c.pkts = c.pkts[:0]
	c.kerrs = c.kerrs[:0]
	bad := 0
	for i := range n {
		if c.msgs[i].hdr.Flags&unix.MSG_TRUNC != 0 {
			bad++
			continue
		}
		var k int
		c.pkts, c.kerrs, k = decode(c.bufs[i][:c.msgs[i].n], c.pkts, c.kerrs)
		bad += k
	}
	return Batch{Packets: c.pkts, Errors: c.kerrs, Malformed: bad}
}

// Verdict queues the verdict for packet id: with the packet mark set to
// mark when setMark, and the packet replaced by payload when payload is
// not nil. Flush sends what was queued. payload is copied.
func (c *Conn) Verdict(id, verdict uint32, setMark bool, mark uint32, payload []byte) error {
	if len(payload) > MaxCopyRange {
		return fmt.Errorf("nfq: replacement packet of %d bytes exceeds %d", len(payload), MaxCopyRange)
	}
	c.seq++
	c.out = appendVerdict(c.out, c.seq, c.queue, id, verdict, setMark, mark, payload)
	return nil
}

// Flush sends every queued verdict in one sendmsg(2). Failures of single
// verdicts come back later as Batch.Errors.
func (c *Conn) Flush() error {
	if len(c.out) == 0 {
		return nil
	}
	b := c.out
	c.out = c.out[:0]
	for {
		_, err := unix.Write(c.fd, b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("nfq: failed to send verdicts to queue %d: %w", c.queue, err)
		}
		return nil
	}
}
