package ftp

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// Documentation addresses only (RFC 5737, RFC 3849).
var (
	clientAP   = mustAddrPort("192.0.2.10:40000")
	serverAP   = mustAddrPort("198.51.100.2:21")
	client6AP  = mustAddrPort("[2001:db8::10]:40000")
	server6AP  = mustAddrPort("[2001:db8::2]:21")
	clientAddr = clientAP.Addr()
	serverAddr = serverAP.Addr()
)

func baseConfig() Config {
	return Config{Client: clientAP, Server: serverAP, AllowActive: true}
}

// step feeds data in one direction and expects want. The harness sets Dir
// on every wanted decision, and a zero Line to the last line of data.
type step struct {
	dir  Direction
	data string
	want []Decision
}

func cl(data string, want ...Decision) step { return step{FromClient, data, want} }
func sv(data string, want ...Decision) step { return step{FromServer, data, want} }

// lastLine returns the ref of the last line in data fed at offset before.
func lastLine(data string, before uint64) LineRef {
	body := strings.TrimSuffix(data, "\n")
	start := strings.LastIndexByte(body, '\n') + 1
	return LineRef{Start: before + uint64(start), Len: len(data) - start}
}

var (
	ignoreDetail = cmpopts.IgnoreFields(Decision{}, "Detail")
	equateAddr   = cmpopts.EquateComparable(netip.Addr{}, netip.AddrPort{})
)

func runSteps(t *testing.T, sess *Session, steps []step, opts ...cmp.Option) {
	t.Helper()
	for i, st := range steps {
		before := sess.Offset(st.dir)
		var want []Decision
		for _, d := range st.want {
			d.Dir = st.dir
			if d.Line == (LineRef{}) && d.Action != ActionTLSCleared {
				d.Line = lastLine(st.data, before)
			}
			want = append(want, d)
		}
		got := sess.Feed(st.dir, []byte(st.data))
		if diff := cmp.Diff(want, got, append(opts, equateAddr)...); diff != "" {
			t.Errorf("step %d (%v %q): decisions mismatch (-want +got):\n%s", i, st.dir, st.data, diff)
		}
		if got, want := sess.Offset(st.dir), before+uint64(len(st.data)); got != want {
			t.Errorf("step %d: Offset(%v) = %d, want %d", i, st.dir, got, want)
		}
	}
}

func cmdD(verb, arg string) Decision { return Decision{Action: ActionCommand, Verb: verb, Arg: arg} }

func replyD(verb string, code int, text string) Decision {
	return Decision{Action: ActionReply, Verb: verb, Code: code, Text: text}
}

// portCmdD is an accepted PORT/EPRT/LPRT announcing ep.
func portCmdD(verb, arg string, ep netip.AddrPort) Decision {
	return Decision{Action: ActionCommand, Verb: verb, Arg: arg, Endpoint: ep, EndpointOnLine: true}
}

// pinholeD opens ph for a reply with the address on its line (passive) or
// for the 200 to an active announcement.
func pinholeD(verb string, code int, ph Pinhole) Decision {
	return Decision{Action: ActionOpenPinhole, Verb: verb, Code: code, Pinhole: ph,
		Endpoint: netip.AddrPortFrom(ph.Dst, ph.DstPort), EndpointOnLine: ph.Mode == Passive}
}

// firstLine marks d's address as found on the first line of a multi-line
// reply, not on the final line the decision refers to.
func firstLine(d Decision) Decision {
	d.EndpointOnLine = false
	return d
}

func passiveD(verb string, code int, port uint16) Decision {
	return pinholeD(verb, code, Pinhole{Mode: Passive, Src: clientAddr, Dst: serverAddr, DstPort: port})
}

func activeD(verb string, port uint16) Decision {
	return pinholeD(verb, 200, Pinhole{Mode: Active, Src: serverAddr, Dst: clientAddr, DstPort: port})
}

func refuseCmdD(verb string, code int, reason Reason, replacement string) Decision {
	label := verb
	if label == "" {
		label = "command"
	}
	d := Decision{Action: ActionRefuse, Verb: verb, Reason: reason,
		Reply: fmt.Sprintf("%d ftpsalg: %s refused: %s\r\n", code, label, reason)}
	if replacement != "" {
		d.Replacement = []byte(replacement)
	}
	return d
}

func tlsStartedD() Decision { return Decision{Action: ActionTLSStarted, Verb: "AUTH", Code: 234} }

// serverWording holds replies of real servers, as their wording is known.
type serverWording struct {
	name, greeting, pasv, epsv, port, auth string
}

var servers = []serverWording{
	{
		name:     "vsftpd",
		greeting: "220 (vsFTPd 3.0.5)",
		pasv:     "227 Entering Passive Mode (198,51,100,2,195,80).",
		epsv:     "229 Entering Extended Passive Mode (|||50000|)",
		port:     "200 PORT command successful. Consider using PASV.",
		auth:     "234 Proceed with negotiation.",
	},
	{
		name:     "proftpd",
		greeting: "220 ProFTPD Server (Debian) [198.51.100.2]",
		pasv:     "227 Entering Passive Mode (198,51,100,2,195,80).",
		epsv:     "229 Entering Extended Passive Mode (|||50000|)",
		port:     "200 PORT command successful",
		auth:     "234 AUTH TLS successful",
	},
	{
		name:     "pure-ftpd",
		greeting: "220---------- Welcome to Pure-FTPd [privsep] [TLS] ----------",
		pasv:     "227 Entering Passive Mode (198,51,100,2,195,80)",
		epsv:     "229 Extended Passive mode OK (|||50000|)",
		port:     "200 PORT command successful",
		auth:     "234 AUTH TLS OK.",
	},
	{
		name:     "FileZilla Server",
		greeting: "220 FileZilla Server 1.8.0",
		pasv:     "227 Entering Passive Mode (198,51,100,2,195,80)",
		epsv:     "229 Entering Extended Passive Mode (|||50000|)",
		port:     "200 Port command successful",
		auth:     "234 Using authentication type TLS",
	},
	{
		name:     "IIS",
		greeting: "220 Microsoft FTP Service",
		pasv:     "227 Entering Passive Mode (198,51,100,2,195,80).",
		epsv:     "229 Entering Extended Passive Mode (|||50000|)",
		port:     "200 PORT command successful.",
		auth:     "234 AUTH command ok. Expecting TLS Negotiation.",
	},
}

// textOf is the reply text after the code and separator.
func textOf(line string) string { return line[4:] }

func TestSessionServers(t *testing.T) {
	t.Parallel()
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			t.Parallel()
			cfg := baseConfig()
			cfg.TransportDecrypts = true
			sess := NewSession(cfg)
			greeting := replyD("", 220, textOf(srv.greeting))
			if srv.name == "pure-ftpd" {
				// Pure-FTPd's banner is multi-line: "220-" ... "220 ".
				srv.greeting = "220-" + textOf(srv.greeting) + "\r\n220-You are user number 1 of 50 allowed.\r\n220 This is a private system - No anonymous login"
				greeting = replyD("", 220, "This is a private system - No anonymous login")
			}
			runSteps(t, sess, []step{
				sv(srv.greeting+"\r\n", greeting),
				cl("AUTH TLS\r\n", cmdD("AUTH", "TLS")),
				sv(srv.auth+"\r\n", replyD("AUTH", 234, textOf(srv.auth)), tlsStartedD()),
				cl("USER anonymous\r\n", cmdD("USER", "anonymous")),
				sv("331 Please specify the password.\r\n", replyD("USER", 331, "Please specify the password.")),
				cl("PASS guest@example.com\r\n", cmdD("PASS", "<redacted>")),
				sv("230 Login successful.\r\n", replyD("PASS", 230, "Login successful.")),
				cl("PASV\r\n", cmdD("PASV", "")),
				sv(srv.pasv+"\r\n", passiveD("PASV", 227, 50000), replyD("PASV", 227, textOf(srv.pasv))),
				cl("LIST\r\n", cmdD("LIST", "")),
				sv("150 Here comes the directory listing.\r\n", replyD("LIST", 150, "Here comes the directory listing.")),
				sv("226 Directory send OK.\r\n", replyD("LIST", 226, "Directory send OK.")),
				cl("EPSV\r\n", cmdD("EPSV", "")),
				sv(srv.epsv+"\r\n", passiveD("EPSV", 229, 50000), replyD("EPSV", 229, textOf(srv.epsv))),
				cl("PORT 192,0,2,10,195,81\r\n", portCmdD("PORT", "192,0,2,10,195,81", netip.AddrPortFrom(clientAddr, 50001))),
				sv(srv.port+"\r\n", activeD("PORT", 50001), replyD("PORT", 200, textOf(srv.port))),
				cl("EPRT |1|192.0.2.10|50002|\r\n", portCmdD("EPRT", "|1|192.0.2.10|50002|", netip.AddrPortFrom(clientAddr, 50002))),
				sv("200 EPRT command successful.\r\n", activeD("EPRT", 50002), replyD("EPRT", 200, "EPRT command successful.")),
				cl("QUIT\r\n", cmdD("QUIT", "")),
				sv("221 Goodbye.\r\n", replyD("QUIT", 221, "Goodbye."), Decision{Action: ActionSessionEnd, Verb: "QUIT", Code: 221}),
			})
			if !sess.Closed() {
				t.Error("Closed() = false after 221")
			}
			if !sess.Encrypted(FromClient) || !sess.Encrypted(FromServer) {
				t.Error("Encrypted() = false after 234 in TransportDecrypts mode")
			}
		})
	}
}

func TestSessionScenarios(t *testing.T) {
	t.Parallel()
	v6 := func(c *Config) { c.Client, c.Server = client6AP, server6AP }
	tests := []struct {
		name  string
		cfg   func(*Config)
		steps []step // fed after greet() unless ownGreeting
		// ownGreeting: the case is about the greeting and feeds its own.
		ownGreeting bool
	}{
		{
			name: "multi-line FEAT and a 227 line inside STAT output",
			steps: []step{
				cl("FEAT\r\n", cmdD("FEAT", "")),
				sv("211-Features:\r\n EPRT\r\n EPSV\r\n MDTM\r\n PASV\r\n REST STREAM\r\n SIZE\r\n TVFS\r\n211 End\r\n",
					replyD("FEAT", 211, "End")),
				cl("STAT\r\n", cmdD("STAT", "")),
				sv("211-FTP server status:\r\n227 Entering Passive Mode (203,0,113,9,0,22).\r\n211-more\r\n211 End of status\r\n",
					replyD("STAT", 211, "End of status")),
				cl("PASV\r\n", cmdD("PASV", "")),
				sv("227 Entering Passive Mode (198,51,100,2,195,80).\r\n", passiveD("PASV", 227, 50000), replyD("PASV", 227, "Entering Passive Mode (198,51,100,2,195,80).")),
			},
		},
		{
			name: "multi-line 227 takes the address of its first line",
			steps: []step{
				cl("PASV\r\n", cmdD("PASV", "")),
				sv("227-Entering Passive Mode (198,51,100,2,195,80)\r\n227-(203,0,113,9,0,22)\r\n227 OK\r\n", firstLine(passiveD("PASV", 227, 50000)), replyD("PASV", 227, "OK")),
			},
		},
		{
			name:        "greeting with 120 and pipelined commands pair in order",
			ownGreeting: true,
			steps: []step{
				sv("120 Service ready in 1 minute.\r\n", replyD("", 120, "Service ready in 1 minute.")),
				sv("220 Service ready.\r\n", replyD("", 220, "Service ready.")),
				cl("USER anonymous\r\n", cmdD("USER", "anonymous")),
				cl("PASS\r\n", cmdD("PASS", "<redacted>")),
				cl("PASV\r\n", cmdD("PASV", "")),
				sv("331 Please specify the password.\r\n", replyD("USER", 331, "Please specify the password.")),
				sv("230 Login successful.\r\n", replyD("PASS", 230, "Login successful.")),
				sv("227 Entering Passive Mode (198,51,100,2,195,80).\r\n", passiveD("PASV", 227, 50000), replyD("PASV", 227, "Entering Passive Mode (198,51,100,2,195,80).")),
				sv("421 Timeout.\r\n", replyD("", 421, "Timeout."), Decision{Action: ActionSessionEnd, Code: 421}),
			},
		},
		{
			name: "refused PORT pairs with the server's 500 to the neutralised line",
			steps: []step{
				cl("PORT 203,0,113,9,195,80\r\n", cmdD("PORT", "203,0,113,9,195,80"),
					refuseCmdD("PORT", 534, ReasonThirdParty, "XXXX 203,0,113,9,195,80\r\n")),
				cl("PASV\r\n", cmdD("PASV", "")),
				sv("500 Unknown command.\r\n", replyD("PORT", 500, "Unknown command.")),
				sv("227 Entering Passive Mode (198,51,100,2,195,80).\r\n", passiveD("PASV", 227, 50000), replyD("PASV", 227, "Entering Passive Mode (198,51,100,2,195,80).")),
			},
		},
		{
			name: "a refused line the server does not answer is skipped",
			steps: []step{
				cl("PORT 203,0,113,9,195,80\r\n", cmdD("PORT", "203,0,113,9,195,80"),
					refuseCmdD("PORT", 534, ReasonThirdParty, "XXXX 203,0,113,9,195,80\r\n")),
				cl("\r\n", cmdD("", "")),
				cl("PASV\r\n", cmdD("PASV", "")),
				sv("227 Entering Passive Mode (198,51,100,2,195,80).\r\n", passiveD("PASV", 227, 50000), replyD("PASV", 227, "Entering Passive Mode (198,51,100,2,195,80).")),
			},
		},
		{
			name: "transport that injects replies does not wait for refused lines",
			cfg:  func(c *Config) { c.InjectsReplies = true },
			steps: []step{
				cl("PORT 192,0,2,10,0,22\r\n", cmdD("PORT", "192,0,2,10,0,22"),
					refuseCmdD("PORT", 534, ReasonPrivilegedPort, "XXXX 192,0,2,10,0,22\r\n")),
				cl("NOOP\r\n", cmdD("NOOP", "")),
				sv("200 NOOP ok.\r\n", replyD("NOOP", 200, "NOOP ok.")),
			},
		},
		{
			name: "PASS is redacted and neutralised whole",
			steps: []step{
				cl("PASS hunter2\r\n", cmdD("PASS", "<redacted>")),
				cl("PASS hunter2\x01\r\n", cmdD("", ""), refuseCmdD("", 500, ReasonMalformed, "XXXXXXXXXXXXX\r\n")),
			},
		},
		{
			name: "PORT that starts mid-line is not a command",
			steps: []step{
				cl("NOOP xPO", nil...),
				cl("RT 203,0,113,9,0,22\r\n", Decision{Action: ActionCommand, Verb: "NOOP", Arg: "xPORT 203,0,113,9,0,22", Line: LineRef{Start: 0, Len: 29}}),
			},
		},
		{
			name: "HTTP request to the control port",
			steps: []step{
				cl("POST / HTTP/1.1\r\n", cmdD("POST", "/ HTTP/1.1")),
				cl("Host: ftp.example.com\r\n", cmdD("", ""), refuseCmdD("", 500, ReasonMalformed, "XXXXXXXXXXXXXXXXXXXXX\r\n")),
				cl("Content-Length: 30\r\n", cmdD("", ""), refuseCmdD("", 500, ReasonMalformed, "XXXXXXXXXXXXXXXXXX\r\n")),
				cl("\r\n", cmdD("", "")),
				cl("xxxxxxxxxxxPORT 192,0,2,10,0,21\r\n", cmdD("", ""), refuseCmdD("", 500, ReasonMalformed, "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX\r\n")),
			},
		},
		{
			name: "EPSV ALL until REIN",
			steps: []step{
				cl("EPSV ALL\r\n", cmdD("EPSV", "ALL")),
				sv("200 EPSV ALL ok.\r\n", replyD("EPSV", 200, "EPSV ALL ok.")),
				cl("PASV\r\n", cmdD("PASV", ""), refuseCmdD("PASV", 534, ReasonEPSVAll, "XXXX\r\n")),
				cl("EPRT |1|192.0.2.10|50000|\r\n", cmdD("EPRT", "|1|192.0.2.10|50000|"), refuseCmdD("EPRT", 534, ReasonEPSVAll, "XXXX |1|192.0.2.10|50000|\r\n")),
				sv("500 Unknown command.\r\n", replyD("PASV", 500, "Unknown command.")),
				sv("500 Unknown command.\r\n", replyD("EPRT", 500, "Unknown command.")),
				cl("EPSV\r\n", cmdD("EPSV", "")),
				sv("229 Entering Extended Passive Mode (|||50000|)\r\n", passiveD("EPSV", 229, 50000), replyD("EPSV", 229, "Entering Extended Passive Mode (|||50000|)")),
				cl("REIN\r\n", cmdD("REIN", "")),
				sv("220 Ready for new user.\r\n", replyD("REIN", 220, "Ready for new user.")),
				cl("PASV\r\n", cmdD("PASV", "")),
				sv("227 Entering Passive Mode (198,51,100,2,195,80).\r\n", passiveD("PASV", 227, 50000), replyD("PASV", 227, "Entering Passive Mode (198,51,100,2,195,80).")),
			},
		},
		{
			name:        "malformed server line is blanked and reading resumes",
			ownGreeting: true,
			steps: []step{
				sv("hello\r\n", Decision{Action: ActionRefuse, Reason: ReasonMalformed, Replacement: []byte("     \r\n")}),
				sv("220 ready\r\n", replyD("", 220, "ready")),
			},
		},
		{
			name: "too-long reply lines do not desynchronise pairing",
			cfg:  func(c *Config) { c.MaxLine = 64 },
			steps: []step{
				cl("STAT\r\n", cmdD("STAT", "")),
				sv("211-"+strings.Repeat("x", 60), Decision{Action: ActionRefuse, Reason: ReasonLineTooLong, Line: LineRef{Start: 11, Len: 64}}),
				sv(strings.Repeat("x", 100)+"\r\n211 End\r\n", replyD("STAT", 211, "End")),
				cl("PASV\r\n", cmdD("PASV", "")),
				sv("227 "+strings.Repeat("y", 70)+"\r\n", Decision{Action: ActionRefuse, Verb: "PASV", Code: 227, Reason: ReasonLineTooLong,
					Reply: "425 ftpsalg: cannot open data connection: line_too_long\r\n", Line: LineRef{Start: 186, Len: 64}},
					Decision{Action: ActionReply, Verb: "PASV", Code: 227, Text: strings.Repeat("y", 60), Line: LineRef{Start: 186, Len: 64}}),
				cl("PASV\r\n", cmdD("PASV", "")),
				sv("227 Entering Passive Mode (198,51,100,2,195,80).\r\n", passiveD("PASV", 227, 50000), replyD("PASV", 227, "Entering Passive Mode (198,51,100,2,195,80).")),
			},
		},
		{
			name: "too-long command hides what follows until the next LF",
			cfg:  func(c *Config) { c.MaxLine = 64 },
			steps: []step{
				cl("SITE "+strings.Repeat("A", 100)+"PORT 203,0,113,9,0,22\r\n",
					Decision{Action: ActionCommand, Verb: "SITE", Line: LineRef{Start: 0, Len: 64}},
					Decision{Action: ActionRefuse, Verb: "SITE", Reason: ReasonLineTooLong, Reply: "500 ftpsalg: SITE refused: line_too_long\r\n", Line: LineRef{Start: 0, Len: 64}}),
				cl("NOOP\r\n", cmdD("NOOP", "")),
				sv("500 Command line too long.\r\n", replyD("SITE", 500, "Command line too long.")),
				sv("200 NOOP ok.\r\n", replyD("NOOP", 200, "NOOP ok.")),
			},
		},
		{
			name: "Telnet IP and Synch before ABOR",
			steps: []step{
				cl("RETR big.iso\r\n", cmdD("RETR", "big.iso")),
				sv("150 Opening BINARY mode data connection.\r\n", replyD("RETR", 150, "Opening BINARY mode data connection.")),
				cl("\xff\xf4\xff\xf2ABOR\r\n", cmdD("ABOR", "")),
				sv("426 Failure writing network stream.\r\n", replyD("RETR", 426, "Failure writing network stream.")),
				sv("226 ABOR successful.\r\n", replyD("ABOR", 226, "ABOR successful.")),
			},
		},
		{
			name: "control byte hidden in a Telnet option is refused",
			steps: []step{
				cl("NOOP \xff\xfb\rPORT 192,0,2,10,195,80\r\n", cmdD("", ""), refuseCmdD("", 500, ReasonMalformed, strings.Repeat("X", 30)+"\r\n")),
				cl("PORT 192,0,2,10,195,80\xff\xf1\r\n", cmdD("", ""), refuseCmdD("", 500, ReasonMalformed, strings.Repeat("X", 24)+"\r\n")),
			},
		},
		{
			name: "CCC in TransportDecrypts mode",
			cfg:  func(c *Config) { c.TransportDecrypts = true },
			steps: []step{
				cl("AUTH TLS\r\n", cmdD("AUTH", "TLS")),
				sv("234 Proceed with negotiation.\r\n", replyD("AUTH", 234, "Proceed with negotiation."), tlsStartedD()),
				cl("CCC\r\n", cmdD("CCC", "")),
				sv("200 Control channel cleared.\r\n", replyD("CCC", 200, "Control channel cleared."), Decision{Action: ActionTLSCleared, Verb: "CCC", Code: 200, Line: LineRef{Start: 42, Len: 30}}),
				cl("AUTH SSL\r\n", cmdD("AUTH", "SSL")),
				sv("234 AUTH SSL OK.\r\n", replyD("AUTH", 234, "AUTH SSL OK."), tlsStartedD()),
				cl("REIN\r\n", cmdD("REIN", "")),
				sv("220 Ready.\r\n", replyD("REIN", 220, "Ready."), Decision{Action: ActionTLSCleared, Verb: "REIN", Code: 220, Line: LineRef{Start: 90, Len: 12}}),
			},
		},
		{
			name: "AUTH refused or for another mechanism does not start TLS",
			steps: []step{
				cl("AUTH GSSAPI\r\n", cmdD("AUTH", "GSSAPI")),
				sv("334 Using authentication type GSSAPI; ADAT must follow\r\n", replyD("AUTH", 334, "Using authentication type GSSAPI; ADAT must follow")),
				cl("AUTH TLS\r\n", cmdD("AUTH", "TLS")),
				sv("504 AUTH TLS not supported\r\n", replyD("AUTH", 504, "AUTH TLS not supported")),
				cl("PASV\r\n", cmdD("PASV", "")),
				sv("227 Entering Passive Mode (198,51,100,2,195,80)\r\n", passiveD("PASV", 227, 50000), replyD("PASV", 227, "Entering Passive Mode (198,51,100,2,195,80)")),
			},
		},
		{
			name: "IPv6 control connection with EPSV and EPRT",
			cfg:  v6,
			steps: []step{
				cl("EPSV\r\n", cmdD("EPSV", "")),
				sv("229 Entering Extended Passive Mode (|||50000|)\r\n",
					pinholeD("EPSV", 229, Pinhole{Mode: Passive, Src: client6AP.Addr(), Dst: server6AP.Addr(), DstPort: 50000}),
					replyD("EPSV", 229, "Entering Extended Passive Mode (|||50000|)")),
				cl("EPRT |2|2001:db8::10|50001|\r\n", portCmdD("EPRT", "|2|2001:db8::10|50001|", netip.AddrPortFrom(client6AP.Addr(), 50001))),
				sv("200 EPRT command successful.\r\n",
					pinholeD("EPRT", 200, Pinhole{Mode: Active, Src: server6AP.Addr(), Dst: client6AP.Addr(), DstPort: 50001}),
					replyD("EPRT", 200, "EPRT command successful.")),
				cl("LPSV\r\n", cmdD("LPSV", "")),
				sv("228 Entering Long Passive Mode (6,16,32,1,13,184,0,0,0,0,0,0,0,0,0,0,0,2,2,195,82)\r\n",
					pinholeD("LPSV", 228, Pinhole{Mode: Passive, Src: client6AP.Addr(), Dst: server6AP.Addr(), DstPort: 50002}),
					replyD("LPSV", 228, "Entering Long Passive Mode (6,16,32,1,13,184,0,0,0,0,0,0,0,0,0,0,0,2,2,195,82)")),
			},
		},
		{
			name: "LPRT and LPSV on IPv4",
			steps: []step{
				cl("LPRT 4,4,192,0,2,10,2,195,80\r\n", portCmdD("LPRT", "4,4,192,0,2,10,2,195,80", netip.AddrPortFrom(clientAddr, 50000))),
				sv("200 LPRT command successful\r\n", activeD("LPRT", 50000), replyD("LPRT", 200, "LPRT command successful")),
				cl("LPSV\r\n", cmdD("LPSV", "")),
				sv("228 Entering Long Passive Mode (4,4,198,51,100,2,2,195,80)\r\n", passiveD("LPSV", 228, 50000), replyD("LPSV", 228, "Entering Long Passive Mode (4,4,198,51,100,2,2,195,80)")),
			},
		},
		{
			name: "third-party announcements when allowed (FXP)",
			cfg:  func(c *Config) { c.AllowThirdParty = true },
			steps: []step{
				cl("PASV\r\n", cmdD("PASV", "")),
				sv("227 Entering Passive Mode (203,0,113,9,195,80).\r\n",
					pinholeD("PASV", 227, Pinhole{Mode: Passive, Src: clientAddr, Dst: netip.MustParseAddr("203.0.113.9"), DstPort: 50000}),
					replyD("PASV", 227, "Entering Passive Mode (203,0,113,9,195,80).")),
				cl("PORT 203,0,113,10,195,81\r\n", portCmdD("PORT", "203,0,113,10,195,81", netip.MustParseAddrPort("203.0.113.10:50001"))),
				sv("200 PORT command successful\r\n",
					pinholeD("PORT", 200, Pinhole{Mode: Active, Src: serverAddr, Dst: netip.MustParseAddr("203.0.113.10"), DstPort: 50001}),
					replyD("PORT", 200, "PORT command successful")),
			},
		},
		{
			name: "IPv4-mapped configuration addresses are unmapped",
			cfg: func(c *Config) {
				c.Client = netip.AddrPortFrom(netip.MustParseAddr("::ffff:192.0.2.10"), 40000)
				c.Server = netip.AddrPortFrom(netip.MustParseAddr("::ffff:198.51.100.2"), 21)
			},
			steps: []step{
				cl("PASV\r\n", cmdD("PASV", "")),
				sv("227 Entering Passive Mode (198,51,100,2,195,80).\r\n", passiveD("PASV", 227, 50000), replyD("PASV", 227, "Entering Passive Mode (198,51,100,2,195,80).")),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := baseConfig()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			steps := tt.steps
			if !tt.ownGreeting {
				steps = append([]step{greet()}, steps...)
			}
			runSteps(t, NewSession(cfg), steps, ignoreDetail)
		})
	}
}

func TestSessionPendingBound(t *testing.T) {
	t.Parallel()
	sess := NewSession(baseConfig())
	steps := []step{greet()}
	for range MaxPending {
		steps = append(steps, cl("NOOP\r\n", cmdD("NOOP", "")))
	}
	steps = append(steps,
		cl("PASV\r\n", cmdD("PASV", ""), refuseCmdD("PASV", 503, ReasonProtocolInState, "XXXX\r\n")),
		sv("200 NOOP ok.\r\n", replyD("NOOP", 200, "NOOP ok.")),
		// Still refused: a refused command is queued behind the others.
		cl("NOOP\r\n", cmdD("NOOP", ""), refuseCmdD("NOOP", 503, ReasonProtocolInState, "XXXX\r\n")),
	)
	for range MaxPending - 1 {
		steps = append(steps, sv("200 NOOP ok.\r\n", replyD("NOOP", 200, "NOOP ok.")))
	}
	steps = append(steps,
		sv("500 Unknown command.\r\n", replyD("", 500, "Unknown command.")),
		sv("500 Unknown command.\r\n", replyD("", 500, "Unknown command.")),
		cl("PASV\r\n", cmdD("PASV", "")),
		sv("227 Entering Passive Mode (198,51,100,2,195,80).\r\n", passiveD("PASV", 227, 50000), replyD("PASV", 227, "Entering Passive Mode (198,51,100,2,195,80).")),
	)
	runSteps(t, sess, steps, ignoreDetail)
}

// TestSessionHostile runs the attacks: each case prepares a session, then
// feeds one line that must be refused, with exactly these fields.
func TestSessionHostile(t *testing.T) {
	t.Parallel()
	const pasv227 = "227 Entering Passive Mode (%s).\r\n"
	tests := []struct {
		name        string
		cfg         func(*Config)
		noGreeting  bool   // setup starts before the greeting
		setup       []step // fed after greet() without checking decisions
		last        step   // its want is ignored; the fields below are checked
		reason      Reason
		detail      string
		reply       string
		replacement string
	}{
		{
			name:        "227 announces a third-party address",
			setup:       []step{cl("PASV\r\n")},
			last:        sv(fmt.Sprintf(pasv227, "203,0,113,9,195,80")),
			reason:      ReasonThirdParty,
			detail:      "227 announces 203.0.113.9, control peer is 198.51.100.2",
			reply:       "425 ftpsalg: cannot open data connection: third_party_address\r\n",
			replacement: "425 Entering Passive Mode (203,0,113,9,195,80).\r\n",
		},
		{
			name:        "227 announces port 22",
			setup:       []step{cl("PASV\r\n")},
			last:        sv(fmt.Sprintf(pasv227, "198,51,100,2,0,22")),
			reason:      ReasonPrivilegedPort,
			detail:      "227 announces privileged port 22",
			reply:       "425 ftpsalg: cannot open data connection: privileged_port\r\n",
			replacement: "425 Entering Passive Mode (198,51,100,2,0,22).\r\n",
		},
		{
			name:        "227 port outside the passive range",
			cfg:         func(c *Config) { c.PassiveMin, c.PassiveMax = 50000, 50100 },
			setup:       []step{cl("PASV\r\n")},
			last:        sv(fmt.Sprintf(pasv227, "198,51,100,2,234,96")),
			reason:      ReasonOutsideRange,
			detail:      "227 announces port 60000, passive range is 50000-50100",
			reply:       "425 ftpsalg: cannot open data connection: port_outside_range\r\n",
			replacement: "425 Entering Passive Mode (198,51,100,2,234,96).\r\n",
		},
		{
			name:        "227 without PASV",
			last:        sv(fmt.Sprintf(pasv227, "198,51,100,2,195,80")),
			reason:      ReasonUnsolicited,
			detail:      "227 reply while no command awaits a reply",
			reply:       "425 ftpsalg: cannot open data connection: unsolicited_reply\r\n",
			replacement: "425 Entering Passive Mode (198,51,100,2,195,80).\r\n",
		},
		{
			name:        "227 in place of the greeting",
			noGreeting:  true,
			setup:       []step{cl("PASV\r\n")},
			last:        sv(fmt.Sprintf(pasv227, "198,51,100,2,195,80")),
			reason:      ReasonUnsolicited,
			detail:      "227 reply in place of the greeting",
			reply:       "425 ftpsalg: cannot open data connection: unsolicited_reply\r\n",
			replacement: "425 Entering Passive Mode (198,51,100,2,195,80).\r\n",
		},
		{
			name:        "228 in place of the greeting",
			noGreeting:  true,
			setup:       []step{cl("LPSV\r\n")},
			last:        sv("228 Entering Long Passive Mode (4,4,198,51,100,2,2,195,80)\r\n"),
			reason:      ReasonUnsolicited,
			detail:      "228 reply in place of the greeting",
			reply:       "425 ftpsalg: cannot open data connection: unsolicited_reply\r\n",
			replacement: "425 Entering Long Passive Mode (4,4,198,51,100,2,2,195,80)\r\n",
		},
		{
			name:        "229 in place of the greeting",
			noGreeting:  true,
			setup:       []step{cl("EPSV\r\n")},
			last:        sv("229 Entering Extended Passive Mode (|||50000|)\r\n"),
			reason:      ReasonUnsolicited,
			detail:      "229 reply in place of the greeting",
			reply:       "425 ftpsalg: cannot open data connection: unsolicited_reply\r\n",
			replacement: "425 Entering Extended Passive Mode (|||50000|)\r\n",
		},
		{
			name:        "227 answering another command",
			setup:       []step{cl("NOOP\r\n")},
			last:        sv(fmt.Sprintf(pasv227, "198,51,100,2,195,80")),
			reason:      ReasonUnsolicited,
			detail:      "227 reply answers NOOP",
			reply:       "425 ftpsalg: cannot open data connection: unsolicited_reply\r\n",
			replacement: "425 Entering Passive Mode (198,51,100,2,195,80).\r\n",
		},
		{
			name:        "229 answering PASV",
			setup:       []step{cl("PASV\r\n")},
			last:        sv("229 Entering Extended Passive Mode (|||50000|)\r\n"),
			reason:      ReasonUnsolicited,
			detail:      "229 reply answers PASV",
			reply:       "425 ftpsalg: cannot open data connection: unsolicited_reply\r\n",
			replacement: "425 Entering Extended Passive Mode (|||50000|)\r\n",
		},
		{
			name:        "227 on an IPv6 control connection",
			cfg:         func(c *Config) { c.Client, c.Server = client6AP, server6AP },
			setup:       []step{cl("PASV\r\n")},
			last:        sv(fmt.Sprintf(pasv227, "198,51,100,2,195,80")),
			reason:      ReasonFamilyMismatch,
			detail:      "227 announces 198.51.100.2, control peer is 2001:db8::2",
			reply:       "425 ftpsalg: cannot open data connection: family_mismatch\r\n",
			replacement: "425 Entering Passive Mode (198,51,100,2,195,80).\r\n",
		},
		{
			name:        "227 with octet 256",
			setup:       []step{cl("PASV\r\n")},
			last:        sv(fmt.Sprintf(pasv227, "198,51,100,256,195,80")),
			reason:      ReasonBadOctet,
			detail:      `failed to parse 227 reply "Entering Passive Mode (198,51,100,256,195,80).": field 4 "256" is above 255: octet out of range`,
			reply:       "425 ftpsalg: cannot open data connection: bad_octet\r\n",
			replacement: "425 Entering Passive Mode (198,51,100,256,195,80).\r\n",
		},
		{
			name:        "229 port 0",
			setup:       []step{cl("EPSV\r\n")},
			last:        sv("229 Entering Extended Passive Mode (|||0|)\r\n"),
			reason:      ReasonBadPort,
			detail:      `failed to parse 229 reply "Entering Extended Passive Mode (|||0|)": port "0" is not in 1..65535: port out of range`,
			reply:       "425 ftpsalg: cannot open data connection: bad_port\r\n",
			replacement: "425 Entering Extended Passive Mode (|||0|)\r\n",
		},
		{
			name:        "229 port 21",
			setup:       []step{cl("EPSV\r\n")},
			last:        sv("229 Entering Extended Passive Mode (|||21|)\r\n"),
			reason:      ReasonPrivilegedPort,
			detail:      "229 announces privileged port 21",
			reply:       "425 ftpsalg: cannot open data connection: privileged_port\r\n",
			replacement: "425 Entering Extended Passive Mode (|||21|)\r\n",
		},
		{
			name:        "228 third party",
			setup:       []step{cl("LPSV\r\n")},
			last:        sv("228 Entering Long Passive Mode (4,4,203,0,113,9,2,195,80)\r\n"),
			reason:      ReasonThirdParty,
			detail:      "228 announces 203.0.113.9, control peer is 198.51.100.2",
			reply:       "425 ftpsalg: cannot open data connection: third_party_address\r\n",
			replacement: "425 Entering Long Passive Mode (4,4,203,0,113,9,2,195,80)\r\n",
		},
		{
			name:        "PORT with octet 256",
			last:        cl("PORT 192,0,2,256,195,80\r\n"),
			reason:      ReasonBadOctet,
			detail:      `failed to parse host-port "192,0,2,256,195,80": field 4 "256" is above 255: octet out of range`,
			reply:       "501 ftpsalg: PORT refused: bad_octet\r\n",
			replacement: "XXXX 192,0,2,256,195,80\r\n",
		},
		{
			name:        "PORT to a third party (bounce)",
			last:        cl("PORT 203,0,113,9,0,25\r\n"),
			reason:      ReasonThirdParty,
			detail:      "PORT announces 203.0.113.9, control peer is 192.0.2.10",
			reply:       "534 ftpsalg: PORT refused: third_party_address\r\n",
			replacement: "XXXX 203,0,113,9,0,25\r\n",
		},
		{
			name:        "227 announces 0.0.0.0 even with third parties allowed",
			cfg:         func(c *Config) { c.AllowThirdParty = true },
			setup:       []step{cl("PASV\r\n")},
			last:        sv(fmt.Sprintf(pasv227, "0,0,0,0,195,80")),
			reason:      ReasonThirdParty,
			detail:      "227 announces 0.0.0.0, control peer is 198.51.100.2",
			reply:       "425 ftpsalg: cannot open data connection: third_party_address\r\n",
			replacement: "425 Entering Passive Mode (0,0,0,0,195,80).\r\n",
		},
		{
			name:        "PORT to loopback even with third parties allowed",
			cfg:         func(c *Config) { c.AllowThirdParty = true },
			last:        cl("PORT 127,0,0,1,195,80\r\n"),
			reason:      ReasonThirdParty,
			detail:      "PORT announces 127.0.0.1, control peer is 192.0.2.10",
			reply:       "534 ftpsalg: PORT refused: third_party_address\r\n",
			replacement: "XXXX 127,0,0,1,195,80\r\n",
		},
		{
			name:        "PORT to a privileged port",
			last:        cl("port 192,0,2,10,0,22\r\n"),
			reason:      ReasonPrivilegedPort,
			detail:      "PORT announces privileged port 22",
			reply:       "534 ftpsalg: PORT refused: privileged_port\r\n",
			replacement: "XXXX 192,0,2,10,0,22\r\n",
		},
		{
			name:        "PORT port 0",
			last:        cl("PORT 192,0,2,10,0,0\r\n"),
			reason:      ReasonBadPort,
			detail:      `failed to parse host-port "192,0,2,10,0,0": port 0: port out of range`,
			reply:       "501 ftpsalg: PORT refused: bad_port\r\n",
			replacement: "XXXX 192,0,2,10,0,0\r\n",
		},
		{
			name:        "PORT with trailing garbage",
			last:        cl("PORT 192,0,2,10,195,80,1\r\n"),
			reason:      ReasonMalformed,
			detail:      `failed to parse host-port "192,0,2,10,195,80,1": 7 fields instead of 6: malformed`,
			reply:       "501 ftpsalg: PORT refused: malformed\r\n",
			replacement: "XXXX 192,0,2,10,195,80,1\r\n",
		},
		{
			name:        "EPRT family 2 on an IPv4 control connection",
			last:        cl("EPRT |2|2001:db8::10|50000|\r\n"),
			reason:      ReasonFamilyMismatch,
			detail:      "EPRT announces 2001:db8::10, control peer is 192.0.2.10",
			reply:       "522 ftpsalg: EPRT refused: family_mismatch\r\n",
			replacement: "XXXX |2|2001:db8::10|50000|\r\n",
		},
		{
			name:        "EPRT family 1 naming an IPv6 address",
			last:        cl("EPRT |1|2001:db8::10|50000|\r\n"),
			reason:      ReasonFamilyMismatch,
			detail:      `failed to parse EPRT argument "|1|2001:db8::10|50000|": IPv6 address under family 1: address family mismatch`,
			reply:       "522 ftpsalg: EPRT refused: family_mismatch\r\n",
			replacement: "XXXX |1|2001:db8::10|50000|\r\n",
		},
		{
			name:        "EPSV ALL then PASV",
			setup:       []step{cl("EPSV ALL\r\n"), sv("200 EPSV ALL ok.\r\n")},
			last:        cl("PASV\r\n"),
			reason:      ReasonEPSVAll,
			detail:      "PASV after EPSV ALL",
			reply:       "534 ftpsalg: PASV refused: after_epsv_all\r\n",
			replacement: "XXXX\r\n",
		},
		{
			name:        "EPSV ALL then PORT",
			setup:       []step{cl("EPSV ALL\r\n"), sv("200 EPSV ALL ok.\r\n")},
			last:        cl("PORT 192,0,2,10,195,80\r\n"),
			reason:      ReasonEPSVAll,
			detail:      "PORT after EPSV ALL",
			reply:       "534 ftpsalg: PORT refused: after_epsv_all\r\n",
			replacement: "XXXX 192,0,2,10,195,80\r\n",
		},
		{
			name:        "active mode disabled",
			cfg:         func(c *Config) { c.AllowActive = false },
			last:        cl("PORT 192,0,2,10,195,80\r\n"),
			reason:      ReasonActiveDisabled,
			detail:      "active mode is disabled",
			reply:       "534 ftpsalg: PORT refused: active_disabled\r\n",
			replacement: "XXXX 192,0,2,10,195,80\r\n",
		},
		{
			name:   "over-long line",
			cfg:    func(c *Config) { c.MaxLine = 100 },
			last:   cl("SITE " + strings.Repeat("A", 200) + "\r\n"),
			reason: ReasonLineTooLong,
			detail: "command line longer than 100 bytes",
			reply:  "500 ftpsalg: SITE refused: line_too_long\r\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := baseConfig()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			sess := NewSession(cfg)
			setup := tt.setup
			if !tt.noGreeting {
				setup = append([]step{greet()}, setup...)
			}
			for _, st := range setup {
				sess.Feed(st.dir, []byte(st.data))
			}
			got := sess.Feed(tt.last.dir, []byte(tt.last.data))
			var refusals []Decision
			for _, d := range got {
				switch d.Action {
				case ActionOpenPinhole:
					t.Errorf("got %+v, want no pinhole", d)
				case ActionRefuse:
					refusals = append(refusals, d)
				}
			}
			if len(refusals) != 1 {
				t.Fatalf("got %d refusals in %+v, want 1", len(refusals), got)
			}
			r := refusals[0]
			type fields struct {
				Reason              Reason
				Detail, Reply, Repl string
			}
			want := fields{tt.reason, tt.detail, tt.reply, tt.replacement}
			gotF := fields{r.Reason, r.Detail, r.Reply, string(r.Replacement)}
			if diff := cmp.Diff(want, gotF); diff != "" {
				t.Errorf("refusal mismatch (-want +got):\n%s", diff)
			}
			if r.Replacement != nil && len(r.Replacement) != r.Line.Len {
				t.Errorf("replacement length %d, line length %d", len(r.Replacement), r.Line.Len)
			}
		})
	}
}

func TestSessionInvalidDirection(t *testing.T) {
	t.Parallel()
	defer func() {
		if recover() == nil {
			t.Error("Feed with an invalid direction did not panic")
		}
	}()
	NewSession(baseConfig()).Feed(Direction(2), []byte("x"))
}

func TestSessionNeverKeepsPassword(t *testing.T) {
	t.Parallel()
	sess := NewSession(baseConfig())
	var got []Decision
	for _, chunk := range []string{"PA", "SS hun", "ter2\r\nPASS hunter2\x00\r\n", "PASS hunter2"} {
		got = append(got, sess.Feed(FromClient, []byte(chunk))...)
	}
	var all []string
	for _, d := range got {
		all = append(all, fmt.Sprintf("%+v", d), d.Arg, d.Detail, d.Reply, string(d.Replacement))
	}
	if s := strings.Join(all, "\n"); strings.Contains(s, "hunter2") {
		t.Errorf("decisions mention the password: %s", s)
	}
	// The framer's buffer holds "PASS hunter2" until the line ends; after
	// the line is dropped it must not linger in memory.
	d := &sess.dirs[FromClient]
	if bytes.Contains(d.fr.buf[:cap(d.fr.buf)], []byte("hunter2")) != (d.fr.Buffered() > 0) {
		t.Errorf("framer buffer state unexpected: %q", d.fr.buf[:cap(d.fr.buf)])
	}
	d.fr.reset(d.fr.Offset())
	if bytes.Contains(d.fr.buf[:cap(d.fr.buf)], []byte("hunter2")) {
		t.Errorf("framer buffer keeps the password after reset: %q", d.fr.buf[:cap(d.fr.buf)])
	}
}
