// Package lab builds a throw-away FTP network out of Linux network
// namespaces for ftpsalg's privileged tests, benchmarks and demo:
//
//	client (192.0.2.2) ── gw ── server (198.51.100.2)
//	                       └─── other (203.0.113.2, optional)
//
// New creates the namespaces (with random names), veth pairs, addresses and
// routes and registers a cleanup that kills every process left in them (by
// PID) and deletes them. On top of that the package offers:
//
//   - running commands in a namespace (Exec, Run, Start), with logs kept per
//     test and printed when the test fails;
//   - running Go code in a namespace (InNS, Listen, Dial);
//   - the gateway's operator firewall (InstallGatewayFirewall) and the
//     kernel-helper variant (GatewayHelperFirewall), nft and conntrack
//     wrappers;
//   - a real FTP server (StartVsftpd, with a throw-away system user) or the
//     embedded one (StartLabftpd);
//   - FTP clients forced into one data-connection mode (PASV, EPSV, PORT,
//     EPRT) whose output proves the mode was used: curl and lftp, with
//     random files and SHA-256 sums on both sides;
//   - a TCP sink (StartSink) that counts what a third-party host receives.
//
// The package needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN); tests call
// RequirePrivileged first. It only uses documentation addresses (RFC 5737,
// RFC 3849) and only inside its own namespaces. See README.md for the
// topology and the quirks of the Debian 12 tools.
package lab
