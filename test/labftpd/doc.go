// Package labftpd is a small FTP server for the ftpsalg test lab, written
// from RFC 959 (FTP), RFC 1123 §4.1 (host requirements for FTP) and
// RFC 2428 (EPRT/EPSV for IPv6 and NATs), with FTPS from RFC 4217.
//
// It has two jobs:
//
//   - a stand-in for a real server (vsftpd) where one is not installed, for
//     example in `make demo`: it serves a directory (through os.Root, so
//     paths cannot escape it) or an in-memory file map, with one
//     user/password pair, PASV/EPSV/PORT/EPRT, LIST/NLST/RETR/STOR/SIZE;
//   - a deliberately hostile server for negative tests of the gateway: it
//     can announce a third-party address in 227 (Config.AnnounceAddr), lie
//     about the passive port (Config.AnnouncePort), write arbitrary raw
//     replies around or instead of any command (Config.Script, e.g. an
//     unsolicited 227 right after login), split replies into tiny writes
//     (Config.SplitWrites) and, when asked, connect its active data
//     connections to any address the client names (Config.AllowForeignData,
//     the "FTP bounce" of RFC 2577).
//
// The server never trusts its client: lines are bounded (Config.MaxLine),
// every read and write has a deadline, parse errors are replies and a
// panic in one session is recovered and ends only that session.
//
// # FTPS
//
// With Config.TLS the server speaks FTP over TLS (RFC 4217): explicit
// (AUTH TLS answered 234, then the handshake on the control connection) or,
// with Config.ImplicitTLS, implicit (TLS from the first byte). PBSZ 0 and
// PROT P|C set the data protection per session; under PROT P every data
// connection, passive or active, is a TLS connection on which the server
// is the TLS server, negotiated after the 150 reply and ended with
// close_notify. CCC returns the control connection to clear text: both
// sides send close_notify, and the TLS layer reads the control connection
// one record at a time so that nothing the client sends after its
// close_notify is lost. Config.RequireTLS refuses USER and PASS in clear
// text. Session resumption is whatever crypto/tls does by default (session
// tickets); it is never required. Handshakes are bounded by
// Config.DataTimeout.
//
// # Sockets and network namespaces
//
// Passive listeners are bound to the control connection's local address and
// active connections are dialled from it. A socket belongs to the network
// namespace of the thread that created it, and the goroutine that serves a
// session is not pinned to any thread, so a server whose control listener
// lives in another namespace must also create its data sockets there: set
// Config.Listen and Config.Dial to functions that do so (the lab's
// StartLabftpd does this with (*lab.Lab).Listen and (*lab.Lab).Dial).
//
// # Limits
//
// TYPE A is accepted but data are sent as stored (no CRLF conversion), there
// is one transfer at a time per session (ABOR after the fact answers 225),
// no REST and no directory creation; FTPS has no PROT S or E, and AUTH
// TLS-P (implied PROT P) is not accepted. Unknown commands get 502.
package labftpd
