// Package ftp is the pure FTP protocol core of ftpsalg: it is fed the bytes
// of an FTP control connection, one direction at a time and in stream
// order, and returns decisions — report a command or reply, open a data
// connection pinhole, refuse a line, TLS started or cleared, session ended.
// It does no I/O, starts no goroutines, reads no clock and logs nothing;
// both transports (the NFQUEUE packet path and the TLS proxy path) adapt
// their I/O to it.
//
// What it implements:
//
//   - RFC 959: commands (§4.1, §5.3), multi-line replies (§4.2), PORT and
//     PASV/227 host-port syntax, REIN;
//   - RFC 1123 §4.1.2.6: finding the 227 address anywhere in the reply text;
//   - RFC 2228: AUTH and CCC, protected (6yz) reply codes;
//   - RFC 2428: EPRT, EPSV/229 and EPSV ALL;
//   - RFC 4217: AUTH TLS/SSL, the 234 reply, CCC and REIN with TLS;
//   - RFC 1639: LPRT, LPSV/228.
//
// The building blocks are exported for the transports and for tests:
// Framer splits a direction into lines with a hard length bound and Telnet
// (RFC 854) processing, ParseCommand and ReplyAssembler give the lines
// meaning, the Parse* and Format* functions read and write data connection
// addresses, and Session ties them into the control connection's state
// machine. RewriteAnnouncement builds the line that announces a translated
// data connection endpoint, so a translating transport applies bytes and
// never parses FTP itself; IsActiveVerb, IsTransferVerb and
// UsesDataConnection are the program's one list of verb classes. Design notes, including why only line starts are ever
// interpreted and every validation rule, are in README.md beside this file.
package ftp
