package conntrack

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/mdlayher/netlink"
	ct "github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// ErrNoFlow reports that conntrack has no entry for the tuple.
var ErrNoFlow = errors.New("conntrack: no such flow")

// ReplyDestination returns where conntrack expects the replies of the TCP
// connection src → dst to go: the reply tuple's destination. It differs
// from src when the connection's source was translated (the operator's
// masquerade or snat): it is then the address and port the peer knows the
// connection by. One ctnetlink get request (IPCTNL_MSG_CT_GET with the
// original tuple) on a socket of its own, dialled in the calling thread's
// network namespace; a Lookup keeps its sockets for the next look-ups.
func ReplyDestination(ctx context.Context, src, dst netip.AddrPort) (netip.AddrPort, error) {
	var l Lookup
	defer l.Close()
	return l.ReplyDestination(ctx, src, dst)
}

// lookupIdle bounds the sockets a Lookup keeps between look-ups: look-ups
// take one netlink round trip each, so a few cover a busy gateway's
// concurrent sessions, and a look-up that finds none idle dials its own.
const lookupIdle = 4

// Lookup answers ReplyDestination look-ups over ctnetlink sockets it keeps
// open between them (a socket per look-up cost a dial and a close on every
// session). Its sockets belong to the network namespace of the thread
// that first needed each: use a Lookup from one namespace. The zero Lookup
// is ready; it is safe for concurrent use.
type Lookup struct {
	mu   sync.Mutex
	idle []*ct.Conn
}

// Close closes the idle sockets; look-ups in progress close theirs when
// they end.
func (l *Lookup) Close() {
	l.mu.Lock()
	idle := l.idle
	l.idle = nil
	l.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
}

func (l *Lookup) get() (*ct.Conn, error) {
	l.mu.Lock()
	if n := len(l.idle); n > 0 {
		c := l.idle[n-1]
		l.idle = l.idle[:n-1]
		l.mu.Unlock()
		return c, nil
	}
	l.mu.Unlock()
	c, err := ct.Dial(&netlink.Config{})
	if err != nil {
		return nil, fmt.Errorf("conntrack: failed to dial ctnetlink: %w", err)
	}
	return c, nil
}

func (l *Lookup) put(c *ct.Conn) {
	l.mu.Lock()
	if len(l.idle) < lookupIdle {
		l.idle = append(l.idle, c)
		c = nil
	}
	l.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// ReplyDestination is the package's ReplyDestination over l's sockets. ctx
// bounds the look-up: the socket is closed when ctx is done, which ends a
// pending receive (NETFILTER-NOTES §5: Get is safe with mdlayher/netlink
// v1.9.0, which go.mod pins; the deadline guards against the hang of later
// versions all the same). A socket is kept for the next look-up only after
// a look-up that got its answer (a flow or "no such flow") in time.
func (l *Lookup) ReplyDestination(ctx context.Context, src, dst netip.AddrPort) (netip.AddrPort, error) {
	c, err := l.get()
	if err != nil {
		return netip.AddrPort{}, err
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	f, err := c.Get(ct.Flow{TupleOrig: ct.Tuple{
		IP:    ct.IPTuple{SourceAddress: src.Addr().Unmap(), DestinationAddress: dst.Addr().Unmap()},
		Proto: ct.ProtoTuple{Protocol: unix.IPPROTO_TCP, SourcePort: src.Port(), DestinationPort: dst.Port()},
	}})
	if !stop() {
		// Closed by ctx: whatever Get returned, the socket is gone.
		return netip.AddrPort{}, fmt.Errorf("conntrack: failed to get flow %s -> %s: %w", src, dst, ctx.Err())
	}
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			l.put(c)
			return netip.AddrPort{}, ErrNoFlow
		}
		c.Close()
		return netip.AddrPort{}, fmt.Errorf("conntrack: failed to get flow %s -> %s: %w", src, dst, err)
	}
	l.put(c)
	r := f.TupleReply
	return netip.AddrPortFrom(r.IP.DestinationAddress.Unmap(), r.Proto.DestinationPort), nil
}
