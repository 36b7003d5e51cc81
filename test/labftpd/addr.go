package labftpd

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// errSyntax is returned by the address parsers for malformed arguments.
var errSyntax = errors.New("syntax error in parameters")

// parsePORT parses the argument of a PORT command (RFC 959 §4.1.2):
// six decimal numbers 0-255 separated by commas, "h1,h2,h3,h4,p1,p2".
func parsePORT(arg string) (netip.AddrPort, error) {
	f := strings.Split(strings.TrimSpace(arg), ",")
	if len(f) != 6 {
		return netip.AddrPort{}, errSyntax
	}
	var b [6]byte
	for i, s := range f {
		n, err := parseDecimal(strings.TrimSpace(s), 255)
		if err != nil {
			return netip.AddrPort{}, errSyntax
		}
		b[i] = byte(n)
	}
	addr := netip.AddrFrom4([4]byte{b[0], b[1], b[2], b[3]})
	return netip.AddrPortFrom(addr, uint16(b[4])<<8|uint16(b[5])), nil
}

// formatPASV formats the 227 reply text for ap (RFC 959 §4.1.2, the format
// most clients parse: the six numbers inside parentheses). ap must hold an
// IPv4 (or IPv4-mapped) address.
func formatPASV(ap netip.AddrPort) (string, error) {
	a := ap.Addr().Unmap()
	if !a.Is4() {
		return "", fmt.Errorf("PASV cannot carry %s", a)
	}
	b := a.As4()
	p := ap.Port()
	return fmt.Sprintf("227 Entering Passive Mode (%d,%d,%d,%d,%d,%d).",
		b[0], b[1], b[2], b[3], p>>8, p&0xff), nil
}

// parseEPRT parses the argument of an EPRT command (RFC 2428 §2):
// "<d><net-prt><d><net-addr><d><tcp-port><d>", where <d> is any printable
// ASCII character other than a digit, and net-prt 1 is IPv4, 2 is IPv6.
func parseEPRT(arg string) (netip.AddrPort, error) {
	if len(arg) < 1 {
		return netip.AddrPort{}, errSyntax
	}
	d := arg[0]
	if d < 33 || d > 126 || (d >= '0' && d <= '9') {
		return netip.AddrPort{}, errSyntax
	}
	f := strings.Split(arg, string(d))
	// "|1|a|p|" splits into "", "1", "a", "p", "".
	if len(f) != 5 || f[0] != "" || f[4] != "" {
		return netip.AddrPort{}, errSyntax
	}
	proto, err := parseDecimal(f[1], 2)
	if err != nil || proto == 0 {
		return netip.AddrPort{}, errSyntax
	}
	addr, err := netip.ParseAddr(f[2])
	if err != nil || addr.Zone() != "" {
		return netip.AddrPort{}, errSyntax
	}
	switch {
	case proto == 1 && !addr.Is4(), proto == 2 && !addr.Is6():
		return netip.AddrPort{}, errSyntax
	}
	port, err := parseDecimal(f[3], 65535)
	if err != nil {
		return netip.AddrPort{}, errSyntax
	}
	return netip.AddrPortFrom(addr, uint16(port)), nil
}

// formatEPRT formats an EPRT argument for ap using '|' as delimiter.
func formatEPRT(ap netip.AddrPort) string {
	a := ap.Addr().Unmap()
	proto := 2
	if a.Is4() {
		proto = 1
	}
	return fmt.Sprintf("|%d|%s|%d|", proto, a, ap.Port())
}

// formatEPSV formats the 229 reply text for port (RFC 2428 §3).
func formatEPSV(port uint16) string {
	return fmt.Sprintf("229 Entering Extended Passive Mode (|||%d|)", port)
}

// parseDecimal parses a non-empty string of ASCII digits no larger than max.
// Unlike strconv.Atoi it rejects signs, spaces and underscores.
func parseDecimal(s string, max int) (int, error) {
	if s == "" || len(s) > 5 {
		return 0, errSyntax
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errSyntax
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n > max {
		return 0, errSyntax
	}
	return n, nil
}
