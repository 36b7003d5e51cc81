package ftp

import "fmt"

// Reply is a complete server reply (RFC 959 §4.2).
type Reply struct {
	// Code is the three-digit reply code.
	Code int
	// Lines are the texts of the reply's lines as framed (terminator
	// removed, code prefixes kept), first to last. The final line is always
	// present; intermediate lines beyond the assembler's MaxLines are
	// counted in Omitted instead.
	Lines []string
	// Omitted counts intermediate lines that were not kept.
	Omitted int
}

// Text returns the final line's text after the code and its separator.
func (r Reply) Text() string {
	if len(r.Lines) == 0 {
		return ""
	}
	l := r.Lines[len(r.Lines)-1]
	if len(l) <= 4 {
		return ""
	}
	return l[4:]
}

// DefaultReplyLines is the default bound on the lines a ReplyAssembler keeps
// of one reply.
const DefaultReplyLines = 64

// ReplyAssembler groups server lines into replies (RFC 959 §4.2). A reply
// is either one line "ddd text", or starts with "ddd-text" and ends with the
// first later line that starts "ddd " with the same code. Lines in between
// may start with anything, including another code or the same code with a
// hyphen: they are text, never replies. This is what keeps a "227 ..."
// inside, say, a 211 FEAT or STAT listing from counting as an announcement.
//
// A code is three digits, the first 1..6 (6yz are RFC 2228's protected
// replies). A final line that is just the three digits is accepted.
//
// The zero value is ready to use and keeps DefaultReplyLines lines.
type ReplyAssembler struct {
	// MaxLines bounds the lines kept of one reply, including the final
	// line (minimum 2: the first and the final line). Zero means
	// DefaultReplyLines.
	MaxLines int

	code    int // code of the multi-line reply in progress; 0 when a reply start is expected
	lines   []string
	omitted int
}

// replyPrefix splits the start of a reply line: its code and whether it
// opens a multi-line reply. ok is false when line does not start a reply.
func replyPrefix(line string) (code int, multi, ok bool) {
	if len(line) < 3 || line[0] < '1' || line[0] > '6' || !isDigit(line[1]) || !isDigit(line[2]) {
		return 0, false, false
	}
	code = int(line[0]-'0')*100 + int(line[1]-'0')*10 + int(line[2]-'0')
	switch {
	case len(line) == 3 || line[3] == ' ':
		return code, false, true
	case line[3] == '-':
		return code, true, true
	}
	return 0, false, false
}

// InProgress reports whether a multi-line reply has started and not ended.
func (a *ReplyAssembler) InProgress() bool { return a.code != 0 }

// Reset drops a reply in progress.
func (a *ReplyAssembler) Reset() {
	a.code = 0
	a.lines = nil
	a.omitted = 0
}

// Add feeds the text of the next line. It returns the reply and true when
// line completes one; false while a multi-line reply goes on. When a reply
// start is expected and line is not one, it returns an error wrapping
// ErrMalformed and stays expecting a start, so the next well-formed reply is
// read normally.
func (a *ReplyAssembler) Add(line string) (Reply, bool, error) {
	code, multi, ok := replyPrefix(line)
	if a.code == 0 {
		if !ok {
			return Reply{}, false, fmt.Errorf("failed to parse reply line %s: not a reply start: %w", quote(line), ErrMalformed)
		}
		if !multi {
			return Reply{Code: code, Lines: []string{line}}, true, nil
		}
		a.code = code
		a.lines = append(a.lines[:0], line)
		return Reply{}, false, nil
	}
	if ok && !multi && code == a.code {
		r := Reply{Code: code, Lines: append(a.lines, line), Omitted: a.omitted}
		a.Reset()
		return r, true, nil
	}
	if len(a.lines) < a.maxLines()-1 {
		a.lines = append(a.lines, line)
	} else {
		a.omitted++
	}
	return Reply{}, false, nil
}

func (a *ReplyAssembler) maxLines() int {
	switch {
	case a.MaxLines == 0:
		return DefaultReplyLines
	case a.MaxLines < 2:
		return 2
	}
	return a.MaxLines
}
