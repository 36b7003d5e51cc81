package ftp

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// MaxPending bounds the client commands a session remembers while they
// await their final replies. Further commands are refused with
// ReasonProtocolInState until replies drain the queue.
const MaxPending = 32

// minMaxLine is the smallest line bound a session accepts; Config.MaxLine
// values below it are raised to it.
const minMaxLine = 64

// Passive port range defaults (Config.PassiveMin/PassiveMax zero values).
const (
	defaultPassiveMin = 1024
	defaultPassiveMax = 65535
)

// redacted replaces the argument of PASS everywhere.
const redacted = "<redacted>"

// pendingKind is what a pending command's final reply may trigger.
type pendingKind uint8

const (
	kindPlain   pendingKind = iota
	kindPASV                // 227 opens a passive pinhole
	kindLPSV                // 228 opens a passive pinhole
	kindEPSV                // 229 opens a passive pinhole
	kindActive              // 200 opens the validated active pinhole
	kindAuthTLS             // 234 starts TLS
	kindCCC                 // 200 clears TLS (TransportDecrypts)
	kindREIN                // 220 resets the session
	kindQUIT                // 221 ends it
)

// pendingCmd is a client command awaiting its final reply.
type pendingCmd struct {
	verb string
	kind pendingKind
	// optional marks a line the server may not answer with a reply of its
	// own: a refused (neutralised) line, an empty line, a too-long line.
	// Such a line can only be answered by 4xx/5xx, so an optional entry at
	// the front of the queue is dropped when any other final reply arrives
	// (see pairing recovery in the README).
	optional bool
	announce netip.AddrPort // kindActive: the validated address
}

// half is the state of one direction.
type half struct {
	fr        Framer
	fed       uint64
	tracking  bool // inspect mode: following TLS records instead of lines
	rec       recordTracker
	encrypted bool
}

// Session is the protocol state of one FTP control connection. It is fed
// the bytes of both directions in the order the transport sees them and
// returns decisions. It does no I/O and keeps no password. A Session is not
// safe for concurrent use.
type Session struct {
	cfg  Config
	dirs [2]half

	replies      ReplyAssembler
	replyTooLong bool // the reply in progress has a too-long line

	queue    []pendingCmd
	overflow int // refused commands logically queued after queue (bounded memory)

	// greeting: the server's greeting is still to come (RFC 959 §5.4).
	// It answers the connection, so it consumes no pending command.
	greeting bool

	epsvAll bool
	closed  bool
}

// NewSession returns a session for cfg. IPv4-mapped addresses in
// cfg.Client and cfg.Server are unmapped; MaxLine zero means DefaultMaxLine
// and values below 64 are raised to 64; zero PassiveMin/PassiveMax mean
// 1024/65535 (a range with PassiveMin > PassiveMax refuses every passive
// announcement).
func NewSession(cfg Config) *Session {
	cfg.Client = netip.AddrPortFrom(cfg.Client.Addr().Unmap(), cfg.Client.Port())
	cfg.Server = netip.AddrPortFrom(cfg.Server.Addr().Unmap(), cfg.Server.Port())
	switch {
	case cfg.MaxLine <= 0:
		cfg.MaxLine = DefaultMaxLine
	case cfg.MaxLine < minMaxLine:
		cfg.MaxLine = minMaxLine
	}
	if cfg.PassiveMin == 0 {
		cfg.PassiveMin = defaultPassiveMin
	}
	if cfg.PassiveMax == 0 {
		cfg.PassiveMax = defaultPassiveMax
	}
	s := &Session{cfg: cfg, replies: ReplyAssembler{MaxLines: 2}, greeting: !cfg.Midstream}
	s.dirs[FromClient].fr.init(cfg.MaxLine)
	s.dirs[FromServer].fr.init(cfg.MaxLine)
	return s
}

// Offset returns the number of bytes fed in direction dir: the stream
// offset of its next byte.
func (s *Session) Offset(dir Direction) uint64 { return s.dirs[checkDir(dir)].fed }

// Encrypted reports whether direction dir is inside TLS: after a 234 reply
// to AUTH TLS/SSL or StartImplicitTLS, until clear text returns (inspect
// mode) or CCC or REIN is answered (TransportDecrypts).
func (s *Session) Encrypted(dir Direction) bool { return s.dirs[checkDir(dir)].encrypted }

// Closed reports whether the session has ended: 221 or 421 was received.
func (s *Session) Closed() bool { return s.closed }

// StartImplicitTLS marks both directions as TLS from their current offsets
// (implicit FTPS, port 990). In inspect mode the session then follows TLS
// records until clear text returns; the greeting travels inside TLS and
// is no longer expected. With TransportDecrypts it only records that the
// connection is encrypted and goes on parsing what it is fed, greeting
// included.
func (s *Session) StartImplicitTLS() {
	if !s.cfg.TransportDecrypts {
		s.greeting = false
	}
	s.startTLS()
}

func checkDir(dir Direction) Direction {
	if dir > FromServer {
		panic(fmt.Sprintf("ftp: invalid direction %d", dir))
	}
	return dir
}

// Feed consumes the next bytes of direction dir and returns the decisions
// they cause, in stream order. The decisions about one line come in this
// order:
//
//   - a client line: ActionCommand, then ActionRefuse when refused;
//   - the final line of a server reply: ActionOpenPinhole or ActionRefuse,
//     then ActionReply, then ActionTLSStarted, ActionTLSCleared or
//     ActionSessionEnd;
//   - other server lines: ActionRefuse when too long or malformed.
//
// In inspect mode, ActionTLSCleared with an empty Line at the offset where
// clear text returns precedes the decisions about the lines after it.
func (s *Session) Feed(dir Direction, p []byte) []Decision {
	return s.FeedAppend(nil, dir, p)
}

// FeedAppend is Feed appending the decisions to out, so that a caller
// that reuses its buffer allocates nothing for them.
func (s *Session) FeedAppend(out []Decision, dir Direction, p []byte) []Decision {
	d := &s.dirs[checkDir(dir)]
	pos := d.fed
	d.fed += uint64(len(p))
	for len(p) > 0 {
		if d.tracking {
			n, clear := d.rec.consume(p)
			pos += uint64(n)
			if !clear {
				break
			}
			// Clear text starts at the first byte of the rejected header.
			start := pos - uint64(d.rec.n)
			if d.rec.n > 0 {
				p = append(bytes.Clone(d.rec.hdr[:d.rec.n]), p[n:]...)
			} else {
				p = p[n:]
			}
			pos = start
			s.clearText(dir, start)
			out = append(out, Decision{Action: ActionTLSCleared, Dir: dir, Line: LineRef{Start: start}})
			continue
		}
		line, ok, n := d.fr.next(p)
		p = p[n:]
		pos += uint64(n)
		if !ok {
			continue
		}
		if dir == FromClient {
			out = s.command(line, out)
		} else {
			out = s.replyLine(line, out)
		}
	}
	return out
}

// startTLS switches both directions to TLS. In inspect mode each starts
// following records at its current offset: the server's right after the
// 234 line (the framer stops after each line), the client's after all it
// has sent, since a client sends its ClientHello only once it has the 234.
// An incomplete client line is dropped, and commands still awaiting replies
// are forgotten: nothing in clear text can answer them any more.
func (s *Session) startTLS() {
	for i := range s.dirs {
		d := &s.dirs[i]
		d.encrypted = true
		if s.cfg.TransportDecrypts {
			continue
		}
		d.tracking = true
		d.rec = recordTracker{}
		d.fr.reset(d.fr.Offset())
	}
	if !s.cfg.TransportDecrypts {
		s.queue = s.queue[:0]
		s.overflow = 0
		s.replies.Reset()
		s.replyTooLong = false
	}
}

// clearText returns direction dir to line parsing at stream offset start.
func (s *Session) clearText(dir Direction, start uint64) {
	d := &s.dirs[dir]
	d.tracking = false
	d.encrypted = false
	d.rec = recordTracker{}
	d.fr.reset(start)
	if dir == FromServer {
		s.replies.Reset()
		s.replyTooLong = false
	}
}

// command handles one client line.
func (s *Session) command(l FramedLine, out []Decision) []Decision {
	info := Decision{Action: ActionCommand, Dir: FromClient, Line: l.Ref}
	if l.TooLong {
		info.Verb = verbPrefix(l.Text)
		if info.Verb == "PASS" {
			info.Arg = redacted
		}
		out = append(out, info)
		return append(out, s.refuseCommand(l, info.Verb, 500, ReasonLineTooLong,
			fmt.Sprintf("command line longer than %d bytes", s.cfg.MaxLine)))
	}

	cmd, err := ParseCommand(l.Text)
	content := l.Raw[:contentEnd(l.Raw)]
	switch {
	case err != nil:
	case hasControl(content):
		// A control byte hidden as the option of a Telnet sequence: a
		// server that ignores Telnet sees it, a CR maybe as a line break.
		err = fmt.Errorf("failed to parse command: control byte inside a Telnet sequence: %w", ErrMalformed)
	case IsActiveVerb(cmd.Verb) && bytes.IndexByte(content, telnetIAC) >= 0:
		// Servers that process Telnet and servers that do not would read
		// different addresses; only the plain form is checked and allowed.
		err = fmt.Errorf("failed to parse command: Telnet sequence in %s: %w", cmd.Verb, ErrMalformed)
	}
	if err != nil {
		out = append(out, info)
		if l.Text == "" && !hasControl(content) {
			// An empty line is harmless, but servers differ on answering it.
			s.enqueue(pendingCmd{optional: true})
			return out
		}
		return append(out, s.refuseCommand(l, "", 500, ReasonMalformed, err.Error()))
	}

	info.Verb, info.Arg = cmd.Verb, cmd.Arg
	if cmd.Verb == "PASS" {
		info.Arg = redacted
	}

	if s.full() {
		out = append(out, info)
		return append(out, s.refuseCommand(l, cmd.Verb, 503, ReasonProtocolInState,
			fmt.Sprintf("more than %d commands await replies", MaxPending)))
	}
	e := pendingCmd{verb: cmd.Verb}
	if IsActiveVerb(cmd.Verb) {
		ap, code, reason, detail := s.checkActive(cmd)
		if reason != "" {
			out = append(out, info)
			return append(out, s.refuseCommand(l, cmd.Verb, code, reason, detail))
		}
		e.kind, e.announce = kindActive, ap
		info.Endpoint, info.EndpointOnLine = ap, true
	}
	out = append(out, info)
	switch cmd.Verb {
	case "PASV", "LPSV":
		if s.epsvAll {
			return append(out, s.refuseCommand(l, cmd.Verb, 534, ReasonEPSVAll, cmd.Verb+" after EPSV ALL"))
		}
		e.kind = kindPASV
		if cmd.Verb == "LPSV" {
			e.kind = kindLPSV
		}
	case "EPSV":
		if strings.EqualFold(cmd.Arg, "ALL") {
			// RFC 2428 §4: from now on the client uses EPSV only, and the
			// server must refuse the other data connection commands.
			s.epsvAll = true
		} else {
			e.kind = kindEPSV
		}
	case "AUTH":
		switch strings.ToUpper(cmd.Arg) {
		case "TLS", "SSL", "TLS-C", "TLS-P":
			e.kind = kindAuthTLS
		}
	case "CCC":
		e.kind = kindCCC
	case "REIN":
		e.kind = kindREIN
	case "QUIT":
		e.kind = kindQUIT
	}
	s.enqueue(e)
	return out
}

// checkActive validates a PORT, EPRT or LPRT command. It returns the
// announced address, or the reply code, reason and detail of a refusal.
func (s *Session) checkActive(cmd Command) (netip.AddrPort, int, Reason, string) {
	if s.epsvAll {
		return netip.AddrPort{}, 534, ReasonEPSVAll, cmd.Verb + " after EPSV ALL"
	}
	if !s.cfg.AllowActive {
		return netip.AddrPort{}, 534, ReasonActiveDisabled, "active mode is disabled"
	}
	var ap netip.AddrPort
	var err error
	switch cmd.Verb {
	case "PORT":
		ap, err = ParseHostPort(cmd.Arg)
	case "EPRT":
		ap, err = ParseEPRT(cmd.Arg)
	default:
		ap, err = ParseLPRT(cmd.Arg)
	}
	if err != nil {
		r := reasonFor(err)
		if r == ReasonFamilyMismatch {
			return netip.AddrPort{}, 522, r, err.Error()
		}
		return netip.AddrPort{}, 501, r, err.Error()
	}
	client := s.cfg.Client.Addr()
	a := ap.Addr()
	switch {
	case a.Is4() != client.Is4():
		return netip.AddrPort{}, 522, ReasonFamilyMismatch,
			fmt.Sprintf("%s announces %s, control peer is %s", cmd.Verb, a, client)
	case a != client && (!s.cfg.AllowThirdParty || !routableUnicast(a)):
		return netip.AddrPort{}, 534, ReasonThirdParty,
			fmt.Sprintf("%s announces %s, control peer is %s", cmd.Verb, a, client)
	case ap.Port() < 1024:
		return netip.AddrPort{}, 534, ReasonPrivilegedPort,
			fmt.Sprintf("%s announces privileged port %d", cmd.Verb, ap.Port())
	}
	return ap, 0, "", ""
}

// refuseCommand builds the refusal of a client line and, unless the
// transport injects replies, records the neutralised line as pending.
func (s *Session) refuseCommand(l FramedLine, verb string, code int, reason Reason, detail string) Decision {
	label := verb
	if label == "" {
		label = "command"
	}
	d := Decision{
		Action: ActionRefuse,
		Dir:    FromClient,
		Line:   l.Ref,
		Verb:   verb,
		Reason: reason,
		Detail: detail,
		Reply:  fmt.Sprintf("%d ftpsalg: %s refused: %s\r\n", code, label, reason),
	}
	if !l.TooLong {
		// The whole content goes for an unparsed line (whatever it hides)
		// and for PASS (so the password never appears in a decision).
		whole := verb == "" || verb == "PASS"
		d.Replacement = neutraliseCommand(l.Raw, whole)
	}
	if !s.cfg.InjectsReplies {
		s.enqueue(pendingCmd{verb: verb, optional: true})
	}
	return d
}

// replyLine handles one server line.
func (s *Session) replyLine(l FramedLine, out []Decision) []Decision {
	r, done, err := s.replies.Add(l.Text)
	if err != nil {
		d := Decision{Action: ActionRefuse, Dir: FromServer, Line: l.Ref, Reason: ReasonMalformed, Detail: err.Error()}
		if l.TooLong {
			d.Reason = ReasonLineTooLong
		} else {
			d.Replacement = blankLine(l.Raw)
		}
		return append(out, d)
	}
	if !done {
		if l.TooLong {
			s.replyTooLong = true
			out = append(out, Decision{
				Action: ActionRefuse, Dir: FromServer, Line: l.Ref, Reason: ReasonLineTooLong,
				Detail: fmt.Sprintf("reply line longer than %d bytes", s.cfg.MaxLine),
			})
		}
		return out
	}
	truncated := s.replyTooLong
	s.replyTooLong = false
	return s.reply(r, l, truncated, out)
}

// reply handles a complete server reply whose final line is l; truncated
// says an earlier line of it was too long (and is cut short in r).
func (s *Session) reply(r Reply, l FramedLine, truncated bool, out []Decision) []Decision {
	info := Decision{Action: ActionReply, Dir: FromServer, Line: l.Ref, Code: r.Code, Text: r.Text()}
	if r.Code < 200 {
		// 1xx is preliminary: the command (or, for 120, the connection)
		// still awaits its final reply.
		if !s.greeting {
			info.Verb = s.firstVerb()
		}
		return append(out, info)
	}

	// The first final reply is the greeting (RFC 959 §5.4): it answers
	// the connection, and commands pipelined before it await the replies
	// that follow.
	greeting := s.greeting
	var e pendingCmd
	var has bool
	if greeting {
		s.greeting = false
	} else {
		s.skipOptional(r.Code)
		e, has = s.pop()
	}
	info.Verb = e.verb

	var after []Decision
	announcement := r.Code == 227 || r.Code == 228 || r.Code == 229
	switch {
	case l.TooLong || (truncated && announcement):
		// Never act on a cut-short line; a too-long first line would have
		// been searched for the address in its truncated form.
		out = append(out, s.refuseReply(l, r.Code, e.verb, ReasonLineTooLong,
			fmt.Sprintf("reply line longer than %d bytes", s.cfg.MaxLine)))
	case announcement && greeting:
		// No command asked for it: a server must not open a pinhole by
		// answering a command the client pipelined before the greeting.
		out = append(out, s.refuseReply(l, r.Code, "", ReasonUnsolicited,
			fmt.Sprintf("%d reply in place of the greeting", r.Code)))
	case announcement:
		ph, onFinal, reason, detail := s.checkPassive(r, e, has)
		if reason != "" {
			out = append(out, s.refuseReply(l, r.Code, e.verb, reason, detail))
		} else {
			out = append(out, Decision{Action: ActionOpenPinhole, Dir: FromServer, Line: l.Ref, Verb: e.verb, Code: r.Code, Pinhole: ph,
				Endpoint: netip.AddrPortFrom(ph.Dst, ph.DstPort), EndpointOnLine: onFinal})
		}
	case r.Code == 200 && has && e.kind == kindActive:
		out = append(out, Decision{Action: ActionOpenPinhole, Dir: FromServer, Line: l.Ref, Verb: e.verb, Code: r.Code,
			Pinhole:  Pinhole{Mode: Active, Src: s.cfg.Server.Addr(), Dst: e.announce.Addr(), DstPort: e.announce.Port()},
			Endpoint: e.announce})
	case r.Code == 200 && has && e.kind == kindCCC:
		// RFC 4217 §6. In inspect mode CCC is never seen in clear while
		// TLS is on; clear text is detected from the records instead.
		if s.cfg.TransportDecrypts && s.anyEncrypted() {
			s.setEncrypted(false)
			after = append(after, Decision{Action: ActionTLSCleared, Dir: FromServer, Line: l.Ref, Verb: e.verb, Code: r.Code})
		}
	case r.Code == 234 && has && e.kind == kindAuthTLS:
		if !s.anyEncrypted() {
			after = append(after, Decision{Action: ActionTLSStarted, Dir: FromServer, Line: l.Ref, Verb: e.verb, Code: r.Code})
			s.startTLS()
		}
	case r.Code == 220 && has && e.kind == kindREIN:
		// RFC 959 §4.1.1: as if the connection had just been opened;
		// RFC 4217 §13: that includes leaving TLS.
		s.epsvAll = false
		if s.cfg.TransportDecrypts && s.anyEncrypted() {
			s.setEncrypted(false)
			after = append(after, Decision{Action: ActionTLSCleared, Dir: FromServer, Line: l.Ref, Verb: e.verb, Code: r.Code})
		}
	}
	if r.Code == 221 || r.Code == 421 {
		s.closed = true
		after = append(after, Decision{Action: ActionSessionEnd, Dir: FromServer, Line: l.Ref, Verb: e.verb, Code: r.Code})
	}
	out = append(out, info)
	return append(out, after...)
}

// checkPassive validates a 227, 228 or 229 reply against the pending
// command e and the policy. It returns the pinhole and whether the address
// was on the reply's final line, or a refusal's reason and detail.
func (s *Session) checkPassive(r Reply, e pendingCmd, has bool) (Pinhole, bool, Reason, string) {
	want := kindEPSV
	switch r.Code {
	case 227:
		want = kindPASV
	case 228:
		want = kindLPSV
	}
	if !has {
		return Pinhole{}, false, ReasonUnsolicited, fmt.Sprintf("%d reply while no command awaits a reply", r.Code)
	}
	if e.kind != want {
		verb := e.verb
		if verb == "" {
			verb = "a refused line"
		}
		return Pinhole{}, false, ReasonUnsolicited, fmt.Sprintf("%d reply answers %s", r.Code, verb)
	}

	server := s.cfg.Server.Addr()
	var ap netip.AddrPort
	var onFinal bool
	var err error
	switch r.Code {
	case 227:
		ap, onFinal, err = searchReply(r, Parse227)
	case 228:
		ap, onFinal, err = searchReply(r, Parse228)
	default:
		ap, onFinal, err = searchReply(r, func(text string) (netip.AddrPort, error) {
			port, err := Parse229(text)
			return netip.AddrPortFrom(server, port), err
		})
	}
	if err != nil {
		return Pinhole{}, false, reasonFor(err), err.Error()
	}
	a, port := ap.Addr(), ap.Port()
	switch {
	case a.Is4() != server.Is4():
		return Pinhole{}, false, ReasonFamilyMismatch, fmt.Sprintf("%d announces %s, control peer is %s", r.Code, a, server)
	case a != server && (!s.cfg.AllowThirdParty || !routableUnicast(a)):
		return Pinhole{}, false, ReasonThirdParty, fmt.Sprintf("%d announces %s, control peer is %s", r.Code, a, server)
	case port < 1024:
		return Pinhole{}, false, ReasonPrivilegedPort, fmt.Sprintf("%d announces privileged port %d", r.Code, port)
	case port < s.cfg.PassiveMin || port > s.cfg.PassiveMax:
		return Pinhole{}, false, ReasonOutsideRange, fmt.Sprintf("%d announces port %d, passive range is %d-%d",
			r.Code, port, s.cfg.PassiveMin, s.cfg.PassiveMax)
	}
	return Pinhole{Mode: Passive, Src: s.cfg.Client.Addr(), Dst: a, DstPort: port}, onFinal, "", ""
}

// searchReply applies parse to the first line of a reply, then to its final
// line, and returns the first address found and whether it was on the
// final line. Intermediate lines are never searched.
func searchReply(r Reply, parse func(string) (netip.AddrPort, error)) (netip.AddrPort, bool, error) {
	var err error
	for i, line := range r.Lines {
		final := i == len(r.Lines)-1
		if i != 0 && !final {
			continue
		}
		text := ""
		if len(line) > 4 {
			text = line[4:]
		}
		var ap netip.AddrPort
		ap, err = parse(text)
		if err == nil || !errors.Is(err, errNoAddress) {
			return ap, final, err
		}
	}
	return netip.AddrPort{}, false, err
}

// refuseReply builds the refusal of a server reply's final line.
func (s *Session) refuseReply(l FramedLine, code int, verb string, reason Reason, detail string) Decision {
	d := Decision{
		Action: ActionRefuse,
		Dir:    FromServer,
		Line:   l.Ref,
		Verb:   verb,
		Code:   code,
		Reason: reason,
		Detail: detail,
		Reply:  fmt.Sprintf("425 ftpsalg: cannot open data connection: %s\r\n", reason),
	}
	if !l.TooLong {
		d.Replacement = bytes.Clone(l.Raw)
		copy(d.Replacement, "425")
	}
	return d
}

func (s *Session) anyEncrypted() bool {
	return s.dirs[FromClient].encrypted || s.dirs[FromServer].encrypted
}

func (s *Session) setEncrypted(on bool) {
	s.dirs[FromClient].encrypted = on
	s.dirs[FromServer].encrypted = on
}

// The pending queue: up to MaxPending entries, then a count of refused
// (optional) entries that logically follow them. While that count is not
// zero every new command is refused, so FIFO order holds exactly.

func (s *Session) full() bool { return len(s.queue) >= MaxPending || s.overflow > 0 }

func (s *Session) enqueue(e pendingCmd) {
	if s.full() {
		s.overflow++
		return
	}
	s.queue = append(s.queue, e)
}

func (s *Session) front() (pendingCmd, bool) {
	switch {
	case len(s.queue) > 0:
		return s.queue[0], true
	case s.overflow > 0:
		return pendingCmd{optional: true}, true
	}
	return pendingCmd{}, false
}

func (s *Session) pop() (pendingCmd, bool) {
	switch {
	case len(s.queue) > 0:
		e := s.queue[0]
		n := copy(s.queue, s.queue[1:])
		s.queue[n] = pendingCmd{}
		s.queue = s.queue[:n]
		return e, true
	case s.overflow > 0:
		s.overflow--
		return pendingCmd{optional: true}, true
	}
	return pendingCmd{}, false
}

// skipOptional drops optional entries that cannot own a final reply with
// this code: a neutralised or empty line is answered with 4xx/5xx or not
// at all.
func (s *Session) skipOptional(code int) {
	if c := code / 100; c == 4 || c == 5 {
		return
	}
	for {
		e, ok := s.front()
		if !ok || !e.optional {
			return
		}
		s.pop()
	}
}

// firstVerb names the command a preliminary reply most likely belongs to.
func (s *Session) firstVerb() string {
	for _, e := range s.queue {
		if !e.optional {
			return e.verb
		}
	}
	return ""
}

// verbPrefix returns the upper-cased verb at the start of a (truncated)
// command line, or "".
func verbPrefix(text string) string {
	n := 0
	for n < len(text) && n < 5 && isASCIILetter(text[n]) {
		n++
	}
	if n < 3 || n > 4 || (n < len(text) && text[n] != ' ') {
		return ""
	}
	return strings.ToUpper(text[:n])
}

// routableUnicast reports whether a third-party address could be a real
// peer: even with AllowThirdParty a pinhole never opens towards an
// unspecified, loopback, multicast or broadcast address.
func routableUnicast(a netip.Addr) bool {
	return a.IsValid() && !a.IsUnspecified() && !a.IsLoopback() && !a.IsMulticast() &&
		a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// hasControl reports a control byte (below 0x20, or DEL) in b.
func hasControl(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c == 0x7f {
			return true
		}
	}
	return false
}

// neutraliseCommand returns raw with its verb overwritten by 'X' (up to the
// first space), or its whole content when whole is set; the terminator and
// the length are kept. The server answers "500 unknown command".
func neutraliseCommand(raw []byte, whole bool) []byte {
	out := bytes.Clone(raw)
	end := contentEnd(out)
	for i := 0; i < end; i++ {
		if !whole && out[i] == ' ' {
			break
		}
		out[i] = 'X'
	}
	return out
}

// blankLine returns raw with its content overwritten by spaces: a server
// line that is not a reply leaves no text a client might read as one.
func blankLine(raw []byte) []byte {
	out := bytes.Clone(raw)
	end := contentEnd(out)
	for i := 0; i < end; i++ {
		out[i] = ' '
	}
	return out
}
