package tlspeek

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Direction of a byte stream on the connection.
type Direction uint8

const (
	// FromClient is the client's stream.
	FromClient Direction = iota
	// FromServer is the server's stream.
	FromServer
)

// TLS versions on the wire (RFC 8446 §4.2.1).
const (
	VersionTLS10 uint16 = 0x0301
	VersionTLS11 uint16 = 0x0302
	VersionTLS12 uint16 = 0x0303
	VersionTLS13 uint16 = 0x0304
)

// Record content types (RFC 8446 §5.1).
const (
	recChangeCipherSpec = 20
	recAlert            = 21
	recHandshake        = 22
	recApplicationData  = 23
)

// Handshake message types (RFC 8446 §4, RFC 5246 §7.4).
const (
	hsClientHello        = 1
	hsServerHello        = 2
	hsCertificateRequest = 13
)

// Extension numbers (IANA TLS ExtensionType registry).
const (
	extServerName        = 0
	extALPN              = 16
	extSessionTicket     = 35
	extPreSharedKey      = 41
	extEarlyData         = 42
	extSupportedVersions = 43
)

// Bounds: a handshake message this parser buffers (ClientHello,
// ServerHello, CertificateRequest) is at most maxMessage bytes; other
// messages are skipped without buffering.
const (
	maxMessage = 1 << 16
	maxRecord  = 1<<14 + 2048
)

// helloRetryRandom is the ServerHello.random of a HelloRetryRequest (RFC
// 8446 §4.1.3).
var helloRetryRandom = [32]byte{
	0xCF, 0x21, 0xAD, 0x74, 0xE5, 0x9A, 0x61, 0x11, 0xBE, 0x1D, 0x8C, 0x02, 0x1E, 0x65, 0xB8, 0x91,
	0xC2, 0xA2, 0x11, 0x16, 0x7A, 0xBB, 0x8C, 0x5E, 0x07, 0x9E, 0x09, 0xE2, 0xC8, 0xA8, 0x33, 0x9C,
}

// ErrMalformed reports bytes that are not a TLS handshake.
var ErrMalformed = errors.New("malformed TLS handshake")

// ClientHello is what a ClientHello tells in clear text.
type ClientHello struct {
	// LegacyVersion is client_version (TLS 1.2 and older: the highest
	// version offered).
	LegacyVersion uint16
	// Versions are the offered versions: supported_versions when present
	// (GREASE values removed), else LegacyVersion alone.
	Versions []uint16
	// Suites are the offered cipher suites, GREASE and signalling values
	// included as sent.
	Suites []uint16
	// SNI is the host_name of server_name, empty without one.
	SNI string
	// ALPN are the offered application protocols.
	ALPN []string
	// SessionID is legacy_session_id: a TLS 1.2 client resuming by session
	// ID repeats an earlier one (TLS 1.3 clients send a random one).
	SessionID []byte
	// Ticket: a non-empty session_ticket extension (TLS 1.2 resumption by
	// ticket, RFC 5077).
	Ticket bool
	// PSK: a pre_shared_key extension (TLS 1.3 resumption).
	PSK bool
	// EarlyData: early_data offered (TLS 1.3 0-RTT).
	EarlyData bool
}

// ServerHello is what a ServerHello tells in clear text.
type ServerHello struct {
	// Version is the selected version: supported_versions when present,
	// else legacy_version.
	Version uint16
	// Suite is the selected cipher suite.
	Suite uint16
	// ALPN is the selected protocol (TLS 1.2 only: TLS 1.3 sends it in
	// EncryptedExtensions).
	ALPN string
	// SessionID is legacy_session_id_echo.
	SessionID []byte
	// PSK: the server accepted a pre-shared key (TLS 1.3 resumption).
	PSK bool
	// HelloRetry: this is a HelloRetryRequest; another ClientHello follows.
	HelloRetry bool
}

// Resumed reports whether the server resumed a session: a TLS 1.3 PSK, or a
// TLS 1.2 session ID echoed from the ClientHello (by ID or by ticket, RFC
// 5077 §3.4).
func (s *ServerHello) Resumed(c *ClientHello) bool {
	if s.PSK {
		return true
	}
	return s.Version < VersionTLS13 && c != nil && len(s.SessionID) > 0 &&
		string(s.SessionID) == string(c.SessionID)
}

// EventKind is the kind of an Event.
type EventKind uint8

const (
	// EventClientHello: a ClientHello was read (Client set).
	EventClientHello EventKind = iota + 1
	// EventServerHello: a ServerHello (or HelloRetryRequest) was read
	// (Server set).
	EventServerHello
	// EventCertificateRequest: the server asked for a client certificate
	// (TLS 1.2 only; TLS 1.3 encrypts the request).
	EventCertificateRequest
	// EventComplete: the handshake finished as far as the records show: in
	// TLS 1.2 the server's first record after its ChangeCipherSpec (its
	// Finished), in TLS 1.3 the client's first encrypted record (its
	// Finished).
	EventComplete
	// EventAlert: an alert record before the handshake completed. Level
	// and Description are set when the alert was in clear text.
	EventAlert
	// EventMalformed: the bytes are not a TLS handshake; Err says why.
	// Nothing more is parsed.
	EventMalformed
)

// String names the kind for logs.
func (k EventKind) String() string {
	switch k {
	case EventClientHello:
		return "client_hello"
	case EventServerHello:
		return "server_hello"
	case EventCertificateRequest:
		return "certificate_request"
	case EventComplete:
		return "complete"
	case EventAlert:
		return "alert"
	case EventMalformed:
		return "malformed"
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// Event is something the handshake showed.
type Event struct {
	Kind   EventKind
	Dir    Direction
	Client *ClientHello
	Server *ServerHello
	// Alert: Encrypted is true when the alert's content could not be read.
	Level, Description uint8
	Encrypted          bool
	Err                error
}

// Handshake follows one connection's handshake. The zero value is ready.
// It is not safe for concurrent use.
type Handshake struct {
	dirs     [2]dirState
	version  uint16 // selected version, 0 before the ServerHello
	client   *ClientHello
	server   *ServerHello
	complete bool
	broken   bool
}

type dirState struct {
	hdr    [5]byte
	nhdr   int
	typ    byte
	body   int    // bytes of the current record body still to come
	rec    []byte // the current handshake or alert record's body, when read
	hs     []byte // handshake bytes carried over between records
	skip   int    // bytes of a handshake message being skipped
	ccs    bool   // this side sent ChangeCipherSpec (its records are encrypted afterwards, TLS 1.2)
	encAll bool   // everything from here on is encrypted (TLS 1.3 after the ServerHello)
}

// Client returns the ClientHello read (the last one, after a
// HelloRetryRequest), or nil.
func (h *Handshake) Client() *ClientHello { return h.client }

// Server returns the ServerHello read, or nil.
func (h *Handshake) Server() *ServerHello { return h.server }

// Complete reports whether the handshake completed.
func (h *Handshake) Complete() bool { return h.complete }

// Done reports whether nothing more will be parsed: the handshake completed
// or the bytes were malformed.
func (h *Handshake) Done() bool { return h.complete || h.broken }

// Feed reads the next bytes of direction dir and appends what they showed
// to out.
func (h *Handshake) Feed(out []Event, dir Direction, p []byte) []Event {
	if dir > FromServer {
		panic(fmt.Sprintf("tlspeek: invalid direction %d", dir))
	}
	d := &h.dirs[dir]
	for len(p) > 0 && !h.Done() {
		if d.body == 0 && d.nhdr < 5 {
			k := copy(d.hdr[d.nhdr:], p)
			d.nhdr += k
			p = p[k:]
			if d.nhdr < 5 {
				break
			}
			typ, n := d.hdr[0], int(binary.BigEndian.Uint16(d.hdr[3:]))
			if typ < recChangeCipherSpec || typ > recApplicationData || d.hdr[1] != 3 || n > maxRecord || n == 0 {
				return h.fail(out, dir, fmt.Errorf("%w: bad record header % x", ErrMalformed, d.hdr))
			}
			d.typ, d.body, d.rec = typ, n, d.rec[:0]
			var ok bool
			if out, ok = h.recordStart(out, dir); !ok {
				return out
			}
			if h.Done() {
				break
			}
		}
		k := min(d.body, len(p))
		if d.readable() {
			d.rec = append(d.rec, p[:k]...)
		}
		d.body -= k
		p = p[k:]
		if d.body == 0 {
			d.nhdr = 0
			out = h.recordEnd(out, dir)
		}
	}
	return out
}

// readable: the current record's body is clear text this parser reads.
func (d *dirState) readable() bool {
	if d.ccs || d.encAll {
		return d.typ == recAlert // kept to tell a clear alert from an encrypted one
	}
	return d.typ == recHandshake || d.typ == recAlert
}

// recordStart judges a record by its header.
func (h *Handshake) recordStart(out []Event, dir Direction) ([]Event, bool) {
	d := &h.dirs[dir]
	switch d.typ {
	case recApplicationData:
		switch {
		case h.version == VersionTLS13 && dir == FromClient && h.server != nil && !h.server.HelloRetry:
			// The client's Finished, the first record it encrypts.
			h.complete = true
			return append(out, Event{Kind: EventComplete, Dir: dir}), true
		case h.version == VersionTLS13 && dir == FromServer:
			return out, true // the server's encrypted flight
		case d.ccs:
			return out, true
		}
		return h.fail(out, dir, fmt.Errorf("%w: application data before the handshake", ErrMalformed)), false
	case recHandshake:
		if d.ccs && dir == FromServer && h.version < VersionTLS13 && h.version != 0 {
			// TLS 1.2: the server's Finished, its first encrypted record.
			h.complete = true
			return append(out, Event{Kind: EventComplete, Dir: dir}), true
		}
	}
	return out, true
}

// recordEnd handles a whole record body.
func (h *Handshake) recordEnd(out []Event, dir Direction) []Event {
	d := &h.dirs[dir]
	switch d.typ {
	case recChangeCipherSpec:
		// In TLS 1.3 (and before a HelloRetryRequest's second
		// ClientHello) it is a compatibility no-op (RFC 8446 §D.4).
		if h.version != 0 && h.version < VersionTLS13 {
			d.ccs = true
		}
	case recAlert:
		if h.complete {
			return out
		}
		ev := Event{Kind: EventAlert, Dir: dir, Encrypted: true}
		// An encrypted alert is longer than two bytes; TLS 1.3 wraps it
		// in an application data record, so it never gets here.
		if len(d.rec) == 2 && !d.ccs {
			ev.Level, ev.Description, ev.Encrypted = d.rec[0], d.rec[1], false
		}
		out = append(out, ev)
	case recHandshake:
		if d.ccs || d.encAll {
			return out
		}
		out = h.handshakeBytes(out, dir, d.rec)
	}
	return out
}

// handshakeBytes parses handshake messages, which may span records.
func (h *Handshake) handshakeBytes(out []Event, dir Direction, p []byte) []Event {
	d := &h.dirs[dir]
	for len(p) > 0 && !h.broken {
		if d.skip > 0 {
			k := min(d.skip, len(p))
			d.skip -= k
			p = p[k:]
			continue
		}
		need := 4
		if len(d.hs) >= 4 {
			need += int(d.hs[1])<<16 | int(d.hs[2])<<8 | int(d.hs[3])
		}
		if len(d.hs) < 4 {
			k := min(need-len(d.hs), len(p))
			d.hs = append(d.hs, p[:k]...)
			p = p[k:]
			if len(d.hs) < 4 {
				break
			}
			typ := d.hs[0]
			n := int(d.hs[1])<<16 | int(d.hs[2])<<8 | int(d.hs[3])
			if typ != hsClientHello && typ != hsServerHello && typ != hsCertificateRequest {
				d.hs, d.skip = d.hs[:0], n
				continue
			}
			if n > maxMessage {
				return h.fail(out, dir, fmt.Errorf("%w: handshake message of %d bytes", ErrMalformed, n))
			}
			need = 4 + n
		}
		k := min(need-len(d.hs), len(p))
		d.hs = append(d.hs, p[:k]...)
		p = p[k:]
		if len(d.hs) < need {
			break
		}
		out = h.message(out, dir, d.hs[0], d.hs[4:])
		d.hs = d.hs[:0]
	}
	return out
}

func (h *Handshake) fail(out []Event, dir Direction, err error) []Event {
	h.broken = true
	return append(out, Event{Kind: EventMalformed, Dir: dir, Err: err})
}

// message handles one whole handshake message.
func (h *Handshake) message(out []Event, dir Direction, typ byte, body []byte) []Event {
	switch {
	case typ == hsClientHello && dir == FromClient:
		ch, err := ParseClientHello(body)
		if err != nil {
			return h.fail(out, dir, err)
		}
		h.client = ch
		return append(out, Event{Kind: EventClientHello, Dir: dir, Client: ch})
	case typ == hsServerHello && dir == FromServer:
		sh, err := ParseServerHello(body)
		if err != nil {
			return h.fail(out, dir, err)
		}
		h.server = sh
		if !sh.HelloRetry {
			h.version = sh.Version
			if sh.Version >= VersionTLS13 {
				// Everything after the ServerHello is encrypted, both ways
				// (the client's ChangeCipherSpec is a compatibility no-op).
				h.dirs[FromServer].encAll = true
				h.dirs[FromClient].encAll = true
			}
		}
		return append(out, Event{Kind: EventServerHello, Dir: dir, Server: sh})
	case typ == hsCertificateRequest && dir == FromServer:
		return append(out, Event{Kind: EventCertificateRequest, Dir: dir})
	}
	return h.fail(out, dir, fmt.Errorf("%w: handshake message %d from the wrong side", ErrMalformed, typ))
}
