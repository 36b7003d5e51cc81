package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/certs"
	"github.com/ftpsalg/ftpsalg/alg/gateway"
	"github.com/ftpsalg/ftpsalg/alg/policy"
)

// TLS on the control connection: the upgrade after AUTH TLS (or at once
// on an implicit port), the upstream handshake that names the client's
// certificate, and the return to clear text after CCC (RFC 4217).

// Errors of the client's handshake that name why no certificate was shown.
var (
	errUpstreamUnreachable = errors.New("the server cannot be reached: no name is proven")
	errUnprovenName        = errors.New("the client asked for a name the server's certificate does not prove")
	// errClientCertRequired: the server asked for a client certificate
	// and failed the handshake without one. mitm mode cannot forward the
	// client's certificate (it never has the client's private key, and
	// the gateway does not ask the client for one): such a server belongs
	// in opaque mode (docs/opaque.md).
	errClientCertRequired = errors.New("the server requires a client certificate, which mitm mode cannot forward; use mode: opaque for this server")
)

// upgrade runs the client's TLS handshake. up is the upstream leg's TLS
// connection when it was verified before (explicit FTPS: before the 234
// was relayed). Otherwise (implicit FTPS) the upstream handshake runs
// inside the client's, once its SNI is known — unless reachable is false:
// then there is no server and the client's handshake is aborted with an
// alert. The client is only ever shown a certificate for names the
// verified upstream certificate proves (or the server's static one).
func (s *session) upgrade(ctx context.Context, up *tls.Conn, reachable bool) error {
	minVersion := uint16(tls.VersionTLS12)
	if s.srv.MITM != nil && s.srv.MITM.TLS.MinVersion != 0 {
		minVersion = s.srv.MITM.TLS.MinVersion
	}
	verifiedBefore := up != nil
	var upErr error
	crec := newRecordConn(s.cconn, &bufferedConn{Conn: s.cconn, r: s.cr})
	getCert := func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if hello.Conn != crec {
			// A relayed data connection that does not resume: the same
			// certificate as the control connection (clients such as
			// FileZilla abort when they differ).
			s.mu.Lock()
			leaf := s.leaf
			s.mu.Unlock()
			if leaf == nil {
				return nil, errors.New("no control connection certificate yet")
			}
			return leaf, nil
		}
		sni := hello.ServerName
		s.mu.Lock()
		s.sni = sni
		s.mu.Unlock()
		if up == nil {
			if !reachable {
				return nil, errUpstreamUnreachable
			}
			if up, upErr = s.upstreamHandshake(ctx, sni); upErr != nil {
				return nil, upErr
			}
		}
		c, err := s.controlCertificate(up, sni)
		if err == nil {
			s.mu.Lock()
			s.leaf = c
			s.mu.Unlock()
		}
		return c, err
	}
	cfg := certs.ServerConfig(getCert, minVersion)
	s.mu.Lock()
	s.srvTLS = cfg
	s.mu.Unlock()
	s.crec = crec
	tc := tls.Server(crec, cfg)
	hctx, cancel := context.WithTimeout(ctx, s.handshakeTimeout())
	defer cancel()
	start := time.Now()
	err := tc.HandshakeContext(hctx)
	if err != nil {
		reason := handshakeReason(err, hctx)
		switch {
		case errors.Is(err, errUpstreamUnreachable):
			reason = "upstream_unreachable"
		case errors.Is(err, errUnprovenName):
			reason = "unproven_name"
		case errors.Is(upErr, errClientCertRequired):
			reason = "client_certificate_required"
		case upErr != nil:
			reason = "upstream_failed"
		}
		s.m.TLSHandshakeFails.WithLabelValues("client", reason).Inc()
		if reason == "upstream_unreachable" || reason == "unproven_name" || reason == "upstream_failed" || reason == "client_certificate_required" {
			// Refused by the gateway, not failed by the client.
			s.mu.Lock()
			sni := s.sni
			s.mu.Unlock()
			s.gs.Refused(reason, "direction", "client", "sni", sni, "detail", "client TLS handshake aborted with an alert: no certificate shown")
		}
		s.gs.Log.Warn("client TLS handshake failed", "reason", reason, "err", err)
		return fmt.Errorf("client TLS handshake: %w", err)
	}
	s.m.TLSHandshakes.WithLabelValues("client").Inc()
	s.m.TLSHandshakeTime.WithLabelValues("client").Observe(time.Since(start).Seconds())
	s.cconn = tc
	s.cr = newLineReader(tc)
	if !verifiedBefore {
		s.uconn = up
		s.ur = newLineReader(up)
	}
	s.mu.Lock()
	s.tlsOn = true
	sni := s.sni
	s.mu.Unlock()
	cs, us := tc.ConnectionState(), up.ConnectionState()
	s.gs.TLSStarted(gateway.TLSInfo{SNI: sni, Client: &cs, Upstream: &us})
	return nil
}

// controlCertificate is the certificate for the control connection: the
// server's static one when the policy names it, otherwise a leaf minted
// from the verified upstream certificate — and only when the name the
// client asked for (its SNI) is one that certificate proves: a leaf is
// never minted for a name nobody proved.
func (s *session) controlCertificate(up *tls.Conn, sni string) (*tls.Certificate, error) {
	if s.p.o.Static != nil {
		if c := s.p.o.Static(s.srv.Name); c != nil {
			return c, nil
		}
	}
	proven := up.ConnectionState().PeerCertificates[0]
	if sni != "" && proven.VerifyHostname(sni) != nil {
		return nil, fmt.Errorf("%w: %q (the certificate names %s)", errUnprovenName, sni, strings.Join(proven.DNSNames, ", "))
	}
	return s.p.o.Leaf(proven)
}

// downgrade clears the control channel after the server accepted CCC
// (RFC 4217 §12.1): each leg exchanges close_notify alerts, then both carry
// clear text on the same TCP connections. The TLS layers read nothing past
// the peers' close_notify (recordConn), so no clear-text byte is lost.
func (s *session) downgrade() error {
	tc, ok1 := s.cconn.(*tls.Conn)
	uc, ok2 := s.uconn.(*tls.Conn)
	if !ok1 || !ok2 {
		return errors.New("CCC accepted while the legs are not TLS")
	}
	deadline := time.Now().Add(s.handshakeTimeout())
	var wg sync.WaitGroup
	var cr, ur *bufio.Reader
	var cerr, uerr error
	wg.Add(2)
	go func() { defer wg.Done(); cr, cerr = s.clearLeg(tc, s.crec, s.cr, s.rawC, deadline) }()
	go func() { defer wg.Done(); ur, uerr = s.clearLeg(uc, s.urec, s.ur, s.rawU, deadline) }()
	wg.Wait()
	if err := errors.Join(cerr, uerr); err != nil {
		s.gs.Log.Warn("failed to clear the control channel after CCC", "err", err)
		return err
	}
	// crypto/tls leaves the write deadline at "now" after close_notify;
	// writes set their own deadline, reads have none.
	_ = s.rawC.SetDeadline(time.Time{})
	_ = s.rawU.SetDeadline(time.Time{})
	s.cconn, s.uconn = s.rawC, s.rawU
	s.cr, s.ur = cr, ur
	s.mu.Lock()
	s.tlsOn = false
	s.mu.Unlock()
	return nil
}

// clearLeg ends TLS on one leg after CCC: it sends close_notify, then looks
// at the peer's next byte. A TLS record there is the peer's close_notify,
// read through the TLS layer (which never reads past it); anything else is
// already clear text — some clients (curl's default CCC mode) never send a
// close_notify of their own. It returns the clear-text reader.
func (s *session) clearLeg(c *tls.Conn, rec *recordConn, tlsReader *bufio.Reader, raw net.Conn, deadline time.Time) (*bufio.Reader, error) {
	if err := c.CloseWrite(); err != nil {
		return nil, err
	}
	if n := tlsReader.Buffered(); n > 0 {
		s.gs.Log.Warn("discarded TLS data sent after CCC", "bytes", n)
	}
	_ = raw.SetReadDeadline(deadline)
	defer raw.SetReadDeadline(time.Time{})
	br := newLineReader(raw)
	b, err := br.Peek(1)
	if err != nil {
		return nil, err
	}
	if b[0] >= 20 && b[0] <= 23 { // a TLS record: the peer's close_notify
		rec.r = br
		n, err := io.Copy(io.Discard, c)
		if err != nil {
			return nil, err
		}
		if n > 0 {
			s.gs.Log.Warn("discarded TLS data sent after CCC", "bytes", n)
		}
	}
	return br, nil
}

// upstreamHandshake verifies the server according to the server's policy,
// with the client's SNI (or the configured name, or the address).
func (s *session) upstreamHandshake(ctx context.Context, sni string) (*tls.Conn, error) {
	var p policy.ServerTLS
	if s.srv.MITM != nil {
		p = s.srv.MITM.TLS
	}
	name := sni
	if name == "" {
		name = p.ServerName
	}
	var cfg *tls.Config
	u, err := s.p.upstream(s.srv, p)
	if err == nil {
		cfg, err = u.Config(name, s.gs.Orig.Addr())
	}
	if err != nil {
		s.m.TLSHandshakeFails.WithLabelValues("upstream", "config").Inc()
		s.gs.Log.Error("upstream TLS configuration invalid", "err", err)
		return nil, err
	}
	// One session cache for this control session: the control
	// connection stores the server's session, the relay's data
	// connections resume it (see sessionCache).
	// The control connection itself resumes a session of an earlier
	// control session to the same server when it can (the proxy's cache
	// per server): no certificate chain to send, sign and verify again.
	cache := &sessionCache{shared: s.p.upstreamCache(s.srv.Name)}
	cfg.ClientSessionCache = cache.control()
	var data *tls.Config
	if s.srv.MITM != nil && s.srv.MITM.Data == policy.DataRelay {
		data = cfg.Clone()
		data.ClientSessionCache = cache.data()
	}
	s.mu.Lock()
	s.upCache, s.upData = cache, data
	s.mu.Unlock()
	// A server that asks for a client certificate gets none: many ask
	// without requiring one (vsftpd does by default). One that requires
	// it fails the handshake, reported as errClientCertRequired.
	var certRequested bool
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		certRequested = true
		return &tls.Certificate{}, nil
	}
	s.urec = newRecordConn(s.uconn, &bufferedConn{Conn: s.uconn, r: s.ur})
	uc := tls.Client(s.urec, cfg)
	hctx, cancel := context.WithTimeout(ctx, s.handshakeTimeout())
	defer cancel()
	start := time.Now()
	if err := uc.HandshakeContext(hctx); err != nil {
		reason := handshakeReason(err, hctx)
		// The server's alert after its CertificateRequest: crypto/tls
		// reports a received alert only as "remote error: tls: ...".
		if certRequested && (reason == "alert" || strings.Contains(err.Error(), "remote error")) {
			reason = "client_certificate_required"
			err = fmt.Errorf("%w (%w)", errClientCertRequired, err)
		}
		s.m.TLSHandshakeFails.WithLabelValues("upstream", reason).Inc()
		s.gs.Log.Warn("upstream TLS handshake failed", "reason", reason, "err", err, "sni", sni)
		return nil, err
	}
	if certRequested {
		// TLS 1.3 sends the client's (empty) certificate with its
		// Finished: a server that requires one refuses after this
		// handshake, on the first read (the session then ends with the
		// server's certificate_required alert in its log line).
		s.gs.Log.Info("upstream asked for a client certificate; none sent (mitm mode cannot forward one)",
			"tls_version", tls.VersionName(uc.ConnectionState().Version))
	}
	s.m.TLSHandshakes.WithLabelValues("upstream").Inc()
	s.m.TLSHandshakeTime.WithLabelValues("upstream").Observe(time.Since(start).Seconds())
	return uc, nil
}

// handshakeReason maps a handshake error to a bounded label.
func handshakeReason(err error, ctx context.Context) string {
	var ne net.Error
	var verr *tls.CertificateVerificationError
	var uerr *certs.UntrustedError
	var rerr tls.RecordHeaderError
	var aerr tls.AlertError
	switch {
	case ctx.Err() != nil || errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.As(err, &verr), errors.As(err, &uerr):
		return "untrusted"
	case errors.As(err, &rerr):
		return "not_tls"
	case errors.As(err, &aerr):
		return "alert"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "closed"
	}
	return "protocol"
}
