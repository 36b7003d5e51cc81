package ftp

import (
	"fmt"
	"strings"
)

// Command is a parsed client command line (RFC 959 §5.3).
type Command struct {
	// Verb is the command keyword, upper-cased.
	Verb string
	// Arg is everything after the single space that follows the verb,
	// verbatim; empty when there is none.
	Arg string
}

// knownVerbs are the commands of RFC 959, 1123, 2228, 2389, 2428, 3659,
// 4217 and 1639 plus the X-prefixed RFC 775 forms that servers still
// accept. Unknown verbs parse too: the server decides what it supports.
var knownVerbs = map[string]bool{
	"USER": true, "PASS": true, "ACCT": true, "AUTH": true, "ADAT": true,
	"PBSZ": true, "PROT": true, "CCC": true, "MIC": true, "CONF": true,
	"ENC": true, "PORT": true, "EPRT": true, "LPRT": true, "PASV": true,
	"EPSV": true, "LPSV": true, "REIN": true, "QUIT": true, "RETR": true,
	"STOR": true, "STOU": true, "APPE": true, "LIST": true, "NLST": true,
	"MLSD": true, "MLST": true, "DELE": true, "RNFR": true, "RNTO": true,
	"MKD": true, "RMD": true, "CWD": true, "CDUP": true, "PWD": true,
	"TYPE": true, "MODE": true, "STRU": true, "REST": true, "ABOR": true,
	"FEAT": true, "OPTS": true, "SYST": true, "STAT": true, "HELP": true,
	"NOOP": true, "SIZE": true, "MDTM": true, "SITE": true, "ALLO": true,
	"SMNT": true, "LANG": true, "XPWD": true, "XCWD": true, "XCUP": true,
	"XMKD": true, "XRMD": true,
}

// KnownVerb reports whether verb (upper case) is a command this package
// knows by name.
func KnownVerb(verb string) bool { return knownVerbs[verb] }

// ParseCommand parses the text of a client line (terminator removed, Telnet
// processed, as in FramedLine.Text). The verb is 3 or 4 ASCII letters (which
// covers the X-prefixed forms such as XPWD); it may be followed by one space
// and an argument. Control characters (below 0x20 and DEL) are rejected
// anywhere: a CR or NUL inside a line is how a peer makes a server see a
// line boundary that a middlebox does not. Errors never quote the line: it
// may be a PASS command.
func ParseCommand(text string) (Command, error) {
	if text == "" {
		return Command{}, fmt.Errorf("failed to parse command: empty line: %w", ErrMalformed)
	}
	for i := 0; i < len(text); i++ {
		if c := text[i]; c < 0x20 || c == 0x7f {
			return Command{}, fmt.Errorf("failed to parse command: control character 0x%02x at byte %d: %w", c, i, ErrMalformed)
		}
	}
	n := 0
	for n < len(text) && isASCIILetter(text[n]) {
		n++
	}
	if n < 3 || n > 4 {
		return Command{}, fmt.Errorf("failed to parse command: verb is not 3 or 4 ASCII letters: %w", ErrMalformed)
	}
	cmd := Command{Verb: strings.ToUpper(text[:n])}
	if n == len(text) {
		return cmd, nil
	}
	if text[n] != ' ' {
		return Command{}, fmt.Errorf("failed to parse command: verb followed by 0x%02x instead of a space: %w", text[n], ErrMalformed)
	}
	cmd.Arg = text[n+1:]
	return cmd, nil
}

func isASCIILetter(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
