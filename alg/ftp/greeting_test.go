package ftp

import (
	"strings"
	"testing"
)

// greet is the greeting most table tests start with.
func greet() step { return sv("220 ready\r\n", replyD("", 220, "ready")) }

// TestSessionGreeting: the server's first final reply answers the
// connection (RFC 959 §5.4), not the first command a client pipelined
// before it.
func TestSessionGreeting(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		cfg      func(*Config)
		implicit bool // StartImplicitTLS before the steps
		steps    []step
	}{
		{
			name: "commands pipelined before the greeting",
			steps: []step{
				cl("USER a\r\nPASV\r\n", Decision{Action: ActionCommand, Verb: "USER", Arg: "a", Line: LineRef{Start: 0, Len: 8}}, cmdD("PASV", "")),
				sv("220 hi\r\n", replyD("", 220, "hi")),
				sv("331 Password required.\r\n", replyD("USER", 331, "Password required.")),
				sv("227 Entering Passive Mode (198,51,100,2,195,80).\r\n", passiveD("PASV", 227, 50000), replyD("PASV", 227, "Entering Passive Mode (198,51,100,2,195,80).")),
			},
		},
		{
			name: "120 keeps waiting for the greeting",
			steps: []step{
				cl("PASV\r\n", cmdD("PASV", "")),
				sv("120 Service ready in 1 minute.\r\n", replyD("", 120, "Service ready in 1 minute.")),
				sv("220 Service ready.\r\n", replyD("", 220, "Service ready.")),
				sv("227 Entering Passive Mode (198,51,100,2,195,80).\r\n", passiveD("PASV", 227, 50000), replyD("PASV", 227, "Entering Passive Mode (198,51,100,2,195,80).")),
			},
		},
		{
			name: "multi-line greeting",
			steps: []step{
				cl("EPSV\r\n", cmdD("EPSV", "")),
				sv("220-Welcome\r\n220-(198,51,100,2,195,80)\r\n220 ready\r\n", replyD("", 220, "ready")),
				sv("229 Entering Extended Passive Mode (|||50000|)\r\n", passiveD("EPSV", 229, 50000), replyD("EPSV", 229, "Entering Extended Passive Mode (|||50000|)")),
			},
		},
		{
			name: "421 in place of the greeting ends the session",
			steps: []step{
				cl("QUIT\r\n", cmdD("QUIT", "")),
				sv("421 Too many connections.\r\n", replyD("", 421, "Too many connections."), Decision{Action: ActionSessionEnd, Code: 421}),
			},
		},
		{
			// vsftpd sends "500 OOPS: ..." instead of a greeting when it
			// cannot serve the connection: still the connection's answer.
			name: "5xx in place of the greeting answers no command",
			steps: []step{
				cl("USER a\r\n", cmdD("USER", "a")),
				sv("500 OOPS: child died\r\n", replyD("", 500, "OOPS: child died")),
			},
		},
		{
			name: "227 in place of the greeting is refused and PASV still pairs",
			steps: []step{
				cl("PASV\r\n", cmdD("PASV", "")),
				sv("227 Entering Passive Mode (198,51,100,2,195,80).\r\n",
					Decision{Action: ActionRefuse, Code: 227, Reason: ReasonUnsolicited,
						Reply:       "425 ftpsalg: cannot open data connection: unsolicited_reply\r\n",
						Replacement: []byte("425 Entering Passive Mode (198,51,100,2,195,80).\r\n")},
					replyD("", 227, "Entering Passive Mode (198,51,100,2,195,80).")),
				sv("227 Entering Passive Mode (198,51,100,2,195,81).\r\n", passiveD("PASV", 227, 50001), replyD("PASV", 227, "Entering Passive Mode (198,51,100,2,195,81).")),
			},
		},
		{
			name: "234 in place of the greeting starts no TLS",
			steps: []step{
				cl("AUTH TLS\r\n", cmdD("AUTH", "TLS")),
				sv("234 Proceed with negotiation.\r\n", replyD("", 234, "Proceed with negotiation.")),
				sv("234 Proceed with negotiation.\r\n", replyD("AUTH", 234, "Proceed with negotiation."), tlsStartedD()),
			},
		},
		{
			name: "a refused line before the greeting still pairs with its 500",
			steps: []step{
				cl("PORT 203,0,113,9,0,25\r\n", cmdD("PORT", "203,0,113,9,0,25"),
					refuseCmdD("PORT", 534, ReasonThirdParty, "XXXX 203,0,113,9,0,25\r\n")),
				cl("PASV\r\n", cmdD("PASV", "")),
				greet(),
				sv("500 Unknown command.\r\n", replyD("PORT", 500, "Unknown command.")),
				sv("227 Entering Passive Mode (198,51,100,2,195,80).\r\n", passiveD("PASV", 227, 50000), replyD("PASV", 227, "Entering Passive Mode (198,51,100,2,195,80).")),
			},
		},
		{
			name: "too-long greeting is refused and consumed",
			cfg:  func(c *Config) { c.MaxLine = 64 },
			steps: []step{
				cl("NOOP\r\n", cmdD("NOOP", "")),
				sv("220 "+strings.Repeat("x", 70)+"\r\n",
					Decision{Action: ActionRefuse, Code: 220, Reason: ReasonLineTooLong, Line: LineRef{Len: 64},
						Reply: "425 ftpsalg: cannot open data connection: line_too_long\r\n"},
					Decision{Action: ActionReply, Code: 220, Text: strings.Repeat("x", 60), Line: LineRef{Len: 64}}),
				sv("200 NOOP ok.\r\n", replyD("NOOP", 200, "NOOP ok.")),
			},
		},
		{
			name: "REIN's 220 answers REIN",
			steps: []step{
				greet(),
				cl("REIN\r\nPASV\r\n", Decision{Action: ActionCommand, Verb: "REIN", Line: LineRef{Len: 6}}, cmdD("PASV", "")),
				sv("220 Ready for new user.\r\n", replyD("REIN", 220, "Ready for new user.")),
				sv("227 Entering Passive Mode (198,51,100,2,195,80).\r\n", passiveD("PASV", 227, 50000), replyD("PASV", 227, "Entering Passive Mode (198,51,100,2,195,80).")),
			},
		},
		{
			name: "midstream: no greeting, the first reply answers the first command",
			cfg:  func(c *Config) { c.Midstream = true },
			steps: []step{
				cl("PASV\r\n", cmdD("PASV", "")),
				sv("227 Entering Passive Mode (198,51,100,2,195,80).\r\n", passiveD("PASV", 227, 50000), replyD("PASV", 227, "Entering Passive Mode (198,51,100,2,195,80).")),
			},
		},
		{
			name:     "implicit TLS, transport decrypts: the greeting is fed as plaintext",
			cfg:      func(c *Config) { c.TransportDecrypts = true },
			implicit: true,
			steps: []step{
				cl("PASV\r\n", cmdD("PASV", "")),
				sv("220 ready\r\n", replyD("", 220, "ready")),
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
			sess := NewSession(cfg)
			if tt.implicit {
				sess.StartImplicitTLS()
			}
			runSteps(t, sess, tt.steps, ignoreDetail)
		})
	}
}
