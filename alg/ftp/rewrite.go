package ftp

import (
	"fmt"
	"net/netip"
)

// RewriteAnnouncement returns the ActionRewrite decision that makes the
// line of d announce to instead of d.Endpoint, so that a translating
// gateway never parses or formats FTP itself. d must announce an endpoint
// on its own line (d.EndpointOnLine):
//
//   - ActionCommand for an accepted PORT, EPRT or LPRT: the new line is
//     "PORT h1,h2,h3,h4,p1,p2", "EPRT |1|a.b.c.d|port|" or
//     "EPRT |2|ipv6|port|" (the family follows to), or
//     "LPRT 4,4,...,2,p1,p2" / "LPRT 6,16,...,2,p1,p2";
//   - ActionOpenPinhole for a 227, 228 or 229 reply: the new line is
//     "227 Entering Passive Mode (h1,h2,h3,h4,p1,p2).",
//     "228 Entering Long Passive Mode (af,hal,...,2,p1,p2)" or
//     "229 Entering Extended Passive Mode (|||port|)". A 229 carries only
//     the port: the client connects to the address it reached the control
//     connection on, so to's address must be that one (not checked here).
//
// The result has d's Dir, Line, Verb and Code, Endpoint = to (IPv4-mapped
// addresses unmapped), EndpointOnLine set, and Replacement = the complete
// new line with CRLF. The verb is written upper-case and the reply text is
// the conventional one: peers read only the numbers. For the final line of
// a multi-line reply the new line is a final line too ("227 ...").
//
// Errors: ErrNotRewritable when d announces nothing on its line (another
// action, the 200 to PORT, a multi-line reply whose address was on its
// first line, already gone); ErrFamily when the form cannot carry to (PORT
// and 227 are IPv4 only); ErrBadPort for port 0; ErrMalformed for an
// invalid or zoned address. A transport turns an error into a refusal of
// the line.
func RewriteAnnouncement(d Decision, to netip.AddrPort) (Decision, error) {
	name := d.Verb
	if d.Action == ActionOpenPinhole {
		name = fmt.Sprint(d.Code)
	}
	fail := func(format string, args ...any) (Decision, error) {
		return Decision{}, fmt.Errorf("failed to rewrite %s announcement: "+format, append([]any{name}, args...)...)
	}
	if !d.EndpointOnLine || !d.Endpoint.IsValid() {
		return fail("%w", ErrNotRewritable)
	}
	a := to.Addr().Unmap()
	switch {
	case !a.IsValid() || a.Zone() != "":
		return fail("address %q is not an address without zone: %w", to.Addr(), ErrMalformed)
	case to.Port() == 0:
		return fail("port 0: %w", ErrBadPort)
	}
	to = netip.AddrPortFrom(a, to.Port())

	var line string
	switch {
	case d.Action == ActionCommand && d.Dir == FromClient && IsActiveVerb(d.Verb):
		var arg string
		switch d.Verb {
		case "PORT":
			arg = FormatPORT(to)
		case "EPRT":
			arg = FormatEPRT(to)
		default:
			arg = FormatLPRT(to)
		}
		if arg == "" {
			return fail("%s cannot carry %s: %w", d.Verb, a, ErrFamily)
		}
		line = d.Verb + " " + arg
	case d.Action == ActionOpenPinhole && d.Dir == FromServer && d.Pinhole.Mode == Passive:
		switch d.Code {
		case 227:
			s := Format227(to)
			if s == "" {
				return fail("227 cannot carry %s: %w", a, ErrFamily)
			}
			line = "227 Entering Passive Mode (" + s + ")."
		case 228:
			line = "228 Entering Long Passive Mode (" + FormatLPRT(to) + ")"
		case 229:
			line = "229 Entering Extended Passive Mode (" + Format229(to.Port()) + ")"
		default:
			return fail("%w", ErrNotRewritable)
		}
	default:
		return fail("%w", ErrNotRewritable)
	}
	return Decision{
		Action:         ActionRewrite,
		Dir:            d.Dir,
		Line:           d.Line,
		Verb:           d.Verb,
		Code:           d.Code,
		Endpoint:       to,
		EndpointOnLine: true,
		Replacement:    []byte(line + "\r\n"),
	}, nil
}
