package ftp

import (
	"net/netip"
)

// Direction says which half of the control connection bytes travel on.
type Direction uint8

const (
	// FromClient is the client-to-server half (commands).
	FromClient Direction = iota
	// FromServer is the server-to-client half (replies).
	FromServer
)

// String returns "client" or "server".
func (d Direction) String() string {
	if d == FromClient {
		return "client"
	}
	return "server"
}

// DataMode says who opens a data connection.
type DataMode uint8

const (
	// Passive: the client connects to the server (PASV, EPSV, LPSV).
	Passive DataMode = iota + 1
	// Active: the server connects to the client (PORT, EPRT, LPRT).
	Active
)

// String returns "passive", "active" or "unknown".
func (m DataMode) String() string {
	switch m {
	case Passive:
		return "passive"
	case Active:
		return "active"
	}
	return "unknown"
}

// Config is what a Session needs to know about its control connection and
// the server's policy. Addresses are as the server and client see each other
// on the wire where the session's bytes are observed.
type Config struct {
	// Client and Server are the control connection's endpoints.
	Client netip.AddrPort
	Server netip.AddrPort

	// PassiveMin and PassiveMax bound the ports a server may announce in
	// 227/228/229 replies (inclusive). Zero values mean 1024-65535.
	PassiveMin, PassiveMax uint16

	// AllowActive permits PORT/EPRT/LPRT.
	AllowActive bool

	// AllowThirdParty permits announcements naming an address other than
	// the control connection's peer (FXP). Off by default: anti-bounce.
	AllowThirdParty bool

	// MaxLine bounds a command or reply line in bytes including CRLF.
	// Zero means DefaultMaxLine.
	MaxLine int

	// TransportDecrypts is true when the transport terminates TLS and keeps
	// feeding plaintext after AUTH (mitm mode). When false (inspect mode)
	// the session follows TLS record boundaries after 234 and resumes
	// parsing only when clear text returns (after CCC).
	TransportDecrypts bool

	// InjectsReplies is true when the transport answers a refused client
	// command itself with Decision.Reply and does not forward the line (a
	// stream transport). The server then never sees the command and the
	// session does not wait for a reply to it. When false (a packet
	// transport) the transport forwards Decision.Replacement, the server
	// answers the neutralised line (500) and the session pairs that answer.
	InjectsReplies bool

	// Midstream is true when the session starts on a connection that is
	// already established, so the server's greeting has gone by unseen
	// (the packet transport picking up a flow without its SYN). Otherwise
	// the session expects the greeting first (RFC 959 §5.4: 220, 421, or
	// 120 then 220): the server's first final reply, whatever its code, is
	// the greeting and answers no command, even when the client pipelined
	// commands before it. A 227, 228 or 229 in the greeting's place is
	// refused with ReasonUnsolicited. With implicit TLS, see
	// Session.StartImplicitTLS.
	Midstream bool
}

// DefaultMaxLine is the default bound on a control line (vsftpd uses 4096).
const DefaultMaxLine = 2048

// Action is the kind of a Decision.
type Action uint8

const (
	// ActionCommand reports a complete client command (informational).
	ActionCommand Action = iota + 1
	// ActionReply reports a complete server reply (informational); for a
	// multi-line reply it is emitted once, on the final line.
	ActionReply
	// ActionOpenPinhole asks the transport to open Pinhole before it
	// releases the line that caused it.
	ActionOpenPinhole
	// ActionRewrite asks the transport to replace the line's bytes with
	// Replacement: the complete new line, terminator included, announcing
	// Endpoint. The core builds it (RewriteAnnouncement) from a decision
	// that announces a data connection endpoint, when the gateway
	// translates addresses; the transport applies the bytes and parses no
	// FTP. The new line may differ in length from the old one: a stream
	// transport writes it in place of the line, a packet transport that
	// cannot change a segment's length must refuse the line instead.
	ActionRewrite
	// ActionRefuse says the line must not reach the peer as it is. Reply is
	// the FTP reply a stream transport sends back instead of forwarding;
	// Replacement is a same-length neutralised line a packet transport may
	// substitute when it cannot inject a reply.
	ActionRefuse
	// ActionTLSStarted: the server accepted AUTH TLS/SSL (234), or the
	// session is implicit TLS. Bytes after Line belong to TLS.
	ActionTLSStarted
	// ActionTLSCleared: the server accepted CCC (200); both directions
	// return to clear text after the TLS close.
	ActionTLSCleared
	// ActionSessionEnd: QUIT was answered with 221, or the server closed.
	ActionSessionEnd
)

// Reason names why a line was refused. Values are a bounded set (they are
// metric label values).
type Reason string

// Refusal reasons.
const (
	ReasonLineTooLong     Reason = "line_too_long"
	ReasonMalformed       Reason = "malformed"
	ReasonBadOctet        Reason = "bad_octet"
	ReasonBadPort         Reason = "bad_port"
	ReasonPrivilegedPort  Reason = "privileged_port"
	ReasonOutsideRange    Reason = "port_outside_range"
	ReasonThirdParty      Reason = "third_party_address"
	ReasonFamilyMismatch  Reason = "family_mismatch"
	ReasonActiveDisabled  Reason = "active_disabled"
	ReasonUnsolicited     Reason = "unsolicited_reply"
	ReasonEPSVAll         Reason = "after_epsv_all"
	ReasonNotAtLineStart  Reason = "not_at_line_start"
	ReasonProtocolInState Reason = "bad_state"
)

// Pinhole is one exact data connection to let through: a TCP connection from
// Src (any source port) to Dst:DstPort.
type Pinhole struct {
	Mode    DataMode
	Src     netip.Addr
	Dst     netip.Addr
	DstPort uint16
}

// LineRef locates a raw line in a direction's byte stream. Start is the
// stream offset (0 = first byte the session was fed in that direction) and
// Len counts the raw bytes including the terminator.
type LineRef struct {
	Start uint64
	Len   int
}

// End is the stream offset just past the line.
func (l LineRef) End() uint64 { return l.Start + uint64(l.Len) }

// Decision is one thing the transport must do or record.
type Decision struct {
	Action Action
	Dir    Direction
	Line   LineRef

	// Verb is the upper-cased command verb (ActionCommand, and the command a
	// reply answers for ActionReply/ActionOpenPinhole/ActionRefuse where known).
	Verb string
	// Arg is the command argument; for PASS it is always "<redacted>".
	Arg string
	// Code is the reply code (ActionReply, and replies behind other actions).
	Code int
	// Text is the reply text of the final line (ActionReply).
	Text string

	Pinhole Pinhole // ActionOpenPinhole

	// Endpoint is the data connection endpoint the line announces: the
	// validated address of an accepted PORT, EPRT or LPRT (ActionCommand;
	// zero when the command is refused), the announced address of
	// ActionOpenPinhole (Pinhole.Dst and DstPort, for both modes), the new
	// address of ActionRewrite. Zero otherwise.
	Endpoint netip.AddrPort
	// EndpointOnLine reports that Endpoint is written on Line itself, so
	// that RewriteAnnouncement can replace the line. It is false for the
	// 200 that accepts PORT/EPRT/LPRT (the address was on the command) and
	// for a multi-line 227/228/229 reply whose address was on its first
	// line: that line is gone by the time the final line is decided.
	EndpointOnLine bool

	Reason Reason // ActionRefuse
	Detail string // ActionRefuse: human-readable cause for logs
	Reply  string // ActionRefuse: reply a stream transport sends instead, with CRLF
	// Replacement holds the new raw bytes for the line's stream position:
	// the same length as the line for ActionRefuse, any length for
	// ActionRewrite.
	Replacement []byte
}
