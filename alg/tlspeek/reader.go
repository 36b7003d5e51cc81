package tlspeek

import "encoding/binary"

// reader reads big-endian, length-prefixed TLS structures (RFC 8446 §3),
// like x/crypto's cryptobyte.String, which this module does not import.
// Every method reports false, and consumes nothing, when too few bytes
// remain.
type reader []byte

func (r *reader) Empty() bool { return len(*r) == 0 }

func (r *reader) ReadUint8(v *uint8) bool {
	if len(*r) < 1 {
		return false
	}
	*v = (*r)[0]
	*r = (*r)[1:]
	return true
}

func (r *reader) ReadUint16(v *uint16) bool {
	if len(*r) < 2 {
		return false
	}
	*v = binary.BigEndian.Uint16(*r)
	*r = (*r)[2:]
	return true
}

func (r *reader) ReadBytes(out *[]byte, n int) bool {
	if len(*r) < n {
		return false
	}
	*out = (*r)[:n:n]
	*r = (*r)[n:]
	return true
}

func (r *reader) prefixed(n int, out *reader) bool {
	if len(*r) < n {
		return false
	}
	l := 0
	for _, b := range (*r)[:n] {
		l = l<<8 | int(b)
	}
	if len(*r)-n < l {
		return false
	}
	*out = (*r)[n : n+l : n+l]
	*r = (*r)[n+l:]
	return true
}

func (r *reader) ReadUint8LengthPrefixed(out *reader) bool  { return r.prefixed(1, out) }
func (r *reader) ReadUint16LengthPrefixed(out *reader) bool { return r.prefixed(2, out) }
