// Package certs holds the certificates and TLS policy of mitm mode, in
// which ftpsalg terminates a client's FTPS control connection (RFC 4217)
// and opens its own TLS connection to the real server:
//
//   - the operator's CA: InitCA creates it (ftpsalg ca init), optionally
//     restricted by name constraints to the gateway's servers, LoadCA reads
//     it and refuses a key file that group or others may read;
//     NameConstraints reads and checks the constraints;
//   - Minter mints, from that CA, the leaf certificate a client is shown
//     for a server: a copy of the names in the real server's certificate,
//     cached so that handshakes do not mint;
//   - LoadStatic loads a fixed leaf for a server the operator owns;
//   - ServerConfig and UpstreamConfig are the TLS configurations of the
//     client-facing and server-facing legs: TLS 1.2 or later, ECDHE with
//     AEAD suites, no renegotiation, session tickets on; the upstream
//     certificate is verified as the policy says (system roots, a CA file,
//     public key pins, or not at all);
//   - NewExpiryCollector exports when the CA and static certificates
//     expire.
//
// The package does no network I/O and starts no goroutines. Design notes
// (naming rules for minted leaves, caching, lifetimes, measured costs) are
// in README.md beside this file; the operator's guide is docs/tls.md.
package certs
