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
// the client in place of the server's 227, 228 or 229 reply. It is a thin
// wrapper of ftp.RewriteAnnouncement.
//
// Deprecated: use ftp.RewriteAnnouncement on the ActionOpenPinhole
// decision itself: it also refuses a multi-line reply whose address it
// cannot replace.
func PassiveReply(code int, ap netip.AddrPort) (string, error) {
	rw, err := ftp.RewriteAnnouncement(ftp.Decision{
		Action: ftp.ActionOpenPinhole, Dir: ftp.FromServer, Code: code,
		Pinhole:  ftp.Pinhole{Mode: ftp.Passive, Dst: ap.Addr(), DstPort: ap.Port()},
		Endpoint: ap, EndpointOnLine: true,
	}, ap)
	if err != nil {
		return "", err
	}
	return string(rw.Replacement), nil
}

// ActiveCommand returns the command line (CRLF included) that announces ap
// to the server in place of the client's PORT, EPRT or LPRT. It is a thin
// wrapper of ftp.RewriteAnnouncement.
//
// Deprecated: use ftp.RewriteAnnouncement on the command's ActionCommand
// decision.
func ActiveCommand(verb string, ap netip.AddrPort) (string, error) {
	rw, err := ftp.RewriteAnnouncement(ftp.Decision{
		Action: ftp.ActionCommand, Dir: ftp.FromClient, Verb: strings.ToUpper(verb),
		Endpoint: ap, EndpointOnLine: true,
	}, ap)
	if err != nil {
		return "", err
	}
	return string(rw.Replacement), nil
}

// ParseActive returns the endpoint a PORT, EPRT or LPRT argument announces.
//
// Deprecated: the session's ActionCommand decision for an accepted
// PORT/EPRT/LPRT carries it in Decision.Endpoint; a transport parses no
// FTP.
func ParseActive(verb, arg string) (netip.AddrPort, error) {
	switch v := strings.ToUpper(verb); {
	case !ftp.IsActiveVerb(v):
		return netip.AddrPort{}, fmt.Errorf("%s announces no data port", verb)
	case v == "PORT":
		return ftp.ParseHostPort(arg)
	case v == "EPRT":
		return ftp.ParseEPRT(arg)
	}
	return ftp.ParseLPRT(arg)
}
