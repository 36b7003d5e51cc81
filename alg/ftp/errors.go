package ftp

import (
	"errors"
	"strconv"
)

// Sentinel errors of the parsers. Every parse error wraps exactly one of
// them; the session maps them to refusal reasons.
var (
	// ErrMalformed: the text does not have the required syntax.
	ErrMalformed = errors.New("malformed")
	// ErrBadOctet: a byte field of an address is above 255.
	ErrBadOctet = errors.New("octet out of range")
	// ErrBadPort: a port is 0 or above 65535.
	ErrBadPort = errors.New("port out of range")
	// ErrFamily: the address family is unsupported or does not match the
	// form of the address.
	ErrFamily = errors.New("address family mismatch")
)

// ErrNotRewritable: a decision given to RewriteAnnouncement has no
// announcement on its line to rewrite. The caller refuses the line.
var ErrNotRewritable = errors.New("no announcement on the line")

// errNoAddress wraps ErrMalformed when a reply holds no address at all, so
// that a multi-line reply's other line may be searched.
var errNoAddress = errors.New("no address found")

// reasonFor maps a parse error to its refusal reason.
func reasonFor(err error) Reason {
	switch {
	case errors.Is(err, ErrBadOctet):
		return ReasonBadOctet
	case errors.Is(err, ErrBadPort):
		return ReasonBadPort
	case errors.Is(err, ErrFamily):
		return ReasonFamilyMismatch
	}
	return ReasonMalformed
}

// quote renders peer-supplied text for an error message: quoted, so control
// bytes cannot forge log lines, and cut short, so an error stays small.
func quote(s string) string {
	const limit = 48
	if len(s) > limit {
		return strconv.Quote(s[:limit]) + "..."
	}
	return strconv.Quote(s)
}
