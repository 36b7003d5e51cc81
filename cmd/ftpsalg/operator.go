package main

import (
	"context"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/policy"
	"github.com/ftpsalg/ftpsalg/nft"
)

// checkOperatorNAT reads the host's own destination NAT rules (never
// ftpsalg's table) and refuses a policy that conflicts with one, naming
// it (policy.CheckOperatorNAT). Start-up and reload use it; check-config
// does the same through readOperatorNAT.
func checkOperatorNAT(cfg *policy.Config) error {
	ops, err := readOperatorNAT(cfg.NFTables.Table)
	if err != nil {
		return err
	}
	return policy.CheckOperatorNAT(cfg, ops)
}

// readOperatorNAT lists the host's destination NAT rules outside
// ftpsalg's table (inet own).
func readOperatorNAT(own string) ([]policy.OperatorNAT, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	k, err := nft.New(nft.WithTable(own))
	if err != nil {
		return nil, err
	}
	defer k.Close()
	rules, err := k.ForeignDNAT(ctx)
	if err != nil {
		return nil, err
	}
	ops := make([]policy.OperatorNAT, 0, len(rules))
	for _, r := range rules {
		ops = append(ops, policy.OperatorNAT{Name: r.String(), Dst: r.Dst, Ports: r.Ports, To: r.To})
	}
	return ops, nil
}
