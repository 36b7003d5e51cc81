// Package gateway holds what ftpsalg does around the FTP protocol, written
// once for both transports (the NFQUEUE packet path, alg/inspect, and the
// TLS stream path, alg/proxy):
//
//   - admission: the policy lookup of a new control connection, the
//     client prefixes, limits.max_flows across both paths, and the FTP
//     core's session configuration;
//   - the pinhole ledger: the one owner of everything ftpsalg puts into
//     the kernel for a session (pinholes, relay elements, NAT
//     translations) and of the gateway ports reserved for translations:
//     commit with ownership, retire, used/expired accounting, a
//     per-session bound, and restoration after every table rebuild;
//   - translation: the endpoint a published server or a masqueraded
//     client must announce instead, applied to the core's decision;
//   - the audit: one schema of log lines for both modes;
//   - the table's health: the policy's kernel spec (Spec), reloads and a
//     level-triggered reconcile task that rebuilds the table the moment it
//     is lost (Reconciler).
//
// Sessions are opaque handles to the transports: neither transport is
// imported here, and the ledger keys kernel state on *Session.
package gateway
