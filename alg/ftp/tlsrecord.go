package ftp

// TLS record layer facts (RFC 8446 §5.1, RFC 5246 §6.2).
const (
	tlsHeaderLen     = 5
	tlsTypeMin       = 20 // change_cipher_spec
	tlsTypeMax       = 24 // heartbeat; 21 alert, 22 handshake, 23 application_data
	tlsVersionMajor  = 3
	tlsMaxRecordBody = 1<<14 + 2048 // TLSCiphertext bound of TLS 1.2; TLS 1.3's is smaller
)

// recordTracker follows TLS record boundaries in one direction without
// decrypting anything: it reads each 5-byte header and skips the body. At a
// record boundary, a byte that cannot start a record header means the peer
// speaks clear text again (after CCC, RFC 4217 §6, or a failed
// handshake). A header that starts plausibly but turns out wrong (major
// version not 3, length above the maximum) is also taken as clear text,
// starting at the header's first byte: whatever that is, it is not TLS, and
// the line parser will judge it.
//
// SSL 2.0 records (high bit set in the first byte) are not recognised:
// they read as clear text, which the command parser then refuses.
type recordTracker struct {
	hdr  [tlsHeaderLen]byte
	n    int // header bytes buffered
	body int // body bytes still to skip
}

// consume reads p. It returns how many bytes of p belong to TLS records (or
// to a header still incomplete), and whether clear text starts right after
// them. When clear is true, t.hdr[:t.n] are bytes of a rejected header that
// precede p[n:] and belong to the clear text too.
func (t *recordTracker) consume(p []byte) (n int, clear bool) {
	for n < len(p) {
		if t.body > 0 {
			k := min(t.body, len(p)-n)
			t.body -= k
			n += k
			continue
		}
		b := p[n]
		switch t.n {
		case 0:
			if b < tlsTypeMin || b > tlsTypeMax {
				return n, true
			}
		case 1:
			if b != tlsVersionMajor {
				return n, true
			}
		case 4:
			length := int(t.hdr[3])<<8 | int(b)
			if length > tlsMaxRecordBody {
				return n, true
			}
			t.n = 0
			t.body = length
			n++
			continue
		}
		t.hdr[t.n] = b
		t.n++
		n++
	}
	return n, false
}
