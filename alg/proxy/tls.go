package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/certs"
	"github.com/ftpsalg/ftpsalg/alg/gateway"
	"github.com/ftpsalg/ftpsalg/alg/policy"
)

// TLS on the control connection: the upgrade after AUTH TLS (or at once
// on an implicit port), the upstream handshake that names the client's
// certificate, and the return to clear text after CCC (RFC 4217).

// upgrade runs the TLS handshakes: the client's first, and from inside it
// (once the client's SNI is known) the upstream one, whose verified
// certificate names the leaf shown to the client. With upstreamOK false
// there is no server to reach: the client gets a leaf for the name it
// asked so that it can read the 421 that follows.
func (s *session) upgrade(ctx context.Context, upstreamOK bool) error {
	var upErr error
	var upConn *tls.Conn
	minVersion := uint16(tls.VersionTLS12)
	if s.srv.MITM != nil && s.srv.MITM.TLS.MinVersion != 0 {
		minVersion = s.srv.MITM.TLS.MinVersion
	}
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
		// The control connection: a fresh upstream handshake, also when
		// the client sends AUTH again after CCC.
		c, err := s.controlCertificate(ctx, hello, upstreamOK, &upConn, &upErr)
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
		if upErr != nil {
			reason = "upstream_failed"
		}
		s.m.TLSHandshakeFails.WithLabelValues("client", reason).Inc()
		s.gs.Log.Warn("client TLS handshake failed", "reason", reason, "err", err)
		return fmt.Errorf("client TLS handshake: %w", err)
	}
	s.m.TLSHandshakes.WithLabelValues("client").Inc()
	s.m.TLSHandshakeTime.WithLabelValues("client").Observe(time.Since(start).Seconds())
	s.cconn = tc
	s.cr = bufio.NewReaderSize(tc, s.maxLine())
	if !upstreamOK {
		return nil
	}
	if upErr != nil {
		s.writeClient("421 ftpsalg: the server's TLS certificate could not be verified; see the gateway's log.\r\n")
		return upErr
	}
	s.uconn = upConn
	s.ur = bufio.NewReaderSize(upConn, s.maxLine())
	s.mu.Lock()
	s.tlsOn = true
	sni := s.sni
	s.mu.Unlock()
	cs, us := tc.ConnectionState(), upConn.ConnectionState()
	s.gs.TLSStarted(gateway.TLSInfo{SNI: sni, Client: &cs, Upstream: &us})
	return nil
}

// controlCertificate is the certificate for the control connection's
// handshake: it runs the upstream handshake (with the client's SNI) and
// returns a leaf for the verified upstream certificate (or the static
// one); without an upstream, a leaf for the name the client asked.
func (s *session) controlCertificate(ctx context.Context, hello *tls.ClientHelloInfo, upstreamOK bool, upConn **tls.Conn, upErr *error) (*tls.Certificate, error) {
	sni := hello.ServerName
	s.mu.Lock()
	s.sni = sni
	s.mu.Unlock()
	if upstreamOK {
		*upConn, *upErr = s.upstreamHandshake(ctx, sni)
	}
	if upstreamOK && *upErr == nil {
		if s.p.o.Static != nil {
			if c := s.p.o.Static(s.srv.Name); c != nil {
				return c, nil
			}
		}
		return s.p.o.Leaf((*upConn).ConnectionState().PeerCertificates[0], sni)
	}
	return s.p.o.Leaf(s.placeholder(sni), sni)
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
	br := bufio.NewReaderSize(raw, s.maxLine())
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
	cfg, err := certs.UpstreamConfig(p, name, s.gs.Orig.Addr(), s.p.o.Roots)
	if err != nil {
		s.m.TLSHandshakeFails.WithLabelValues("upstream", "config").Inc()
		s.gs.Log.Error("upstream TLS configuration invalid", "err", err)
		return nil, err
	}
	// One session cache for this control session: the control
	// connection stores the server's session, the relay's data
	// connections resume it (see sessionCache).
	cache := &sessionCache{}
	cfg.ClientSessionCache = cache.control()
	data := cfg.Clone()
	data.ClientSessionCache = cache.data()
	s.mu.Lock()
	s.upCache, s.upData = cache, data
	s.mu.Unlock()
	s.urec = newRecordConn(s.uconn, &bufferedConn{Conn: s.uconn, r: s.ur})
	uc := tls.Client(s.urec, cfg)
	hctx, cancel := context.WithTimeout(ctx, s.handshakeTimeout())
	defer cancel()
	start := time.Now()
	if err := uc.HandshakeContext(hctx); err != nil {
		reason := handshakeReason(err, hctx)
		s.m.TLSHandshakeFails.WithLabelValues("upstream", reason).Inc()
		s.gs.Log.Warn("upstream TLS handshake failed", "reason", reason, "err", err, "sni", sni)
		return nil, err
	}
	s.m.TLSHandshakes.WithLabelValues("upstream").Inc()
	s.m.TLSHandshakeTime.WithLabelValues("upstream").Observe(time.Since(start).Seconds())
	return uc, nil
}

// placeholder is the certificate a leaf is minted from when there is no
// upstream certificate to copy names from.
func (s *session) placeholder(sni string) *x509.Certificate {
	c := &x509.Certificate{NotAfter: s.p.o.Now().Add(time.Hour)}
	if sni != "" {
		c.Subject = pkix.Name{CommonName: sni}
		c.DNSNames = []string{sni}
	} else {
		c.Subject = pkix.Name{CommonName: s.gs.Orig.Addr().String()}
		c.IPAddresses = []net.IP{s.gs.Orig.Addr().AsSlice()}
	}
	return c
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
