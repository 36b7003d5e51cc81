package lab

import (
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// These tests need no privileges.

func TestLastDataCommand(t *testing.T) {
	for _, tc := range []struct {
		output, prefix, want string
	}{
		{"> USER u\n> EPSV\n< 229 ok\n", "> ", "EPSV"},
		{"> EPSV\n* Failed EPSV attempt. Disabling EPSV\n> PASV\n", "> ", "PASV"},
		{"> EPRT |1|192.0.2.2|5000|\n", "> ", "EPRT"},
		{"> PORT 192,0,2,2,4,1\r\n", "> ", "PORT"},
		{"< 227 Entering Passive Mode\n", "> ", ""},
		{"---> PASV\n<--- 227 x\n", "---> ", "PASV"},
		{"---> EPRT |2|2001:db8:c::2|5|\n", "---> ", "EPRT"},
		{"> PASVX\n", "> ", ""},
	} {
		if got := lastDataCommand(tc.output, tc.prefix); got != tc.want {
			t.Errorf("lastDataCommand(%q) = %q, want %q", tc.output, got, tc.want)
		}
	}
	var me *ModeError
	if err := checkMode("> PASV\n", "> ", EPSV); !errors.As(err, &me) || me.Got != "PASV" || me.Want != EPSV {
		t.Errorf("checkMode: got %v", err)
	}
}

func TestModeArgs(t *testing.T) {
	for _, m := range Modes {
		if len(m.CurlArgs()) == 0 {
			t.Errorf("%v: no curl args", m)
		}
		_, err4 := m.LftpSettings(false)
		_, err6 := m.LftpSettings(true)
		if want := m == EPRT; (err4 != nil) != want {
			t.Errorf("%v over IPv4: lftp err %v", m, err4)
		}
		if want := m.IPv4Only(); (err6 != nil) != want {
			t.Errorf("%v over IPv6: lftp err %v", m, err6)
		}
	}
	if !slices.Contains(PASV.CurlArgs(), "--disable-epsv") || !slices.Contains(PORT.CurlArgs(), "--disable-eprt") {
		t.Error("curl args do not force PASV/PORT")
	}
}

func TestURLs(t *testing.T) {
	for _, tc := range []struct {
		addr netip.Addr
		port uint16
		want string
	}{
		{ServerAddr4, 21, "ftp://u:p@198.51.100.2/f.bin"},
		{ServerAddr6, 21, "ftp://u:p@[2001:db8:5::2]/f.bin"},
		{ServerAddr6, 2121, "ftp://u:p@[2001:db8:5::2]:2121/f.bin"},
	} {
		if got := ftpURL("ftp", "u", "p", tc.addr, tc.port, 21, "f.bin"); got != tc.want {
			t.Errorf("ftpURL = %q, want %q", got, tc.want)
		}
	}
	u, v6, err := urlFamily("ftp://u:p@[2001:db8:5::2]/a/b.bin")
	if err != nil || !v6 || remotePath(u) != "a/b.bin" {
		t.Errorf("urlFamily: %v %v %v", u, v6, err)
	}
	if _, _, err := urlFamily("ftp://example.net/"); err == nil {
		t.Error("urlFamily accepted a host name")
	}
	script, err := lftpScript(u, v6, EPSV, []string{"set x y"}, "get a")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"set ftp:prefer-epsv yes\nset x y\nopen -u \"u,p\" \"ftp://[2001:db8:5::2]\"\nget a\n", "set cmd:fail-exit yes"} {
		if !strings.Contains(script, want) {
			t.Errorf("lftp script lacks %q:\n%s", want, script)
		}
	}
	if got := lftpQuote(`a"b\c`); got != `"a\"b\\c"` {
		t.Errorf("lftpQuote = %s", got)
	}
}

func TestRulesets(t *testing.T) {
	fw := GatewayFirewallRuleset(0x10)
	for _, want := range []string{
		"add table inet labfw\ndelete table inet labfw\n",
		"type filter hook forward priority 0; policy drop;",
		`ct mark & 0x00000010 == 0x00000010 accept comment "ftpsalg pinholes"`,
		"ip daddr 198.51.100.2 tcp dport { 21, 990 } accept",
		"ip6 daddr 2001:db8:5::2 tcp dport { 21, 990 } accept",
	} {
		if !strings.Contains(fw, want) {
			t.Errorf("firewall lacks %q:\n%s", want, fw)
		}
	}
	if h := GatewayHelperRuleset(); !strings.Contains(h, `tcp dport 21 ct helper set "ftp-21" accept`) {
		t.Errorf("helper ruleset:\n%s", h)
	}
}

func TestVsftpdConfig(t *testing.T) {
	v := &Vsftpd{Log: "/l", XferLog: "/x"}
	opts := VsftpdOptions{PasvMinPort: 1, PasvMaxPort: 2, Extra: []string{"accept_timeout=1"}}
	conf := vsftpdConfig(opts, v, "/empty", 21, false)
	for _, want := range []string{"listen_ipv6=YES\n", "listen=NO\n", "seccomp_sandbox=NO\n", "isolate_network=NO\n", "connect_from_port_20=YES\n", "pasv_min_port=1\n", "ssl_enable=NO\n", "accept_timeout=1\n"} {
		if !strings.Contains(conf, want) {
			t.Errorf("config lacks %q", want)
		}
	}
	opts.PasvAddress = OtherAddr4
	opts.ActiveFromEphemeralPort = true
	opts.TLS = &VsftpdTLS{CertFile: "/c", KeyFile: "/k"}
	conf = vsftpdConfig(opts, v, "/empty", 990, true)
	for _, want := range []string{"listen=YES\n", "pasv_address=203.0.113.2\n", "connect_from_port_20=NO\n", "ssl_enable=YES\n", "ssl_ciphers=HIGH\n", "require_ssl_reuse=NO\n", "implicit_ssl=YES\n", "listen_port=990\n"} {
		if !strings.Contains(conf, want) {
			t.Errorf("config lacks %q", want)
		}
	}
}

func TestFiles(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	sum, err := RandomFile(p, 12345)
	if err != nil {
		t.Fatal(err)
	}
	got, n, err := FileSHA256(p)
	if err != nil || got != sum || n != 12345 {
		t.Errorf("FileSHA256 = %s, %d, %v; want %s, 12345", got, n, err, sum)
	}
	if pw := randomPassword(20); len(pw) != 20 || strings.ContainsAny(pw, ",:@\"\\ ") {
		t.Errorf("password %q", pw)
	}
}

func TestStandaloneCleanupOrder(t *testing.T) {
	tb := Standalone(nil)
	var order []int
	tb.Cleanup(func() { order = append(order, 1) })
	tb.Cleanup(func() { order = append(order, 2) })
	tb.Close()
	tb.Close()
	if !slices.Equal(order, []int{2, 1}) {
		t.Errorf("cleanup order %v, want [2 1]", order)
	}
	if tb.Failed() {
		t.Error("Failed without Errorf")
	}
}
