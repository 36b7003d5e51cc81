// Package tlspeek reads the clear-text part of a TLS handshake from the
// records of a connection it does not decrypt: the ClientHello, the
// ServerHello and, in TLS 1.2, a CertificateRequest (RFC 8446 §4, RFC 5246
// §7.4). It is pure: bytes in, events out, no I/O and no clock. The packet
// path of opaque mode (alg/inspect) feeds it the control connection's TLS
// bytes in stream order.
//
// What it cannot see: everything TLS 1.3 encrypts after the ServerHello —
// the server's certificate, EncryptedExtensions (the selected ALPN), a
// CertificateRequest and the client's certificate — and every alert sent
// after the keys changed (then only the record type is visible, or, in
// TLS 1.3, nothing but application data and the connection's end).
package tlspeek
