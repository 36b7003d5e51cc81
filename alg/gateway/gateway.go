package gateway

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/nat"
	"github.com/ftpsalg/ftpsalg/alg/policy"
	"github.com/ftpsalg/ftpsalg/metrics"
	"github.com/ftpsalg/ftpsalg/nft"
)

// Table is the part of the nft package the gateway needs.
type Table interface {
	Apply(ctx context.Context, s nft.Spec) error
	AddPinholes(ctx context.Context, p ...nft.Pinhole) error
	DeletePinholes(ctx context.Context, p ...nft.Pinhole) error
	Pinholes(ctx context.Context) ([]nft.Element, error)
	Live(ctx context.Context, p ...nft.Pinhole) ([]bool, error)
}

// A Table that also implements nft.Banner (nft.Kernel, nft.Fake) holds the
// throttle's bans in the kernel; with one that does not, bans are Admit's
// refusals only.

// Options configure a Gateway.
type Options struct {
	Policy *policy.Config
	Table  Table
	// QueueKind is the kernel's queue support (nft.ProbeQueue), for the
	// table's spec.
	QueueKind nft.QueueKind
	Metrics   *metrics.Metrics // nil: discarded
	Log       *slog.Logger     // nil: discarded
	Now       func() time.Time // nil: time.Now
	// Ports reserves the gateway ports of NAT translations; nil means one
	// that probes for local listeners (nat.BindProbe).
	Ports *nat.Ports
	// PollInterval is how often the ledger compares live sessions'
	// pinholes with the kernel's sets to count them used or expired
	// (default 500ms).
	PollInterval time.Duration
	// LocalPrefixes are the gateway's own networks (its interfaces'
	// prefixes): a client on a published server's own network is refused
	// (hairpin NAT).
	LocalPrefixes []netip.Prefix
	// MaxPinholes bounds the pinholes one session holds open at once; the
	// oldest is retired first (default 16: a client needs one data
	// connection at a time).
	MaxPinholes int
}

// Gateway is the state shared by both transports: the policy in force,
// the live sessions and the ledger of what they put into the kernel.
type Gateway struct {
	tbl   Table
	kind  nft.QueueKind
	m     *metrics.Metrics
	log   *slog.Logger
	now   func() time.Time
	ports *nat.Ports
	every time.Duration
	maxPH int
	local []netip.Prefix

	pol    atomic.Pointer[policy.Config]
	nextID atomic.Uint64
	active atomic.Int64 // admitted sessions, both transports
	peak   atomic.Int64 // most sessions since the last TakePeak

	// mu guards the ledger: who owns each kernel element, and every
	// commit, deletion and restoration, so that a session's cleanup never
	// deletes an element another session re-added meanwhile and a
	// restoration never races a commit.
	mu        sync.Mutex
	sessions  map[*Session]struct{}
	perClient map[netip.Addr]int          // live sessions by client address
	owners    map[nft.Pinhole]*hole       // by element key (see key)
	opaque    map[nft.Opaque]*opaqueEntry // opaque elements by key (nft.Opaque.Key)
	gen       uint64                      // table generation: bumped by every Apply
	seq       uint64                      // commits so far
	applied   bool                        // the table has been built at least once

	// bans are the client addresses banned until the time (under mu, with
	// the kernel's ban elements they mirror); fails the recent login
	// failures of addresses not banned (under fmu).
	bans  map[netip.Addr]time.Time
	fmu   sync.Mutex
	fails map[netip.Addr][]time.Time

	settleq chan settleJob

	// ready is false while the table is known to be missing or broken.
	ready     atomic.Bool
	readyWhy  atomic.Pointer[string]
	reconcile chan struct{}
	changedAt atomic.Pointer[time.Time] // first change not yet checked
}

// New returns a Gateway. Nothing touches the kernel until Apply.
func New(o Options) *Gateway {
	g := &Gateway{tbl: o.Table, kind: o.QueueKind, m: o.Metrics, log: o.Log, now: o.Now, ports: o.Ports,
		every: o.PollInterval, maxPH: o.MaxPinholes, local: o.LocalPrefixes,
		sessions: map[*Session]struct{}{}, perClient: map[netip.Addr]int{}, owners: map[nft.Pinhole]*hole{},
		bans: map[netip.Addr]time.Time{}, fails: map[netip.Addr][]time.Time{},
		opaque:  map[nft.Opaque]*opaqueEntry{},
		settleq: make(chan settleJob, 4096), reconcile: make(chan struct{}, 1)}
	if g.m == nil {
		g.m = metrics.NewDiscard()
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if g.now == nil {
		g.now = time.Now
	}
	if g.ports == nil {
		g.ports = &nat.Ports{Probe: nat.BindProbe, Now: g.now}
	}
	if g.every == 0 {
		g.every = 500 * time.Millisecond
	}
	if g.maxPH == 0 {
		g.maxPH = 16
	}
	g.pol.Store(o.Policy)
	why := "the nftables table is not built yet"
	g.readyWhy.Store(&why)
	return g
}

// Policy returns the policy in force for new sessions.
func (g *Gateway) Policy() *policy.Config { return g.pol.Load() }

// Sessions returns the number of admitted sessions that have not ended.
func (g *Gateway) Sessions() int { return int(g.active.Load()) }

// TakePeak returns the most sessions held at once since the last call and
// starts a new period from the current count.
func (g *Gateway) TakePeak() int {
	return int(g.peak.Swap(g.active.Load()))
}

// Ports returns the gateway port reservations (for the metrics collector).
func (g *Gateway) Ports() *nat.Ports { return g.ports }

// Metrics returns the gateway's metrics.
func (g *Gateway) Metrics() *metrics.Metrics { return g.m }
