package tlspeek

import (
	"crypto/tls"
	"testing"
)

// FuzzHandshake: any bytes, any split, either direction: no panic, the
// same events however the bytes are split, and a ClientHello event only
// with a parsed hello.
func FuzzHandshake(f *testing.F) {
	cert := testCert(f)
	log, _, _ := handshake(f, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12},
		&tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequestClientCert})
	for _, c := range log {
		f.Add(c.b, byte(c.dir), 3)
	}
	log, _, _ = handshake(f, &tls.Config{InsecureSkipVerify: true}, &tls.Config{Certificates: []tls.Certificate{cert}})
	for _, c := range log {
		f.Add(c.b, byte(c.dir), 1)
	}
	f.Fuzz(func(t *testing.T, b []byte, dir byte, split int) {
		d := Direction(dir & 1)
		var whole, parts Handshake
		w := whole.Feed(nil, d, b)
		n := max(split%64, 1)
		var p []Event
		for rest := b; len(rest) > 0; {
			k := min(n, len(rest))
			p = parts.Feed(p, d, rest[:k])
			rest = rest[k:]
		}
		if len(w) != len(p) {
			t.Fatalf("whole %v, split %v", kinds(w), kinds(p))
		}
		for i := range w {
			if w[i].Kind != p[i].Kind {
				t.Fatalf("whole %v, split %v", kinds(w), kinds(p))
			}
			if w[i].Kind == EventClientHello && w[i].Client == nil {
				t.Fatal("client hello event without a hello")
			}
		}
	})
}

// FuzzHellos: the hello parsers never panic and never accept what they
// then misreport.
func FuzzHellos(f *testing.F) {
	f.Add([]byte{3, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		if ch, err := ParseClientHello(b); err == nil && len(ch.Versions) == 0 {
			t.Fatal("a ClientHello without versions")
		}
		_, _ = ParseServerHello(b)
	})
}
