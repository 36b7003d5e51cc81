package ftp

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Every numeric field is parsed here, by hand, with bounds: no sign, no
// empty field, no wrap-around ("256" is an error, never 0), leading zeros
// accepted but the value still bounded ("0300" is 300, an error for an
// octet).

// parseBounded parses s as an unsigned decimal number. ok is false when s is
// empty or holds a non-digit; inRange is false when the value exceeds limit.
func parseBounded(s string, limit int) (v int, ok, inRange bool) {
	if s == "" {
		return 0, false, false
	}
	inRange = true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isDigit(c) {
			return 0, false, false
		}
		if inRange {
			v = v*10 + int(c-'0')
			if v > limit {
				inRange = false
			}
		}
	}
	if !inRange {
		v = 0
	}
	return v, true, inRange
}

// parseOctets parses comma-separated byte fields.
func parseOctets(fields []string) ([]byte, error) {
	out := make([]byte, len(fields))
	for i, f := range fields {
		v, ok, inRange := parseBounded(f, 255)
		if !ok {
			return nil, fmt.Errorf("field %d %s is not a decimal number: %w", i+1, quote(f), ErrMalformed)
		}
		if !inRange {
			return nil, fmt.Errorf("field %d %s is above 255: %w", i+1, quote(f), ErrBadOctet)
		}
		out[i] = byte(v)
	}
	return out, nil
}

// parsePort parses a decimal TCP port, 1..65535.
func parsePort(s string) (uint16, error) {
	v, ok, inRange := parseBounded(s, 65535)
	if !ok {
		return 0, fmt.Errorf("port %s is not a decimal number: %w", quote(s), ErrMalformed)
	}
	if !inRange || v == 0 {
		return 0, fmt.Errorf("port %s is not in 1..65535: %w", quote(s), ErrBadPort)
	}
	return uint16(v), nil
}

// portFromBytes joins the two port bytes of RFC 959's host-port form.
func portFromBytes(hi, lo byte) (uint16, error) {
	p := uint16(hi)<<8 | uint16(lo)
	if p == 0 {
		return 0, fmt.Errorf("port 0: %w", ErrBadPort)
	}
	return p, nil
}

// hostPort builds the address of RFC 959's "h1,h2,h3,h4,p1,p2".
func hostPort(fields []string) (netip.AddrPort, error) {
	if len(fields) != 6 {
		return netip.AddrPort{}, fmt.Errorf("%d fields instead of 6: %w", len(fields), ErrMalformed)
	}
	b, err := parseOctets(fields)
	if err != nil {
		return netip.AddrPort{}, err
	}
	port, err := portFromBytes(b[4], b[5])
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[:4])), port), nil
}

// ParseHostPort parses the argument of PORT, "h1,h2,h3,h4,p1,p2" (RFC 959
// §4.1.2): six decimal fields of 0..255, nothing before or after, port not 0.
func ParseHostPort(s string) (netip.AddrPort, error) {
	ap, err := hostPort(strings.Split(s, ","))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("failed to parse host-port %s: %w", quote(s), err)
	}
	return ap, nil
}

// longHostPort builds the address of RFC 1639's long form
// "af,hal,h1,...,pal,p1,p2": af 4 with hal 4 or af 6 with hal 16, pal 2.
func longHostPort(fields []string) (netip.AddrPort, error) {
	if len(fields) < 3 {
		return netip.AddrPort{}, fmt.Errorf("%d fields: %w", len(fields), ErrMalformed)
	}
	b, err := parseOctets(fields)
	if err != nil {
		return netip.AddrPort{}, err
	}
	af, hal := b[0], int(b[1])
	var want int
	switch af {
	case 4:
		want = 4
	case 6:
		want = 16
	default:
		return netip.AddrPort{}, fmt.Errorf("address family %d is not 4 or 6: %w", af, ErrFamily)
	}
	if hal != want {
		return netip.AddrPort{}, fmt.Errorf("address length %d for family %d: %w", hal, af, ErrMalformed)
	}
	if len(b) != 2+hal+1+2 {
		return netip.AddrPort{}, fmt.Errorf("%d fields instead of %d: %w", len(b), 2+hal+1+2, ErrMalformed)
	}
	if pal := b[2+hal]; pal != 2 {
		return netip.AddrPort{}, fmt.Errorf("port length %d instead of 2: %w", pal, ErrMalformed)
	}
	addr, _ := netip.AddrFromSlice(b[2 : 2+hal])
	if addr.Is4In6() {
		return netip.AddrPort{}, fmt.Errorf("IPv4-mapped address %s under family 6: %w", addr, ErrFamily)
	}
	port, err := portFromBytes(b[2+hal+1], b[2+hal+2])
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(addr, port), nil
}

// ParseLPRT parses the argument of LPRT (RFC 1639): "4,4,h1,h2,h3,h4,2,p1,p2"
// or "6,16,h1,...,h16,2,p1,p2". An IPv4-mapped IPv6 address is refused
// (ErrFamily): it would name an IPv4 endpoint under the IPv6 family.
func ParseLPRT(arg string) (netip.AddrPort, error) {
	ap, err := longHostPort(strings.Split(arg, ","))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("failed to parse LPRT argument %s: %w", quote(arg), err)
	}
	return ap, nil
}

// validDelimiter reports whether c may delimit EPRT and 229 fields: RFC 2428
// allows ASCII 33..126; digits are excluded here because they would make
// the port field ambiguous.
func validDelimiter(c byte) bool { return c >= 33 && c <= 126 && !isDigit(c) }

// parseDotted parses an IPv4 address in dotted-decimal form. Unlike the
// comma forms it refuses leading zeros: inet_aton(3), which servers may
// hand this text to, reads "010" as octal 8, so "010.0.0.1" would be
// checked as one address and connected to as another.
func parseDotted(s string) (netip.Addr, error) {
	parts := strings.Split(s, ".")
	if len(parts) != 4 {
		return netip.Addr{}, fmt.Errorf("address %s is not dotted-decimal IPv4: %w", quote(s), ErrMalformed)
	}
	var b [4]byte
	for i, p := range parts {
		v, ok, inRange := parseBounded(p, 255)
		if !ok || (len(p) > 1 && p[0] == '0') {
			return netip.Addr{}, fmt.Errorf("address %s field %d is not a decimal number without leading zeros: %w", quote(s), i+1, ErrMalformed)
		}
		if !inRange {
			return netip.Addr{}, fmt.Errorf("address %s field %d is above 255: %w", quote(s), i+1, ErrBadOctet)
		}
		b[i] = byte(v)
	}
	return netip.AddrFrom4(b), nil
}

// ParseEPRT parses the argument of EPRT (RFC 2428 §2): "<d>1<d>addr<d>port<d>"
// where <d> is the first character (ASCII 33..126, not a digit), family 1 is
// dotted-decimal IPv4 and family 2 is IPv6 text. The family must match the
// address form (ErrFamily); an IPv4-mapped address under family 2 is refused
// with ErrFamily (it names an IPv4 endpoint), as is a zone.
func ParseEPRT(arg string) (netip.AddrPort, error) {
	ap, err := parseEPRT(arg)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("failed to parse EPRT argument %s: %w", quote(arg), err)
	}
	return ap, nil
}

func parseEPRT(arg string) (netip.AddrPort, error) {
	if len(arg) < 2 || !validDelimiter(arg[0]) || arg[len(arg)-1] != arg[0] {
		return netip.AddrPort{}, fmt.Errorf("not enclosed in a delimiter: %w", ErrMalformed)
	}
	parts := strings.Split(arg[1:len(arg)-1], arg[:1])
	if len(parts) != 3 {
		return netip.AddrPort{}, fmt.Errorf("%d fields instead of 3: %w", len(parts), ErrMalformed)
	}
	af, text, portText := parts[0], parts[1], parts[2]
	var addr netip.Addr
	switch af {
	case "1":
		if strings.Contains(text, ":") {
			return netip.AddrPort{}, fmt.Errorf("IPv6 address under family 1: %w", ErrFamily)
		}
		a, err := parseDotted(text)
		if err != nil {
			return netip.AddrPort{}, err
		}
		addr = a
	case "2":
		if !strings.Contains(text, ":") {
			return netip.AddrPort{}, fmt.Errorf("address %s is not IPv6 under family 2: %w", quote(text), ErrFamily)
		}
		a, err := netip.ParseAddr(text)
		if err != nil || a.Zone() != "" {
			return netip.AddrPort{}, fmt.Errorf("address %s is not an IPv6 address without zone: %w", quote(text), ErrMalformed)
		}
		if a.Is4In6() {
			return netip.AddrPort{}, fmt.Errorf("IPv4-mapped address %s under family 2: %w", a, ErrFamily)
		}
		addr = a
	default:
		if _, ok, _ := parseBounded(af, 1<<16); ok {
			return netip.AddrPort{}, fmt.Errorf("address family %s is not 1 or 2: %w", quote(af), ErrFamily)
		}
		return netip.AddrPort{}, fmt.Errorf("address family %s is not a number: %w", quote(af), ErrMalformed)
	}
	port, err := parsePort(portText)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(addr, port), nil
}

// numberRuns calls fn with each maximal run of comma-separated decimal
// numbers in s ("192,0,2,1,195,80"), in order, until fn returns true.
func numberRuns(s string, fn func(fields []string) bool) {
	i := 0
	for i < len(s) {
		if !isDigit(s[i]) {
			i++
			continue
		}
		var fields []string
		for {
			j := i
			for j < len(s) && isDigit(s[j]) {
				j++
			}
			fields = append(fields, s[i:j])
			i = j
			if i+1 < len(s) && s[i] == ',' && isDigit(s[i+1]) {
				i++
				continue
			}
			break
		}
		if fn(fields) {
			return
		}
	}
}

// Parse227 finds the address of a 227 reply (RFC 959 §4.1.2, PASV). As RFC
// 1123 §4.1.2.6 advises it does not depend on the wording or on parentheses:
// it takes the first run of exactly six comma-separated numbers anywhere in
// text ("Entering Passive Mode (192,0,2,1,195,80).", "=192,0,2,1,195,80").
// The code may be included in text or not. Fields are bounded as in
// ParseHostPort.
func Parse227(text string) (netip.AddrPort, error) {
	var fields []string
	numberRuns(text, func(f []string) bool {
		if len(f) == 6 {
			fields = f
			return true
		}
		return false
	})
	if fields == nil {
		return netip.AddrPort{}, fmt.Errorf("failed to parse 227 reply %s: %w: %w", quote(text), errNoAddress, ErrMalformed)
	}
	ap, err := hostPort(fields)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("failed to parse 227 reply %s: %w", quote(text), err)
	}
	return ap, nil
}

// Parse228 finds the address of a 228 reply to LPSV (RFC 1639): the first
// run of 9 (family 4) or 21 (family 6) comma-separated numbers, as in
// "Entering Long Passive Mode (4,4,192,0,2,1,2,195,80)", parsed as ParseLPRT
// parses its argument.
func Parse228(text string) (netip.AddrPort, error) {
	var fields []string
	numberRuns(text, func(f []string) bool {
		if len(f) == 9 || len(f) == 21 {
			fields = f
			return true
		}
		return false
	})
	if fields == nil {
		return netip.AddrPort{}, fmt.Errorf("failed to parse 228 reply %s: %w: %w", quote(text), errNoAddress, ErrMalformed)
	}
	ap, err := longHostPort(fields)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("failed to parse 228 reply %s: %w", quote(text), err)
	}
	return ap, nil
}

// Parse229 finds the port of a 229 reply to EPSV (RFC 2428 §3): the first
// "(" followed by three equal delimiters, then the port, the delimiter and
// ")": "Entering Extended Passive Mode (|||6446|)". The delimiter may be
// any of ASCII 33..126 except digits. The network-protocol and address
// fields must be empty, as RFC 2428 requires; a reply that fills them is
// malformed. The port must be 1..65535.
func Parse229(text string) (uint16, error) {
	for i := 0; i+3 < len(text); i++ {
		d := text[i+1]
		if text[i] != '(' || !validDelimiter(d) || text[i+2] != d || text[i+3] != d {
			continue
		}
		rest := text[i+4:]
		end := strings.IndexByte(rest, d)
		if end < 0 || end+1 >= len(rest) || rest[end+1] != ')' {
			return 0, fmt.Errorf("failed to parse 229 reply %s: port not closed by %q and \")\": %w", quote(text), d, ErrMalformed)
		}
		port, err := parsePort(rest[:end])
		if err != nil {
			return 0, fmt.Errorf("failed to parse 229 reply %s: %w", quote(text), err)
		}
		return port, nil
	}
	return 0, fmt.Errorf("failed to parse 229 reply %s: %w: %w", quote(text), errNoAddress, ErrMalformed)
}

// FormatPORT returns the PORT argument "h1,h2,h3,h4,p1,p2" for ap. An
// IPv4-mapped address is unmapped; for any other non-IPv4 address it
// returns "" (PORT cannot express it: use FormatEPRT).
func FormatPORT(ap netip.AddrPort) string {
	a := ap.Addr().Unmap()
	if !a.Is4() {
		return ""
	}
	b := a.As4()
	p := ap.Port()
	return fmt.Sprintf("%d,%d,%d,%d,%d,%d", b[0], b[1], b[2], b[3], p>>8, p&0xff)
}

// Format227 returns the address part of a 227 reply, "h1,h2,h3,h4,p1,p2",
// without parentheses; "" when ap is not IPv4 (see FormatPORT).
func Format227(ap netip.AddrPort) string { return FormatPORT(ap) }

// FormatEPRT returns the EPRT argument "|1|a.b.c.d|port|" or
// "|2|ipv6|port|" for ap. An IPv4-mapped address is written as family 1 and
// a zone is dropped; an invalid address gives "".
func FormatEPRT(ap netip.AddrPort) string {
	a := ap.Addr().Unmap().WithZone("")
	port := strconv.Itoa(int(ap.Port()))
	switch {
	case a.Is4():
		return "|1|" + a.String() + "|" + port + "|"
	case a.Is6():
		return "|2|" + a.String() + "|" + port + "|"
	}
	return ""
}

// Format229 returns the part of a 229 reply inside the parentheses,
// "|||port|".
func Format229(port uint16) string { return "|||" + strconv.Itoa(int(port)) + "|" }

// FormatLPRT returns the LPRT argument (RFC 1639), which is also the
// address part of a 228 reply: "4,4,h1,h2,h3,h4,2,p1,p2" for IPv4 (an
// IPv4-mapped address is unmapped) or "6,16,<16 octets>,2,p1,p2" for IPv6;
// "" for an invalid address.
func FormatLPRT(ap netip.AddrPort) string {
	a := ap.Addr().Unmap()
	var b []byte
	var af int
	switch {
	case a.Is4():
		v := a.As4()
		b, af = v[:], 4
	case a.Is6():
		v := a.As16()
		b, af = v[:], 6
	default:
		return ""
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d,%d", af, len(b))
	for _, o := range b {
		fmt.Fprintf(&sb, ",%d", o)
	}
	fmt.Fprintf(&sb, ",2,%d,%d", ap.Port()>>8, ap.Port()&0xff)
	return sb.String()
}
