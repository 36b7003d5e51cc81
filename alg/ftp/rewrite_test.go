package ftp

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var (
	to4 = netip.MustParseAddrPort("203.0.113.5:60000")
	to6 = netip.MustParseAddrPort("[2001:db8:5::1]:60000")
)

// reparse feeds the line of rw, a rewrite, to a fresh session in the state
// its announcement was made in — the greeting seen, for a reply its
// passive command pending, the new address as the control peer — and
// returns the endpoint that session reads from it.
func reparse(rw Decision) (netip.AddrPort, error) {
	to := rw.Endpoint
	cfg := Config{Client: clientAP, Server: serverAP, AllowActive: true, Midstream: true}
	if to.Addr().Is6() {
		cfg.Client, cfg.Server = client6AP, server6AP
	}
	var got []Decision
	if rw.Dir == FromClient {
		cfg.Client = netip.AddrPortFrom(to.Addr(), cfg.Client.Port())
		got = NewSession(cfg).Feed(FromClient, rw.Replacement)
	} else {
		cfg.Server = netip.AddrPortFrom(to.Addr(), cfg.Server.Port())
		sess := NewSession(cfg)
		sess.Feed(FromClient, []byte(rw.Verb+"\r\n"))
		got = sess.Feed(FromServer, rw.Replacement)
	}
	for _, d := range got {
		switch {
		case d.Line.Len != len(rw.Replacement):
			return netip.AddrPort{}, fmt.Errorf("%q is not one whole line: %+v", rw.Replacement, d)
		case d.Action == ActionRefuse:
			return netip.AddrPort{}, fmt.Errorf("%q refused: %s: %s", rw.Replacement, d.Reason, d.Detail)
		case d.Endpoint.IsValid() && d.EndpointOnLine:
			return d.Endpoint, nil
		}
	}
	return netip.AddrPort{}, fmt.Errorf("%q announces nothing: %+v", rw.Replacement, got)
}

func TestRewriteAnnouncement(t *testing.T) {
	t.Parallel()
	v6 := func(c *Config) { c.Client, c.Server = client6AP, server6AP }
	tests := []struct {
		name    string
		cfg     func(*Config)
		steps   []step // after greet(); the decision is the last one of pick
		pick    Action
		to      netip.AddrPort
		want    string // the new line
		wantErr error
	}{
		{name: "PORT", steps: []step{cl("PORT 192,0,2,10,195,80\r\n")}, pick: ActionCommand,
			to: to4, want: "PORT 203,0,113,5,234,96\r\n"},
		{name: "lower-case port is written upper-case", steps: []step{cl("port 192,0,2,10,195,80\r\n")}, pick: ActionCommand,
			to: to4, want: "PORT 203,0,113,5,234,96\r\n"},
		{name: "PORT cannot carry IPv6", steps: []step{cl("PORT 192,0,2,10,195,80\r\n")}, pick: ActionCommand,
			to: to6, wantErr: ErrFamily},
		{name: "EPRT family 1", steps: []step{cl("EPRT |1|192.0.2.10|50000|\r\n")}, pick: ActionCommand,
			to: to4, want: "EPRT |1|203.0.113.5|60000|\r\n"},
		{name: "EPRT family follows the new address", steps: []step{cl("EPRT !1!192.0.2.10!50000!\r\n")}, pick: ActionCommand,
			to: to6, want: "EPRT |2|2001:db8:5::1|60000|\r\n"},
		{name: "EPRT family 2", cfg: v6, steps: []step{cl("EPRT |2|2001:db8::10|50000|\r\n")}, pick: ActionCommand,
			to: to6, want: "EPRT |2|2001:db8:5::1|60000|\r\n"},
		{name: "LPRT to IPv4", steps: []step{cl("LPRT 4,4,192,0,2,10,2,195,80\r\n")}, pick: ActionCommand,
			to: to4, want: "LPRT 4,4,203,0,113,5,2,234,96\r\n"},
		{name: "LPRT to IPv6", steps: []step{cl("LPRT 4,4,192,0,2,10,2,195,80\r\n")}, pick: ActionCommand,
			to: to6, want: "LPRT 6,16,32,1,13,184,0,5,0,0,0,0,0,0,0,0,0,1,2,234,96\r\n"},
		{name: "IPv4-mapped address is unmapped", steps: []step{cl("PORT 192,0,2,10,195,80\r\n")}, pick: ActionCommand,
			to: netip.MustParseAddrPort("[::ffff:203.0.113.5]:60000"), want: "PORT 203,0,113,5,234,96\r\n"},
		{name: "227", steps: []step{cl("PASV\r\n"), sv("227 Entering Passive Mode (198,51,100,2,195,80).\r\n")}, pick: ActionOpenPinhole,
			to: to4, want: "227 Entering Passive Mode (203,0,113,5,234,96).\r\n"},
		{name: "227 cannot carry IPv6", steps: []step{cl("PASV\r\n"), sv("227 Entering Passive Mode (198,51,100,2,195,80).\r\n")}, pick: ActionOpenPinhole,
			to: to6, wantErr: ErrFamily},
		{name: "228 to IPv6", cfg: v6, steps: []step{cl("LPSV\r\n"), sv("228 Entering Long Passive Mode (6,16,32,1,13,184,0,0,0,0,0,0,0,0,0,0,0,2,2,195,80)\r\n")},
			pick: ActionOpenPinhole, to: to6, want: "228 Entering Long Passive Mode (6,16,32,1,13,184,0,5,0,0,0,0,0,0,0,0,0,1,2,234,96)\r\n"},
		{name: "228 to IPv4", steps: []step{cl("LPSV\r\n"), sv("228 Entering Long Passive Mode (4,4,198,51,100,2,2,195,80)\r\n")},
			pick: ActionOpenPinhole, to: to4, want: "228 Entering Long Passive Mode (4,4,203,0,113,5,2,234,96)\r\n"},
		{name: "229", steps: []step{cl("EPSV\r\n"), sv("229 Extended Passive mode OK (|||50000|)\r\n")}, pick: ActionOpenPinhole,
			to: to4, want: "229 Entering Extended Passive Mode (|||60000|)\r\n"},
		{name: "229 on IPv6", cfg: v6, steps: []step{cl("EPSV\r\n"), sv("229 Entering Extended Passive Mode (|||50000|)\r\n")}, pick: ActionOpenPinhole,
			to: to6, want: "229 Entering Extended Passive Mode (|||60000|)\r\n"},
		{
			name:  "multi-line 227 with the address on its final line: the final line is replaced",
			steps: []step{cl("PASV\r\n"), sv("227-Passive mode.\r\n227-Connect within 10 s.\r\n227 Entering Passive Mode (198,51,100,2,195,80)\r\n")},
			pick:  ActionOpenPinhole, to: to4, want: "227 Entering Passive Mode (203,0,113,5,234,96).\r\n",
		},
		{
			// The address line has gone to the client by the time the
			// final line is decided: replacing the final line would leave
			// the old address in the reply.
			name:  "multi-line 227 with the address on its first line is not rewritable",
			steps: []step{cl("PASV\r\n"), sv("227-Entering Passive Mode (198,51,100,2,195,80)\r\n227 OK\r\n")},
			pick:  ActionOpenPinhole, to: to4, wantErr: ErrNotRewritable,
		},
		{name: "the 200 to PORT carries no address", steps: []step{cl("PORT 192,0,2,10,195,80\r\n"), sv("200 PORT command successful.\r\n")},
			pick: ActionOpenPinhole, to: to4, wantErr: ErrNotRewritable},
		{name: "a refused PORT announces nothing", steps: []step{cl("PORT 203,0,113,9,0,25\r\n")}, pick: ActionCommand,
			to: to4, wantErr: ErrNotRewritable},
		{name: "a reply announces nothing", steps: []step{cl("PASV\r\n"), sv("227 Entering Passive Mode (198,51,100,2,195,80).\r\n")}, pick: ActionReply,
			to: to4, wantErr: ErrNotRewritable},
		{name: "another command announces nothing", steps: []step{cl("NOOP\r\n")}, pick: ActionCommand,
			to: to4, wantErr: ErrNotRewritable},
		{name: "port 0", steps: []step{cl("PORT 192,0,2,10,195,80\r\n")}, pick: ActionCommand,
			to: netip.AddrPortFrom(to4.Addr(), 0), wantErr: ErrBadPort},
		{name: "zoned address", steps: []step{cl("EPRT |1|192.0.2.10|50000|\r\n")}, pick: ActionCommand,
			to: netip.MustParseAddrPort("[fe80::1%eth0]:60000"), wantErr: ErrMalformed},
		{name: "invalid address", steps: []step{cl("EPRT |1|192.0.2.10|50000|\r\n")}, pick: ActionCommand,
			to: netip.AddrPort{}, wantErr: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := baseConfig()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			sess := NewSession(cfg)
			sess.Feed(FromServer, []byte("220 ready\r\n"))
			var d Decision
			var last LineRef
			for _, st := range tt.steps {
				last = lastLine(st.data, sess.Offset(st.dir))
				for _, got := range sess.Feed(st.dir, []byte(st.data)) {
					if got.Action == tt.pick {
						d = got
					}
				}
			}
			if d.Action == 0 {
				t.Fatalf("no decision with action %d", tt.pick)
			}
			got, err := RewriteAnnouncement(d, tt.to)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("RewriteAnnouncement(%+v, %s) = %+v, %v; want error %v", d, tt.to, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("RewriteAnnouncement(%+v, %s): %v", d, tt.to, err)
			}
			want := Decision{Action: ActionRewrite, Dir: d.Dir, Line: last, Verb: d.Verb, Code: d.Code,
				Endpoint: netip.AddrPortFrom(tt.to.Addr().Unmap(), tt.to.Port()), EndpointOnLine: true, Replacement: []byte(tt.want)}
			if diff := cmp.Diff(want, got, equateAddr); diff != "" {
				t.Errorf("rewrite mismatch (-want +got):\n%s", diff)
			}
			if back, err := reparse(got); err != nil || back != want.Endpoint {
				t.Errorf("the new line reads back as %s, %v; want %s", back, err, want.Endpoint)
			}
		})
	}
}
