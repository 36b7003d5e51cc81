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

	"github.com/ftpsalg/ftpsalg/alg/nat"
	"github.com/ftpsalg/ftpsalg/alg/policy"
	"github.com/ftpsalg/ftpsalg/metrics"
	"github.com/ftpsalg/ftpsalg/nft"
)

// Table is the part of the nft package the proxy path needs.
type Table interface {
	AddPinholes(ctx context.Context, p ...nft.Pinhole) error
	DeletePinholes(ctx context.Context, p ...nft.Pinhole) error
	Pinholes(ctx context.Context) ([]nft.Element, error)
	Live(ctx context.Context, p ...nft.Pinhole) ([]bool, error)
}

// Dialer opens the upstream connection from laddr (invalid: the host's own
// address) to raddr.
type Dialer func(ctx context.Context, network string, laddr, raddr netip.AddrPort) (net.Conn, error)

// Options configure a Proxy.
type Options struct {
	Policy *policy.Config
	Table  Table
	// Leaf returns the certificate shown to clients for an upstream
	// certificate and the client's SNI (certs.Minter.Leaf).
	Leaf func(upstream *x509.Certificate, sni string) (*tls.Certificate, error)
	// Static returns a server's static certificate, or nil to mint.
	Static func(server string) *tls.Certificate
	// Roots verifies upstream certificates in "system" mode; nil means
	// the system's roots.
	Roots *x509.CertPool
	// Dial defaults to DialTransparent.
	Dial    Dialer
	Metrics *metrics.Metrics
	Log     *slog.Logger
	Now     func() time.Time
	// Ports reserves the gateway ports of NAT translations; nil means a
	// new one that probes for local listeners (nat.BindProbe).
	Ports *nat.Ports
}

// Proxy serves diverted control connections and, for servers with data:
// relay, their diverted data connections.
type Proxy struct {
	o      Options
	pol    atomic.Pointer[policy.Config]
	wg     sync.WaitGroup
	active atomic.Int64
	ports  *nat.Ports

	relayMu sync.Mutex
	relays  map[relayKey]expectation // announced data connections, by exact tuple

	// owners says which session last committed each pinhole key: a session
	// of the same client announcing the same endpoint later re-adds the same
	// kernel element, and the first session's cleanup must then leave it.
	// ownMu is held across the commit (or the deletion) and the ownership
	// change, so a cleanup cannot delete an element re-added meanwhile.
	ownMu  sync.Mutex
	owners map[nft.Pinhole]*session
	bufs   sync.Pool // *[]byte of relayBufSize, for relay copies
	live   sync.Map  // *session → struct{}: sessions in progress, for Status (status.go)
}

// New returns a Proxy.
func New(o Options) *Proxy {
	if o.Metrics == nil {
		o.Metrics = metrics.NewDiscard()
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Dial == nil {
		o.Dial = DialTransparent
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Ports == nil {
		o.Ports = &nat.Ports{Probe: nat.BindProbe, Now: o.Now}
	}
	p := &Proxy{o: o, ports: o.Ports, relays: map[relayKey]expectation{}, owners: map[nft.Pinhole]*session{}}
	p.bufs.New = func() any {
		b := make([]byte, relayBufSize)
		return &b
	}
	p.pol.Store(o.Policy)
	return p
}

// commitOwned adds h to the table and records s as its owner, atomically
// with respect to other sessions' cleanups (cleanupOwned).
func (p *Proxy) commitOwned(ctx context.Context, s *session, h nft.Pinhole) error {
	p.ownMu.Lock()
	defer p.ownMu.Unlock()
	if err := p.o.Table.AddPinholes(ctx, h); err != nil {
		return err
	}
	p.owners[pinholeKey(h)] = s
	return nil
}

// cleanupOwned calls del with the subset of keys s still owns and forgets
// them, under the same lock as commitOwned: del's deletions cannot race a
// later session re-adding one of them.
func (p *Proxy) cleanupOwned(s *session, keys []nft.Pinhole, del func(owned map[nft.Pinhole]bool)) {
	p.ownMu.Lock()
	defer p.ownMu.Unlock()
	owned := map[nft.Pinhole]bool{}
	for _, k := range keys {
		if p.owners[k] == s {
			owned[k] = true
			delete(p.owners, k)
		}
	}
	del(owned)
}

// SetPolicy switches to a new policy for new sessions.
func (p *Proxy) SetPolicy(pol *policy.Config) { p.pol.Store(pol) }

// Sessions returns the number of sessions in progress.
func (p *Proxy) Sessions() int64 { return p.active.Load() }

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
