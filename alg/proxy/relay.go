package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/ftp"
	"github.com/ftpsalg/ftpsalg/alg/policy"
	"github.com/ftpsalg/ftpsalg/metrics"
)

// The data relay. For a server with data: relay the control session
// registers every data connection it announces here (an expectation) and
// opens a relay element instead of a pinhole: the kernel diverts that one
// connection to the relay listener (nft Pinhole.Relay). The accepted
// socket names the expectation: RemoteAddr is the initiator and LocalAddr
// the announced target (TPROXY rewrites nothing). The relay then makes the
// other connection itself, terminates TLS on both (PROT P) and copies.
// RFC 4217 section 7: the FTP client is the TLS client on every data
// connection, whoever opened it, so the relay is the TLS server towards
// the client and the TLS client towards the server in both modes.

const (
	// relayBufSize is the copy buffer of each direction. crypto/tls
	// returns at most one 16 KiB record per Read; plain connections use
	// the whole buffer.
	relayBufSize = 32 << 10
	// relayIdleTimeout ends a relayed connection on which nothing moved
	// in either direction of a half for that long (vsftpd's
	// data_connection_timeout default is 300 s).
	relayIdleTimeout = 5 * time.Minute
)

// relayKey is an announced data connection: initiator address, and target
// address and port.
type relayKey struct {
	src netip.Addr
	dst netip.AddrPort
}

type expectation struct {
	s        *session
	mode     ftp.DataMode
	deadline time.Time
	// target is where the relay connects onward and source the address
	// it connects from (invalid: the default of the mode). Behind NAT the
	// key's target is a gateway address and target the translated one
	// (gateway.RelayPlan); without NAT target is the key's.
	target netip.AddrPort
	source netip.Addr
}

// expect registers an announced data connection for s until deadline.
func (p *Proxy) expect(k relayKey, e expectation) {
	p.relayMu.Lock()
	defer p.relayMu.Unlock()
	p.relays[k] = e
}

// take removes and returns the expectation for k, if there is one that
// has not expired: each admits one connection.
func (p *Proxy) take(k relayKey) (expectation, bool) {
	p.relayMu.Lock()
	defer p.relayMu.Unlock()
	e, ok := p.relays[k]
	if !ok {
		return expectation{}, false
	}
	delete(p.relays, k)
	if p.o.Now().After(e.deadline) {
		return expectation{}, false
	}
	return e, true
}

// forget removes the expectations of s among keys (its session ended, or
// its element could not be committed).
func (p *Proxy) forget(s *session, keys ...relayKey) {
	p.relayMu.Lock()
	defer p.relayMu.Unlock()
	for _, k := range keys {
		if e, ok := p.relays[k]; ok && e.s == s {
			delete(p.relays, k)
		}
	}
}

// Expectations returns the number of announced data connections the relay
// waits for.
func (p *Proxy) Expectations() int {
	p.relayMu.Lock()
	defer p.relayMu.Unlock()
	return len(p.relays)
}

// handleRelay serves one connection accepted on the relay listener.
func (p *Proxy) handleRelay(ctx context.Context, c net.Conn) {
	src, dst := addrPort(c.RemoteAddr()), addrPort(c.LocalAddr())
	e, ok := p.take(relayKey{src: src.Addr(), dst: dst})
	if !ok {
		// The kernel diverts only announced connections, so this one's
		// expectation expired or its session ended in between.
		p.o.Metrics.RelayConnections.WithLabelValues(metrics.RelayUnexpected).Inc()
		p.o.Log.Warn("relay connection refused", "reason", metrics.RelayUnexpected,
			"src", src.String(), "dst", dst.String())
		c.Close()
		return
	}
	e.s.relayData(ctx, c, e, src, dst)
}

// dataNote is why the relay expects the server to refuse the current data
// connection, and what the client is told instead of the server's reply.
type dataNote struct {
	reason string // a bounded label value
	reply  string // with CRLF
}

var (
	noteClientNotResumed = dataNote{reason: metrics.RelayClientNotResumed,
		reply: "522 ftpsalg: data connection refused: it did not resume the control connection's TLS session, which this gateway requires for this server.\r\n"}
	noteUpstreamSessionIDs = dataNote{reason: "upstream_session_ids",
		reply: "522 ftpsalg: the server requires TLS session reuse but issued no session ticket (TLS 1.2 session IDs only), which the gateway cannot resume; see the gateway's log.\r\n"}
	noteUpstreamNotResumed = dataNote{reason: "upstream_not_resumed",
		reply: "522 ftpsalg: the server did not accept the gateway's TLS session resumption on the data connection; see the gateway's log.\r\n"}
)

// note records why the server is expected to refuse the data connection.
func (s *session) note(n dataNote) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dataNote = n
}

// relayRun is one relayed data connection.
type relayRun struct {
	s         *session
	clientRaw net.Conn // TCP to the client
	serverRaw net.Conn // TCP to the server
	client    net.Conn // clientRaw, or TLS over it
	server    net.Conn // serverRaw, or TLS over it
	up, down  int64    // plaintext bytes client to server, server to client
	clientTLS tls.ConnectionState
	serverTLS tls.ConnectionState
	protP     bool
	// err and detail say why the relay failed or was refused; they go
	// into the relay's one log line.
	err    error
	detail string
}

// relayData relays one diverted data connection of this session: in is
// the connection the relay listener accepted (the client's in passive
// mode, the server's in active mode), src its initiator and dst its
// announced target.
func (s *session) relayData(ctx context.Context, in net.Conn, e expectation, src, dst netip.AddrPort) {
	mode := e.mode
	start := time.Now()
	m := s.m
	m.RelayActive.Inc()
	defer m.RelayActive.Dec()
	s.mu.Lock()
	protP := s.prot == "P"
	srvTLS, upData, upCache := s.srvTLS, s.upData, s.upCache
	s.mu.Unlock()
	r := &relayRun{s: s, protP: protP}
	log := s.gs.Log.With("data_mode", mode.String(), "src", src.String(), "dst", dst.String(),
		"prot", map[bool]string{false: "C", true: "P"}[protP])
	target := dst
	if e.target.IsValid() && e.target != dst {
		target = e.target
		log = log.With("target", target.String())
	}
	if e.source.IsValid() {
		log = log.With("source", e.source.String())
	}
	result := r.run(ctx, in, mode, src, target, e.source, srvTLS, upData, upCache, log)
	for _, c := range []net.Conn{in, r.clientRaw, r.serverRaw} {
		if c != nil {
			c.Close()
		}
	}
	elapsed := time.Since(start)
	m.RelayConnections.WithLabelValues(result).Inc()
	m.RelayDuration.Observe(elapsed.Seconds())
	s.gs.Relayed(r.up, r.down)
	attrs := []any{"result", result, "bytes_to_server", r.up, "bytes_to_client", r.down,
		"duration", elapsed.String()}
	if protP && r.clientTLS.HandshakeComplete {
		attrs = append(attrs, "client_resumed", r.clientTLS.DidResume,
			"client_tls_version", tls.VersionName(r.clientTLS.Version))
	}
	if protP && r.serverTLS.HandshakeComplete {
		attrs = append(attrs, "upstream_resumed", r.serverTLS.DidResume,
			"upstream_tls_version", tls.VersionName(r.serverTLS.Version))
	}
	if r.detail != "" {
		attrs = append(attrs, "detail", r.detail)
	}
	if r.err != nil {
		attrs = append(attrs, "err", r.err)
	}
	switch result {
	case metrics.RelayOK:
		log.Info("data relayed", attrs...)
	case metrics.RelayClientNotResumed:
		log.Warn("relay refused", attrs...)
	default:
		log.Warn("data relay failed", attrs...)
	}
}

// run makes the onward connection to dst (from source when it is valid),
// the TLS handshakes and the copy, and returns the result label. The
// caller closes the connections.
func (r *relayRun) run(ctx context.Context, in net.Conn, mode ftp.DataMode, src, dst netip.AddrPort, source netip.Addr,
	srvTLS, upData *tls.Config, upCache *sessionCache, log *slog.Logger) string {
	s := r.s
	network := "tcp4"
	if dst.Addr().Is6() {
		network = "tcp6"
	}
	// The onward connection first, at once: in passive mode the server
	// answers the transfer command (150) only once the data connection
	// exists, and clients start TLS only after that answer.
	dctx, cancel := context.WithTimeout(ctx, s.handshakeTimeout())
	var err error
	if mode == ftp.Passive {
		r.clientRaw = in
		var laddr netip.AddrPort
		switch {
		case source.IsValid():
			laddr = netip.AddrPortFrom(source, 0) // the server knows the client by a NAT address
		case s.srv.MITM == nil || s.srv.MITM.UpstreamSource != policy.UpstreamGateway:
			laddr = netip.AddrPortFrom(s.gs.Client.Addr(), 0) // as the control connection
		}
		r.serverRaw, err = s.p.o.Dial(dctx, network, laddr, dst)
	} else {
		// Active: the server connected to the client's announced port
		// (or a gateway port standing for it); the client sees the
		// connection come from the address it knows the server by: the
		// server's own, or the published address.
		r.serverRaw = in
		from := src.Addr()
		if source.IsValid() {
			from = source
		}
		r.clientRaw, err = s.p.o.Dial(dctx, network, netip.AddrPortFrom(from, 0), dst)
	}
	cancel()
	if err != nil {
		r.err = err
		return metrics.RelayUpstreamUnreachable
	}
	// Shutdown ends the relay as it ends control sessions.
	stop := context.AfterFunc(ctx, r.abort)
	defer stop()
	r.client, r.server = r.clientRaw, r.serverRaw
	if r.protP {
		if res := r.handshakes(ctx, srvTLS, upData, upCache, log); res != "" {
			return res
		}
	}
	return r.copy()
}

// handshakes terminates TLS towards the client (the control connection's
// certificate and session tickets, so the client can resume), applies
// require_client_reuse, then resumes the upstream control session towards
// the server. It returns a result label on failure, "" on success.
func (r *relayRun) handshakes(ctx context.Context, srvTLS, upData *tls.Config, upCache *sessionCache, log *slog.Logger) string {
	s, m := r.s, r.s.m
	if srvTLS == nil || upData == nil {
		// PROT P without TLS on the control connection: the server
		// refuses it itself; nothing to terminate.
		r.detail = "PROT P on a session without TLS"
		return metrics.RelayClientTLSFailed
	}
	tc := tls.Server(r.clientRaw, srvTLS)
	hctx, cancel := context.WithTimeout(ctx, s.handshakeTimeout())
	err := tc.HandshakeContext(hctx)
	reason := handshakeReason(err, hctx)
	cancel()
	if err != nil {
		m.TLSHandshakeFails.WithLabelValues("relay_client", reason).Inc()
		r.err, r.detail = err, "client TLS handshake failed: "+reason
		return metrics.RelayClientTLSFailed
	}
	r.clientTLS = tc.ConnectionState()
	m.RelayHandshakes.WithLabelValues("client", strconv.FormatBool(r.clientTLS.DidResume)).Inc()
	if !r.clientTLS.DidResume && s.srv.MITM != nil && s.srv.MITM.TLS.RequireClientReuse {
		// Noted before the server sees the connection close, so that its
		// refusal is recognised as this one.
		s.note(noteClientNotResumed)
		s.gs.Refused("data_not_resumed", "direction", "client", "data_mode", "relay")
		r.detail = "the client did not resume the control connection's TLS session on the data connection (tls.require_client_reuse)"
		r.failUpstream(ctx, upData)
		closeGracefully(tc, r.clientRaw)
		return metrics.RelayClientNotResumed
	}
	hadSession := upCache.has()
	if !hadSession {
		s.note(noteUpstreamSessionIDs)
	}
	uc := tls.Client(r.serverRaw, upData)
	hctx, cancel = context.WithTimeout(ctx, s.handshakeTimeout())
	err = uc.HandshakeContext(hctx)
	reason = handshakeReason(err, hctx)
	cancel()
	if err != nil {
		m.TLSHandshakeFails.WithLabelValues("relay_upstream", reason).Inc()
		r.err, r.detail = err, "upstream TLS handshake failed: "+reason
		return metrics.RelayUpstreamTLSFailed
	}
	r.serverTLS = uc.ConnectionState()
	m.RelayHandshakes.WithLabelValues("upstream", strconv.FormatBool(r.serverTLS.DidResume)).Inc()
	if !r.serverTLS.DidResume {
		cause := "the server did not accept the resumption of the control connection's session"
		if !hadSession {
			cause = "the server issued no session ticket on the control connection (with TLS 1.2 it offers session-ID resumption only, which crypto/tls does not implement); a server that requires session reuse will refuse this connection"
		} else {
			s.note(noteUpstreamNotResumed)
		}
		log.Warn("relay: upstream data connection did not resume the control session", "cause", cause,
			"upstream_tls_version", tls.VersionName(r.serverTLS.Version))
	}
	r.client, r.server = tc, uc
	return ""
}

// failUpstream makes the server's side of a refused data connection fail
// as a transfer, not as a TLS handshake: vsftpd ends the whole session
// when a data connection's TLS handshake fails ("the RFC is quite clear
// that we can just close the control channel"), but answers a transfer
// whose connection is reset with 426 and carries on. So the handshake is
// completed (resuming, as the server requires) and the connection reset.
func (r *relayRun) failUpstream(ctx context.Context, upData *tls.Config) {
	uc := tls.Client(r.serverRaw, upData)
	hctx, cancel := context.WithTimeout(ctx, r.s.handshakeTimeout())
	_ = uc.HandshakeContext(hctx)
	cancel()
	if tc, ok := r.serverRaw.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // close with RST
	}
	r.serverRaw.Close()
}

// closeGracefully ends a refused client data connection as an empty
// transfer: TLS close_notify and FIN, then it waits briefly for the
// client's own close. A client that sees a clean end reads the reply on
// the control connection that says why (ftplib, for one, fails on the
// TLS shutdown otherwise and never shows it).
func closeGracefully(tc *tls.Conn, raw net.Conn) {
	_ = tc.SetDeadline(time.Now().Add(2 * time.Second))
	_ = tc.CloseWrite()
	if cw, ok := raw.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_, _ = io.Copy(io.Discard, tc)
}

// copy relays until both directions have ended, and returns the result.
// A direction that fails closes both connections, which ends the other.
// An FTP data connection carries bytes one way; the other direction only
// sees the close, and a reset there once the data has crossed cleanly
// (a peer that closes without waiting for our close) is not a failure.
func (r *relayRun) copy() string {
	var wg sync.WaitGroup
	var upErr error
	wg.Go(func() {
		if upErr = r.clientToServer(); upErr != nil {
			r.abort()
		}
	})
	downErr := r.serverToClient()
	if downErr != nil {
		r.abort()
	}
	wg.Wait()
	switch {
	case upErr == nil && downErr == nil,
		upErr == nil && r.down == 0 && r.up > 0,   // upload done, the server's close was not clean
		downErr == nil && r.up == 0 && r.down > 0: // download done, the client's close was not clean
		return metrics.RelayOK
	}
	r.err = errors.Join(upErr, downErr)
	return metrics.RelayAborted
}

func (r *relayRun) abort() {
	r.clientRaw.Close()
	r.serverRaw.Close()
}

// clientToServer copies what the client sends (uploads, and the client's
// TLS close) to the server.
func (r *relayRun) clientToServer() error {
	return r.s.p.pipe(r.server, r.serverRaw, r.client, func(n int) {
		r.up += int64(n)
		r.s.m.RelayBytes.WithLabelValues(metrics.DirClientToServer).Add(float64(n))
	})
}

// serverToClient copies what the server sends (downloads, listings) to
// the client.
func (r *relayRun) serverToClient() error {
	return r.s.p.pipe(r.client, r.clientRaw, r.server, func(n int) {
		r.down += int64(n)
		r.s.m.RelayBytes.WithLabelValues(metrics.DirServerToClient).Add(float64(n))
	})
}

// pipe copies src to dst until src ends, then half-closes dst: a TLS
// close_notify (dst is a *tls.Conn) followed by a TCP FIN on dstRaw, so
// that the other direction can still finish (uploads end with the
// client's close; the server's reply comes after). Reads and writes have
// an idle deadline; the write blocks while the receiver does not read, and
// nothing more is read meanwhile (back-pressure). count gets the bytes of
// each write. A clean end of src (EOF, or a TLS close_notify) returns nil.
func (p *Proxy) pipe(dst, dstRaw, src net.Conn, count func(int)) error {
	bp := p.bufs.Get().(*[]byte)
	defer p.bufs.Put(bp)
	buf := *bp
	var deadline time.Time
	for {
		// Move the deadline only every few seconds: it is a timer update.
		if now := time.Now(); deadline.Sub(now) < relayIdleTimeout-5*time.Second {
			deadline = now.Add(relayIdleTimeout)
			_ = src.SetReadDeadline(deadline)
			_ = dst.SetWriteDeadline(deadline)
		}
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
			count(n)
		}
		if rerr != nil {
			if !errors.Is(rerr, io.EOF) {
				return rerr
			}
			// Every byte has been written: a peer that is already gone
			// cannot take the close, and that loses nothing.
			if tc, ok := dst.(*tls.Conn); ok {
				_ = tc.CloseWrite()
			}
			if cw, ok := dstRaw.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
			return nil
		}
	}
}
