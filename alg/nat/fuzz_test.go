package nat

import (
	"net/netip"
	"testing"

	"github.com/ftpsalg/ftpsalg/alg/ftp"
)

// FuzzActiveRoundTrip: whatever a client sends, an announcement that
// parses is rewritten to a line that parses back to the translated
// endpoint; nothing panics.
func FuzzActiveRoundTrip(f *testing.F) {
	for _, s := range [][2]string{
		{"PORT", "192,0,2,2,4,1"}, {"EPRT", "|1|192.0.2.2|1025|"}, {"EPRT", "|2|2001:db8:c::2|1025|"},
		{"LPRT", "4,4,192,0,2,2,2,4,1"}, {"PORT", "999,1,1,1,1,1"}, {"EPRT", "|3|x|1|"}, {"NOOP", ""},
	} {
		f.Add(s[0], s[1], uint16(61000))
	}
	gw4, gw6 := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("2001:db8:5::1")
	f.Fuzz(func(t *testing.T, verb, arg string, port uint16) {
		from, err := ParseActive(verb, arg)
		if err != nil || port == 0 {
			return
		}
		gw := gw4
		if from.Addr().Is6() && !from.Addr().Is4In6() {
			gw = gw6
		}
		to := netip.AddrPortFrom(gw, port)
		line, err := ActiveCommand(verb, to)
		if err != nil {
			return // PORT cannot carry IPv6: the proxy answers 522
		}
		if len(line) < 2 || line[len(line)-2:] != "\r\n" {
			t.Fatalf("%q does not end with CRLF", line)
		}
		sp := len(verb) + 1
		got, err := ParseActive(verb, line[sp:len(line)-2])
		if err != nil || got != to {
			t.Fatalf("%s %q → %q → %s, %v; want %s", verb, arg, line, got, err, to)
		}
	})
}

// FuzzPassiveReply: a rewritten passive reply always parses back.
func FuzzPassiveReply(f *testing.F) {
	f.Add(227, []byte{192, 0, 2, 1}, uint16(50000))
	f.Add(228, []byte{32, 1, 13, 184, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, uint16(1))
	f.Add(229, []byte{192, 0, 2, 1}, uint16(65535))
	f.Fuzz(func(t *testing.T, code int, addr []byte, port uint16) {
		a, ok := netip.AddrFromSlice(addr)
		if !ok {
			return
		}
		ap := netip.AddrPortFrom(a, port)
		line, err := PassiveReply(code, ap)
		if err != nil {
			return
		}
		if len(line) < 6 || line[len(line)-2:] != "\r\n" {
			t.Fatalf("%q", line)
		}
		text := line[4 : len(line)-2]
		want := netip.AddrPortFrom(ap.Addr().Unmap(), port)
		var got netip.AddrPort
		switch code {
		case 227:
			got, err = ftp.Parse227(text)
		case 228:
			got, err = ftp.Parse228(text)
		case 229:
			var p uint16
			p, err = ftp.Parse229(text)
			got = netip.AddrPortFrom(want.Addr(), p)
		}
		if port != 0 && (err != nil || got != want) {
			t.Fatalf("%d %s → %q → %s, %v", code, ap, line, got, err)
		}
	})
}
