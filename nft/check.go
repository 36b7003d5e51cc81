package nft

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// layout is what an Apply created, for Check: the table, its sets and the
// number of rules in each chain (every chain has at least one).
type layout struct {
	table  string
	sets   []string
	chains map[string]int
}

func layoutOf(rs *ruleset) *layout {
	l := &layout{table: rs.table.Name, chains: map[string]int{}}
	for _, s := range rs.sets {
		l.sets = append(l.sets, s.Name)
	}
	for _, c := range rs.chains {
		l.chains[c.chain.Name] = len(c.rules)
	}
	return l
}

// tableName is the name of the table the Kernel manages ("" before the
// first Apply without WithTable).
func (k *Kernel) tableName() string {
	if n := k.name.Load(); n != nil {
		return *n
	}
	return ""
}

// Health is the result of Check.
type Health struct {
	// Intact is true when the table, every set and every chain with all
	// its rules are as the last Apply created them.
	Intact bool
	// Missing says what is not, in nft's words ("table inet ftpsalg",
	// "set pinholes4", "chain forward: 0 of 6 rules"), sorted.
	Missing []string
}

// Check reports whether the table of the last Apply is intact: the table
// exists, holds each of its sets, and each chain holds as many rules as
// Apply put in it (a deleted chain has none, a flushed one none either).
// It is cheap enough to run after every Change: three netlink requests
// (get the table, dump its sets, dump its rules, both filtered by the
// kernel), reading names only; elements are not read. It does not compare
// rule contents: nothing but a rebuild replaces our rules, and a foreign
// rule in our table counts as damage. Before any Apply it fails with
// ErrNoTable.
func (k *Kernel) Check(ctx context.Context) (Health, error) {
	want := k.layout.Load()
	if want == nil {
		return Health{}, fmt.Errorf("nft: failed to check table: %w", ErrNoTable)
	}
	t := newTable(want.table)
	var h Health
	err := k.do(ctx, func(c *nftables.Conn) error {
		if _, err := c.ListTableOfFamily(t.Name, t.Family); errors.Is(err, unix.ENOENT) {
			h.Missing = append(h.Missing, "table inet "+t.Name)
			return nil
		} else if err != nil {
			return fmt.Errorf("failed to get table: %w", err)
		}
		sets, err := c.GetSets(t)
		if err != nil {
			return fmt.Errorf("failed to list sets: %w", err)
		}
		for _, name := range want.sets {
			if !slices.ContainsFunc(sets, func(s *nftables.Set) bool { return s.Name == name }) {
				h.Missing = append(h.Missing, "set "+name)
			}
		}
		msgs, err := dumpRules(k.sock, t, "")
		if err != nil {
			return fmt.Errorf("failed to list rules: %w", err)
		}
		got := rulesPerChain(msgs)
		for name, n := range want.chains {
			if got[name] != n {
				h.Missing = append(h.Missing, fmt.Sprintf("chain %s: %d of %d rules", name, got[name], n))
			}
		}
		return nil
	})
	if err != nil {
		return Health{}, fmt.Errorf("nft: failed to check table %s: %w", t.Name, err)
	}
	slices.Sort(h.Missing)
	h.Intact = len(h.Missing) == 0
	return h, nil
}

func (h Health) String() string {
	if h.Intact {
		return "intact"
	}
	return "missing: " + strings.Join(h.Missing, ", ")
}

// rulesPerChain counts NEWRULE messages by their chain attribute.
func rulesPerChain(msgs []netlink.Message) map[string]int {
	n := map[string]int{}
	for _, m := range msgs {
		if m.Header.Type != netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWRULE) || len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			continue
		}
		for ad.Next() {
			if ad.Type() == unix.NFTA_RULE_CHAIN {
				n[ad.String()]++
			}
		}
	}
	return n
}
