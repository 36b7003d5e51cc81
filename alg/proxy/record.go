package proxy

import (
	"encoding/binary"
	"io"
	"net"
)

// recordConn hands crypto/tls at most one TLS record per Read, so that
// after a close_notify (CCC, RFC 4217 §9) no clear-text byte that follows
// it on the wire has been consumed into the TLS layer's buffer.
type recordConn struct {
	net.Conn
	r      io.Reader // what to read from (a bufferedConn, usually)
	hdr    [5]byte
	hdrGot int // header bytes read so far, while reading one
	hdrLen int // header bytes not yet handed out
	hdrOff int
	left   int // body bytes of the current record not yet handed out
}

func newRecordConn(c net.Conn, r io.Reader) *recordConn {
	if r == nil {
		r = c
	}
	return &recordConn{Conn: c, r: r}
}

func (c *recordConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.hdrLen == 0 && c.left == 0 {
		// Start of a record: fetch exactly its header. A read that
		// fails part way (a deadline: the proxy's idle probe, park.go)
		// keeps what it got, and the next read goes on from there.
		for c.hdrGot < len(c.hdr) {
			n, err := c.r.Read(c.hdr[c.hdrGot:])
			c.hdrGot += n
			if err != nil && c.hdrGot < len(c.hdr) {
				if err == io.EOF && c.hdrGot > 0 {
					err = io.ErrUnexpectedEOF
				}
				return 0, err
			}
		}
		c.hdrGot = 0
		c.hdrLen, c.hdrOff = 5, 0
		c.left = int(binary.BigEndian.Uint16(c.hdr[3:5]))
	}
	if c.hdrLen > 0 {
		n := copy(p, c.hdr[c.hdrOff:c.hdrOff+c.hdrLen])
		c.hdrOff += n
		c.hdrLen -= n
		return n, nil
	}
	if len(p) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= n
	if err == io.EOF && c.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}
