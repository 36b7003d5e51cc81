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

// The verb classes below are the one home of these lists for the whole
// program: the transports, audit and metrics ask here. Each takes an
// upper-case verb, as in Command.Verb and Decision.Verb.

// IsActiveVerb reports whether verb announces an active-mode data
// connection endpoint: PORT (RFC 959), EPRT (RFC 2428) or LPRT (RFC 1639).
// The session validates their address (Decision.Endpoint) and opens the
// pinhole on the server's 200.
func IsActiveVerb(verb string) bool {
	switch verb {
	case "PORT", "EPRT", "LPRT":
		return true
	}
	return false
}

// UsesDataConnection reports whether verb transfers over a data
// connection: RETR, STOR, STOU, APPE (files) and LIST, NLST, MLSD
// (listings; RFC 959 §4.1.3, RFC 3659 §7).
func UsesDataConnection(verb string) bool {
	switch verb {
	case "RETR", "STOR", "STOU", "APPE", "LIST", "NLST", "MLSD":
		return true
	}
	return false
}

// IsTransferVerb reports whether verb is logged as a transfer, with its
// path and final reply: the verbs of UsesDataConnection plus the file
// system changes DELE, RNFR, RNTO, MKD and RMD.
func IsTransferVerb(verb string) bool {
	switch verb {
	case "DELE", "RNFR", "RNTO", "MKD", "RMD":
		return true
	}
	return UsesDataConnection(verb)
}

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
