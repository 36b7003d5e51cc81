package inspect

import "bytes"

// stream maps one direction's TCP sequence numbers onto offsets of the byte
// stream the FTP core has been fed, so that a command or reply is recognised
// only at a line start in the stream, whatever the segmentation:
// retransmitted and overlapping bytes are never fed twice, and bytes beyond
// a gap are never fed before the gap is filled.
type stream struct {
	synced bool   // base is known
	base   uint32 // sequence number of stream offset 0
	next   uint64 // offset of the next byte the core has not seen

	// rewrites remembers the edits made to bytes already released, so that
	// a retransmission of those bytes carries the same edit.
	rewrites []rewrite
}

type rewrite struct {
	start uint64
	data  []byte
}

// maxRewrites bounds the remembered edits per direction; a peer retransmits
// only what is unacknowledged, which is far less than this many lines.
const maxRewrites = 32

// segKind classifies a segment against the stream.
type segKind uint8

const (
	segNew    segKind = iota + 1 // starts at or before next and brings new bytes
	segOld                       // entirely bytes already seen (retransmission)
	segFuture                    // starts beyond next: a gap precedes it
)

// syncSYN starts the stream at a SYN's sequence number (the SYN consumes one).
func (s *stream) syncSYN(seq uint32) {
	*s = stream{synced: true, base: seq + 1}
}

// syncMidstream starts the stream for a flow first seen after its SYN (e.g.
// after a daemon restart). It succeeds only on a segment that ends a line,
// so that the next byte is known to start one: LF never occurs inside a line
// on an FTP control connection.
func (s *stream) syncMidstream(seq uint32, payload []byte) bool {
	if len(payload) == 0 || payload[len(payload)-1] != '\n' {
		return false
	}
	*s = stream{synced: true, base: seq + uint32(len(payload))}
	return true
}

// locate returns the stream offset of seq, relative to next. Offsets are
// tracked in 64 bits; sequence numbers within 2 GiB either side of next are
// placed correctly (RFC 793 comparison), far more than any window.
func (s *stream) locate(seq uint32) (off uint64, ok bool) {
	delta := int64(int32(seq - (s.base + uint32(s.next))))
	o := int64(s.next) + delta
	if o < 0 {
		return 0, false
	}
	return uint64(o), true
}

// classify places a segment of n bytes starting at seq.
func (s *stream) classify(seq uint32, n int) (segKind, uint64) {
	off, ok := s.locate(seq)
	if !ok {
		return segOld, 0
	}
	switch {
	case off > s.next:
		return segFuture, off
	case off+uint64(n) <= s.next:
		return segOld, off
	}
	return segNew, off
}

// remember records an edit to bytes starting at start.
func (s *stream) remember(start uint64, data []byte) {
	if len(s.rewrites) == maxRewrites {
		copy(s.rewrites, s.rewrites[1:])
		s.rewrites = s.rewrites[:maxRewrites-1]
	}
	s.rewrites = append(s.rewrites, rewrite{start: start, data: bytes.Clone(data)})
}

// reapply writes remembered edits into payload, which holds the stream bytes
// from offset off on. It returns whether payload changed.
func (s *stream) reapply(off uint64, payload []byte) bool {
	changed := false
	for _, r := range s.rewrites {
		if overlay(off, payload, r.start, r.data) {
			changed = true
		}
	}
	return changed
}

// overlay copies the part of data (at stream offset start) that overlaps
// payload (at stream offset off) into payload. It returns whether any byte
// changed.
func overlay(off uint64, payload []byte, start uint64, data []byte) bool {
	end := start + uint64(len(data))
	pend := off + uint64(len(payload))
	if end <= off || start >= pend {
		return false
	}
	lo, hi := max(start, off), min(end, pend)
	dst := payload[lo-off : hi-off]
	src := data[lo-start : hi-start]
	if bytes.Equal(dst, src) {
		return false
	}
	copy(dst, src)
	return true
}
