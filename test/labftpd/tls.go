package labftpd

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// errCCCOverflow ends a session whose client keeps sending protected data
// after CCC instead of its close_notify.
var errCCCOverflow = errors.New("too much protected data after CCC")

// handleSecurity runs the FTPS commands of RFC 4217 (AUTH, PBSZ, PROT,
// CCC) and enforces Config.RequireTLS on USER and PASS. It is only called
// with Config.TLS set and reports whether it answered the command.
func (ss *session) handleSecurity(verb, arg string) bool {
	switch verb {
	case "AUTH":
		switch strings.ToUpper(strings.TrimSpace(arg)) {
		case "TLS", "TLS-C", "SSL":
		default:
			ss.reply(504, "Unknown AUTH type.")
			return true
		}
		if ss.secured {
			ss.reply(503, "Already using TLS.")
			return true
		}
		ss.reply(234, "Proceed with negotiation.")
		if ss.werr != nil {
			return true
		}
		if err := ss.startTLS(); err != nil {
			ss.log.Info("TLS handshake failed", "error", err)
			ss.werr = err
		}
	case "PBSZ":
		// RFC 4217 §8: TLS is a stream; the only size is 0.
		arg = strings.TrimSpace(arg)
		switch _, err := strconv.ParseUint(arg, 10, 32); {
		case !ss.secured:
			ss.reply(503, "PBSZ needs a secure connection.")
		case err != nil:
			ss.reply(501, "Bad PBSZ argument.")
		default:
			ss.reply(200, "PBSZ=0")
		}
	case "PROT":
		switch strings.ToUpper(strings.TrimSpace(arg)) {
		case "C":
			ss.protP = false
			ss.reply(200, "PROT now Clear.")
		case "P":
			if !ss.secured {
				ss.reply(503, "PROT needs a secure connection.")
				return true
			}
			ss.protP = true
			ss.reply(200, "PROT now Private.")
		case "S", "E":
			ss.reply(536, "PROT level not supported.")
		default:
			ss.reply(504, "Bad PROT command.")
		}
	case "CCC":
		if ss.tlsc == nil {
			ss.reply(533, "Control connection is not protected.")
			return true
		}
		ss.reply(200, "Control connection now in clear text.")
		if ss.werr != nil {
			return true
		}
		if err := ss.clearControl(); err != nil {
			ss.log.Info("CCC failed", "error", err)
			ss.werr = err
		}
	case "USER", "PASS":
		if !ss.cfg.RequireTLS || ss.tlsc != nil {
			return false
		}
		ss.reply(530, "TLS required: send AUTH TLS first.")
	default:
		return false
	}
	return true
}

// startTLS runs the TLS handshake on the control connection (after 234, or
// first thing with implicit TLS) and moves the line reader onto it. Bytes
// the line reader had already read past the AUTH line are the start of
// the client's handshake and are replayed to crypto/tls.
func (ss *session) startTLS() error {
	if n := ss.br.Buffered(); n > 0 {
		b, _ := ss.br.Peek(n)
		ss.in = io.MultiReader(bytes.NewReader(bytes.Clone(b)), ss.in)
	}
	ss.rr = &recordReader{r: ss.in}
	tc := tls.Server(&streamConn{Conn: ss.raw, r: ss.rr}, ss.cfg.TLS)
	if err := ss.raw.SetDeadline(time.Now().Add(ss.cfg.DataTimeout)); err != nil {
		return err
	}
	if err := tc.Handshake(); err != nil {
		return err
	}
	st := tc.ConnectionState()
	ss.log.Debug("control TLS", "version", tls.VersionName(st.Version), "resumed", st.DidResume)
	ss.tlsc, ss.c, ss.secured = tc, tc, true
	ss.br = bufio.NewReaderSize(tc, ss.cfg.MaxLine)
	return nil
}

// clearControl ends TLS on the control connection after CCC (RFC 4217
// §12.3): both sides send close_notify and the session goes on in clear
// text on the same TCP connection. The recordReader under tlsc guarantees
// that crypto/tls has not read past the client's close_notify, so a
// command sent right behind it is not lost.
//
// Some clients never send their close_notify (curl's default
// --ftp-ssl-ccc-mode passive) and go straight on in clear text, so the
// first byte the client sends next decides: a TLS record starts with a
// content type from 20 to 23, a command with a letter (or Telnet IAC).
func (ss *session) clearControl() error {
	tc := ss.tlsc
	if err := ss.raw.SetDeadline(time.Now().Add(ss.cfg.DataTimeout)); err != nil {
		return err
	}
	if err := tc.CloseWrite(); err != nil {
		return err
	}
	// Protected lines the client sent after CCC are still commands; keep
	// them, in order.
	var rest bytes.Buffer
	if n := ss.br.Buffered(); n > 0 {
		b, _ := ss.br.Peek(n)
		rest.Write(b)
	}
	if err := ss.raw.SetReadDeadline(time.Now().Add(ss.cfg.IdleTimeout)); err != nil {
		return err
	}
	first := make([]byte, 1)
	if _, err := io.ReadFull(ss.in, first); err != nil {
		return err
	}
	ss.in = io.MultiReader(bytes.NewReader(first), ss.in)
	if first[0] >= 20 && first[0] <= 23 {
		ss.rr.r = ss.in
		if err := ss.raw.SetReadDeadline(time.Now().Add(ss.cfg.DataTimeout)); err != nil {
			return err
		}
		buf := make([]byte, 512)
		for {
			n, err := tc.Read(buf)
			rest.Write(buf[:n])
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
			if rest.Len() > ss.cfg.MaxLine {
				return errCCCOverflow
			}
		}
	} else {
		ss.log.Debug("CCC without close_notify from the client")
	}
	ss.tlsc, ss.rr = nil, nil
	ss.in = io.MultiReader(&rest, ss.in)
	ss.c = &streamConn{Conn: ss.raw, r: ss.in}
	ss.br = bufio.NewReaderSize(ss.c, ss.cfg.MaxLine)
	// crypto/tls left the write deadline at "now" after close_notify.
	return ss.raw.SetDeadline(time.Time{})
}

// closeNotify ends TLS on the control connection, if any, before it is
// closed.
func (ss *session) closeNotify() {
	if ss.tlsc != nil && ss.werr == nil {
		ss.tlsc.CloseWrite()
	}
}

// protectData runs the TLS handshake on a data connection under PROT P,
// after the 150 reply as vsftpd does; the FTP client is the TLS client
// (RFC 4217 §7). On failure it closes c and sends the final reply.
func (ss *session) protectData(c net.Conn) (net.Conn, error) {
	if !ss.protP {
		return c, nil
	}
	tc := tls.Server(c, ss.cfg.TLS)
	err := c.SetDeadline(time.Now().Add(ss.cfg.DataTimeout))
	if err == nil {
		err = tc.Handshake()
	}
	if err != nil {
		ss.closeConn(c)
		ss.log.Info("data TLS handshake failed", "error", err)
		ss.reply(425, "TLS negotiation on the data connection failed.")
		return nil, err
	}
	st := tc.ConnectionState()
	ss.log.Debug("data TLS", "version", tls.VersionName(st.Version), "resumed", st.DidResume)
	return tc, nil
}

// streamConn is a net.Conn whose reads come from r instead: bytes an upper
// layer read ahead, then the connection.
type streamConn struct {
	net.Conn
	r io.Reader
}

func (c *streamConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// recordHeaderLen is the size of a TLS record header: type, version and
// a big-endian length (RFC 8446 §5.1, RFC 5246 §6.2.1).
const recordHeaderLen = 5

// recordReader never returns bytes of two TLS records from one Read, so
// that crypto/tls, which reads ahead as far as one Read gives it, stops
// exactly at the end of the close_notify alert and leaves what follows
// (clear text after CCC) unread.
type recordReader struct {
	r    io.Reader
	hdr  [recordHeaderLen]byte
	nhdr int // bytes of the current record's header read so far
	left int // bytes of the current record's body not read yet
}

func (rr *recordReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if rr.nhdr < recordHeaderLen {
		n, err := rr.r.Read(p[:min(len(p), recordHeaderLen-rr.nhdr)])
		copy(rr.hdr[rr.nhdr:], p[:n])
		rr.nhdr += n
		if rr.nhdr == recordHeaderLen {
			rr.left = int(rr.hdr[3])<<8 | int(rr.hdr[4])
			if rr.left == 0 {
				rr.nhdr = 0
			}
		}
		return n, err
	}
	n, err := rr.r.Read(p[:min(len(p), rr.left)])
	rr.left -= n
	if rr.left == 0 {
		rr.nhdr = 0
	}
	return n, err
}
