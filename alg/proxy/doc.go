// Package proxy is ftpsalg's stream path (mitm mode): control connections
// diverted by TPROXY arrive at a transparent listener; the proxy dials the
// real server (from the client's own address by default), terminates TLS on
// both legs (explicit AUTH TLS or implicit), presents a certificate minted
// from the operator's CA for the names of the verified upstream
// certificate, and feeds the clear-text control stream to the FTP core.
// Pinholes are committed before the reply or command announcing them is
// forwarded. See README.md.
package proxy
