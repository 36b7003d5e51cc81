// Package route installs the policy routing that goes with the table's
// TPROXY rules: packets carrying the tproxy mark (nft.Spec.TProxyMark) are
// delivered locally instead of forwarded,
//
//	ip rule add fwmark MARK/MARK lookup TABLE pref PRIO proto 245
//	ip route add local 0.0.0.0/0 dev lo table TABLE proto 245
//
// and the same for IPv6. It is rtnetlink, not nf_tables, which is why it is
// not part of package nft (whose one subject is ftpsalg's own nftables
// table); the two meet only in the mark value, which the daemon passes to
// both.
//
// Router is the interface the daemon uses; Kernel implements it over one
// rtnetlink socket and Fake in memory, and both render the same text with
// Dump, so that one golden file (testdata/route.golden) pins what the
// kernel holds and what the fake models. The README next to this file says
// what is created, how it is tagged and why.
package route
