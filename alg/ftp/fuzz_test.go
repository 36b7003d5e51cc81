package ftp

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// chunked splits p by the sizes encoded in cuts (1..16 each, cycled).
func chunked(p, cuts []byte) [][]byte {
	if len(cuts) == 0 {
		return [][]byte{p}
	}
	var out [][]byte
	for i := 0; len(p) > 0; i++ {
		n := min(int(cuts[i%len(cuts)]%16)+1, len(p))
		out = append(out, p[:n])
		p = p[n:]
	}
	return out
}

func FuzzFramer(f *testing.F) {
	f.Add([]byte("USER anonymous\r\nPASV\r\n"), uint8(63), []byte{1, 2, 3})
	f.Add([]byte("NOOP\n\r\n\nSYST\n"), uint8(7), []byte{0})
	f.Add([]byte("\xff\xf4\xff\xf2ABOR\r\nSTOR a\xff\xffb\r\nNO\xff\xfb\x01OP\r\nSYST\xff\r\n"), uint8(15), []byte{5, 9})
	f.Add([]byte(strings.Repeat("A", 40)+"\r\nPORT 1,2,3,4,5,6\r\nNOOP\r\n"), uint8(23), []byte{15})
	f.Add([]byte("ABCDE\r\nX\n"), uint8(5), []byte{})
	f.Fuzz(func(t *testing.T, data []byte, maxLine uint8, cuts []byte) {
		limit := int(maxLine%64) + 1
		fr := NewFramer(limit)
		whole := fr.Feed(data)
		if fr.Offset() != uint64(len(data)) {
			t.Fatalf("Offset() = %d, want %d", fr.Offset(), len(data))
		}
		if fr.Buffered() >= limit {
			t.Fatalf("Buffered() = %d, want < %d", fr.Buffered(), limit)
		}

		var next uint64
		prevTooLong := false
		for i, l := range whole {
			if l.Ref.Len != len(l.Raw) || l.Ref.Len > limit || l.Ref.Len == 0 {
				t.Fatalf("line %d: ref %+v for %d raw bytes, limit %d", i, l.Ref, len(l.Raw), limit)
			}
			if !bytes.Equal(l.Raw, data[l.Ref.Start:l.Ref.End()]) {
				t.Fatalf("line %d: raw %q is not the stream at %+v", i, l.Raw, l.Ref)
			}
			if prevTooLong {
				// The discarded rest of a too-long line ends at its first LF.
				gap := data[next:l.Ref.Start]
				if len(gap) == 0 || bytes.IndexByte(gap, '\n') != len(gap)-1 {
					t.Fatalf("line %d: discarded bytes %q do not end at their only LF", i, gap)
				}
			} else if l.Ref.Start != next {
				t.Fatalf("line %d starts at %d, want %d", i, l.Ref.Start, next)
			}
			lf := bytes.IndexByte(l.Raw, '\n')
			if l.TooLong {
				if lf >= 0 || l.Ref.Len != limit {
					t.Fatalf("too-long line %d: %q", i, l.Raw)
				}
			} else if lf != len(l.Raw)-1 {
				t.Fatalf("line %d %q does not end at its only LF", i, l.Raw)
			}
			next = l.Ref.End()
			prevTooLong = l.TooLong
		}

		fr = NewFramer(limit)
		var parts []FramedLine
		for _, c := range chunked(data, cuts) {
			parts = append(parts, fr.Feed(c)...)
		}
		if diff := cmp.Diff(whole, parts); diff != "" {
			t.Fatalf("chunked feed differs (-whole +chunked):\n%s", diff)
		}
	})
}

var validCommand = regexp.MustCompile(`^[A-Za-z]{3,4}( .*)?$`)

func FuzzParseCommand(f *testing.F) {
	for _, tt := range commandCases {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, text string) {
		cmd, err := ParseCommand(text)
		valid := validCommand.MatchString(text) && !hasControl([]byte(text))
		if (err == nil) != valid {
			t.Fatalf("ParseCommand(%q) error = %v, want valid=%v", text, err, valid)
		}
		if err != nil {
			return
		}
		if cmd.Verb != strings.ToUpper(cmd.Verb) {
			t.Fatalf("verb %q is not upper case", cmd.Verb)
		}
		rebuilt := cmd.Verb
		if len(text) > len(cmd.Verb) {
			rebuilt += " " + cmd.Arg
		}
		if !strings.EqualFold(rebuilt, text) || !strings.HasSuffix(text, cmd.Arg) {
			t.Fatalf("ParseCommand(%q) = %+v does not rebuild the text", text, cmd)
		}
	})
}

func FuzzParseHostPort(f *testing.F) {
	for _, tt := range hostPortCases {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ap, err := ParseHostPort(s)
		if err != nil {
			return
		}
		if !ap.Addr().Is4() || ap.Port() == 0 {
			t.Fatalf("ParseHostPort(%q) = %v", s, ap)
		}
		if back, err := ParseHostPort(FormatPORT(ap)); err != nil || back != ap {
			t.Fatalf("ParseHostPort(FormatPORT(%v)) = %v, %v", ap, back, err)
		}
	})
}

func FuzzParseLPRT(f *testing.F) {
	for _, tt := range lprtCases {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ap, err := ParseLPRT(s)
		if err != nil {
			return
		}
		if ap.Port() == 0 || ap.Addr().Is4In6() {
			t.Fatalf("ParseLPRT(%q) = %v", s, ap)
		}
		if ap.Addr().Is4() {
			if back, err := ParseHostPort(FormatPORT(ap)); err != nil || back != ap {
				t.Fatalf("ParseHostPort(FormatPORT(%v)) = %v, %v", ap, back, err)
			}
		}
	})
}

func FuzzParse227(f *testing.F) {
	for _, tt := range reply227Cases {
		f.Add(tt.in)
	}
	for _, tt := range reply228Cases {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, text string) {
		ap, err := Parse227(text)
		if err == nil {
			if !ap.Addr().Is4() || ap.Port() == 0 {
				t.Fatalf("Parse227(%q) = %v", text, ap)
			}
			if back, err := Parse227(Format227(ap)); err != nil || back != ap {
				t.Fatalf("Parse227(Format227(%v)) = %v, %v", ap, back, err)
			}
		}
		if ap, err := Parse228(text); err == nil && (ap.Port() == 0 || ap.Addr().Is4In6()) {
			t.Fatalf("Parse228(%q) = %v", text, ap)
		}
	})
}

func FuzzParse229(f *testing.F) {
	for _, tt := range reply229Cases {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, text string) {
		port, err := Parse229(text)
		if err != nil {
			return
		}
		if port == 0 {
			t.Fatalf("Parse229(%q) = 0", text)
		}
		if back, err := Parse229("(" + Format229(port) + ")"); err != nil || back != port {
			t.Fatalf("Parse229(Format229(%d)) = %d, %v", port, back, err)
		}
	})
}

func FuzzParseEPRT(f *testing.F) {
	for _, tt := range eprtCases {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, arg string) {
		ap, err := ParseEPRT(arg)
		if err != nil {
			return
		}
		a := ap.Addr()
		if ap.Port() == 0 || a.Is4In6() || a.Zone() != "" {
			t.Fatalf("ParseEPRT(%q) = %v", arg, ap)
		}
		if back, err := ParseEPRT(FormatEPRT(ap)); err != nil || back != ap {
			t.Fatalf("ParseEPRT(FormatEPRT(%v)) = %v, %v", ap, back, err)
		}
	})
}

// encodeScript turns steps into FuzzSession's input: each op is a byte
// (bit 0 the direction, bits 1..7 the length minus one) and its data.
func encodeScript(steps []step) []byte {
	var out []byte
	for _, st := range steps {
		p := []byte(st.data)
		for len(p) > 0 {
			n := min(len(p), 128)
			out = append(out, byte(st.dir)|byte(n-1)<<1)
			out = append(out, p[:n]...)
			p = p[n:]
		}
	}
	return out
}

type fuzzOp struct {
	dir  Direction
	data []byte
}

func decodeScript(script []byte) []fuzzOp {
	var ops []fuzzOp
	for len(script) > 0 {
		b := script[0]
		n := min(int(b>>1)+1, len(script)-1)
		ops = append(ops, fuzzOp{Direction(b & 1), script[1 : 1+n]})
		script = script[1+n:]
	}
	return ops
}

// fuzzConfig derives a configuration from flag bits.
func fuzzConfig(flags uint8) (Config, bool) {
	cfg := Config{Client: clientAP, Server: serverAP}
	cfg.AllowActive = flags&1 != 0
	cfg.AllowThirdParty = flags&2 != 0
	cfg.TransportDecrypts = flags&4 != 0
	cfg.InjectsReplies = flags&8 != 0
	if flags&32 != 0 {
		cfg.Client, cfg.Server = client6AP, server6AP
	}
	if flags&64 != 0 {
		cfg.MaxLine = 64
	}
	if flags&128 != 0 {
		cfg.PassiveMin, cfg.PassiveMax = 40000, 60000
	}
	return cfg, flags&16 != 0
}

func FuzzSession(f *testing.F) {
	seeds := [][]step{
		{
			sv("220 (vsFTPd 3.0.5)\r\n"), cl("USER anonymous\r\n"), sv("331 Please specify the password.\r\n"),
			cl("PASS x\r\n"), sv("230 Login successful.\r\n"),
			cl("PASV\r\n"), sv("227 Entering Passive Mode (198,51,100,2,195,80).\r\n"),
			cl("EPSV\r\n"), sv("229 Entering Extended Passive Mode (|||50000|)\r\n"),
			cl("PORT 192,0,2,10,195,81\r\n"), sv("200 PORT command successful. Consider using PASV.\r\n"),
			cl("EPRT |2|2001:db8::10|50001|\r\n"), sv("200 EPRT command successful.\r\n"),
			cl("LPSV\r\n"), sv("228 Entering Long Passive Mode (4,4,198,51,100,2,2,195,80)\r\n"),
			cl("QUIT\r\n"), sv("221 Goodbye.\r\n"),
		},
		{
			sv("220 ready\r\n"),
			cl("FEAT\r\n"), sv("211-Features:\r\n EPRT\r\n227 Entering Passive Mode (203,0,113,9,0,22).\r\n211 End\r\n"),
			sv("227 Entering Passive Mode (203,0,113,9,0,22).\r\n"),
			cl("PASV\r\n"), sv("227 Entering Passive Mode (198,51,100,2,0,22).\r\n"),
			cl("EPSV ALL\r\n"), sv("200 ok\r\n"), cl("PASV\r\n"), sv("500 Unknown command.\r\n"),
			cl("REIN\r\n"), sv("220 ok\r\n"),
			cl("PORT 192,0,2,256,195,80\r\n"), cl("PORT 203,0,113,9,0,25\r\n"), cl("NOOP \xff\xfb\rPORT 192,0,2,10,195,80\r\n"),
			cl("SITE " + strings.Repeat("A", 100) + "PORT 192,0,2,10,195,80\r\n"),
		},
		{
			sv("220 ready\r\n"),
			cl("AUTH TLS\r\n"), sv("234 Proceed with negotiation.\r\n"),
			cl(string([]byte{22, 3, 1, 0, 2, 1, 1})), sv(string([]byte{22, 3, 3, 0, 1, 9, 21, 3, 3, 0, 0})),
			cl("CCC\r\n"), sv("200 Clearing\r\n"),
			cl("PASV\r\n"), sv("227 Entering Passive Mode (198,51,100,2,195,80)\r\n"),
		},
		{
			// Commands pipelined before the greeting; a 227 in its place.
			cl("USER a\r\nPASV\r\nEPSV\r\n"), sv("227 Entering Passive Mode (198,51,100,2,195,80).\r\n"),
			sv("331 Password required.\r\n"), sv("227 Entering Passive Mode (198,51,100,2,195,80).\r\n"),
		},
	}
	for i, s := range seeds {
		f.Add(encodeScript(s), uint8(1|i<<2), false)
		f.Add(encodeScript(s), uint8(0xff), i == 0)
	}
	f.Fuzz(func(t *testing.T, script []byte, flags uint8, midstream bool) {
		cfg, implicit := fuzzConfig(flags)
		cfg.Midstream = midstream
		ops := decodeScript(script)

		run := func(split bool) []Decision {
			sess := NewSession(cfg)
			if implicit {
				sess.StartImplicitTLS()
			}
			var all []Decision
			for _, op := range ops {
				parts := [][]byte{op.data}
				if split {
					parts = chunked(op.data, []byte{0})
				}
				for _, p := range parts {
					before := sess.Offset(op.dir)
					got := sess.Feed(op.dir, p)
					after := sess.Offset(op.dir)
					for _, d := range got {
						checkDecision(t, cfg, d, op.dir, before, after)
					}
					all = append(all, got...)
				}
			}
			return all
		}
		whole := run(false)
		bytewise := run(true)
		if !reflect.DeepEqual(whole, bytewise) {
			t.Fatalf("byte-by-byte feed differs (-whole +bytewise):\n%s", cmp.Diff(whole, bytewise, equateAddr))
		}
		for _, d := range whole {
			checkRewrite(t, d)
		}
	})
}

// checkRewrite asserts that an accepted announcement rewritten to an IPv4
// and an IPv6 endpoint reads back as that endpoint, or fails with
// ErrFamily exactly when the form is IPv4-only (PORT, 227).
func checkRewrite(t *testing.T, d Decision) {
	t.Helper()
	if !d.EndpointOnLine {
		return
	}
	port := uint16(1024 + (int(d.Endpoint.Port())*7)%64512)
	for _, a := range []netip.Addr{to4.Addr(), to6.Addr()} {
		to := netip.AddrPortFrom(a, port)
		rw, err := RewriteAnnouncement(d, to)
		if a.Is6() && (d.Verb == "PORT" || d.Code == 227) {
			if !errors.Is(err, ErrFamily) {
				t.Fatalf("RewriteAnnouncement(%+v, %s) = %+v, %v; want ErrFamily", d, to, rw, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("RewriteAnnouncement(%+v, %s): %v", d, to, err)
		}
		if rw.Line != d.Line || rw.Dir != d.Dir || rw.Endpoint != to {
			t.Fatalf("RewriteAnnouncement(%+v, %s) = %+v", d, to, rw)
		}
		if back, err := reparse(rw); err != nil || back != to {
			t.Fatalf("%+v rewritten to %q reads back as %s, %v; want %s", d, rw.Replacement, back, err, to)
		}
	}
}

// checkDecision asserts the policy invariants of one decision.
func checkDecision(t *testing.T, cfg Config, d Decision, dir Direction, before, after uint64) {
	t.Helper()
	if d.Dir != dir {
		t.Fatalf("decision %+v from a %v feed", d, dir)
	}
	// Bytes of a rejected TLS record header (at most 4, possibly fed
	// earlier) are parsed again as clear text, so a line may end up to
	// that far before the feed.
	if d.Action == ActionTLSCleared && d.Line.Len == 0 {
		if d.Line.Start+tlsHeaderLen < before || d.Line.Start > after {
			t.Fatalf("TLSCleared at %d outside feed %d..%d", d.Line.Start, before, after)
		}
	} else if d.Line.End()+tlsHeaderLen <= before || d.Line.End() > after || d.Line.Len <= 0 {
		t.Fatalf("decision %+v: line does not end in feed %d..%d", d, before, after)
	}
	if d.Replacement != nil && len(d.Replacement) != d.Line.Len {
		t.Fatalf("replacement of %d bytes for a %d-byte line: %+v", len(d.Replacement), d.Line.Len, d)
	}
	if d.Action == ActionCommand && d.Verb == "PASS" && d.Arg != redacted {
		t.Fatalf("PASS argument %q not redacted", d.Arg)
	}
	switch {
	case d.Action == ActionCommand && d.Endpoint.IsValid():
		ep := d.Endpoint
		if !IsActiveVerb(d.Verb) || !d.EndpointOnLine || !cfg.AllowActive || ep.Port() < 1024 ||
			ep.Addr().Is4() != cfg.Client.Addr().Is4() || (ep.Addr() != cfg.Client.Addr() && !cfg.AllowThirdParty) {
			t.Fatalf("command endpoint breaks policy: %+v", d)
		}
	case d.Action == ActionOpenPinhole:
		if d.Endpoint != netip.AddrPortFrom(d.Pinhole.Dst, d.Pinhole.DstPort) || (d.EndpointOnLine && d.Pinhole.Mode != Passive) {
			t.Fatalf("pinhole endpoint differs from its pinhole: %+v", d)
		}
	case d.Endpoint.IsValid() || d.EndpointOnLine:
		t.Fatalf("endpoint on a decision that announces none: %+v", d)
	}
	if d.Action != ActionOpenPinhole {
		return
	}
	ph := d.Pinhole
	client, server := cfg.Client.Addr(), cfg.Server.Addr()
	if ph.DstPort < 1024 {
		t.Fatalf("pinhole to privileged port: %+v", d)
	}
	if ph.Dst.Is4() != server.Is4() {
		t.Fatalf("pinhole family differs from the control connection: %+v", d)
	}
	switch ph.Mode {
	case Passive:
		lo, hi := cfg.PassiveMin, cfg.PassiveMax
		if lo == 0 {
			lo = 1024
		}
		if hi == 0 {
			hi = 65535
		}
		if ph.DstPort < lo || ph.DstPort > hi || ph.Src != client || (ph.Dst != server && !cfg.AllowThirdParty) {
			t.Fatalf("passive pinhole breaks policy: %+v", d)
		}
	case Active:
		if !cfg.AllowActive || ph.Src != server || (ph.Dst != client && !cfg.AllowThirdParty) {
			t.Fatalf("active pinhole breaks policy: %+v", d)
		}
	default:
		t.Fatalf("pinhole without mode: %+v", d)
	}
	if !ph.Dst.IsValid() || ph.Dst.Zone() != "" || ph.Dst.Is4In6() {
		t.Fatalf("pinhole address %v", ph.Dst)
	}
}
