package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/certs"
	"github.com/ftpsalg/ftpsalg/alg/ftp"
	"github.com/ftpsalg/ftpsalg/alg/gateway"
	"github.com/ftpsalg/ftpsalg/alg/nat"
	"github.com/ftpsalg/ftpsalg/alg/policy"
	"github.com/ftpsalg/ftpsalg/metrics"
	"github.com/ftpsalg/ftpsalg/nft"
)

// The control loop: one goroutine per direction, lines through the FTP
// core, its decisions applied by the gateway session, the bytes written
// here.

// run sets the session up and starts its directions (started: they end
// the session), or returns why it ended before.
func (s *session) run(ctx context.Context) (reason string, started bool) {
	s.gs.Start(false)
	var laddr netip.AddrPort
	switch {
	case s.gs.Source.IsValid():
		laddr = netip.AddrPortFrom(s.gs.Source, 0) // a masqueraded client: the NAT address
	case s.srv.MITM == nil || s.srv.MITM.UpstreamSource != policy.UpstreamGateway:
		laddr = netip.AddrPortFrom(s.gs.Client.Addr(), 0) // transparent: the server sees the client
	}
	network := "tcp4"
	if s.gs.Upstream.Addr().Is6() {
		network = "tcp6"
	}
	dctx, cancel := context.WithTimeout(ctx, s.handshakeTimeout())
	up, err := s.p.o.Dial(dctx, network, laddr, s.gs.Upstream)
	cancel()
	if err != nil {
		s.m.MITMConnections.WithLabelValues("upstream_failed").Inc()
		s.gs.Log.Warn("upstream connection failed", "err", err)
		if s.implicit() && s.terminatesTLS() {
			// The client speaks TLS first: nothing proves a name, so its
			// handshake is aborted with an alert, no certificate shown.
			_ = s.upgrade(ctx, nil, false)
		} else {
			s.writeClient("421 ftpsalg: the server cannot be reached.\r\n")
		}
		return "upstream_unreachable", false
	}
	s.rawU, s.uconn = up, up
	leg := nat.Leg{Client: s.gs.Client.Addr(), Server: s.gs.Upstream.Addr(), Upstream: addrPort(up.LocalAddr()).Addr()}
	if s.gs.Source.IsValid() {
		leg.Upstream = s.gs.Source // as bound (a test dialer may not bind)
	}
	if s.gs.Upstream != s.gs.Orig {
		leg.Public = s.gs.Orig.Addr()
	}
	s.followMasquerade(ctx, up, &leg)
	s.gs.SetLeg(leg)
	s.m.MITMConnections.WithLabelValues("accepted").Inc()
	s.cr = newLineReader(s.cconn)
	s.ur = newLineReader(s.uconn)
	opaque := false
	if s.implicit() {
		if s.terminatesTLS() {
			if err := s.upgrade(ctx, nil, true); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					// No ClientHello before the first command's deadline.
					s.gs.Refused("first_command_timeout", "direction", "client")
					return "first_command_timeout", false
				}
				return "tls_failed", false
			}
			s.core.StartImplicitTLS()
		} else {
			opaque = true
			s.opaqueNotice("implicit TLS")
		}
	}
	// The session ends with the Proxy's context: closed, its directions
	// (parked or not) end, and the end is accounted (park.go).
	s.stop = context.AfterFunc(ctx, s.closeAll)
	s.p.wg.Add(1)
	if opaque {
		s.pair(func() string { return s.opaqueCopy(s.uconn, s.cr, "client_closed") },
			func() string { return s.opaqueCopy(s.cconn, s.ur, "server_closed") })
	} else {
		s.pair(func() string { return s.clientToServer(ctx) }, func() string { return s.serverToClient(ctx) })
	}
	return "", true
}

// precheck applies the proxy's own per-server rules to a client command
// before the FTP core sees it. It returns the reply to send instead of
// forwarding, or "".
func (s *session) precheck(cmd ftp.Command) (reply, reason string) {
	mitm := s.srv.MITM
	switch cmd.Verb {
	case "USER", "PASS", "ACCT":
		if mitm != nil && mitm.RequireTLS && !s.tlsOn {
			return "530 ftpsalg: this server requires TLS: send AUTH TLS first.\r\n", "tls_required"
		}
		if cmd.Verb == "USER" && mitm != nil && !mitm.AllowAnonymous {
			if u := strings.ToLower(strings.TrimSpace(cmd.Arg)); u == "anonymous" || u == "ftp" {
				return "530 ftpsalg: anonymous login is not allowed.\r\n", "anonymous"
			}
		}
	case "AUTH":
		if s.tlsOn {
			return "503 ftpsalg: TLS is already active.\r\n", "bad_state"
		}
	}
	return "", ""
}

// clientToServer relays commands. It alone writes to the server, and it
// performs the TLS upgrade after AUTH while serverToClient waits. It
// returns "" when it parks (park.go): it resumes, on another goroutine,
// where it stopped.
func (s *session) clientToServer(ctx context.Context) string {
	for {
		first := !s.cStarted
		if !s.cWaiting {
			// A new line: the idle timeout runs from the last complete
			// command; the first command's deadline was set at accept
			// (handle).
			s.cWaiting = true
			if d := s.gs.Policy.Limits.IdleTimeout; !first && d > 0 {
				s.cDeadline = time.Now().Add(d)
			} else if !first {
				s.cDeadline = time.Time{}
			}
		}
		if s.quiet(s.dirs[0], s.rawC, s.cconn, &s.cr, s.cDeadline) {
			return ""
		}
		line, err := readLine(s.cr, s.maxLine())
		s.cWaiting = false
		if err != nil {
			switch {
			case errors.Is(err, errLineTooLong):
				s.gs.Refused(string(ftp.ReasonLineTooLong), "direction", "client")
				s.writeClient("500 ftpsalg: command line too long.\r\n")
				return "line_too_long"
			case errors.Is(err, os.ErrDeadlineExceeded) && first:
				return s.timedOut("first_command_timeout", "421 ftpsalg: no command in time; closing the connection.\r\n")
			case errors.Is(err, os.ErrDeadlineExceeded):
				return s.timedOut("idle_timeout", "421 ftpsalg: idle for too long; closing the connection.\r\n")
			}
			return "client_closed"
		}
		s.cStarted = true
		text := strings.TrimRight(string(line), "\r\n")
		cmd, perr := ftp.ParseCommand(text)
		if perr == nil {
			if reply, reason := s.precheck(cmd); reply != "" {
				s.gs.Refused(reason, "direction", "client", "verb", cmd.Verb)
				if err := s.writeClient(reply); err != nil {
					return "client_closed"
				}
				continue
			}
		}
		s.mu.Lock()
		ds := s.core.Feed(ftp.FromClient, line)
		s.mu.Unlock()
		forward := true
		for _, d := range ds {
			switch d.Action {
			case ftp.ActionCommand:
				s.gs.Observe(d)
				if d.Verb == "PROT" {
					s.mu.Lock()
					s.pendingProt = strings.ToUpper(strings.TrimSpace(d.Arg))
					s.mu.Unlock()
				}
				if s.gs.NeedsActiveTranslation(d) {
					// The server knows the client by another address:
					// the core rewrites the announcement to a gateway
					// port reserved for it.
					rw, reply := s.gs.TranslateActive(d)
					if reply != "" {
						forward = false
						if err := s.writeClient(reply); err != nil {
							return "client_closed"
						}
						continue
					}
					line = rw.Replacement
				}
			case ftp.ActionRefuse:
				forward = false
				s.gs.RefusedDecision(d)
				if err := s.writeClient(d.Reply); err != nil {
					return "client_closed"
				}
			}
		}
		if !forward {
			continue
		}
		if err := s.writeUp(line); err != nil {
			return "server_closed"
		}
		if perr == nil && (cmd.Verb == "AUTH" || cmd.Verb == "CCC") {
			// Read nothing more from the client until the server has
			// answered: after a 234 the client's next bytes are TLS,
			// after CCC's 200 they are a close_notify, then clear text.
			select {
			case r := <-s.transition:
				var err error
				switch {
				case r.verb == "AUTH" && r.code == 234 && !s.terminatesTLS():
					// A translated inspect session cannot read TLS:
					// from here on it relays bytes.
					s.opaqueNotice("AUTH TLS")
					s.resume <- errOpaque
					return s.opaqueCopy(s.uconn, s.cr, "client_closed")
				case r.verb == "AUTH" && r.code == 234:
					// The upstream leg was verified before the 234
					// was relayed (serverToClient).
					err = s.upgrade(ctx, s.upPending, true)
				case r.verb == "CCC" && r.code == 200:
					err = s.downgrade()
				default:
					continue
				}
				s.resume <- err
				if err != nil {
					return "tls_failed"
				}
			case <-ctx.Done():
				return "shutdown"
			case <-s.done:
				return "client_closed" // the server's direction ended the session
			}
		}
	}
}

// maxHeld bounds the held lines of one multi-line announcement.
const maxHeld = 8 << 10

// isAnnouncementStart reports whether line opens a multi-line 227, 228 or
// 229 reply ("227-...").
func isAnnouncementStart(line []byte) bool {
	return len(line) >= 4 && line[3] == '-' && line[0] == '2' && line[1] == '2' && line[2] >= '7' && line[2] <= '9'
}

// timedOut refuses a client that sent no complete command in time: the
// reply says why, the refusal is counted and logged.
func (s *session) timedOut(reason, reply string) string {
	s.gs.Refused(reason, "direction", "client")
	s.writeClient(reply)
	return reason
}

// serverToClient relays replies, committing pinholes before the reply that
// announces them leaves. It returns "" when it parks (park.go).
func (s *session) serverToClient(ctx context.Context) string {
	// s.held are the lines of a multi-line 227/228/229 reply of a
	// translated session, held back until its final line: an address on
	// a non-final line is the server's own, and the client must not see
	// it (ftp.RewriteAnnouncement rewrites only a final line; the reply
	// is then refused whole).
	for {
		if s.quiet(s.dirs[1], s.rawU, s.uconn, &s.ur, time.Time{}) {
			return ""
		}
		line, err := readLine(s.ur, s.maxLine())
		if err != nil {
			if errors.Is(err, errLineTooLong) {
				s.gs.Refused(string(ftp.ReasonLineTooLong), "direction", "server")
				s.writeClient("421 ftpsalg: the server sent an over-long line.\r\n")
				return "line_too_long"
			}
			return "server_closed"
		}
		if !s.holding && isAnnouncementStart(line) && s.gs.Leg().Published() {
			s.holding = true
		}
		s.mu.Lock()
		ds := s.core.Feed(ftp.FromServer, line)
		s.mu.Unlock()
		forward := true
		var final *finalReply
		ended := false
		for _, d := range ds {
			if d.Action == ftp.ActionReply || d.Action == ftp.ActionOpenPinhole || d.Action == ftp.ActionRefuse {
				ended = true
			}
		}
		if s.holding && !ended {
			if len(s.held)+len(line) <= maxHeld {
				s.held = append(s.held, line...)
			} else {
				s.overflow = true
			}
			continue
		}
		for _, d := range ds {
			switch d.Action {
			case ftp.ActionOpenPinhole:
				out, err := s.openPinhole(ctx, d)
				if err != nil {
					forward = false
					s.writeClient("425 ftpsalg: cannot open the data connection.\r\n")
				} else if out != nil {
					line = out
				}
			case ftp.ActionRefuse:
				forward = false
				s.gs.RefusedDecision(d)
				if err := s.writeClient(d.Reply); err != nil {
					return "client_closed"
				}
			case ftp.ActionReply:
				s.gs.Observe(d)
				if r := s.reply(d); r != "" {
					line = []byte(r)
				}
				if d.Verb == "AUTH" || d.Verb == "CCC" {
					final = &finalReply{verb: d.Verb, code: d.Code}
				}
			default:
				s.gs.Observe(d)
			}
		}
		if final != nil && final.verb == "AUTH" && final.code == 234 && s.terminatesTLS() {
			// Verify the server before the client is told to start
			// TLS: a client must never get a certificate for a server
			// the gateway could not verify (RFC 2228 431: a security
			// resource is unavailable).
			up, err := s.upstreamHandshake(ctx, "")
			if errors.Is(err, errClientCertRequired) {
				s.gs.Refused("client_certificate_required", "direction", "server", "verb", "AUTH",
					"detail", errClientCertRequired.Error())
				s.writeClient("431 ftpsalg: the server requires a client certificate, which this gateway cannot forward; see the gateway's log.\r\n")
				s.transition <- finalReply{verb: "AUTH", code: 431}
				return "tls_failed"
			}
			if err != nil {
				s.gs.Refused("upstream_unverified", "direction", "server", "verb", "AUTH")
				why := "its TLS handshake failed"
				var verr *tls.CertificateVerificationError
				var uerr *certs.UntrustedError
				if errors.As(err, &verr) || errors.As(err, &uerr) {
					why = "its TLS certificate could not be verified"
				}
				s.writeClient("431 ftpsalg: the server cannot be used securely: " + why + "; see the gateway's log.\r\n")
				s.transition <- finalReply{verb: "AUTH", code: 431}
				return "tls_failed"
			}
			s.uconn, s.ur = up, newLineReader(up)
			s.upPending = up
		}
		if s.holding {
			if s.overflow && forward {
				forward = false
				s.gs.Refused("reply_too_long", "direction", "server", "detail", "a multi-line announcement longer than the gateway holds")
				s.writeClient("425 ftpsalg: cannot open the data connection.\r\n")
			}
			if forward {
				line = append(s.held, line...)
			}
			s.held, s.holding, s.overflow = nil, false, false
		}
		if forward {
			if err := s.writeClient(string(line)); err != nil {
				return "client_closed"
			}
		}
		if final != nil {
			s.transition <- *final
			if final.verb == "AUTH" && final.code == 234 || final.verb == "CCC" && final.code == 200 {
				select {
				case err := <-s.resume:
					if errors.Is(err, errOpaque) {
						return s.opaqueCopy(s.cconn, s.ur, "server_closed")
					}
					if err != nil {
						return "tls_failed"
					}
				case <-ctx.Done():
					return "shutdown"
				case <-s.done:
					return "server_closed" // the client's direction ended the session
				}
			}
		}
	}
}

// reply records the protection
// level and recognises a server refusing a data connection that did not
// resume the control connection's TLS session (vsftpd: "522 SSL
// connection failed: session reuse required"; proftpd: 425 with a reuse
// message). It returns the line to send the client instead of the
// server's, or "": with data: relay, a refusal the relay knows the cause
// of (dataNote) is replaced by a reply that names it.
func (s *session) reply(d ftp.Decision) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case d.Verb == "PROT" && d.Code/100 == 2:
		s.prot = s.pendingProt
	case d.Verb == "REIN" && d.Code/100 == 2:
		s.prot = "C"
	}
	var note dataNote
	if ftp.UsesDataConnection(d.Verb) && d.Code >= 200 {
		// The transfer is over: its note, if any, is used up.
		note, s.dataNote = s.dataNote, dataNote{}
	}
	refused := d.Code >= 400 && note.reply != ""
	low := strings.ToLower(d.Text)
	reuse := (d.Code == 522 || d.Code == 425 || d.Code == 450) && strings.Contains(low, "reuse")
	relay := s.srv.MITM != nil && s.srv.MITM.Data == policy.DataRelay
	switch {
	case refused:
		if note.reason != metrics.RelayClientNotResumed {
			s.m.DataRefused.WithLabelValues(note.reason).Inc()
		}
		s.gs.Log.Warn("data connection refused", "reason", note.reason, "code", d.Code, "text", d.Text,
			"reply", strings.TrimRight(note.reply, "\r\n"))
		return note.reply
	case reuse && relay:
		s.m.DataRefused.WithLabelValues("tls_session_reuse").Inc()
		s.gs.Log.Warn("server refused a relayed data connection: it requires TLS session reuse",
			"code", d.Code, "text", d.Text)
	case reuse:
		s.m.DataRefused.WithLabelValues("tls_session_reuse").Inc()
		s.gs.Log.Warn("server refused a data connection: it requires TLS session reuse",
			"code", d.Code, "text", d.Text,
			"hint", "set data: relay for this server (docs/relay.md), or require_ssl_reuse=NO on the server")
	}
	return ""
}

// openPinhole has the gateway commit the admission the core asks for —
// a relay element for a server with data: relay, its expectation
// registered first, since the connection may arrive as soon as the element
// is committed — and returns the line to send the client instead of the
// server's (a translated announcement), or nil.
func (s *session) openPinhole(ctx context.Context, d ftp.Decision) ([]byte, error) {
	// Only TLS data connections need the relay (it resumes the control
	// connection's session, as servers that require reuse demand); clear
	// ones (PROT C) go through a pinhole the kernel forwards, at the
	// speed of routing. The protection level is the one in force when the
	// connection is announced (RFC 4217: PROT precedes the transfer).
	s.mu.Lock()
	protP := s.prot == "P"
	s.mu.Unlock()
	relay := s.srv.MITM != nil && s.srv.MITM.Data == policy.DataRelay && protP
	var op gateway.Opened
	var err error
	if relay {
		// The gateway names the element's key (the tuple the initiator
		// uses, translated behind NAT) and where the relay connects.
		var k relayKey
		op, err = s.gs.OpenRelay(ctx, d, func(h nft.Pinhole, plan gateway.RelayPlan) {
			k = relayKey{src: h.Src.Unmap(), dst: netip.AddrPortFrom(h.Dst.Unmap(), h.DstPort)}
			s.p.expect(k, expectation{s: s, mode: d.Pinhole.Mode, deadline: s.p.o.Now().Add(s.gs.Policy.Pinholes.Timeout),
				target: unmapAP(plan.Target), source: plan.Source.Unmap()})
			s.mu.Lock()
			s.relayed = append(s.relayed, k)
			s.mu.Unlock()
		})
		if err != nil && k.dst.IsValid() {
			s.p.forget(s, k)
		}
	} else {
		op, err = s.gs.OpenPinhole(ctx, d, false)
	}
	if err != nil {
		return nil, err
	}
	if op.Rewrite != nil {
		return op.Rewrite.Replacement, nil
	}
	return nil, nil
}

func unmapAP(ap netip.AddrPort) netip.AddrPort {
	if !ap.IsValid() {
		return ap
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// errOpaque tells serverToClient that a translated inspect session has
// switched to relaying bytes (TLS it does not terminate).
var errOpaque = errors.New("control connection is now opaque")

// opaqueNotice logs, once per session, that the control connection turned
// into TLS that this inspect-mode session cannot read.
func (s *session) opaqueNotice(what string) {
	s.m.NATOpaque.Inc()
	s.gs.Log.Warn("control connection encrypted: relaying it unread; its data connections cannot be opened or translated",
		"cause", what, "hint", "use mode: mitm for FTPS servers behind NAT (docs/nat.md)")
}

// opaqueCopy relays bytes from src to dst until src ends, then half-closes
// dst, and returns reason.
func (s *session) opaqueCopy(dst net.Conn, src *bufio.Reader, reason string) string {
	_, _ = io.Copy(dst, src)
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	return reason
}
