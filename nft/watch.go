package nft

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// ChangeKind says what happened to the table.
type ChangeKind uint8

// Kinds of Change.
const (
	// ChangeResync: notifications were lost (the socket's buffer overflowed,
	// ENOBUFS) or the watch was re-opened after an error. Anything may have
	// happened meanwhile: check the whole table.
	ChangeResync ChangeKind = iota + 1
	// TableDeleted: the table is gone (nft delete table, nft flush ruleset).
	TableDeleted
	// ChainDeleted: one of the table's chains is gone.
	ChainDeleted
	// SetDeleted: one of the table's sets or maps is gone.
	SetDeleted
	// RuleDeleted: a rule of the table is gone; flushing a chain deletes
	// every rule in it, one notification each.
	RuleDeleted
)

func (k ChangeKind) String() string {
	switch k {
	case ChangeResync:
		return "resync"
	case TableDeleted:
		return "table deleted"
	case ChainDeleted:
		return "chain deleted"
	case SetDeleted:
		return "set deleted"
	case RuleDeleted:
		return "rule deleted"
	}
	return fmt.Sprintf("ChangeKind(%d)", uint8(k))
}

// Change is one change to the table, as nf_tables notified it.
type Change struct {
	Kind ChangeKind
	// Table is the table's name (empty for ChangeResync).
	Table string
	// Name is the chain (ChainDeleted, and the rule's chain for
	// RuleDeleted) or the set (SetDeleted).
	Name string
	// Own is true when the change came from this Kernel's own netlink
	// socket (Apply rebuilding the table, Delete): the notification
	// carries the port ID of the socket that sent the transaction.
	Own bool
}

func (c Change) String() string {
	s := c.Kind.String()
	if c.Table != "" {
		s += " inet " + c.Table
	}
	if c.Name != "" {
		s += " " + c.Name
	}
	if c.Own {
		s += " (own)"
	}
	return s
}

// watchReadBuffer is the receive buffer of a Watcher's socket. A table
// rebuild notifies about one message per object (a few dozen); the buffer
// holds thousands, so only a flood (other tables' element churn, or a
// watcher whose callback stalls) overflows it, and that is reported as
// ChangeResync.
const watchReadBuffer = 1 << 20

// Watcher reports changes to the Kernel's table as nf_tables notifies
// them: it is a netlink socket joined to the NFNLGRP_NFTABLES multicast
// group in the Kernel's network namespace (WithNetNS). It reports the
// deletion of the table, of its chains, sets and rules (TableDeleted,
// ChainDeleted, SetDeleted, RuleDeleted), and ChangeResync when
// notifications may have been lost. Creations, set and map elements (the
// pinholes: ours, and the packet path's single-use deletions, which are not
// notified anyway), the generation messages and every other table's
// changes are dropped after reading the message header and, for table
// objects, the first attribute: element churn costs a read, never a
// callback.
//
// Nothing in the kernel waits for the watcher: notifications are queued to
// its socket, and when the socket's buffer is full the kernel drops them
// and the next read says so (ENOBUFS), which becomes ChangeResync.
type Watcher struct {
	k *Kernel

	mu     sync.Mutex // conn is replaced by Run, read by Close and on cancel
	conn   *netlink.Conn
	closed bool
}

// NewWatcher subscribes to nf_tables notifications in the Kernel's network
// namespace. Changes made after it returns are reported by Run, so a caller
// that checks the table (Check) after NewWatcher misses nothing. The table
// watched is the one last applied (or named by WithTable), looked up for
// every notification, so a rename by Apply is followed.
func (k *Kernel) NewWatcher() (*Watcher, error) {
	if k.tableName() == "" {
		return nil, fmt.Errorf("nft: failed to watch table: %w", ErrNoTable)
	}
	c, err := k.subscribe()
	if err != nil {
		return nil, fmt.Errorf("nft: failed to watch table: %w", err)
	}
	return &Watcher{k: k, conn: c}, nil
}

// Watch subscribes (NewWatcher) and runs the Watcher until ctx ends.
func (k *Kernel) Watch(ctx context.Context, fn func(Change)) error {
	w, err := k.NewWatcher()
	if err != nil {
		return err
	}
	return w.Run(ctx, fn)
}

func (k *Kernel) subscribe() (*netlink.Conn, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: k.opts.netns})
	if err != nil {
		return nil, fmt.Errorf("failed to open netlink socket: %w", err)
	}
	if err := c.SetReadBuffer(watchReadBuffer); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("failed to set read buffer: %w", err)
	}
	if err := c.JoinGroup(unix.NFNLGRP_NFTABLES); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("failed to join the nf_tables notification group: %w", err)
	}
	return c, nil
}

// Close releases the socket; Run returns.
func (w *Watcher) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	return w.conn.Close()
}

// Run reads notifications and calls fn with each change to the table, on
// Run's goroutine, until ctx ends (it then returns nil and closes the
// Watcher). fn should return quickly: while it runs, notifications queue in
// the socket, and an overflow costs a ChangeResync. After a read error
// (ENOBUFS: notifications were dropped; or any other) it subscribes a new
// socket, closes the old one (retrying with a backoff of up to a second)
// and reports ChangeResync.
func (w *Watcher) Run(ctx context.Context, fn func(Change)) error {
	defer func() { _ = w.Close() }()
	// Cancelling ctx expires the read deadline of whichever socket is
	// current: a blocked Receive returns.
	stop := context.AfterFunc(ctx, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		_ = w.conn.SetReadDeadline(time.Unix(1, 0))
	})
	defer stop()
	backoff := 10 * time.Millisecond
	for {
		w.mu.Lock()
		c, closed := w.conn, w.closed
		w.mu.Unlock()
		if closed {
			return nil
		}
		msgs, err := c.Receive()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			// ENOBUFS: the kernel dropped notifications because the
			// buffer was full. Anything else: the socket is broken.
			// Either way a new socket (with a fresh buffer) is
			// subscribed before the old one is closed, so nothing is
			// lost in between, and the caller re-checks.
			if errors.Is(err, unix.ENOBUFS) {
				w.k.log.Warn("nftables notifications lost (socket buffer full); resyncing")
			} else {
				w.k.log.Warn("nftables notification socket failed; re-opening", slog.Any("error", err))
			}
			if !w.reopen(ctx, backoff) {
				backoff = min(2*backoff, time.Second)
				continue
			}
			if ctx.Err() != nil {
				return nil
			}
			backoff = 10 * time.Millisecond
			fn(Change{Kind: ChangeResync})
			continue
		}
		name := w.k.tableName()
		own := w.k.portID.Load()
		for _, m := range msgs {
			if ch, ok := parseChange(m, name); ok {
				ch.Own = own != 0 && m.Header.PID == own
				fn(ch)
			}
		}
	}
}

// reopen replaces the socket with a new subscription. On failure it logs,
// waits for backoff (or ctx) and returns false.
func (w *Watcher) reopen(ctx context.Context, backoff time.Duration) bool {
	c, err := w.k.subscribe()
	if err != nil {
		w.k.log.Error("failed to re-open the nftables notification socket", slog.Any("error", err))
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		_ = c.Close()
		return true // Run sees closed and returns
	}
	_ = w.conn.Close()
	w.conn = c
	if ctx.Err() != nil {
		_ = c.SetReadDeadline(time.Unix(1, 0))
	}
	return true
}

// parseChange turns one notification into a Change if it is a deletion of
// table (family inet) or of one of its chains, sets or rules.
func parseChange(m netlink.Message, table string) (Change, bool) {
	if m.Header.Type>>8 != unix.NFNL_SUBSYS_NFTABLES {
		return Change{}, false
	}
	var kind ChangeKind
	var nameAttr uint16
	switch m.Header.Type & 0xff {
	case unix.NFT_MSG_DELTABLE:
		kind = TableDeleted
	case unix.NFT_MSG_DELCHAIN:
		kind, nameAttr = ChainDeleted, unix.NFTA_CHAIN_NAME
	case unix.NFT_MSG_DELSET:
		kind, nameAttr = SetDeleted, unix.NFTA_SET_NAME
	case unix.NFT_MSG_DELRULE:
		kind, nameAttr = RuleDeleted, unix.NFTA_RULE_CHAIN
	default:
		// Creations, elements (NEWSETELEM, DELSETELEM), NEWGEN, objects,
		// flowtables: not ours to report.
		return Change{}, false
	}
	// struct nfgenmsg: family, version, resource id.
	if len(m.Data) < 4 || m.Data[0] != unix.NFPROTO_INET {
		return Change{}, false
	}
	ad, err := netlink.NewAttributeDecoder(m.Data[4:])
	if err != nil {
		return Change{}, false
	}
	ch := Change{Kind: kind}
	// The table's name is attribute 1 of all four objects
	// (NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_SET_TABLE, NFTA_RULE_TABLE).
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_TABLE_NAME:
			ch.Table = ad.String()
			if ch.Table != table {
				return Change{}, false
			}
		case nameAttr: // 0 for tables: never an attribute type
			ch.Name = ad.String()
		}
	}
	if ad.Err() != nil || ch.Table != table {
		return Change{}, false
	}
	return ch, true
}
