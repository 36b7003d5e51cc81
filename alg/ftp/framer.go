package ftp

import "bytes"

// Telnet command bytes (RFC 854) that the framer interprets.
const (
	telnetIAC  = 255 // interpret as command
	telnetWILL = 251 // WILL, WONT, DO and DONT (251..254) carry one option byte
	telnetDONT = 254
)

// FramedLine is one line of a control connection direction.
type FramedLine struct {
	// Ref locates Raw in the direction's stream. Ref.Len == len(Raw).
	Ref LineRef
	// Raw is a copy of the exact bytes of the line, including the LF (and
	// CR) terminator. When TooLong is set Raw holds only the first maxLine
	// bytes of the line and has no terminator.
	Raw []byte
	// Text is Raw without the terminator (LF and one CR before it) after
	// Telnet processing (RFC 854): IAC IAC becomes 0xFF, IAC WILL/WONT/DO/
	// DONT and their option byte are removed, IAC and any other command
	// byte are removed, and a dangling IAC at the end is dropped.
	Text string
	// TooLong reports a line that did not end within maxLine bytes. The
	// framer reports it as soon as maxLine bytes without an LF have been
	// seen, then discards everything up to and including the next LF: those
	// bytes are never a line start.
	TooLong bool
}

// Framer splits one direction of a control connection into lines. It
// accepts CRLF and bare LF as terminators (RFC 959 §4.1 requires CRLF; real
// clients and servers differ, and a bare LF ends a line for most servers, so
// treating it as a boundary is the conservative choice). It buffers at most
// maxLine bytes and never retains the caller's slices.
//
// Framing is done on raw bytes: every LF is a line boundary whatever Telnet
// sequence it may follow. A peer that interprets Telnet therefore sees at
// most the boundaries the framer sees, never more.
type Framer struct {
	max        int
	off        uint64 // stream offset of the next byte
	start      uint64 // stream offset of the line being buffered
	buf        []byte // bytes of the incomplete line, len(buf) < max
	discarding bool   // inside the rest of a too-long line
}

// NewFramer returns a framer for lines of at most maxLine bytes including
// the terminator. A maxLine below 1 means DefaultMaxLine.
func NewFramer(maxLine int) *Framer {
	f := &Framer{}
	f.init(maxLine)
	return f
}

func (f *Framer) init(maxLine int) {
	if maxLine < 1 {
		maxLine = DefaultMaxLine
	}
	*f = Framer{max: maxLine}
}

// Offset returns the number of bytes fed so far: the stream offset of the
// next byte.
func (f *Framer) Offset() uint64 { return f.off }

// Buffered returns how many bytes of an incomplete line the framer holds.
func (f *Framer) Buffered() int { return len(f.buf) }

// reset drops any incomplete line and continues at stream offset off. The
// buffer is zeroed so that no fragment (a password, say) stays in memory.
func (f *Framer) reset(off uint64) {
	clear(f.buf)
	f.buf = f.buf[:0]
	f.off = off
	f.start = off
	f.discarding = false
}

// Feed consumes p and returns the lines it completes, in stream order.
func (f *Framer) Feed(p []byte) []FramedLine {
	var out []FramedLine
	for len(p) > 0 {
		line, ok, n := f.next(p)
		p = p[n:]
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// next consumes bytes of p until one line is complete or p is exhausted. It
// returns the line, whether there is one, and how many bytes it consumed.
// Stopping after each line lets the session switch a direction to TLS
// record tracking right after a 234 reply.
func (f *Framer) next(p []byte) (FramedLine, bool, int) {
	if f.discarding {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			f.off += uint64(len(p))
			return FramedLine{}, false, len(p)
		}
		f.off += uint64(i + 1)
		f.start = f.off
		f.discarding = false
		return FramedLine{}, false, i + 1
	}

	room := f.max - len(f.buf)
	seg := p[:min(len(p), room)]
	if i := bytes.IndexByte(seg, '\n'); i >= 0 {
		raw := make([]byte, len(f.buf)+i+1)
		copy(raw, f.buf)
		copy(raw[len(f.buf):], seg[:i+1])
		f.off += uint64(i + 1)
		line := FramedLine{
			Ref:  LineRef{Start: f.start, Len: len(raw)},
			Raw:  raw,
			Text: telnetText(raw[:contentEnd(raw)]),
		}
		f.reset(f.off)
		return line, true, i + 1
	}

	f.off += uint64(len(seg))
	if len(f.buf)+len(seg) < f.max {
		f.grow(len(seg))
		f.buf = append(f.buf, seg...)
		return FramedLine{}, false, len(seg)
	}

	// maxLine bytes and no LF: the line cannot fit.
	raw := make([]byte, len(f.buf)+len(seg))
	copy(raw, f.buf)
	copy(raw[len(f.buf):], seg)
	line := FramedLine{
		Ref:     LineRef{Start: f.start, Len: len(raw)},
		Raw:     raw,
		Text:    telnetText(raw),
		TooLong: true,
	}
	f.reset(f.off)
	f.discarding = true
	return line, true, len(seg)
}

// grow makes room for n more bytes without letting the buffer's capacity
// exceed maxLine.
func (f *Framer) grow(n int) {
	need := len(f.buf) + n
	if need <= cap(f.buf) {
		return
	}
	c := min(max(2*cap(f.buf), need, 128), f.max)
	nb := make([]byte, len(f.buf), c)
	copy(nb, f.buf)
	clear(f.buf)
	f.buf = nb
}

// contentEnd returns the length of raw without its terminator: a final LF
// and one CR before it.
func contentEnd(raw []byte) int {
	n := len(raw)
	if n > 0 && raw[n-1] == '\n' {
		n--
		if n > 0 && raw[n-1] == '\r' {
			n--
		}
	}
	return n
}

// telnetText applies RFC 854 command processing to the content of a line.
func telnetText(c []byte) string {
	if bytes.IndexByte(c, telnetIAC) < 0 {
		return string(c)
	}
	out := make([]byte, 0, len(c))
	for i := 0; i < len(c); i++ {
		b := c[i]
		if b != telnetIAC {
			out = append(out, b)
			continue
		}
		if i+1 >= len(c) {
			break // dangling IAC
		}
		switch cmd := c[i+1]; {
		case cmd == telnetIAC:
			out = append(out, telnetIAC)
			i++
		case cmd >= telnetWILL && cmd <= telnetDONT:
			i += 2 // option negotiation: command and option byte
		default:
			i++ // IP, DM, NOP, SB, SE, ...
		}
	}
	return string(out)
}
