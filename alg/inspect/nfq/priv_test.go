package nfq_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ftpsalg/ftpsalg/alg/inspect/nfq"
	"github.com/ftpsalg/ftpsalg/test/lab"
)

// Privileged tests: the real kernel, in the gateway namespace of a fresh lab
// (documentation addresses; the traffic here stays on its loopback).
// Packets are queued by the xtables NFQUEUE target (this kernel has no
// native nft queue expression) through iptables-nft.

type ns struct {
	l    *lab.Lab
	f    *os.File
	path string
}

func newNS(t *testing.T) *ns {
	t.Helper()
	if testing.Short() {
		t.Skip("KERNEL TEST NOT RUN under -short")
	}
	lab.RequirePrivileged(t)
	l := lab.New(t, lab.Options{})
	f, err := os.Open(l.NetNSPath(lab.Gateway))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &ns{l: l, f: f, path: l.NetNSPath(lab.Gateway)}
}

func (n *ns) fd() int { return int(n.f.Fd()) }

func (n *ns) iptables(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := n.l.Run(ctx, lab.Gateway, "iptables-nft", args...); err != nil {
		t.Fatalf("iptables-nft %v: %v\n%s", args, err, out)
	}
}

// do runs fn on a thread inside the namespace; sockets it opens stay there.
func (n *ns) do(t *testing.T, fn func() error) {
	t.Helper()
	if err := n.l.InNS(lab.Gateway, fn); err != nil {
		t.Fatal(err)
	}
}

// udp opens a UDP socket bound to local, connected to remote when valid,
// with a receive timeout so that a missing datagram fails the test.
func (n *ns) udp(t *testing.T, local, remote netip.AddrPort) int {
	t.Helper()
	var fd int
	n.do(t, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: local.Addr().As4(), Port: int(local.Port())}); err != nil {
			return err
		}
		if remote.IsValid() {
			if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: remote.Addr().As4(), Port: int(remote.Port())}); err != nil {
				return err
			}
		}
		tv := unix.NsecToTimeval(int64(10 * time.Second))
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	})
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func open(t *testing.T, n *ns, cfg nfq.Config) *nfq.Conn {
	t.Helper()
	cfg.NetNS = n.fd()
	c, err := nfq.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var (
	lo     = netip.MustParseAddr("127.0.0.1")
	sender = netip.AddrPortFrom(lo, 40000)
	sink   = netip.AddrPortFrom(lo, 5555)
)

const markBlocked = 0x200

// TestVerdicts drives drop, accept with a mark, accept with a replaced
// packet and plain accept through a real queue, in one batch when the
// kernel delivers them together. Loopback keeps order, so the sink's
// datagrams up to "end" are exactly the packets the verdicts let through.
func TestVerdicts(t *testing.T) {
	n := newNS(t)
	const queue = 4041
	n.iptables(t, "-t", "mangle", "-A", "OUTPUT", "-p", "udp", "--dport", "5555",
		"-j", "NFQUEUE", "--queue-num", fmt.Sprint(queue))
	// Proves the mark of an accept verdict reaches the packet.
	n.iptables(t, "-t", "mangle", "-A", "POSTROUTING", "-m", "mark", "--mark",
		fmt.Sprintf("%#x/%#x", markBlocked, markBlocked), "-j", "DROP")
	c := open(t, n, nfq.Config{Queue: queue, MaxLen: 128})
	rx := n.udp(t, sink, netip.AddrPort{})
	tx := n.udp(t, sender, sink)

	for _, m := range []string{"drop", "blocked", "rewrite", "end"} {
		if _, err := unix.Write(tx, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	ctx := ctxT(t)
	for seen := 0; seen < 4; {
		b, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(b.Errors) > 0 || b.Malformed > 0 {
			t.Fatalf("errors %v, malformed %d", b.Errors, b.Malformed)
		}
		for _, p := range b.Packets {
			seen++
			if p.Truncated() || len(p.Payload) < 28 {
				t.Fatalf("packet %d: %d bytes, truncated %v", p.ID, len(p.Payload), p.Truncated())
			}
			var err error
			switch data := string(p.Payload[28:]); data {
			case "drop":
				err = c.Verdict(p.ID, nfq.Drop, false, 0, nil)
			case "blocked":
				err = c.Verdict(p.ID, nfq.Accept, true, p.Mark|markBlocked, nil)
			case "rewrite":
				copy(p.Payload[28:], "REWRITE")
				p.Payload[26], p.Payload[27] = 0, 0 // UDP checksum: none
				err = c.Verdict(p.ID, nfq.Accept, true, p.Mark, p.Payload)
			case "end":
				err = c.Verdict(p.ID, nfq.Accept, false, 0, nil)
			default:
				t.Fatalf("unexpected packet %q", data)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	buf := make([]byte, 100)
	for len(got) == 0 || got[len(got)-1] != "end" {
		k, err := unix.Read(rx, buf)
		if err != nil {
			t.Fatalf("sink after %q: %v", got, err)
		}
		got = append(got, string(buf[:k]))
	}
	if want := []string{"REWRITE", "end"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("sink got %q, want %q", got, want)
	}
}

// TestVerdictErrorArrives: a verdict for an id the kernel does not hold is
// answered by an error message that the next Read reports.
func TestVerdictErrorArrives(t *testing.T) {
	n := newNS(t)
	const queue = 4042
	n.iptables(t, "-t", "mangle", "-A", "OUTPUT", "-p", "udp", "--dport", "5555",
		"-j", "NFQUEUE", "--queue-num", fmt.Sprint(queue))
	c := open(t, n, nfq.Config{Queue: queue})
	n.udp(t, sink, netip.AddrPort{})
	tx := n.udp(t, sender, sink)
	if err := c.Verdict(0xdead, nfq.Accept, false, 0, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	// A packet behind the error proves the error was read, not lost.
	if _, err := unix.Write(tx, []byte("x")); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	var kerrs []nfq.KernelError
	for got := false; !got; {
		b, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		kerrs = append(kerrs, b.Errors...)
		for _, p := range b.Packets {
			got = true
			_ = c.Verdict(p.ID, nfq.Accept, false, 0, nil)
		}
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	if len(kerrs) != 1 || !errors.Is(kerrs[0], unix.ENOENT) {
		t.Fatalf("kernel errors %v, want one ENOENT", kerrs)
	}
}

// TestBindBusy: a queue bound by one socket cannot be bound by another.
func TestBindBusy(t *testing.T) {
	n := newNS(t)
	open(t, n, nfq.Config{Queue: 4043})
	c, err := nfq.Open(nfq.Config{Queue: 4043, NetNS: n.fd()})
	if err == nil {
		c.Close()
		t.Fatal("second bind succeeded")
	}
	if !errors.Is(err, unix.EPERM) {
		t.Fatalf("second bind: %v, want EPERM", err)
	}
	// Closing the first socket frees the queue (the kernel unbinds it).
}

// TestFlowHashSpread: with --queue-balance over two queues (the rule the
// daemon installs for a queue range, flow hash and no CPU fanout), both
// directions of every address pair land on one queue, and the pairs spread
// over both queues.
func TestFlowHashSpread(t *testing.T) {
	n := newNS(t)
	const q0, port = 4050, 5556
	for _, dir := range []string{"--dport", "--sport"} {
		n.iptables(t, "-t", "mangle", "-A", "OUTPUT", "-p", "udp", dir, fmt.Sprint(port),
			"-j", "NFQUEUE", "--queue-balance", fmt.Sprintf("%d:%d", q0, q0+1))
	}
	type pair struct{ src, dst netip.Addr }
	var mu sync.Mutex
	seen := map[pair]map[uint16]int{}
	ctx, cancel := context.WithCancel(ctxT(t))
	var wg sync.WaitGroup
	for i := range 2 {
		c := open(t, n, nfq.Config{Queue: q0 + uint16(i)})
		wg.Go(func() {
			for {
				b, err := c.Read(ctx)
				if err != nil {
					return
				}
				mu.Lock()
				for _, p := range b.Packets {
					a := p.Payload
					src, dst := netip.AddrFrom4([4]byte(a[12:16])), netip.AddrFrom4([4]byte(a[16:20]))
					key := pair{src, dst}
					if src.Compare(dst) > 0 {
						key = pair{dst, src}
					}
					if seen[key] == nil {
						seen[key] = map[uint16]int{}
					}
					seen[key][q0+uint16(i)]++
					_ = c.Verdict(p.ID, nfq.Accept, false, 0, nil)
				}
				mu.Unlock()
				_ = c.Flush()
			}
		})
	}
	const peers = 24
	tx := n.udp(t, netip.AddrPortFrom(lo, 40001), netip.AddrPort{})
	buf := make([]byte, 16)
	for i := range peers {
		peer := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, byte(2 + i)}), port)
		rx := n.udp(t, peer, netip.AddrPort{})
		to := &unix.SockaddrInet4{Addr: peer.Addr().As4(), Port: port}
		if err := unix.Sendto(tx, []byte("ping"), 0, to); err != nil {
			t.Fatal(err)
		}
		k, from, err := unix.Recvfrom(rx, buf, 0)
		if err != nil || string(buf[:k]) != "ping" {
			t.Fatalf("peer %v: %q %v", peer, buf[:k], err)
		}
		if err := unix.Sendto(rx, []byte("pong"), 0, from); err != nil {
			t.Fatal(err)
		}
		if k, _, err := unix.Recvfrom(tx, buf, 0); err != nil || string(buf[:k]) != "pong" {
			t.Fatalf("reply from %v: %q %v", peer, buf[:k], err)
		}
	}
	cancel()
	wg.Wait()
	perQueue := map[uint16]int{}
	for k, qs := range seen {
		if len(qs) != 1 {
			t.Errorf("pair %v went to several queues: %v", k, qs)
		}
		for q, c := range qs {
			if c != 2 {
				t.Errorf("pair %v: %d packets on queue %d, want 2 (ping and pong)", k, c, q)
			}
			perQueue[q]++
		}
	}
	if len(seen) != peers || len(perQueue) != 2 {
		t.Errorf("%d pairs seen over queues %v; want %d pairs over 2 queues", len(seen), perQueue, peers)
	}
}

// TestZeroAllocs: in steady state a packet costs no allocation: receive,
// decode, verdict, send.
func TestZeroAllocs(t *testing.T) {
	n := newNS(t)
	const queue = 4044
	n.iptables(t, "-t", "mangle", "-A", "OUTPUT", "-p", "udp", "--dport", "5555",
		"-j", "NFQUEUE", "--queue-num", fmt.Sprint(queue))
	c := open(t, n, nfq.Config{Queue: queue})
	rx := n.udp(t, sink, netip.AddrPort{})
	tx := n.udp(t, sender, sink)
	ctx := ctxT(t)
	msg, buf := []byte("payload"), make([]byte, 64)
	round := func() {
		if _, err := unix.Write(tx, msg); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < 1; {
			b, err := c.Read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range b.Packets {
				got++
				p.Payload[26], p.Payload[27] = 0, 0 // UDP checksum: none
				_ = c.Verdict(p.ID, nfq.Accept, true, p.Mark|1, p.Payload)
			}
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
		}
		if k, err := unix.Read(rx, buf); err != nil || !bytes.Equal(buf[:k], msg) {
			t.Fatalf("sink: %q %v", buf[:k], err)
		}
	}
	if a := testing.AllocsPerRun(200, round); a != 0 {
		t.Errorf("%v allocations per packet, want 0", a)
	}
}
