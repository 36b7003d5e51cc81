package tlspeek

import "fmt"

func malformed(what string) error { return fmt.Errorf("%w: %s", ErrMalformed, what) }

// isGREASE reports a GREASE value (RFC 8701): 0x?a?a with equal bytes.
func isGREASE(v uint16) bool { return v&0x0f0f == 0x0a0a && v>>8 == v&0xff }

// ParseClientHello parses a ClientHello body (without the 4-byte handshake
// header), RFC 8446 §4.1.2.
func ParseClientHello(body []byte) (*ClientHello, error) {
	s := reader(body)
	ch := &ClientHello{}
	var randomB []byte
	var sid, suites, comp reader
	if !s.ReadUint16(&ch.LegacyVersion) || !s.ReadBytes(&randomB, 32) ||
		!s.ReadUint8LengthPrefixed(&sid) || len(sid) > 32 ||
		!s.ReadUint16LengthPrefixed(&suites) || len(suites)%2 != 0 || len(suites) == 0 ||
		!s.ReadUint8LengthPrefixed(&comp) || len(comp) == 0 {
		return nil, malformed("client hello")
	}
	ch.SessionID = append([]byte(nil), sid...)
	for !suites.Empty() {
		var v uint16
		suites.ReadUint16(&v)
		ch.Suites = append(ch.Suites, v)
	}
	if !s.Empty() {
		var exts reader
		if !s.ReadUint16LengthPrefixed(&exts) || !s.Empty() {
			return nil, malformed("client hello extensions")
		}
		for !exts.Empty() {
			var typ uint16
			var data reader
			if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
				return nil, malformed("client hello extension")
			}
			if err := ch.extension(typ, data); err != nil {
				return nil, err
			}
		}
	}
	if len(ch.Versions) == 0 {
		ch.Versions = []uint16{ch.LegacyVersion}
	}
	return ch, nil
}

func (ch *ClientHello) extension(typ uint16, data reader) error {
	switch typ {
	case extServerName:
		var list reader
		if !data.ReadUint16LengthPrefixed(&list) || !data.Empty() {
			return malformed("server_name")
		}
		for !list.Empty() {
			var nt uint8
			var name reader
			if !list.ReadUint8(&nt) || !list.ReadUint16LengthPrefixed(&name) {
				return malformed("server_name entry")
			}
			if nt == 0 && ch.SNI == "" {
				ch.SNI = string(name)
			}
		}
	case extALPN:
		var list reader
		if !data.ReadUint16LengthPrefixed(&list) || !data.Empty() {
			return malformed("alpn")
		}
		for !list.Empty() {
			var p reader
			if !list.ReadUint8LengthPrefixed(&p) || len(p) == 0 {
				return malformed("alpn entry")
			}
			ch.ALPN = append(ch.ALPN, string(p))
		}
	case extSupportedVersions:
		var list reader
		if !data.ReadUint8LengthPrefixed(&list) || !data.Empty() || len(list)%2 != 0 {
			return malformed("supported_versions")
		}
		for !list.Empty() {
			var v uint16
			list.ReadUint16(&v)
			if !isGREASE(v) {
				ch.Versions = append(ch.Versions, v)
			}
		}
	case extSessionTicket:
		ch.Ticket = len(data) > 0
	case extPreSharedKey:
		ch.PSK = true
	case extEarlyData:
		ch.EarlyData = true
	}
	return nil
}

// ParseServerHello parses a ServerHello body (without the 4-byte handshake
// header), RFC 8446 §4.1.3 and RFC 5246 §7.4.1.3.
func ParseServerHello(body []byte) (*ServerHello, error) {
	s := reader(body)
	sh := &ServerHello{}
	var random []byte
	var sid reader
	var comp uint8
	if !s.ReadUint16(&sh.Version) || !s.ReadBytes(&random, 32) ||
		!s.ReadUint8LengthPrefixed(&sid) || len(sid) > 32 ||
		!s.ReadUint16(&sh.Suite) || !s.ReadUint8(&comp) {
		return nil, malformed("server hello")
	}
	sh.SessionID = append([]byte(nil), sid...)
	sh.HelloRetry = [32]byte(random) == helloRetryRandom
	if !s.Empty() {
		var exts reader
		if !s.ReadUint16LengthPrefixed(&exts) || !s.Empty() {
			return nil, malformed("server hello extensions")
		}
		for !exts.Empty() {
			var typ uint16
			var data reader
			if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
				return nil, malformed("server hello extension")
			}
			switch typ {
			case extSupportedVersions:
				if !data.ReadUint16(&sh.Version) || !data.Empty() {
					return nil, malformed("supported_versions")
				}
			case extPreSharedKey:
				sh.PSK = true
			case extALPN:
				var list, p reader
				if !data.ReadUint16LengthPrefixed(&list) || !list.ReadUint8LengthPrefixed(&p) || !list.Empty() || len(p) == 0 {
					return nil, malformed("alpn")
				}
				sh.ALPN = string(p)
			}
		}
	}
	return sh, nil
}
