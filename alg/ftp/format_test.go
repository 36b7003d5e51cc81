package ftp

import (
	"net/netip"
	"testing"
)

func TestFormatLPRTRoundTrip(t *testing.T) {
	for _, s := range []string{"192.0.2.1:50000", "[2001:db8:5::2]:1025", "[::ffff:198.51.100.2]:65535"} {
		ap := netip.MustParseAddrPort(s)
		want := netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		got, err := ParseLPRT(FormatLPRT(ap))
		if err != nil || got != want {
			t.Errorf("ParseLPRT(FormatLPRT(%s)) = %s, %v; want %s", s, got, err, want)
		}
		got, err = Parse228("Entering Long Passive Mode (" + FormatLPRT(ap) + ")")
		if err != nil || got != want {
			t.Errorf("Parse228 of FormatLPRT(%s) = %s, %v; want %s", s, got, err, want)
		}
	}
	if FormatLPRT(netip.AddrPort{}) != "" {
		t.Error("FormatLPRT of the zero AddrPort is not empty")
	}
}
