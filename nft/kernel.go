package nft

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

var _ Table = (*Kernel)(nil)

// Socket buffer sizes of the netlink connection. google/nftables only sizes
// buffers itself when no socket option is given, and we need one to reach
// the socket for deadlines. A batch must fit in the send buffer (the kernel
// answers EMSGSIZE otherwise): 4 MiB holds a table with tens of thousands
// of control endpoints.
const (
	sockWriteBuffer = 4 << 20
	sockReadBuffer  = 4 << 20
)

// Kernel is the Table on the running kernel, over one lasting netlink
// socket. Calls are serialised: google/nftables builds a batch in a buffer
// shared by the whole connection, and the packet path (AddPinholes) runs
// concurrently with session teardown (DeletePinholes).
type Kernel struct {
	opts options
	log  *slog.Logger

	mu    sync.Mutex
	conn  *nftables.Conn
	sock  *netlink.Conn // the socket under conn, for deadlines
	table *nftables.Table
	tpl   templates // element templates of the applied table

	// rmu and rconn: a second connection for reads (Live, Pinholes). The
	// kernel answers element reads under RCU, without the transaction
	// mutex, so a long read (a listing of 100,000 pinholes takes over a
	// second) never holds up a commit on conn.
	rmu   sync.Mutex
	rconn *nftables.Conn

	// Read without k.mu, by the Watcher and Check: never held up by a
	// transaction in progress.
	name   atomic.Pointer[string] // the table's name (last applied, or WithTable)
	layout atomic.Pointer[layout] // what the last Apply created
	portID atomic.Uint32          // netlink port ID of conn, 0 when closed
}

// templates are the set values that element updates go through (see
// pinholeSets); snat4 and snat6 are nil in a table without mitm servers,
// relay4 and relay6 in a table without a relay port.
type templates struct {
	ph4, ph6       *nftables.Set
	snat4, snat6   *nftables.Set
	relay4, relay6 *nftables.Set
	dnat4, dnat6   *nftables.Set // destination NAT maps
	dph4, dph6     *nftables.Set // pinholes of translated connections
	ban4, ban6     *nftables.Set // bans (Spec.Bans)
	opaque4        *nftables.Set // opaque sessions (Spec.Opaque)
	opaque6        *nftables.Set
}

// New opens a netlink connection to nf_tables. The table is created by
// Apply; New changes nothing in the kernel.
func New(opts ...Option) (*Kernel, error) {
	o := buildOptions(opts)
	k := &Kernel{opts: o, log: o.logger}
	if o.table != "" {
		k.table = &nftables.Table{Family: nftables.TableFamilyINet, Name: o.table}
		k.name.Store(&o.table)
	}
	if err := k.dial(); err != nil {
		return nil, fmt.Errorf("nft: %w", err)
	}
	return k, nil
}

// Close releases the netlink socket. It leaves the table in place: a
// stopping daemon calls Delete first.
func (k *Kernel) Close() error {
	k.rmu.Lock()
	if k.rconn != nil {
		_ = k.rconn.CloseLasting()
		k.rconn = nil
	}
	k.rmu.Unlock()
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.conn == nil {
		return nil
	}
	err := k.conn.CloseLasting()
	k.conn, k.sock = nil, nil
	k.portID.Store(0)
	if err != nil {
		return fmt.Errorf("nft: failed to close netlink connection: %w", err)
	}
	return nil
}

func dialConn(o options) (*nftables.Conn, *netlink.Conn, error) {
	var sock *netlink.Conn
	capture := func(c *netlink.Conn) error {
		sock = c
		if err := c.SetWriteBuffer(sockWriteBuffer); err != nil {
			return fmt.Errorf("failed to set write buffer: %w", err)
		}
		if err := c.SetReadBuffer(sockReadBuffer); err != nil {
			return fmt.Errorf("failed to set read buffer: %w", err)
		}
		return nil
	}
	copts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(capture)}
	if o.netns != 0 {
		copts = append(copts, nftables.WithNetNSFd(o.netns))
	}
	c, err := nftables.New(copts...)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to open netlink connection: %w", err)
	}
	return c, sock, nil
}

// dial (re)opens the lasting connection; callers hold k.mu or own k.
func (k *Kernel) dial() error {
	c, sock, err := dialConn(k.opts)
	if err != nil {
		return err
	}
	k.conn, k.sock = c, sock
	k.portID.Store(sock.PID())
	return nil
}

// do runs fn on the connection under the lock, bounded by ctx: the
// context's deadline becomes the socket deadline and cancelling the context
// expires it, so a blocked netlink read returns. A connection whose
// operation was cut short may hold unread replies: it is replaced.
func (k *Kernel) do(ctx context.Context, fn func(c *nftables.Conn) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.conn == nil {
		if err := k.dial(); err != nil {
			return err
		}
	}
	// No socket deadline, and no interruption on cancel: google/nftables'
	// receive loop treats a receive error as non-fatal and polls again, so
	// a deadline in the past while a reply is queued makes it spin forever
	// (seen as a daemon that never finished shutting down). Requests to
	// the local kernel are answered at once; ctx is honoured between them.
	err := fn(k.conn)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		k.log.Debug("replacing netlink connection after a timed-out operation", slog.Any("error", err))
		_ = k.conn.CloseLasting()
		k.conn, k.sock = nil, nil
		k.portID.Store(0)
	}
	return err
}

// doRead is do for reads, on the read connection (dialled at first use).
func (k *Kernel) doRead(ctx context.Context, fn func(c *nftables.Conn) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	k.rmu.Lock()
	defer k.rmu.Unlock()
	if k.rconn == nil {
		c, _, err := dialConn(k.opts)
		if err != nil {
			return err
		}
		k.rconn = c
	}
	err := fn(k.rconn)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		_ = k.rconn.CloseLasting()
		k.rconn = nil
	}
	return err
}

// setIDs points the set references of a rule at the sets created in the
// same transaction.
func setIDs(r *nftables.Rule, ids map[string]uint32) {
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Lookup:
			e.SetID = ids[e.SetName]
		case *expr.Dynset:
			e.SetID = ids[e.SetName]
		}
	}
}

// classify adds ErrNoTable to errors that say our table or set is missing
// and ErrFull to those that say a set is full.
func classify(err error) error {
	switch {
	case errors.Is(err, unix.ENOENT):
		return fmt.Errorf("%w: %w", ErrNoTable, err)
	case errors.Is(err, unix.ENFILE):
		return fmt.Errorf("%w: %w", ErrFull, err)
	}
	return err
}

// Apply implements Table: one transaction destroys the table if it exists
// and creates it again, so the old and the new ruleset never mix and a
// failure leaves the previous table untouched. If an earlier Apply of this
// Kernel used another table name, that table is destroyed too.
func (k *Kernel) Apply(ctx context.Context, s Spec) error {
	s, err := s.validate()
	if err != nil {
		return fmt.Errorf("nft: failed to apply table: %w", err)
	}
	rs := buildRuleset(s)
	k.mu.Lock()
	prev := k.table
	k.mu.Unlock()
	start := time.Now()
	err = k.do(ctx, func(c *nftables.Conn) error {
		if prev != nil && prev.Name != rs.table.Name {
			// The configuration renamed our table: the old one goes in
			// the same transaction.
			c.DestroyTable(prev)
		}
		elems := rs.elems
		if s.Bans {
			// The bans of the table being replaced, with what is left of
			// their timeouts, go into the new one in the same transaction.
			elems = maps.Clone(rs.elems)
			old := rs.table
			if prev != nil {
				old = prev
			}
			for _, e := range carryBans(c, old) {
				name := setBanned6
				if len(e.Key) == 4 {
					name = setBanned4
				}
				elems[name] = append(elems[name], e)
			}
		}
		c.DestroyTable(rs.table)
		c.AddTable(rs.table)
		ids := map[string]uint32{}
		for _, set := range rs.sets {
			if err := c.AddSet(set, elems[set.Name]); err != nil {
				return fmt.Errorf("failed to add set %s: %w", set.Name, err)
			}
			ids[set.Name] = set.ID
		}
		for _, ch := range rs.chains {
			c.AddChain(ch.chain)
			for _, r := range ch.rules {
				setIDs(r, ids)
				c.AddRule(r)
			}
		}
		return c.Flush()
	})
	if err != nil {
		return fmt.Errorf("nft: failed to apply table %s: %w", s.Table, err)
	}
	tpl := templates{}
	tpl.ph4, tpl.ph6 = pinholeSets(rs.table)
	if s.hasMITM() {
		tpl.snat4, tpl.snat6 = snatMaps(rs.table)
		tpl.dnat4, tpl.dnat6 = dnatMaps(rs.table)
		tpl.dph4, tpl.dph6 = dnatPinholeSets(rs.table)
	}
	if s.hasRelay() {
		tpl.relay4, tpl.relay6 = relaySets(rs.table)
	}
	if s.Bans {
		tpl.ban4, tpl.ban6 = banSets(rs.table)
	}
	if s.Opaque {
		tpl.opaque4, tpl.opaque6 = opaqueSets(rs.table)
	}
	k.mu.Lock()
	k.table = rs.table
	k.tpl = tpl
	k.mu.Unlock()
	k.name.Store(&s.Table)
	k.layout.Store(layoutOf(rs))
	k.log.Debug("applied nftables table", slog.String("table", s.Table),
		slog.String("queue_kind", s.QueueKind.String()), slog.Int("queue", int(s.Queue)),
		slog.Int("control_endpoints", len(s.Control)), slog.Int("mitm_endpoints", len(s.MITM)),
		slog.Duration("duration", time.Since(start)))
	return nil
}

// elementOp is one change to a set's elements within a batch: els added
// to s, or destroyed (missing ones are no error). An empty els is no
// change.
type elementOp struct {
	s       *nftables.Set
	els     []nftables.SetElement
	destroy bool
}

func addOp(s *nftables.Set, els []nftables.SetElement) elementOp { return elementOp{s: s, els: els} }
func destroyOp(s *nftables.Set, els []nftables.SetElement) elementOp {
	return elementOp{s: s, els: els, destroy: true}
}

// queueOps queues ops in c's batch, in order.
func queueOps(c *nftables.Conn, ops ...elementOp) error {
	for _, o := range ops {
		if len(o.els) == 0 {
			continue
		}
		var err error
		if o.destroy {
			err = c.SetDestroyElements(o.s, o.els)
		} else {
			err = c.SetAddElements(o.s, o.els)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// commitOps sends ops as one transaction; what names the operation in the
// error ("failed to <what>").
func (k *Kernel) commitOps(ctx context.Context, what string, ops ...elementOp) error {
	err := k.do(ctx, func(c *nftables.Conn) error {
		if err := queueOps(c, ops...); err != nil {
			return err
		}
		return c.Flush()
	})
	if err != nil {
		return fmt.Errorf("nft: failed to %s: %w", what, classify(err))
	}
	return nil
}

// templates returns the element templates of the applied table.
func (k *Kernel) templates() (templates, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.table == nil {
		return templates{}, ErrNoTable
	}
	return k.tpl, nil
}

// elements are the set and map elements of a batch of pinholes, per family.
type elements struct {
	ph4, ph6       []nftables.SetElement // pinhole set elements
	relay4, relay6 []nftables.SetElement // relay set elements
	dph4, dph6     []nftables.SetElement // pinholes of translated connections (forward key)
	keys4, keys6   []nftables.SetElement // every announced key
	fwd4, fwd6     []nftables.SetElement // every forward key (translated tuple)
	// phKeys and relayKeys are the keys of the pinholes and relay
	// elements, for removing each from the other kind's set.
	phKeys4, phKeys6       []nftables.SetElement
	relayKeys4, relayKeys6 []nftables.SetElement
	nat4, nat6             []nftables.SetElement // source NAT map elements (forward key), for pinholes with SNAT
	dnat4, dnat6           []nftables.SetElement // destination NAT map elements, for pinholes with DNAT
}

// split sorts pinholes into elements per family, the last of equal keys
// winning, as a batch must not hold the same element twice.
func split(ps []Pinhole) elements {
	seen := make(map[key]int, len(ps))
	for i, p := range ps {
		seen[p.key()] = i
	}
	var el elements
	for i, p := range ps {
		if seen[p.key()] != i {
			continue
		}
		k, fk := pinholeKey(p), forwardKey(p)
		v6 := !p.Src.Is4()
		pick := func(a, b *[]nftables.SetElement) *[]nftables.SetElement {
			if v6 {
				return b
			}
			return a
		}
		switch {
		case p.Relay:
			*pick(&el.relay4, &el.relay6) = append(*pick(&el.relay4, &el.relay6), nftables.SetElement{Key: k, Timeout: p.Timeout})
			*pick(&el.relayKeys4, &el.relayKeys6) = append(*pick(&el.relayKeys4, &el.relayKeys6), nftables.SetElement{Key: k})
		case p.DNAT.IsValid():
			*pick(&el.dph4, &el.dph6) = append(*pick(&el.dph4, &el.dph6), nftables.SetElement{Key: fk, Timeout: p.Timeout})
			*pick(&el.dnat4, &el.dnat6) = append(*pick(&el.dnat4, &el.dnat6),
				nftables.SetElement{Key: k, Val: targetValue(p.DNAT), Timeout: p.Timeout})
		default:
			*pick(&el.ph4, &el.ph6) = append(*pick(&el.ph4, &el.ph6), nftables.SetElement{Key: k, Timeout: p.Timeout})
			*pick(&el.phKeys4, &el.phKeys6) = append(*pick(&el.phKeys4, &el.phKeys6), nftables.SetElement{Key: k})
		}
		*pick(&el.keys4, &el.keys6) = append(*pick(&el.keys4, &el.keys6), nftables.SetElement{Key: k})
		*pick(&el.fwd4, &el.fwd6) = append(*pick(&el.fwd4, &el.fwd6), nftables.SetElement{Key: fk})
		if p.SNAT.IsValid() {
			*pick(&el.nat4, &el.nat6) = append(*pick(&el.nat4, &el.nat6), nftables.SetElement{Key: fk, Val: p.SNAT.AsSlice(), Timeout: p.Timeout})
		}
	}
	return el
}

func hasDNAT(ps []Pinhole) bool {
	return slices.ContainsFunc(ps, func(p Pinhole) bool { return p.DNAT.IsValid() })
}

func hasSNAT(ps []Pinhole) bool {
	return slices.ContainsFunc(ps, func(p Pinhole) bool { return p.SNAT.IsValid() })
}

func hasRelay(ps []Pinhole) bool {
	return slices.ContainsFunc(ps, func(p Pinhole) bool { return p.Relay })
}

// AddPinholes implements Table. It returns after the kernel has processed
// the batch: nfnetlink runs the whole transaction, commit included, inside
// the sendmsg call, and errors are read back before returning.
func (k *Kernel) AddPinholes(ctx context.Context, p ...Pinhole) error {
	norm, err := normalizeAll(p, Pinhole.normalizeAdd)
	if err != nil {
		return fmt.Errorf("nft: failed to add pinholes: %w", err)
	}
	if len(norm) == 0 {
		return nil
	}
	tpl, err := k.templates()
	if err != nil {
		return fmt.Errorf("nft: failed to add pinholes: %w", err)
	}
	if tpl.snat4 == nil && (hasSNAT(norm) || hasDNAT(norm)) {
		return fmt.Errorf("nft: failed to add pinholes: %w", ErrNoMITM)
	}
	if tpl.relay4 == nil && hasRelay(norm) {
		return fmt.Errorf("nft: failed to add pinholes: %w", ErrNoRelay)
	}
	el := split(norm)
	// EBUSY: the kernel refuses, now and then, a batch that re-adds a key
	// whose previous element has just expired (or was removed from the
	// packet path), with another value, while that element is being
	// collected — measured: 271 of 3,000 batches re-adding a translation
	// key 1 ms after expiry with another target, none with this retry
	// (TestKernelReaddExpired); the NAT session benchmark met it with one
	// client told the same endpoints again and again. The batch is atomic,
	// so trying it again is safe; the refusal clears within milliseconds
	// (tens of them on a loaded machine).
	for attempt := 0; ; attempt++ {
		err = k.addBatch(ctx, tpl, el)
		if !errors.Is(err, unix.EBUSY) || attempt == busyRetries {
			break
		}
		k.log.Debug("pinhole batch refused with EBUSY; retrying", slog.Int("attempt", attempt+1))
		select {
		case <-ctx.Done():
			return fmt.Errorf("nft: failed to add pinholes: %w", ctx.Err())
		case <-time.After(time.Millisecond << attempt):
		}
	}
	if err != nil {
		return fmt.Errorf("nft: failed to add pinholes: %w", classify(err))
	}
	return nil
}

// busyRetries bounds how often AddPinholes tries a batch again after EBUSY,
// waiting 1, 2, 4, ... ms in between: 255 ms in all at most. Under the full
// test suite's load a collection has outlasted 15 ms.
const busyRetries = 8

// addBatch sends one AddPinholes transaction.
func (k *Kernel) addBatch(ctx context.Context, tpl templates, el elements) error {
	return k.do(ctx, func(c *nftables.Conn) error {
		if tpl.relay4 != nil {
			// A key is one kind or the other: a pinhole replaces a relay
			// element with its key and vice versa, in this transaction.
			for _, u := range []struct {
				s    *nftables.Set
				keys []nftables.SetElement
			}{{tpl.relay4, el.phKeys4}, {tpl.relay6, el.phKeys6}, {tpl.ph4, el.relayKeys4}, {tpl.ph6, el.relayKeys6}} {
				if err := c.SetDestroyElements(u.s, u.keys); err != nil {
					return err
				}
			}
			if err := c.SetAddElements(tpl.relay4, el.relay4); err != nil {
				return err
			}
			if err := c.SetAddElements(tpl.relay6, el.relay6); err != nil {
				return err
			}
		}
		if err := c.SetAddElements(tpl.ph4, el.ph4); err != nil {
			return err
		}
		if err := c.SetAddElements(tpl.ph6, el.ph6); err != nil {
			return err
		}
		if tpl.snat4 != nil {
			if err := c.SetAddElements(tpl.dph4, el.dph4); err != nil {
				return err
			}
			if err := c.SetAddElements(tpl.dph6, el.dph6); err != nil {
				return err
			}
			// Re-adding a map key with another value fails (EEXIST):
			// replace, in the same transaction. This also removes a stale
			// translation when a pinhole comes back without SNAT or DNAT.
			for _, u := range []struct {
				m         *nftables.Set
				keys, nat []nftables.SetElement
			}{{tpl.snat4, el.fwd4, el.nat4}, {tpl.snat6, el.fwd6, el.nat6},
				{tpl.dnat4, el.keys4, el.dnat4}, {tpl.dnat6, el.keys6, el.dnat6}} {
				if err := c.SetDestroyElements(u.m, u.keys); err != nil {
					return err
				}
				if err := c.SetAddElements(u.m, u.nat); err != nil {
					return err
				}
			}
		}
		return c.Flush()
	})
}

// DeletePinholes implements Table, with destroy semantics: elements that
// are gone (used, expired or never added) are not an error.
func (k *Kernel) DeletePinholes(ctx context.Context, p ...Pinhole) error {
	norm, err := normalizeAll(p, Pinhole.normalize)
	if err != nil {
		return fmt.Errorf("nft: failed to delete pinholes: %w", err)
	}
	if len(norm) == 0 {
		return nil
	}
	tpl, err := k.templates()
	if err != nil {
		return fmt.Errorf("nft: failed to delete pinholes: %w", err)
	}
	el := split(norm)
	err = k.do(ctx, func(c *nftables.Conn) error {
		if err := c.SetDestroyElements(tpl.ph4, el.keys4); err != nil {
			return err
		}
		if err := c.SetDestroyElements(tpl.ph6, el.keys6); err != nil {
			return err
		}
		if tpl.relay4 != nil {
			if err := c.SetDestroyElements(tpl.relay4, el.keys4); err != nil {
				return err
			}
			if err := c.SetDestroyElements(tpl.relay6, el.keys6); err != nil {
				return err
			}
		}
		if tpl.snat4 != nil {
			for _, u := range []struct {
				m    *nftables.Set
				keys []nftables.SetElement
			}{{tpl.snat4, el.fwd4}, {tpl.snat6, el.fwd6}, {tpl.snat4, el.keys4}, {tpl.snat6, el.keys6},
				{tpl.dnat4, el.keys4}, {tpl.dnat6, el.keys6}, {tpl.dph4, el.fwd4}, {tpl.dph6, el.fwd6}} {
				if err := c.SetDestroyElements(u.m, u.keys); err != nil {
					return err
				}
			}
		}
		return c.Flush()
	})
	if err != nil {
		return fmt.Errorf("nft: failed to delete pinholes: %w", classify(err))
	}
	return nil
}

// Pinholes implements Table.
func (k *Kernel) Pinholes(ctx context.Context) ([]Element, error) {
	tpl, err := k.templates()
	if err != nil {
		return nil, fmt.Errorf("nft: failed to list pinholes: %w", err)
	}
	var out []Element
	err = k.doRead(ctx, func(c *nftables.Conn) error {
		nat := map[key]netip.Addr{}
		err := eachMapElement(c, []*nftables.Set{tpl.snat4, tpl.snat6}, func(p Pinhole, val []byte) bool {
			a, ok := netip.AddrFromSlice(val)
			nat[p.key()] = a
			return ok
		})
		if err != nil {
			return err
		}
		// Translations by initiator and target, to find the announced
		// tuple of a translated connection's pinhole.
		announced := map[key]key{}
		err = eachMapElement(c, []*nftables.Set{tpl.dnat4, tpl.dnat6}, func(p Pinhole, val []byte) bool {
			t, ok := decodeTarget(val)
			announced[key{p.Src, t.Addr(), t.Port()}] = p.key()
			return ok
		})
		if err != nil {
			return err
		}
		for _, s := range []*nftables.Set{tpl.ph4, tpl.ph6, tpl.relay4, tpl.relay6, tpl.dph4, tpl.dph6} {
			if s == nil {
				continue
			}
			elems, err := c.GetSetElements(s)
			if err != nil {
				return fmt.Errorf("failed to list set %s: %w", s.Name, err)
			}
			for _, e := range elems {
				p, ok := decodePinholeKey(e.Key)
				if !ok {
					return fmt.Errorf("unexpected key %x in set %s", e.Key, s.Name)
				}
				p.Timeout = e.Timeout
				p.SNAT = nat[p.key()]
				p.Relay = s.Name == setRelay4 || s.Name == setRelay6
				if s.Name == setDNATPinholes4 || s.Name == setDNATPinholes6 {
					p.DNAT = netip.AddrPortFrom(p.Dst, p.DstPort)
					if a, ok := announced[p.key()]; ok {
						p.Dst, p.DstPort = a.dst, a.port
					}
				}
				out = append(out, Element{Pinhole: p, Expires: e.Expires})
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("nft: failed to list pinholes: %w", classify(err))
	}
	sortElements(out)
	return out, nil
}

// Live implements Table.
func (k *Kernel) Live(ctx context.Context, p ...Pinhole) ([]bool, error) {
	norm, err := normalizeAll(p, Pinhole.normalize)
	if err != nil {
		return nil, fmt.Errorf("nft: failed to look pinholes up: %w", err)
	}
	tpl, err := k.templates()
	if err != nil {
		return nil, fmt.Errorf("nft: failed to look pinholes up: %w", err)
	}
	out := make([]bool, len(norm))
	err = k.doRead(ctx, func(c *nftables.Conn) error {
		for i, p := range norm {
			v6 := !p.Src.Is4()
			set, key := tpl.ph4, pinholeKey(p)
			switch {
			case p.Relay:
				set = tpl.relay4
				if v6 {
					set = tpl.relay6
				}
			case p.DNAT.IsValid():
				set, key = tpl.dph4, forwardKey(p)
				if v6 {
					set = tpl.dph6
				}
			case v6:
				set = tpl.ph6
			}
			if set == nil {
				continue // the table has no such set: nothing of the kind is live
			}
			els, err := c.FindSetElements(set, []nftables.SetElement{{Key: key}})
			switch {
			case errors.Is(err, unix.ENOENT):
			case err != nil:
				return fmt.Errorf("failed to look %s up in set %s: %w", p, set.Name, err)
			default:
				out[i] = len(els) > 0
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("nft: failed to look pinholes up: %w", classify(err))
	}
	return out, nil
}

// eachMapElement lists the maps (nil ones skipped) and calls fn with each
// element's key, decoded, and value; fn reports whether the value decoded.
func eachMapElement(c *nftables.Conn, maps []*nftables.Set, fn func(key Pinhole, val []byte) bool) error {
	for _, m := range maps {
		if m == nil {
			continue
		}
		elems, err := c.GetSetElements(m)
		if err != nil {
			return fmt.Errorf("failed to list map %s: %w", m.Name, err)
		}
		for _, e := range elems {
			p, ok := decodePinholeKey(e.Key)
			if !ok || !fn(p, e.Val) {
				return fmt.Errorf("unexpected element %x : %x in map %s", e.Key, e.Val, m.Name)
			}
		}
	}
	return nil
}

// Delete implements Table. It removes the table last applied; before any
// Apply there is nothing of ours to remove.
func (k *Kernel) Delete(ctx context.Context) error {
	k.mu.Lock()
	t := k.table
	k.mu.Unlock()
	if t == nil {
		return nil
	}
	err := k.do(ctx, func(c *nftables.Conn) error {
		c.DestroyTable(t)
		return c.Flush()
	})
	if err != nil {
		return fmt.Errorf("nft: failed to delete table %s: %w", t.Name, err)
	}
	k.log.Debug("deleted nftables table", slog.String("table", t.Name))
	return nil
}

// Dump implements Table by reading the table back from the kernel.
func (k *Kernel) Dump(ctx context.Context) (string, error) {
	k.mu.Lock()
	t := k.table
	k.mu.Unlock()
	if t == nil {
		return "", fmt.Errorf("nft: failed to dump table: %w", ErrNoTable)
	}
	var m tableModel
	err := k.do(ctx, func(c *nftables.Conn) error {
		var err error
		m, err = readTable(c, k.sock, t)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("nft: failed to dump table %s: %w", t.Name, classify(err))
	}
	return renderTable(m), nil
}

func readTable(c *nftables.Conn, sock *netlink.Conn, t *nftables.Table) (tableModel, error) {
	m := tableModel{name: t.Name}
	if _, err := c.ListTableOfFamily(t.Name, t.Family); err != nil {
		return m, fmt.Errorf("failed to get table: %w", err)
	}
	sets, err := c.GetSets(t)
	if err != nil {
		return m, fmt.Errorf("failed to list sets: %w", err)
	}
	for _, s := range sets {
		elems, err := c.GetSetElements(s)
		if err != nil {
			return m, fmt.Errorf("failed to list elements of set %s: %w", s.Name, err)
		}
		m.sets = append(m.sets, setModel{set: s, elems: elems})
	}
	chains, err := c.ListChainsOfTableFamily(t.Family)
	if err != nil {
		return m, fmt.Errorf("failed to list chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name != t.Name {
			continue
		}
		rules, err := getRules(sock, t, ch.Name)
		if err != nil {
			return m, fmt.Errorf("failed to list rules of chain %s: %w", ch.Name, err)
		}
		m.chains = append(m.chains, chainModel{chain: ch, rules: rules})
	}
	return m, nil
}
