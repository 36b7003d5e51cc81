package conntrack

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

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
// original tuple); ctx bounds it: the socket is closed when ctx is done,
// which ends a pending receive (NETFILTER-NOTES §5: Get is safe with
// mdlayher/netlink v1.9.0, which go.mod pins; the deadline guards
// against the hang of later versions all the same).
func ReplyDestination(ctx context.Context, src, dst netip.AddrPort) (netip.AddrPort, error) {
	c, err := ct.Dial(&netlink.Config{})
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("conntrack: failed to dial ctnetlink: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	f, err := c.Get(ct.Flow{TupleOrig: ct.Tuple{
		IP:    ct.IPTuple{SourceAddress: src.Addr().Unmap(), DestinationAddress: dst.Addr().Unmap()},
		Proto: ct.ProtoTuple{Protocol: unix.IPPROTO_TCP, SourcePort: src.Port(), DestinationPort: dst.Port()},
	}})
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return netip.AddrPort{}, ErrNoFlow
		}
		if ctx.Err() != nil {
			return netip.AddrPort{}, fmt.Errorf("conntrack: failed to get flow %s -> %s: %w", src, dst, ctx.Err())
		}
		return netip.AddrPort{}, fmt.Errorf("conntrack: failed to get flow %s -> %s: %w", src, dst, err)
	}
	r := f.TupleReply
	return netip.AddrPortFrom(r.IP.DestinationAddress.Unmap(), r.Proto.DestinationPort), nil
}
