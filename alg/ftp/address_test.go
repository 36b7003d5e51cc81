package ftp

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// addrCase is one parser input with its expected address or error. The
// tables are shared with the fuzz seeds.
type addrCase struct {
	in      string
	want    netip.AddrPort
	wantErr error
}

var hostPortCases = []addrCase{
	{in: "192,0,2,10,195,80", want: mustAddrPort("192.0.2.10:50000")},
	{in: "0,0,0,0,0,1", want: mustAddrPort("0.0.0.0:1")},
	{in: "255,255,255,255,255,255", want: mustAddrPort("255.255.255.255:65535")},
	{in: "192,0,2,010,0300,1", wantErr: ErrBadOctet},
	{in: "192,0,2,010,4,01", want: mustAddrPort("192.0.2.10:1025")},
	{in: "192,0,2,256,4,1", wantErr: ErrBadOctet},
	{in: "192,0,2,1,256,0", wantErr: ErrBadOctet},
	{in: "192,0,2,1,0,256", wantErr: ErrBadOctet},
	{in: "192,0,2,99999999999999999999,4,1", wantErr: ErrBadOctet},
	{in: "192,0,2,1,0,0", wantErr: ErrBadPort},
	{in: "192,0,2,1,4", wantErr: ErrMalformed},
	{in: "192,0,2,1,4,1,7", wantErr: ErrMalformed},
	{in: "192,0,2,,4,1", wantErr: ErrMalformed},
	{in: "192,0,2,-1,4,1", wantErr: ErrMalformed},
	{in: "192,0,2,+1,4,1", wantErr: ErrMalformed},
	{in: " 192,0,2,1,4,1", wantErr: ErrMalformed},
	{in: "192,0,2,1,4,1 ", wantErr: ErrMalformed},
	{in: "192,0,2,1,4,1\r", wantErr: ErrMalformed},
	{in: "(192,0,2,1,4,1)", wantErr: ErrMalformed},
	{in: "192.0.2.1,4,1", wantErr: ErrMalformed},
	{in: "", wantErr: ErrMalformed},
}

var eprtCases = []addrCase{
	{in: "|1|132.235.1.2|6275|", want: mustAddrPort("132.235.1.2:6275")},
	{in: "|2|1080::8:800:200C:417A|5282|", want: mustAddrPort("[1080::8:800:200c:417a]:5282")},
	{in: "!1!192.0.2.10!50000!", want: mustAddrPort("192.0.2.10:50000")},
	{in: "~2~2001:db8::1~1025~", want: mustAddrPort("[2001:db8::1]:1025")},
	{in: "|1|192.0.2.10|065535|", want: mustAddrPort("192.0.2.10:65535")},
	{in: "|1|192.0.2.10|65536|", wantErr: ErrBadPort},
	{in: "|1|192.0.2.10|0|", wantErr: ErrBadPort},
	{in: "|1|192.0.2.256|1025|", wantErr: ErrBadOctet},
	{in: "|1|192.0.2.010|1025|", wantErr: ErrMalformed},
	{in: "|1|192.0.2|1025|", wantErr: ErrMalformed},
	{in: "|1|2001:db8::1|1025|", wantErr: ErrFamily},
	{in: "|2|192.0.2.10|1025|", wantErr: ErrFamily},
	{in: "|2|::ffff:192.0.2.10|1025|", wantErr: ErrFamily},
	{in: "|2|fe80::1%eth0|1025|", wantErr: ErrMalformed},
	{in: "|3|192.0.2.10|1025|", wantErr: ErrFamily},
	{in: "|x|192.0.2.10|1025|", wantErr: ErrMalformed},
	{in: "|1|192.0.2.10|1025", wantErr: ErrMalformed},
	{in: "|1|192.0.2.10|1025||", wantErr: ErrMalformed},
	{in: "1|192.0.2.10|1025|1", wantErr: ErrMalformed},
	{in: " |1|192.0.2.10|1025|", wantErr: ErrMalformed},
	{in: "|1|192.0.2.10|1025| ", wantErr: ErrMalformed},
	{in: "|1|192.0.2.10|-1025|", wantErr: ErrMalformed},
	{in: "|1||1025|", wantErr: ErrMalformed},
	{in: "||", wantErr: ErrMalformed},
	{in: "", wantErr: ErrMalformed},
}

var lprtCases = []addrCase{
	{in: "4,4,192,0,2,10,2,195,80", want: mustAddrPort("192.0.2.10:50000")},
	{in: "6,16,32,1,13,184,0,0,0,0,0,0,0,0,0,0,0,1,2,4,1", want: mustAddrPort("[2001:db8::1]:1025")},
	{in: "4,4,192,0,2,10,2,0,0", wantErr: ErrBadPort},
	{in: "4,4,192,0,2,256,2,4,1", wantErr: ErrBadOctet},
	{in: "4,16,192,0,2,10,2,4,1", wantErr: ErrMalformed},
	{in: "6,4,192,0,2,10,2,4,1", wantErr: ErrMalformed},
	{in: "5,4,192,0,2,10,2,4,1", wantErr: ErrFamily},
	{in: "4,4,192,0,2,10,3,0,4,1", wantErr: ErrMalformed},
	{in: "4,4,192,0,2,10,2,4", wantErr: ErrMalformed},
	{in: "4,4,192,0,2,10,2,4,1,1", wantErr: ErrMalformed},
	{in: "6,16,0,0,0,0,0,0,0,0,0,0,255,255,192,0,2,10,2,4,1", wantErr: ErrFamily},
	{in: "4,4", wantErr: ErrMalformed},
	{in: "", wantErr: ErrMalformed},
}

var reply227Cases = []addrCase{
	{in: "Entering Passive Mode (198,51,100,2,195,80).", want: mustAddrPort("198.51.100.2:50000")},
	{in: "227 Entering Passive Mode (198,51,100,2,195,80)", want: mustAddrPort("198.51.100.2:50000")},
	{in: "=198,51,100,2,195,80", want: mustAddrPort("198.51.100.2:50000")},
	{in: "Entering Passive Mode 198,51,100,2,195,80", want: mustAddrPort("198.51.100.2:50000")},
	{in: "Passive v2,1 (198,51,100,2,195,80)", want: mustAddrPort("198.51.100.2:50000")},
	{in: "Entering Passive Mode (198,51,100,2,195,80). Then 1,2,3,4,5,6", want: mustAddrPort("198.51.100.2:50000")},
	{in: "Entering Passive Mode (198,51,100,256,195,80).", wantErr: ErrBadOctet},
	{in: "Entering Passive Mode (198,51,100,2,0,0).", wantErr: ErrBadPort},
	{in: "Entering Passive Mode (198,51,100,2,195).", wantErr: ErrMalformed},
	{in: "Entering Passive Mode (198,51,100,2,195,80,1).", wantErr: ErrMalformed},
	{in: "Entering Passive Mode (198.51.100.2:50000).", wantErr: ErrMalformed},
	{in: "", wantErr: ErrMalformed},
}

var reply228Cases = []addrCase{
	{in: "Entering Long Passive Mode (4,4,198,51,100,2,2,195,80)", want: mustAddrPort("198.51.100.2:50000")},
	{in: "228 Entering Long Passive Mode (6,16,32,1,13,184,0,0,0,0,0,0,0,0,0,0,0,2,2,195,80)", want: mustAddrPort("[2001:db8::2]:50000")},
	{in: "Entering Long Passive Mode (4,4,198,51,100,2,2,0,0)", wantErr: ErrBadPort},
	{in: "Entering Long Passive Mode (4,4,198,51,300,2,2,195,80)", wantErr: ErrBadOctet},
	{in: "Entering Long Passive Mode (9,4,198,51,100,2,2,195,80)", wantErr: ErrFamily},
	{in: "Entering Long Passive Mode (198,51,100,2,195,80)", wantErr: ErrMalformed},
}

var reply229Cases = []struct {
	in      string
	want    uint16
	wantErr error
}{
	{in: "Entering Extended Passive Mode (|||50000|)", want: 50000},
	{in: "229 Extended Passive mode OK (|||50000|)", want: 50000},
	{in: "Entering Extended Passive Mode (!!!1025!).", want: 1025},
	{in: "Entering (maybe) Extended Passive Mode (|||65535|)", want: 65535},
	{in: "Entering Extended Passive Mode (|||065535|)", want: 65535},
	{in: "Entering Extended Passive Mode (|||65536|)", wantErr: ErrBadPort},
	{in: "Entering Extended Passive Mode (|||0|)", wantErr: ErrBadPort},
	{in: "Entering Extended Passive Mode (|||-1|)", wantErr: ErrMalformed},
	{in: "Entering Extended Passive Mode (|||50000|", wantErr: ErrMalformed},
	{in: "Entering Extended Passive Mode (|||50000!)", wantErr: ErrMalformed},
	{in: "Entering Extended Passive Mode (|||)", wantErr: ErrMalformed},
	{in: "Entering Extended Passive Mode (|2|2001:db8::2|50000|)", wantErr: ErrMalformed},
	{in: "Entering Extended Passive Mode (111500001)", wantErr: ErrMalformed},
	{in: "Entering Extended Passive Mode |||50000|", wantErr: ErrMalformed},
	{in: "", wantErr: ErrMalformed},
}

func checkErr(t *testing.T, name, in string, err, wantErr error) bool {
	t.Helper()
	if (err == nil) != (wantErr == nil) || !errors.Is(err, wantErr) {
		t.Errorf("%s(%q) error = %v, want %v", name, in, err, wantErr)
		return false
	}
	return true
}

func TestAddressParsers(t *testing.T) {
	t.Parallel()
	parsers := []struct {
		name  string
		parse func(string) (netip.AddrPort, error)
		cases []addrCase
	}{
		{"ParseHostPort", ParseHostPort, hostPortCases},
		{"ParseEPRT", ParseEPRT, eprtCases},
		{"ParseLPRT", ParseLPRT, lprtCases},
		{"Parse227", Parse227, reply227Cases},
		{"Parse228", Parse228, reply228Cases},
	}
	for _, p := range parsers {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			for _, tt := range p.cases {
				got, err := p.parse(tt.in)
				if !checkErr(t, p.name, tt.in, err, tt.wantErr) {
					continue
				}
				if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
					t.Errorf("%s(%q) mismatch (-want +got):\n%s", p.name, tt.in, diff)
				}
			}
		})
	}
}

func TestParse229(t *testing.T) {
	t.Parallel()
	for _, tt := range reply229Cases {
		got, err := Parse229(tt.in)
		if checkErr(t, "Parse229", tt.in, err, tt.wantErr) && got != tt.want {
			t.Errorf("Parse229(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestFormatters(t *testing.T) {
	t.Parallel()
	v4 := mustAddrPort("192.0.2.10:50000")
	v6 := mustAddrPort("[2001:db8::1]:1025")
	mapped := netip.AddrPortFrom(netip.MustParseAddr("::ffff:192.0.2.10"), 50000)
	got := []string{
		FormatPORT(v4), FormatPORT(mapped), FormatPORT(v6),
		Format227(v4), Format227(v6),
		FormatEPRT(v4), FormatEPRT(v6), FormatEPRT(mapped), FormatEPRT(netip.AddrPort{}),
		Format229(50000), Format229(1),
	}
	want := []string{
		"192,0,2,10,195,80", "192,0,2,10,195,80", "",
		"192,0,2,10,195,80", "",
		"|1|192.0.2.10|50000|", "|2|2001:db8::1|1025|", "|1|192.0.2.10|50000|", "",
		"|||50000|", "|||1|",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("formatters mismatch (-want +got):\n%s", diff)
	}

	// Round trips.
	for _, ap := range []netip.AddrPort{v4, mustAddrPort("0.0.0.0:1"), mustAddrPort("255.255.255.255:65535")} {
		if got, err := ParseHostPort(FormatPORT(ap)); err != nil || got != ap {
			t.Errorf("ParseHostPort(FormatPORT(%v)) = %v, %v", ap, got, err)
		}
		if got, err := Parse227("Entering Passive Mode (" + Format227(ap) + ")."); err != nil || got != ap {
			t.Errorf("Parse227(Format227(%v)) = %v, %v", ap, got, err)
		}
	}
	for _, ap := range []netip.AddrPort{v4, v6} {
		if got, err := ParseEPRT(FormatEPRT(ap)); err != nil || got != ap {
			t.Errorf("ParseEPRT(FormatEPRT(%v)) = %v, %v", ap, got, err)
		}
	}
	if got, err := Parse229("(" + Format229(50000) + ")"); err != nil || got != 50000 {
		t.Errorf("Parse229(Format229(50000)) = %v, %v", got, err)
	}
}
