package nat

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/ftpsalg/ftpsalg/alg/ftp"
)

// Leg holds the addresses of one control session as the stream path sees
// them on its two connections.
type Leg struct {
	// Client is the client's address, as it connected.
	Client netip.Addr
	// Public is the address the client connected to when it is a published
	// address of the server (DNAT layout); invalid otherwise.
	Public netip.Addr
	// Server is the server's own address, the upstream connection's peer.
	Server netip.Addr
	// Upstream is the upstream connection's local address: the client as
	// the server knows it (the client itself, or a gateway address).
	Upstream netip.Addr
}

// Published reports whether the client reached the server through a
// published address: passive announcements are moved to it.
func (l Leg) Published() bool { return l.Public.IsValid() && l.Public.Unmap() != l.Server.Unmap() }

// ClientTranslated reports whether the server knows the client by another
// address (masqueraded client, or a gateway-sourced upstream): active
// announcements are moved to that address.
func (l Leg) ClientTranslated() bool {
	return l.Upstream.IsValid() && l.Upstream.Unmap() != l.Client.Unmap()
}

// PassiveReply returns the reply line (CRLF included) that announces ap to
// the client in place of the server's 227, 228 or 229 reply. The text
// after the code is the conventional one; clients read only the numbers.
func PassiveReply(code int, ap netip.AddrPort) (string, error) {
	switch code {
	case 227:
		if s := ftp.Format227(ap); s != "" {
			return "227 Entering Passive Mode (" + s + ").\r\n", nil
		}
		return "", fmt.Errorf("a 227 reply cannot carry %s", ap.Addr())
	case 228:
		if s := ftp.FormatLPRT(ap); s != "" {
			return "228 Entering Long Passive Mode (" + s + ")\r\n", nil
		}
		return "", fmt.Errorf("a 228 reply cannot carry %s", ap.Addr())
	case 229:
		return "229 Entering Extended Passive Mode (" + ftp.Format229(ap.Port()) + ")\r\n", nil
	}
	return "", fmt.Errorf("reply %d announces no data port", code)
}

// ActiveCommand returns the command line (CRLF included) that announces ap
// to the server in place of the client's PORT, EPRT or LPRT.
func ActiveCommand(verb string, ap netip.AddrPort) (string, error) {
	var arg string
	switch strings.ToUpper(verb) {
	case "PORT":
		arg = ftp.FormatPORT(ap)
	case "EPRT":
		arg = ftp.FormatEPRT(ap)
	case "LPRT":
		arg = ftp.FormatLPRT(ap)
	default:
		return "", fmt.Errorf("%s announces no data port", verb)
	}
	if arg == "" {
		return "", fmt.Errorf("%s cannot carry %s", verb, ap.Addr())
	}
	return strings.ToUpper(verb) + " " + arg + "\r\n", nil
}

// ParseActive returns the endpoint a PORT, EPRT or LPRT argument announces.
func ParseActive(verb, arg string) (netip.AddrPort, error) {
	switch strings.ToUpper(verb) {
	case "PORT":
		return ftp.ParseHostPort(arg)
	case "EPRT":
		return ftp.ParseEPRT(arg)
	case "LPRT":
		return ftp.ParseLPRT(arg)
	}
	return netip.AddrPort{}, fmt.Errorf("%s announces no data port", verb)
}
