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
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/certs"
	"github.com/ftpsalg/ftpsalg/alg/ftp"
	"github.com/ftpsalg/ftpsalg/alg/nat"
	"github.com/ftpsalg/ftpsalg/alg/policy"
	"github.com/ftpsalg/ftpsalg/metrics"
	"github.com/ftpsalg/ftpsalg/nft"
)

// session is one diverted control connection and its upstream twin.
type session struct {
	p      *Proxy
	pol    *policy.Config
	srv    *policy.Server
	client netip.AddrPort // the client, as it connected
	orig   netip.AddrPort // the server address the client connected to
	// upstream is where the upstream connection goes: orig, or the
	// server's own address when orig is one of its public addresses.
	upstream netip.AddrPort
	// source is the upstream connection's local address when the policy
	// fixes it (a masqueraded client's NAT address); invalid otherwise.
	source netip.Addr
	// natPorts is the range active translations reserve gateway ports in.
	natPorts nat.Range
	leg      nat.Leg // the session's addresses, once the upstream is connected
	mode     string  // metrics.ModeMITM, or metrics.ModeInspect for translated inspect sessions
	log      *slog.Logger
	m        *metrics.Metrics

	rawC, rawU net.Conn      // TCP connections (closed at the end)
	crec, urec *recordConn   // what the TLS layers read from, per leg
	cconn      net.Conn      // client leg: rawC, or TLS over it
	uconn      net.Conn      // upstream leg
	cr, ur     *bufio.Reader // line readers over cconn and uconn

	cw sync.Mutex // serialises writes to the client

	mu       sync.Mutex // guards core, audit, pinholes and the fields below
	core     *ftp.Session
	tlsOn    bool
	audit    audit
	pinholes []tracked
	reserved []nat.Reservation // gateway ports this session holds (NAT)
	active   *activeNAT        // the last translated PORT/EPRT/LPRT, until its reply

	// Data relay (data: relay). prot is the protection level in force
	// (RFC 4217 PROT: "C" or "P"), pendingProt the one last asked for.
	prot, pendingProt string
	// srvTLS is the client-facing TLS config of the control connection,
	// reused for the relay's data connections: same certificate (leaf),
	// same session ticket keys, so the client can resume its control
	// session on them. upData is the upstream config for data
	// connections, resuming the upstream control session from upCache.
	srvTLS   *tls.Config
	leaf     *tls.Certificate
	upData   *tls.Config
	upCache  *sessionCache
	relayed  []relayKey // expectations registered, for cleanup
	dataNote dataNote   // why the server will refuse the current data connection

	transition chan finalReply // s2c → c2s: the final reply to AUTH or CCC
	resume     chan error      // c2s → s2c: the legs switched (or failed)
}

// finalReply is the server's final reply to a command that switches the
// legs between clear text and TLS.
type finalReply struct {
	verb string
	code int
}

// activeNAT is one translated active announcement: the client listens on
// from, the server was told to connect to to.
type activeNAT struct {
	from, to netip.AddrPort
}

type tracked struct {
	hole     nft.Pinhole
	mode     ftp.DataMode
	deadline time.Time
}

// audit is what auditors ask about a control session.
type audit struct {
	start      time.Time
	sni        string
	tlsStarted time.Time
	clientTLS  tls.ConnectionState
	upTLS      tls.ConnectionState
	user       string
	transfers  int
	opened     int
	used       int
	refusals   int
	pending    []pendingTransfer
	// relayed data connections and their plaintext bytes.
	relayed                int
	relayedUp, relayedDown int64
}

type pendingTransfer struct{ verb, path string }

// transferVerbs are logged with their path and final reply.
var transferVerbs = []string{"RETR", "STOR", "STOU", "APPE", "LIST", "NLST", "MLSD", "DELE", "RNFR", "RNTO", "MKD", "RMD"}

// dataVerbs use a data connection.
var dataVerbs = []string{"RETR", "STOR", "STOU", "APPE", "LIST", "NLST", "MLSD"}

func (p *Proxy) handle(ctx context.Context, c net.Conn) {
	pol := p.pol.Load()
	client, orig := addrPort(c.RemoteAddr()), addrPort(c.LocalAddr())
	log := p.o.Log.With("client", client.String(), "server", orig.String())
	m := p.o.Metrics
	srv, ok := pol.ServerFor(orig.Addr(), orig.Port())
	var upstream netip.AddrPort
	var source netip.Addr
	natPorts := nat.DefaultActiveRange
	if ok {
		upstream = orig
		if priv, pub := srv.Private(orig.Addr()); pub {
			upstream = netip.AddrPortFrom(priv, orig.Port())
		}
		if cn, masq := pol.ClientNAT(client.Addr()); masq {
			if a, fam := cn.Address(client.Addr()); fam {
				source, natPorts = a, nat.Range{Min: cn.PortMin, Max: cn.PortMax}
			}
		}
	}
	// Inspect-mode servers come here only when the session needs
	// translating: the packet path cannot resize payloads (alg/README.md).
	translated := upstream != orig || source.IsValid()
	switch {
	case !ok || (srv.Mode != policy.ModeMITM && !translated):
		m.MITMConnections.WithLabelValues("refused").Inc()
		m.Refusals.WithLabelValues("not_in_policy").Inc()
		log.Warn("connection refused", "reason", "not_in_policy")
		c.Close()
		return
	case !srv.ClientAllowed(client.Addr()):
		m.MITMConnections.WithLabelValues("refused").Inc()
		m.Refusals.WithLabelValues("client_not_allowed").Inc()
		log.Warn("connection refused", "reason", "client_not_allowed", "server_name", srv.Name)
		c.Close()
		return
	}
	mode := metrics.ModeMITM
	if srv.Mode != policy.ModeMITM {
		mode = metrics.ModeInspect
	}
	if upstream != orig {
		log = log.With("upstream", upstream.String())
	}
	s := &session{p: p, pol: pol, srv: srv, client: client, orig: orig, upstream: upstream, source: source,
		natPorts: natPorts, mode: mode, m: m,
		log: log.With("server_name", srv.Name), rawC: c, cconn: c, prot: "C",
		transition: make(chan finalReply, 1), resume: make(chan error, 1)}
	s.core = ftp.NewSession(ftp.Config{
		Client: client, Server: upstream,
		PassiveMin: srv.PassiveMin, PassiveMax: srv.PassiveMax,
		AllowActive: srv.ActiveMode, AllowThirdParty: srv.ThirdParty,
		MaxLine: pol.Limits.MaxLine, TransportDecrypts: true, InjectsReplies: true,
	})
	s.audit.start = p.o.Now()
	defer p.register(s)() // status.go
	p.active.Add(1)
	m.SessionsActive.WithLabelValues(mode).Inc()
	m.SessionsTotal.WithLabelValues(mode).Inc()
	defer func() {
		p.active.Add(-1)
		m.SessionsActive.WithLabelValues(mode).Dec()
	}()
	reason := s.run(ctx)
	s.closeAll() // whatever path run took, both legs end with the session
	s.finish(reason)
}

// terminatesTLS reports whether the session terminates TLS (mitm mode).
// A translated inspect session relays TLS untouched, as bytes.
func (s *session) terminatesTLS() bool { return s.srv.Mode == policy.ModeMITM }

func (s *session) implicit() bool { return slices.Contains(s.srv.ImplicitTLSPorts, s.orig.Port()) }

func (s *session) maxLine() int {
	if s.pol.Limits.MaxLine > 0 {
		return s.pol.Limits.MaxLine
	}
	return ftp.DefaultMaxLine
}

// run relays the session and returns why it ended.
func (s *session) run(ctx context.Context) string {
	s.log.Info("session start", "mode", s.mode, "implicit_tls", s.implicit())
	var laddr netip.AddrPort
	switch {
	case s.source.IsValid():
		laddr = netip.AddrPortFrom(s.source, 0) // a masqueraded client: the NAT address
	case s.srv.MITM == nil || s.srv.MITM.UpstreamSource != policy.UpstreamGateway:
		laddr = netip.AddrPortFrom(s.client.Addr(), 0) // transparent: the server sees the client
	}
	network := "tcp4"
	if s.upstream.Addr().Is6() {
		network = "tcp6"
	}
	dctx, cancel := context.WithTimeout(ctx, s.handshakeTimeout())
	up, err := s.p.o.Dial(dctx, network, laddr, s.upstream)
	cancel()
	if err != nil {
		s.m.MITMConnections.WithLabelValues("upstream_failed").Inc()
		s.log.Warn("upstream connection failed", "err", err)
		if s.implicit() && s.terminatesTLS() {
			// The client speaks TLS first: finish its handshake with a
			// certificate for the name it asked, then answer 421.
			if terr := s.upgrade(ctx, false); terr == nil {
				s.writeClient("421 ftpsalg: the server cannot be reached.\r\n")
			}
		} else {
			s.writeClient("421 ftpsalg: the server cannot be reached.\r\n")
		}
		return "upstream_unreachable"
	}
	s.rawU, s.uconn = up, up
	s.leg = nat.Leg{Client: s.client.Addr(), Server: s.upstream.Addr(), Upstream: addrPort(up.LocalAddr()).Addr()}
	if s.source.IsValid() {
		s.leg.Upstream = s.source // as bound (a test dialer may not bind)
	}
	if s.upstream != s.orig {
		s.leg.Public = s.orig.Addr()
	}
	s.m.MITMConnections.WithLabelValues("accepted").Inc()
	s.cr = bufio.NewReaderSize(s.cconn, s.maxLine())
	s.ur = bufio.NewReaderSize(s.uconn, s.maxLine())
	opaque := false
	if s.implicit() {
		if s.terminatesTLS() {
			if err := s.upgrade(ctx, true); err != nil {
				return "tls_failed"
			}
			s.core.StartImplicitTLS()
		} else {
			opaque = true
			s.opaqueNotice("implicit TLS")
		}
	}
	stop := context.AfterFunc(ctx, s.closeAll)
	defer stop()
	errs := make(chan string, 2)
	if opaque {
		go func() { errs <- s.opaqueCopy(s.uconn, s.cr, "client_closed") }()
		go func() { errs <- s.opaqueCopy(s.cconn, s.ur, "server_closed") }()
	} else {
		go func() { errs <- s.clientToServer(ctx) }()
		go func() { errs <- s.serverToClient(ctx) }()
	}
	reason := <-errs
	pending := 1
	if reason == "client_closed" {
		// Half-close: the server may still have replies in flight that
		// explain the end (a refused data connection, say). Let them be
		// read, briefly, before tearing down.
		s.closeUpstreamWrite()
		t := time.NewTimer(2 * time.Second)
		select {
		case <-errs:
			pending = 0
		case <-t.C:
		}
		t.Stop()
	}
	s.closeAll()
	if pending > 0 {
		<-errs
	}
	return reason
}

// closeUpstreamWrite sends the server end-of-stream (TLS close_notify
// first when the leg is TLS) while leaving its replies readable.
func (s *session) closeUpstreamWrite() {
	type closeWriter interface{ CloseWrite() error }
	if cw, ok := s.uconn.(closeWriter); ok {
		_ = cw.CloseWrite()
	}
	if s.uconn != s.rawU {
		if cw, ok := s.rawU.(closeWriter); ok {
			_ = cw.CloseWrite()
		}
	}
}

func (s *session) closeAll() {
	s.rawC.Close()
	if s.rawU != nil {
		s.rawU.Close()
	}
}

func (s *session) handshakeTimeout() time.Duration {
	if s.srv.MITM != nil && s.srv.MITM.TLS.HandshakeTimeout > 0 {
		return s.srv.MITM.TLS.HandshakeTimeout
	}
	return 10 * time.Second
}

func (s *session) writeClient(line string) error {
	s.cw.Lock()
	defer s.cw.Unlock()
	_ = s.cconn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	_, err := io.WriteString(s.cconn, line)
	return err
}

func (s *session) writeUp(line []byte) error {
	_ = s.uconn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	_, err := s.uconn.Write(line)
	return err
}

var errLineTooLong = errors.New("line too long")

// readLine reads one control line, terminator included, bounded by the
// reader's size.
func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return nil, errLineTooLong
	}
	if err != nil {
		return nil, err
	}
	return slices.Clone(line), nil
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
// performs the TLS upgrade after AUTH while serverToClient waits.
func (s *session) clientToServer(ctx context.Context) string {
	for {
		line, err := readLine(s.cr)
		if err != nil {
			if errors.Is(err, errLineTooLong) {
				s.m.Refusals.WithLabelValues(string(ftp.ReasonLineTooLong)).Inc()
				s.log.Warn("refused", "direction", "client", "reason", string(ftp.ReasonLineTooLong))
				s.writeClient("500 ftpsalg: command line too long.\r\n")
				return "line_too_long"
			}
			return "client_closed"
		}
		text := strings.TrimRight(string(line), "\r\n")
		cmd, perr := ftp.ParseCommand(text)
		if perr == nil {
			if reply, reason := s.precheck(cmd); reply != "" {
				s.refused(reason, "direction", "client", "verb", cmd.Verb)
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
				s.m.Commands.WithLabelValues(metrics.VerbLabel(d.Verb)).Inc()
				s.mu.Lock()
				if d.Verb == "USER" {
					s.audit.user = d.Arg
				}
				if d.Verb == "PROT" {
					s.pendingProt = strings.ToUpper(strings.TrimSpace(d.Arg))
				}
				if slices.Contains(transferVerbs, d.Verb) {
					s.audit.pending = append(s.audit.pending, pendingTransfer{verb: d.Verb, path: d.Arg})
				}
				s.mu.Unlock()
			case ftp.ActionRefuse:
				forward = false
				s.refused(string(d.Reason), "direction", "client", "verb", d.Verb, "detail", d.Detail)
				if err := s.writeClient(d.Reply); err != nil {
					return "client_closed"
				}
			}
		}
		if !forward {
			continue
		}
		if perr == nil && isActiveVerb(cmd.Verb) && s.leg.ClientTranslated() {
			out, reply := s.translateActive(cmd)
			if reply != "" {
				if err := s.writeClient(reply); err != nil {
					return "client_closed"
				}
				continue
			}
			line = []byte(out)
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
					err = s.upgrade(ctx, true)
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
			}
		}
	}
}

// serverToClient relays replies, committing pinholes before the reply that
// announces them leaves.
func (s *session) serverToClient(ctx context.Context) string {
	for {
		line, err := readLine(s.ur)
		if err != nil {
			if errors.Is(err, errLineTooLong) {
				s.m.Refusals.WithLabelValues(string(ftp.ReasonLineTooLong)).Inc()
				s.log.Warn("refused", "direction", "server", "reason", string(ftp.ReasonLineTooLong))
				s.writeClient("421 ftpsalg: the server sent an over-long line.\r\n")
				return "line_too_long"
			}
			return "server_closed"
		}
		s.mu.Lock()
		ds := s.core.Feed(ftp.FromServer, line)
		s.mu.Unlock()
		forward := true
		var final *finalReply
		for _, d := range ds {
			switch d.Action {
			case ftp.ActionOpenPinhole:
				out, err := s.openPinhole(ctx, d)
				if err != nil {
					forward = false
					s.writeClient("425 ftpsalg: cannot open the data connection.\r\n")
				} else if out != "" {
					line = []byte(out)
				}
			case ftp.ActionRefuse:
				forward = false
				s.refused(string(d.Reason), "direction", "server", "verb", d.Verb, "code", d.Code, "detail", d.Detail)
				if err := s.writeClient(d.Reply); err != nil {
					return "client_closed"
				}
			case ftp.ActionReply:
				s.m.Replies.WithLabelValues(metrics.ReplyClassLabel(d.Code)).Inc()
				if r := s.reply(d); r != "" {
					line = []byte(r)
				}
				if d.Verb == "AUTH" || d.Verb == "CCC" {
					final = &finalReply{verb: d.Verb, code: d.Code}
				}
			}
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
				}
			}
		}
	}
}

// refused counts, audits and logs one refusal; reason is a bounded label.
func (s *session) refused(reason string, attrs ...any) {
	s.m.Refusals.WithLabelValues(reason).Inc()
	s.mu.Lock()
	s.audit.refusals++
	s.mu.Unlock()
	s.log.Warn("refused", append([]any{"reason", reason}, attrs...)...)
}

// reply records final replies of transfer commands and the protection
// level, and recognises a server refusing a data connection that did not
// resume the control connection's TLS session (vsftpd: "522 SSL
// connection failed: session reuse required"; proftpd: 425 with a reuse
// message). It returns the line to send the client instead of the
// server's, or "": with data: relay, a refusal the relay knows the cause
// of (dataNote) is replaced by a reply that names it.
func (s *session) reply(d ftp.Decision) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.audit.pending) > 0 && s.audit.pending[0].verb == d.Verb && d.Code >= 200 {
		t := s.audit.pending[0]
		s.audit.pending = s.audit.pending[1:]
		s.audit.transfers++
		s.log.Info("transfer", "verb", t.verb, "path", t.path, "code", d.Code, "user", s.audit.user)
	}
	switch {
	case d.Verb == "PROT" && d.Code/100 == 2:
		s.prot = s.pendingProt
	case d.Verb == "REIN" && d.Code/100 == 2:
		s.prot = "C"
	}
	var note dataNote
	if slices.Contains(dataVerbs, d.Verb) && d.Code >= 200 {
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
		s.log.Warn("data connection refused", "reason", note.reason, "code", d.Code, "text", d.Text,
			"reply", strings.TrimRight(note.reply, "\r\n"))
		return note.reply
	case reuse && relay:
		s.m.DataRefused.WithLabelValues("tls_session_reuse").Inc()
		s.log.Warn("server refused a relayed data connection: it requires TLS session reuse",
			"code", d.Code, "text", d.Text)
	case reuse:
		s.m.DataRefused.WithLabelValues("tls_session_reuse").Inc()
		s.log.Warn("server refused a data connection: it requires TLS session reuse",
			"code", d.Code, "text", d.Text,
			"hint", "set data: relay for this server (docs/relay.md), or require_ssl_reuse=NO on the server")
	}
	return ""
}

// openPinhole commits the pinhole the core asks for, translated where the
// session crosses a NAT, and returns the line to send the client instead
// of the server's (a moved passive announcement), or "".
func (s *session) openPinhole(ctx context.Context, d ftp.Decision) (string, error) {
	ph := d.Pinhole
	h := nft.Pinhole{Src: ph.Src, Dst: ph.Dst, DstPort: ph.DstPort, Timeout: s.pol.Pinholes.Timeout}
	var k relayKey
	var out string
	var reserved nat.Reservation
	translation := []any{}
	switch {
	case s.srv.MITM != nil && s.srv.MITM.Data == policy.DataRelay:
		// The expectation first: the connection may arrive as soon as
		// the element is committed.
		h.Relay = true
		k = relayKey{src: ph.Src.Unmap(), dst: netip.AddrPortFrom(ph.Dst.Unmap(), ph.DstPort)}
		s.p.expect(k, expectation{s: s, mode: ph.Mode, deadline: s.p.o.Now().Add(h.Timeout)})
		s.mu.Lock()
		s.relayed = append(s.relayed, k)
		s.mu.Unlock()
	case ph.Mode == ftp.Passive:
		if s.leg.Published() && ph.Dst.Unmap() == s.leg.Server.Unmap() {
			// Published server: the client connects to the public
			// address, on the announced port if it is free there.
			r := nat.Range{Min: s.srv.PublicPortMin, Max: s.srv.PublicPortMax}
			target := netip.AddrPortFrom(ph.Dst, ph.DstPort)
			// The server's own port first, even outside public_ports
			// (which says where to go when it is taken).
			res, moved, err := s.p.ports.Reserve(ph.Src, s.leg.Public, ph.DstPort, target,
				nat.Range{Min: ph.DstPort, Max: ph.DstPort}, s.reservation())
			if err != nil {
				res, moved, err = s.p.ports.Reserve(ph.Src, s.leg.Public, ph.DstPort, target, r, s.reservation())
			}
			if err != nil {
				s.natFailed("passive", err)
				return "", err
			}
			reserved = res
			h.Dst, h.DstPort = res.At.Addr(), res.At.Port()
			h.DNAT = target
			if d.Code != 229 || moved {
				if out, err = nat.PassiveReply(d.Code, res.At); err != nil {
					s.p.ports.Release(reserved)
					s.natFailed("passive", err)
					return "", err
				}
			}
			s.m.NATTranslations.WithLabelValues("passive", movedLabel(moved)).Inc()
			translation = append(translation, "announced", h.DNAT.String(), "translated", res.At.String(), "port_moved", moved)
		}
		if s.leg.ClientTranslated() {
			// The server knows this session by the upstream's address:
			// the client's data connection must come from there too
			// (servers such as vsftpd refuse data from another address).
			h.SNAT = s.leg.Upstream
		}
	case ph.Mode == ftp.Active:
		s.mu.Lock()
		a := s.active
		s.active = nil
		s.mu.Unlock()
		if a != nil && ph.Dst.Unmap() == a.from.Addr().Unmap() && ph.DstPort == a.from.Port() {
			// The server was told a gateway port: it connects there and
			// the gateway forwards to where the client listens.
			h.Dst, h.DstPort = a.to.Addr(), a.to.Port()
			h.DNAT = a.from
			translation = append(translation, "announced", a.from.String(), "translated", a.to.String())
		}
		if s.leg.Published() {
			// The client knows the server by its public address.
			h.SNAT = s.leg.Public
		}
	}
	start := time.Now()
	err := s.p.commitOwned(ctx, s, h)
	s.m.PinholeCommit.Observe(time.Since(start).Seconds())
	if err != nil {
		if h.Relay {
			s.p.forget(s, k)
		}
		if reserved.At.IsValid() {
			s.p.ports.Release(reserved)
		}
		s.m.PinholeErrors.Inc()
		s.log.Error("pinhole commit failed", "err", err, "src", h.Src.String(), "dst", h.Dst.String(), "port", h.DstPort)
		return "", err
	}
	s.m.PinholesOpened.WithLabelValues(ph.Mode.String()).Inc()
	s.mu.Lock()
	s.pinholes = append(s.pinholes, tracked{hole: h, mode: ph.Mode, deadline: s.p.o.Now().Add(h.Timeout)})
	if reserved.At.IsValid() {
		s.reserved = append(s.reserved, reserved)
	}
	s.audit.opened++
	s.mu.Unlock()
	attrs := []any{"data_mode", ph.Mode.String(), "src", h.Src.String(),
		"dst", h.Dst.String(), "port", h.DstPort, "timeout", h.Timeout.String(), "relay", h.Relay}
	if h.SNAT.IsValid() {
		attrs = append(attrs, "snat", h.SNAT.String())
	}
	if h.DNAT.IsValid() {
		attrs = append(attrs, "dnat", h.DNAT.String())
	}
	s.log.Info("pinhole opened", append(attrs, translation...)...)
	return out, nil
}

// reservation is how long a gateway port stays reserved for one
// announcement: as long as its translation lives in the kernel's map (the
// pinhole's timeout) and a margin for the reply's round trip. The
// session's end releases it sooner.
func (s *session) reservation() time.Duration { return s.pol.Pinholes.Timeout + 5*time.Second }

// isActiveVerb reports whether verb announces an active data connection.
func isActiveVerb(verb string) bool { return verb == "PORT" || verb == "EPRT" || verb == "LPRT" }

// translateActive rewrites a client's PORT, EPRT or LPRT for a server that
// knows the client by another address: the announcement names that
// address and a gateway port reserved for it. It returns the new line, or
// the reply to send the client instead of forwarding anything.
func (s *session) translateActive(cmd ftp.Command) (line, reply string) {
	from, err := nat.ParseActive(cmd.Verb, cmd.Arg)
	if err != nil {
		// The core accepted it, so this does not happen; refuse anyway.
		s.natFailed("active", err)
		return "", "501 ftpsalg: cannot translate the data address.\r\n"
	}
	res, moved, err := s.p.ports.Reserve(s.leg.Server, s.leg.Upstream, from.Port(), from, s.natPorts, s.reservation())
	if err != nil {
		s.natFailed("active", err)
		return "", "425 ftpsalg: no gateway port is free for the data connection.\r\n"
	}
	to := res.At
	line, err = nat.ActiveCommand(cmd.Verb, to)
	if err != nil {
		s.p.ports.Release(res)
		s.natFailed("active", err)
		return "", "522 ftpsalg: cannot translate this data address; use EPRT.\r\n"
	}
	s.mu.Lock()
	s.active = &activeNAT{from: from, to: to}
	s.reserved = append(s.reserved, res)
	s.mu.Unlock()
	s.m.NATTranslations.WithLabelValues("active", movedLabel(moved)).Inc()
	s.log.Debug("active announcement translated", "verb", cmd.Verb, "announced", from.String(), "translated", to.String())
	return line, ""
}

func movedLabel(moved bool) string {
	if moved {
		return "moved"
	}
	return "kept"
}

// natFailed counts and logs an announcement that could not be translated.
func (s *session) natFailed(kind string, err error) {
	reason := "error"
	if errors.Is(err, nat.ErrExhausted) {
		reason = "ports_exhausted"
	}
	s.m.NATFailures.WithLabelValues(kind, reason).Inc()
	s.log.Warn("announcement not translated", "data_mode", kind, "reason", reason, "err", err)
}

// errOpaque tells serverToClient that a translated inspect session has
// switched to relaying bytes (TLS it does not terminate).
var errOpaque = errors.New("control connection is now opaque")

// opaqueNotice logs, once per session, that the control connection turned
// into TLS that this inspect-mode session cannot read.
func (s *session) opaqueNotice(what string) {
	s.m.NATOpaque.Inc()
	s.log.Warn("control connection encrypted: relaying it unread; its data connections cannot be opened or translated",
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
		s.log.Warn("client TLS handshake failed", "reason", reason, "err", err)
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
	now := s.p.o.Now()
	s.mu.Lock()
	s.tlsOn = true
	s.audit.tlsStarted = now
	s.audit.clientTLS = tc.ConnectionState()
	s.audit.upTLS = upConn.ConnectionState()
	s.mu.Unlock()
	cs, us := tc.ConnectionState(), upConn.ConnectionState()
	s.log.Info("tls started", "sni", s.audit.sni, "tls_started", now,
		"client_tls_version", tls.VersionName(cs.Version), "client_tls_suite", tls.CipherSuiteName(cs.CipherSuite),
		"upstream_tls_version", tls.VersionName(us.Version), "upstream_tls_suite", tls.CipherSuiteName(us.CipherSuite))
	return nil
}

// controlCertificate is the certificate for the control connection's
// handshake: it runs the upstream handshake (with the client's SNI) and
// returns a leaf for the verified upstream certificate (or the static
// one); without an upstream, a leaf for the name the client asked.
func (s *session) controlCertificate(ctx context.Context, hello *tls.ClientHelloInfo, upstreamOK bool, upConn **tls.Conn, upErr *error) (*tls.Certificate, error) {
	sni := hello.ServerName
	s.mu.Lock()
	s.audit.sni = sni
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
		s.log.Warn("failed to clear the control channel after CCC", "err", err)
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
	s.log.Info("tls cleared", "tls_cleared", s.p.o.Now())
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
		s.log.Warn("discarded TLS data sent after CCC", "bytes", n)
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
			s.log.Warn("discarded TLS data sent after CCC", "bytes", n)
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
	cfg, err := certs.UpstreamConfig(p, name, s.orig.Addr(), s.p.o.Roots)
	if err != nil {
		s.m.TLSHandshakeFails.WithLabelValues("upstream", "config").Inc()
		s.log.Error("upstream TLS configuration invalid", "err", err)
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
		s.log.Warn("upstream TLS handshake failed", "reason", reason, "err", err, "sni", sni)
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
		c.Subject = pkix.Name{CommonName: s.orig.Addr().String()}
		c.IPAddresses = []net.IP{s.orig.Addr().AsSlice()}
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

// finish removes the session's pinholes that are still open, counts the
// others used or expired, and writes the audit line.
func (s *session) finish(reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.mu.Lock()
	hs := s.pinholes
	s.pinholes = nil
	s.mu.Unlock()
	if len(hs) > 0 {
		keys := make([]nft.Pinhole, len(hs))
		for i, t := range hs {
			keys[i] = pinholeKey(t.hole)
		}
		// Which admissions are still there (unused): one lookup per
		// distinct pinhole, not a listing of the whole table.
		live := map[nft.Pinhole]bool{}
		var uniq []nft.Pinhole
		for _, t := range hs {
			if _, seen := live[pinholeKey(t.hole)]; !seen {
				live[pinholeKey(t.hole)] = false
				uniq = append(uniq, t.hole)
			}
		}
		if l, err := s.p.o.Table.Live(ctx, uniq...); err == nil {
			for i, h := range uniq {
				live[pinholeKey(h)] = l[i]
			}
		}
		now := s.p.o.Now()
		s.p.cleanupOwned(s, keys, func(owned map[nft.Pinhole]bool) {
			var del []nft.Pinhole
			for _, t := range hs {
				switch {
				case !owned[pinholeKey(t.hole)]:
					// A later session (of the same client, announcing
					// the same endpoint) re-added this element: it is
					// not ours to remove or to count as used.
					s.m.PinholesRemoved.Inc()
				case live[pinholeKey(t.hole)]:
					del = append(del, t.hole)
					s.m.PinholesRemoved.Inc()
				case now.Before(t.deadline):
					s.m.PinholesUsed.Inc()
					s.audit.used++
					if t.hole.DNAT.IsValid() || t.hole.SNAT.IsValid() {
						// Used: its translations stay in the maps until
						// they time out. They go with the session (the
						// connection keeps its NAT binding in conntrack).
						del = append(del, t.hole)
					}
				default:
					s.m.PinholesExpired.Inc()
				}
			}
			if len(del) > 0 {
				if err := s.p.o.Table.DeletePinholes(ctx, del...); err != nil {
					s.m.PinholeErrors.Inc()
					s.log.Warn("failed to remove pinholes; they expire on their own", "err", err)
				}
			}
		})
	}
	s.mu.Lock()
	keys := s.relayed
	s.relayed = nil
	reserved := s.reserved
	s.reserved = nil
	s.mu.Unlock()
	for _, ap := range reserved {
		s.p.ports.Release(ap)
	}
	s.mu.Lock()
	a := s.audit
	s.mu.Unlock()
	s.p.forget(s, keys...)
	attrs := []any{"reason", reason, "duration", s.p.o.Now().Sub(a.start).String(), "user", a.user,
		"sni", a.sni, "transfers", a.transfers, "pinholes_opened", a.opened, "pinholes_used", a.used,
		"refusals", a.refusals}
	if a.relayed > 0 {
		attrs = append(attrs, "data_relayed", a.relayed, "relayed_bytes_to_server", a.relayedUp,
			"relayed_bytes_to_client", a.relayedDown)
	}
	if !a.tlsStarted.IsZero() {
		attrs = append(attrs, "tls_started", a.tlsStarted,
			"client_tls_version", tls.VersionName(a.clientTLS.Version), "client_tls_suite", tls.CipherSuiteName(a.clientTLS.CipherSuite),
			"upstream_tls_version", tls.VersionName(a.upTLS.Version), "upstream_tls_suite", tls.CipherSuiteName(a.upTLS.CipherSuite))
	}
	s.log.Info("session end", attrs...)
}

// pinholeKey is what identifies a pinhole's set element: its tuple and
// whether it is a relay element.
func pinholeKey(h nft.Pinhole) nft.Pinhole {
	return nft.Pinhole{Src: h.Src, Dst: h.Dst, DstPort: h.DstPort, Relay: h.Relay}
}

// bufferedConn reads first what a line reader already buffered, so that a
// TLS handshake starting after a clear-text line loses no bytes.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) {
	if b.r != nil && b.r.Buffered() > 0 {
		return b.r.Read(p)
	}
	return b.Conn.Read(p)
}
