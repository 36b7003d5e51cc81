package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/gateway"
	"github.com/ftpsalg/ftpsalg/conntrack"
	"github.com/ftpsalg/ftpsalg/metrics"
)

// Dialer opens the upstream connection from laddr (invalid: the host's own
// address) to raddr.
type Dialer func(ctx context.Context, network string, laddr, raddr netip.AddrPort) (net.Conn, error)

// Options configure a Proxy.
type Options struct {
	// Gateway admits sessions and owns what they put into the kernel.
	Gateway *gateway.Gateway
	// Leaf returns the certificate shown to clients for a verified
	// upstream certificate (certs.Minter.Leaf).
	Leaf func(upstream *x509.Certificate) (*tls.Certificate, error)
	// Static returns a server's static certificate, or nil to mint.
	Static func(server string) *tls.Certificate
	// Roots verifies upstream certificates in "system" mode; nil means
	// the system's roots.
	Roots *x509.CertPool
	// Dial defaults to DialTransparent.
	Dial    Dialer
	Metrics *metrics.Metrics // nil: the gateway's
	Log     *slog.Logger
	Now     func() time.Time
	// ReplyDestination looks up where conntrack sends the replies of an
	// upstream connection (the operator's masquerade, docs/nat.md);
	// defaults to a conntrack.Lookup of the proxy's own, whose sockets
	// stay open between sessions.
	ReplyDestination func(ctx context.Context, src, dst netip.AddrPort) (netip.AddrPort, error)
}

// Proxy serves diverted control connections and, for servers with data:
// relay, their diverted data connections.
type Proxy struct {
	o      Options
	gw     *gateway.Gateway
	wg     sync.WaitGroup
	active atomic.Int64

	relayMu sync.Mutex
	relays  map[relayKey]expectation // announced data connections, by exact tuple

	bufs      sync.Pool // *[]byte of relayBufSize, for relay copies
	upCaches  sync.Map  // server name → tls.ClientSessionCache (sessioncache.go)
	verifiers sync.Map  // server name → upstreamVerifier (sessioncache.go)

	// Idle control sessions (park.go): how long a direction waits with
	// nothing to read before it parks (0: never), the poller watching
	// parked sockets, the line readers they gave back, how many are
	// parked.
	parkAfter   time.Duration
	poller      poller
	lineReaders sync.Pool // *bufio.Reader of lineBufSize
	parked      atomic.Int64
	parks       atomic.Int64 // parks since New (tests)
}

// New returns a Proxy.
func New(o Options) *Proxy {
	if o.Metrics == nil {
		o.Metrics = o.Gateway.Metrics()
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Dial == nil {
		o.Dial = DialTransparent
	}
	if o.ReplyDestination == nil {
		o.ReplyDestination = new(conntrack.Lookup).ReplyDestination
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	p := &Proxy{o: o, gw: o.Gateway, relays: map[relayKey]expectation{}, parkAfter: defaultParkAfter}
	p.bufs.New = func() any {
		b := make([]byte, relayBufSize)
		return &b
	}
	return p
}

// Sessions returns the number of sessions in progress.
func (p *Proxy) Sessions() int64 { return p.active.Load() }

// ParkedLegs returns the number of control-connection legs parked: idle,
// watched by the poller with no goroutine reading them (an idle session
// has two).
func (p *Proxy) ParkedLegs() int64 { return p.parked.Load() }

// Serve accepts diverted control connections on ln until ctx is done, then
// waits for the sessions in progress to end (they end with ctx).
func (p *Proxy) Serve(ctx context.Context, ln net.Listener) error {
	return p.serve(ctx, ln, p.handle)
}

// ServeRelay accepts diverted data connections on ln (the relay
// listener) until ctx is done, then waits for everything in progress to
// end. Each connection is relayed for the control session that announced
// it; one that no session announced is closed.
func (p *Proxy) ServeRelay(ctx context.Context, ln net.Listener) error {
	return p.serve(ctx, ln, p.handleRelay)
}

func (p *Proxy) serve(ctx context.Context, ln net.Listener, handle func(context.Context, net.Conn)) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	backoff := 5 * time.Millisecond
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				p.wg.Wait()
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			// EMFILE and the like: back off rather than spin.
			p.o.Log.Warn("accept failed", "err", err, "backoff", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
			backoff = min(backoff*2, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			handle(ctx, c)
		}()
	}
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}
