package nat

import (
	"net/netip"
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
