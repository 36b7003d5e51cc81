// Package proxy is ftpsalg's stream path (mitm mode): control connections
// diverted by TPROXY arrive at a transparent listener; the proxy dials the
// real server (from the client's own address by default), terminates TLS on
// both legs (explicit AUTH TLS or implicit), presents a certificate minted
// from the operator's CA for the names of the verified upstream
// certificate, and feeds the clear-text control stream to the FTP core.
// Pinholes are committed before the reply or command announcing them is
// forwarded. For servers with data: relay the announced data connections
// are diverted to a second transparent listener instead (ServeRelay),
// terminated with the control connection's certificate and session, and
// relayed to the other end over a connection that resumes the proxy's own
// upstream session. See README.md.
package proxy
