package labftpd

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
)

var (
	errLineTooLong = errors.New("command line too long")
	errNoDataSetup = errors.New("no PORT, EPRT, PASV or EPSV before the transfer command")
	errBadDataPeer = errors.New("data connection from a foreign address")
)

// session is one control connection. All its methods run on the
// connection's goroutine.
type session struct {
	srv   *Server
	cfg   *Config
	log   *slog.Logger
	raw   net.Conn      // the accepted control connection
	in    io.Reader     // client bytes no layer has consumed: any read-ahead, then raw
	c     net.Conn      // commands are read from and replies written to c: raw, tlsc or clear text after CCC
	br    *bufio.Reader // line reader over c
	local netip.Addr    // control connection's local address, unmapped
	peer  netip.Addr    // control connection's peer address, unmapped
	buf   []byte        // data copy buffer, reused

	user     string
	userSent bool
	loggedIn bool
	cwd      string
	epsvAll  bool

	tlsc    *tls.Conn     // control connection's TLS layer, or nil
	rr      *recordReader // what tlsc reads through
	secured bool          // AUTH (or implicit TLS) succeeded; stays true after CCC
	protP   bool          // PROT P: data connections use TLS

	pasv   net.Listener   // pending passive listener, or nil
	active netip.AddrPort // pending active target, or invalid

	werr error // first control write or TLS error; the session ends on it
}

// serveConn runs one control connection until QUIT, EOF, a timeout, a
// write error or Close.
func (s *Server) serveConn(c net.Conn) {
	ss := &session{
		srv:   s,
		cfg:   &s.cfg,
		raw:   c,
		in:    c,
		c:     c,
		br:    bufio.NewReaderSize(c, s.cfg.MaxLine),
		local: addrOf(c.LocalAddr()),
		peer:  addrOf(c.RemoteAddr()),
		cwd:   "/",
	}
	ss.log = s.log.With("peer", c.RemoteAddr().String())
	defer ss.closeData()
	defer func() {
		// Defence in depth: a bug must end this session, not the test binary.
		if r := recover(); r != nil {
			ss.log.Error("session panic", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	defer ss.closeNotify()
	ss.log.Debug("session start")
	if s.cfg.ImplicitTLS {
		if err := ss.startTLS(); err != nil {
			ss.log.Info("implicit TLS handshake failed", "error", err)
			return
		}
	}
	ss.reply(220, s.cfg.Greeting)
	for ss.werr == nil {
		line, err := ss.readLine()
		if errors.Is(err, errLineTooLong) {
			ss.reply(500, "Command line too long.")
			continue
		}
		if err != nil {
			ss.log.Debug("session end", "reason", err)
			return
		}
		verb, arg := splitCommand(line)
		var act Action
		if s.cfg.Script != nil {
			act = s.cfg.Script(verb, arg)
		}
		ss.writeRaw(act.Before)
		quit := false
		if !act.Replace {
			quit = ss.handle(verb, arg)
		}
		ss.writeRaw(act.After)
		if quit || act.Close {
			return
		}
	}
}

// readLine reads one CRLF- (or LF-) terminated command line, without the
// terminator and with Telnet commands removed (RFC 959 §4.1.3: the control
// connection follows the Telnet protocol; clients send IAC IP / IAC DM
// before ABOR).
func (ss *session) readLine() (string, error) {
	if err := ss.c.SetReadDeadline(time.Now().Add(ss.cfg.IdleTimeout)); err != nil {
		return "", err
	}
	line, err := ss.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		for errors.Is(err, bufio.ErrBufferFull) {
			_, err = ss.br.ReadSlice('\n')
		}
		if err != nil {
			return "", err
		}
		return "", errLineTooLong
	}
	if err != nil {
		return "", err // a partial line at EOF is dropped
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return stripTelnet(line), nil
}

// stripTelnet removes Telnet IAC sequences: IAC IAC is a literal 0xff,
// IAC WILL/WONT/DO/DONT take one option byte, other IAC commands none.
func stripTelnet(b []byte) string {
	const iac = 0xff
	if !strings.Contains(string(b), "\xff") {
		return string(b)
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] != iac {
			out = append(out, b[i])
			continue
		}
		if i+1 >= len(b) {
			break
		}
		i++
		switch c := b[i]; {
		case c == iac:
			out = append(out, iac)
		case c >= 251 && c <= 254: // WILL, WONT, DO, DONT + option
			i++
		}
	}
	return string(out)
}

// splitCommand splits a line into an upper-case verb and its argument.
func splitCommand(line string) (verb, arg string) {
	verb, arg, _ = strings.Cut(line, " ")
	return strings.ToUpper(verb), arg
}

// writeRaw writes s to the control connection, in chunks when SplitWrites
// is set. Errors are remembered in ss.werr and end the session.
func (ss *session) writeRaw(s string) {
	if s == "" || ss.werr != nil {
		return
	}
	chunk := len(s)
	if ss.cfg.SplitWrites > 0 {
		chunk = ss.cfg.SplitWrites
	}
	for i := 0; i < len(s); i += chunk {
		if i > 0 && ss.cfg.SplitDelay > 0 {
			time.Sleep(ss.cfg.SplitDelay)
		}
		if err := ss.c.SetWriteDeadline(time.Now().Add(ss.cfg.DataTimeout)); err != nil {
			ss.werr = err
			return
		}
		if _, err := io.WriteString(ss.c, s[i:min(i+chunk, len(s))]); err != nil {
			ss.werr = err
			return
		}
	}
}

func (ss *session) reply(code int, text string) {
	ss.writeRaw(strconv.Itoa(code) + " " + text + "\r\n")
}

// handle runs one command and reports whether the session should end.
func (ss *session) handle(verb, arg string) (quit bool) {
	ss.log.Debug("command", "verb", verb)
	if ss.cfg.TLS != nil && ss.handleSecurity(verb, arg) {
		return false
	}
	switch verb {
	case "":
		ss.reply(500, "Empty command.")
		return false
	case "QUIT":
		ss.reply(221, "Goodbye.")
		return true
	case "USER":
		ss.user, ss.userSent, ss.loggedIn = arg, true, false
		ss.reply(331, "Please specify the password.")
		return false
	case "PASS":
		switch {
		case !ss.userSent:
			ss.reply(503, "Login with USER first.")
		case ss.cfg.User == "" || (ss.user == ss.cfg.User && arg == ss.cfg.Password):
			ss.loggedIn = true
			ss.reply(230, "Login successful.")
		default:
			ss.reply(530, "Login incorrect.")
		}
		return false
	case "NOOP":
		ss.reply(200, "NOOP ok.")
		return false
	case "SYST":
		ss.reply(215, "UNIX Type: L8")
		return false
	case "FEAT":
		if ss.cfg.TLS != nil {
			// RFC 4217 §6.
			ss.writeRaw("211-Features:\r\n AUTH TLS\r\n EPRT\r\n EPSV\r\n MDTM\r\n PASV\r\n PBSZ\r\n PROT\r\n SIZE\r\n211 End\r\n")
			return false
		}
		ss.writeRaw("211-Features:\r\n EPRT\r\n EPSV\r\n MDTM\r\n PASV\r\n SIZE\r\n211 End\r\n")
		return false
	}
	if !ss.loggedIn {
		ss.reply(530, "Please login with USER and PASS.")
		return false
	}
	switch verb {
	case "TYPE":
		switch strings.ToUpper(strings.Join(strings.Fields(arg), " ")) {
		case "I", "L 8":
			ss.reply(200, "Switching to Binary mode.")
		case "A", "A N":
			ss.reply(200, "Switching to ASCII mode.")
		default:
			ss.reply(504, "Unrecognised TYPE command.")
		}
	case "MODE":
		ss.replyIf(strings.EqualFold(arg, "S"), 200, "Mode set to S.", 504, "Bad MODE command.")
	case "STRU":
		ss.replyIf(strings.EqualFold(arg, "F"), 200, "Structure set to F.", 504, "Bad STRU command.")
	case "PWD", "XPWD":
		ss.reply(257, `"`+strings.ReplaceAll(ss.cwd, `"`, `""`)+`" is the current directory`)
	case "CWD", "XCWD":
		ss.cwdTo(arg)
	case "CDUP", "XCUP":
		ss.cwdTo("..")
	case "PASV":
		ss.passive(false, arg)
	case "EPSV":
		ss.passive(true, arg)
	case "PORT":
		ap, err := parsePORT(arg)
		ss.setActive(ap, err)
	case "EPRT":
		ap, err := parseEPRT(arg)
		ss.setActive(ap, err)
	case "RETR":
		ss.retr(arg)
	case "STOR":
		ss.stor(arg)
	case "LIST":
		ss.list(arg, true)
	case "NLST":
		ss.list(arg, false)
	case "SIZE":
		e, err := ss.srv.store.stat(ss.rel(arg))
		ss.replyIf(err == nil && !e.dir, 213, strconv.FormatInt(e.size, 10), 550, "Could not get file size.")
	case "MDTM":
		e, err := ss.srv.store.stat(ss.rel(arg))
		ss.replyIf(err == nil && !e.dir, 213, e.modTime.UTC().Format("20060102150405"), 550, "Could not get file modification time.")
	case "ABOR":
		ss.closeData()
		ss.reply(225, "No transfer to ABOR.")
	default:
		ss.reply(502, "Command not implemented.")
	}
	return false
}

func (ss *session) replyIf(ok bool, code int, text string, failCode int, failText string) {
	if ok {
		ss.reply(code, text)
		return
	}
	ss.reply(failCode, failText)
}

// rel resolves a client path against the working directory.
func (ss *session) rel(p string) string {
	rel, _ := resolve(ss.cwd, p)
	return rel
}

func (ss *session) cwdTo(p string) {
	rel, abs := resolve(ss.cwd, p)
	e, err := ss.srv.store.stat(rel)
	if err != nil || !e.dir {
		ss.reply(550, "Failed to change directory.")
		return
	}
	ss.cwd = abs
	ss.reply(250, "Directory successfully changed.")
}

// passive handles PASV (extended=false) and EPSV (RFC 2428 §3).
func (ss *session) passive(extended bool, arg string) {
	if extended {
		switch strings.ToUpper(strings.TrimSpace(arg)) {
		case "":
		case "ALL":
			// RFC 2428 §4: from now on only EPSV sets up data connections.
			ss.epsvAll = true
			ss.reply(200, "EPSV ALL ok.")
			return
		case "1":
			if !ss.local.Is4() {
				ss.reply(522, "Network protocol not supported, use (2)")
				return
			}
		case "2":
			if !ss.local.Is6() {
				ss.reply(522, "Network protocol not supported, use (1)")
				return
			}
		default:
			ss.reply(501, "Bad EPSV argument.")
			return
		}
	} else {
		if ss.epsvAll {
			ss.reply(500, "PASV not allowed after EPSV ALL.")
			return
		}
		if !ss.local.Is4() {
			ss.reply(425, "Cannot use PASV on IPv6, use EPSV.")
			return
		}
	}
	ss.closeData()
	ln, port, err := ss.listenPassive()
	if err != nil {
		ss.log.Warn("passive listen failed", "error", err)
		ss.reply(425, "Cannot open passive connection.")
		return
	}
	ss.pasv = ln
	announced := port
	if ss.cfg.AnnouncePort != nil {
		announced = ss.cfg.AnnouncePort(port)
	}
	if extended {
		ss.writeRaw(formatEPSV(announced) + "\r\n")
		return
	}
	addr := ss.local
	if a := ss.cfg.AnnounceAddr.Unmap(); a.Is4() {
		addr = a
	}
	text, err := formatPASV(netip.AddrPortFrom(addr, announced))
	if err != nil { // unreachable: addr is IPv4
		ss.reply(425, "Cannot announce address.")
		return
	}
	ss.writeRaw(text + "\r\n")
}

// listenPassive opens a listener on the control connection's local address
// with a port from the configured range (tried from a random start).
func (ss *session) listenPassive() (net.Listener, uint16, error) {
	network := "tcp4"
	if !ss.local.Is4() {
		network = "tcp6"
	}
	lo, hi := ss.cfg.PassiveMin, ss.cfg.PassiveMax
	if hi < lo {
		hi = lo
	}
	ctx, cancel := context.WithTimeout(context.Background(), ss.cfg.DataTimeout)
	defer cancel()
	n := int(hi) - int(lo) + 1
	start := 0
	if lo != 0 {
		start = rand.IntN(n)
	}
	var lastErr error
	for i := range n {
		port := uint16(0)
		if lo != 0 {
			port = lo + uint16((start+i)%n)
		}
		ln, err := ss.cfg.Listen(ctx, network, netip.AddrPortFrom(ss.local, port).String())
		if err != nil {
			lastErr = err
			continue
		}
		ap, err := netip.ParseAddrPort(ln.Addr().String())
		if err != nil || !ss.srv.track(ln) {
			ln.Close()
			return nil, 0, fmt.Errorf("failed to register listener %s: %v", ln.Addr(), err)
		}
		return ln, ap.Port(), nil
	}
	return nil, 0, fmt.Errorf("failed to listen on %s ports %d-%d: %w", ss.local, lo, hi, lastErr)
}

// setActive handles the parsed argument of PORT or EPRT.
func (ss *session) setActive(ap netip.AddrPort, err error) {
	switch {
	case err != nil:
		ss.reply(501, "Illegal PORT command.")
		return
	case ss.epsvAll:
		ss.reply(500, "PORT not allowed after EPSV ALL.")
		return
	case !ss.cfg.AllowForeignData && (ap.Addr().Unmap() != ss.peer || ap.Port() < 1024):
		// RFC 2577 §3: refuse third-party targets and privileged ports.
		ss.log.Info("refused active target", "target", ap.String())
		ss.reply(500, "Illegal PORT command.")
		return
	}
	ss.closeData()
	ss.active = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	ss.reply(200, "PORT command successful. Consider using PASV.")
}

// closeData drops a pending passive listener or active target.
func (ss *session) closeData() {
	if ss.pasv != nil {
		ss.pasv.Close()
		ss.srv.untrack(ss.pasv)
		ss.pasv = nil
	}
	ss.active = netip.AddrPort{}
}

// openData establishes the data connection prepared by PASV/EPSV (accept)
// or PORT/EPRT (dial). The preparation is used up either way.
func (ss *session) openData() (net.Conn, error) {
	timeout := ss.cfg.DataTimeout
	if ln := ss.pasv; ln != nil {
		ss.pasv = nil
		defer ss.srv.untrack(ln)
		defer ln.Close()
		// Closing the listener is the one way to bound Accept on any
		// net.Listener implementation.
		t := time.AfterFunc(timeout, func() { ln.Close() })
		defer t.Stop()
		c, err := ln.Accept()
		if err != nil {
			return nil, err
		}
		if !ss.cfg.AllowForeignData && addrOf(c.RemoteAddr()) != ss.peer {
			c.Close()
			return nil, fmt.Errorf("%w: %s", errBadDataPeer, c.RemoteAddr())
		}
		return ss.trackData(c)
	}
	if raddr := ss.active; raddr.IsValid() {
		ss.active = netip.AddrPort{}
		network := "tcp4"
		if !raddr.Addr().Is4() {
			network = "tcp6"
		}
		var laddr netip.AddrPort
		if ss.local.Is4() == raddr.Addr().Is4() {
			laddr = netip.AddrPortFrom(ss.local, 0)
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		c, err := ss.cfg.Dial(ctx, network, laddr, raddr)
		if err != nil {
			return nil, err
		}
		return ss.trackData(c)
	}
	return nil, errNoDataSetup
}

func (ss *session) trackData(c net.Conn) (net.Conn, error) {
	if !ss.srv.track(c) {
		c.Close()
		return nil, ErrServerClosed
	}
	return c, nil
}

// closeConn closes a data connection from openData or protectData; a TLS
// one sends close_notify first.
func (ss *session) closeConn(c net.Conn) error {
	if tc, ok := c.(*tls.Conn); ok {
		defer ss.srv.untrack(tc.NetConn())
		return tc.Close()
	}
	ss.srv.untrack(c)
	return c.Close()
}

// copyData copies src to dst, extending the data connection's deadline
// before every read and write.
func (ss *session) copyData(dst io.Writer, src io.Reader, conn net.Conn) error {
	if ss.buf == nil {
		ss.buf = make([]byte, 32<<10)
	}
	for {
		if err := conn.SetDeadline(time.Now().Add(ss.cfg.DataTimeout)); err != nil {
			return err
		}
		n, rerr := src.Read(ss.buf)
		if n > 0 {
			if _, err := dst.Write(ss.buf[:n]); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// dataFailed replies to a failed openData.
func (ss *session) dataFailed(err error) {
	ss.log.Info("data connection failed", "error", err)
	switch {
	case errors.Is(err, errNoDataSetup):
		ss.reply(425, "Use PORT or PASV first.")
	case errors.Is(err, errBadDataPeer):
		ss.reply(425, "Security: Bad IP connecting.")
	default:
		ss.reply(425, "Failed to establish connection.")
	}
}

func (ss *session) retr(arg string) {
	name := ss.rel(arg)
	r, err := ss.srv.store.open(name)
	if err != nil {
		ss.closeData()
		ss.reply(550, "Failed to open file.")
		return
	}
	defer r.Close()
	e, _ := ss.srv.store.stat(name)
	c, err := ss.openData()
	if err != nil {
		ss.dataFailed(err)
		return
	}
	ss.reply(150, fmt.Sprintf("Opening BINARY mode data connection for %s (%d bytes).", arg, e.size))
	if c, err = ss.protectData(c); err != nil {
		return
	}
	err = ss.copyData(c, r, c)
	if cerr := ss.closeConn(c); err == nil {
		err = cerr
	}
	if err != nil {
		ss.log.Info("retr failed", "error", err)
		ss.reply(426, "Failure writing network stream.")
		return
	}
	ss.reply(226, "Transfer complete.")
}

func (ss *session) stor(arg string) {
	w, err := ss.srv.store.create(ss.rel(arg))
	if err != nil {
		ss.closeData()
		ss.reply(553, "Could not create file.")
		return
	}
	c, err := ss.openData()
	if err != nil {
		w.Close()
		ss.dataFailed(err)
		return
	}
	ss.reply(150, "Ok to send data.")
	if c, err = ss.protectData(c); err != nil {
		w.Close()
		return
	}
	err = ss.copyData(w, c, c)
	ss.closeConn(c)
	if err != nil {
		w.Close()
		ss.log.Info("stor failed", "error", err)
		ss.reply(426, "Failure reading network stream.")
		return
	}
	if err := w.Close(); err != nil {
		ss.reply(451, "Failure writing to local file.")
		return
	}
	ss.reply(226, "Transfer complete.")
}

// list handles LIST (long) and NLST (names). Arguments starting with "-"
// are ls options that clients send (e.g. "-a") and are ignored.
func (ss *session) list(arg string, long bool) {
	target := "."
	for f := range strings.FieldsSeq(arg) {
		if !strings.HasPrefix(f, "-") {
			target = f
		}
	}
	name := ss.rel(target)
	e, err := ss.srv.store.stat(name)
	var entries []entry
	if err == nil && e.dir {
		entries, err = ss.srv.store.list(name)
	} else if err == nil {
		entries = []entry{e}
	}
	if err != nil {
		ss.closeData()
		ss.reply(550, "No such file or directory.")
		return
	}
	var b strings.Builder
	for _, e := range entries {
		if long {
			mode := "-rw-r--r--"
			if e.dir {
				mode = "drwxr-xr-x"
			}
			fmt.Fprintf(&b, "%s 1 ftp ftp %12d %s %s\r\n", mode, e.size, e.modTime.UTC().Format("Jan _2 15:04"), e.name)
		} else {
			b.WriteString(e.name + "\r\n")
		}
	}
	c, err := ss.openData()
	if err != nil {
		ss.dataFailed(err)
		return
	}
	ss.reply(150, "Here comes the directory listing.")
	if c, err = ss.protectData(c); err != nil {
		return
	}
	err = ss.copyData(c, strings.NewReader(b.String()), c)
	if cerr := ss.closeConn(c); err == nil {
		err = cerr
	}
	if err != nil {
		ss.reply(426, "Failure writing network stream.")
		return
	}
	ss.reply(226, "Directory send OK.")
}

// addrOf returns the unmapped IP of a TCP address, or the zero Addr.
func addrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}
