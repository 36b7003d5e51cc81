// Package nft owns ftpsalg's single nftables table.
//
// The table (family inet, name from the configuration, "ftpsalg" by default)
// is a static skeleton that Apply rebuilds in one atomic transaction: it
// destroys the table if it exists and creates it again in the same batch, so
// a restart or a resync never leaves duplicates and never touches another
// table. Per-session state lives only in set elements with timeouts:
//
//   - ctl4/ctl6 hold the control endpoints (server address . control port) of
//     inspect-mode servers; TCP packets to or from them are sent to NFQUEUE.
//   - pinholes4/pinholes6 hold single-use data-connection pinholes
//     (initiator address . target address . target port). The first packet of
//     a matching new connection deletes the element, sets a ct mark bit and is
//     accepted; the operator's ruleset admits the flow with one rule
//     (ct mark & CtMark == CtMark accept), see docs/integration.md.
//
// With mitm-mode servers (Spec.MITM) the table also diverts their control
// connections with TPROXY to the daemon's transparent listener (sets
// mitm4/mitm6, chain prerouting) and source-NATs pinholes that ask for it
// (maps snat4/snat6, chain postrouting). With a relay port (Spec.RelayPort)
// pinholes with Relay go to relay4/relay6 instead, and their one
// connection is diverted with TPROXY to the daemon's data relay listener
// rather than forwarded. The policy routing that goes with TPROXY (packets
// carrying Spec.TProxyMark are delivered locally) is rtnetlink, not
// nf_tables, and lives in package alg/route.
//
// Table is the small interface the rest of the daemon uses; Kernel talks to
// the kernel over netlink (google/nftables) and Fake is an in-memory model
// with the same semantics for unit tests. Both render the same text through
// Dump, so one golden file pins what the kernel holds and what the fake
// models. The README next to this file documents the hook priorities,
// every rule and why the design is what it is.
package nft
