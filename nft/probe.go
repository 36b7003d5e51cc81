package nft

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// ProbeQueue finds out how this kernel queues packets to userspace. Each
// attempt is one transaction that creates a throw-away table with a regular
// (unhooked, so it never sees a packet) chain holding a queue rule, and
// deletes the table again: if the kernel accepts the rule, nothing remains,
// and if it rejects it, the whole transaction is rolled back. The native
// queue expression is tried first; a kernel without nft_queue answers
// ENOENT and the xtables NFQUEUE target is tried next.
func ProbeQueue(ctx context.Context, opts ...Option) (QueueKind, error) {
	o := buildOptions(opts)
	k := &Kernel{opts: o, log: o.logger}
	if err := k.dial(); err != nil {
		return QueueUnset, fmt.Errorf("nft: %w", err)
	}
	defer func() { _ = k.Close() }()

	native := probeRule(ctx, k, &expr.Queue{Num: 0, Total: 1, Flag: expr.QueueFlagBypass})
	if native == nil {
		o.logger.Debug("queue probe: native queue expression available")
		return QueueNative, nil
	}
	if !errors.Is(native, unix.ENOENT) {
		return QueueUnset, fmt.Errorf("nft: failed to probe native queue: %w", native)
	}
	compat := probeRule(ctx, k, nfqueueTarget(0, 1, nfqFlagBypass))
	if compat != nil {
		return QueueUnset, fmt.Errorf("nft: failed to probe queue support: neither nft_queue (%w) nor xt NFQUEUE (%w) is available", native, compat)
	}
	o.logger.Debug("queue probe: using xt NFQUEUE target through nft_compat", slog.Any("native_error", native))
	return QueueCompat, nil
}

func probeRule(ctx context.Context, k *Kernel, e expr.Any) error {
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	t := newTable("ftpsalg_probe_" + hex.EncodeToString(rnd[:]))
	return k.do(ctx, func(c *nftables.Conn) error {
		c.AddTable(t)
		ch := c.AddChain(&nftables.Chain{Name: "probe", Table: t})
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{e}})
		c.DelTable(t)
		return c.Flush()
	})
}
