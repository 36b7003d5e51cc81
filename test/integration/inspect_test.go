package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/status"
	"github.com/ftpsalg/ftpsalg/test/ftpc"
	"github.com/ftpsalg/ftpsalg/test/harness"
	"github.com/ftpsalg/ftpsalg/test/lab"
	"github.com/ftpsalg/ftpsalg/test/labftpd"
)

// TestInspectTransfers: under a default-drop forward policy, passive and
// active transfers work over IPv4 and IPv6 with curl and lftp against
// vsftpd, through exactly one single-use pinhole each.
func TestInspectTransfers(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	l := lab.New(t, lab.Options{})
	l.InstallGatewayFirewall(ctMark)
	v := l.StartVsftpd(lab.VsftpdOptions{})
	d := startDaemon(t, l, policyFor([]int{21}, "", ""))
	const size = 1 << 20
	if _, err := v.CreateFile("down.bin", size); err != nil {
		t.Fatal(err)
	}
	want, err := v.SHA256("down.bin")
	if err != nil {
		t.Fatal(err)
	}
	up, upSum, err := l.ClientFile("up.bin", size)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fam := range []netip.Addr{lab.ServerAddr4, lab.ServerAddr6} {
		for _, mode := range lab.Modes {
			if fam.Is6() && mode.IPv4Only() {
				continue
			}
			for _, tool := range []string{"curl", "lftp"} {
				if tool == "lftp" && mode == lab.EPRT && fam.Is4() {
					continue // lftp 4.9 sends EPRT only over IPv6; curl covers EPRT over IPv4
				}
				name := fmt.Sprintf("%s/%s/%s", map[bool]string{true: "v6", false: "v4"}[fam.Is6()], mode, tool)
				t.Run(name, func(t *testing.T) {
					ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
					defer cancel()
					down, upload := l.DownloadCurl, l.UploadCurl
					if tool == "lftp" {
						down, upload = l.DownloadLftp, l.UploadLftp
					}
					tr, err := down(ctx, v.URL(fam, "down.bin"), mode)
					if err != nil {
						t.Fatalf("download: %v\n%s", err, d.Proc.Log())
					}
					if tr.SHA256 != want {
						t.Fatalf("download sha256 %s, want %s", tr.SHA256, want)
					}
					remote := fmt.Sprintf("up-%s.bin", strings.ReplaceAll(name, "/", "-"))
					if _, err := upload(ctx, v.URL(fam, remote), up, mode); err != nil {
						t.Fatalf("upload: %v", err)
					}
					got, err := v.SHA256(remote)
					if err != nil || got != upSum {
						t.Fatalf("uploaded sha256 %s (%v), want %s", got, err, upSum)
					}
				})
				n += 2
			}
		}
	}
	// Every transfer went through a pinhole that was used once; none is
	// left open and nothing was refused.
	m := d.Metrics()
	opened := m[`ftpsalg_pinholes_opened_total{data_mode="passive"}`] + m[`ftpsalg_pinholes_opened_total{data_mode="active"}`]
	if opened < float64(n) {
		t.Fatalf("pinholes opened %v, want at least %d (one per transfer)", opened, n)
	}
	d.WaitMetric("ftpsalg_pinholes_used_total", opened)
	if els := d.PinholeElements(); els != "" {
		t.Fatalf("pinholes left open:\n%s", els)
	}
	for k, v := range m {
		if strings.HasPrefix(k, "ftpsalg_policy_refusals_total") && v != 0 {
			t.Errorf("%s = %v, want 0", k, v)
		}
	}
	d.Stop()
	if out, err := l.Nft(lab.Gateway, "list", "tables"); err != nil || strings.Contains(out, "ftpsalg") {
		t.Fatalf("table not removed at clean exit: %q %v", out, err)
	}
}

// hostileCase is a server or client that announces something it must not.
type hostileCase struct {
	name   string
	reason string // refusal reason expected in metrics
	server labftpd.Config
	// run drives the client side and must fail to move data.
	run func(t *testing.T, c *ftpc.Client)
}

// TestInspectRefusesHostileAnnouncements: each hostile announcement is
// refused and counted, opens no pinhole, and moves no data.
func TestInspectRefusesHostileAnnouncements(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	l := lab.New(t, lab.Options{Other: true})
	l.InstallGatewayFirewall(ctMark)
	v := l.StartVsftpd(lab.VsftpdOptions{})
	files := map[string][]byte{"f.txt": []byte("hello\n")}
	// The third party listens on the port the hostile server names.
	sink := l.StartSink(lab.Other, netip.AddrPortFrom(lab.OtherAddr4, 50010))

	passiveFails := func(t *testing.T, c *ftpc.Client) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rep, err := c.Cmd("PASV")
		if err != nil {
			t.Fatal(err)
		}
		if rep.Code != 425 {
			t.Fatalf("client got %s, want the neutralised 425", rep)
		}
		_ = ctx
	}
	cases := []hostileCase{
		{name: "third-party address", reason: "third_party_address",
			server: labftpd.Config{Files: files, PassiveMin: 50010, PassiveMax: 50010, AnnounceAddr: lab.OtherAddr4},
			run:    passiveFails},
		{name: "port 22", reason: "privileged_port",
			server: labftpd.Config{Files: files, PassiveMin: 50011, PassiveMax: 50011, AnnouncePort: func(uint16) uint16 { return 22 }},
			run:    passiveFails},
		{name: "port outside range", reason: "port_outside_range",
			server: labftpd.Config{Files: files, PassiveMin: 50012, PassiveMax: 50012, AnnouncePort: func(uint16) uint16 { return 60000 }},
			run:    passiveFails},
		{name: "227 without PASV", reason: "unsolicited_reply",
			server: labftpd.Config{Files: files, Script: func(verb, _ string) labftpd.Action {
				if verb == "NOOP" {
					return labftpd.Action{Replace: true, Before: "227 Entering Passive Mode (198,51,100,2,195,90).\r\n"}
				}
				return labftpd.Action{}
			}},
			run: func(t *testing.T, c *ftpc.Client) {
				rep, err := c.Cmd("NOOP")
				if err != nil {
					t.Fatal(err)
				}
				if rep.Code != 425 {
					t.Fatalf("client got %s, want the neutralised 425", rep)
				}
			}},
	}
	base := 2121
	ports := []int{21}
	for i := range cases {
		ports = append(ports, base+i)
	}
	for i, tc := range cases {
		l.StartLabftpd(lab.Server, uint16(base+i), tc.server)
	}
	// The operator lets the extra control ports through, as it does 21.
	if _, err := l.Nft(lab.Gateway, "add", "rule", "inet", lab.FirewallTable, "forward", "ip", "daddr",
		lab.ServerAddr4.String(), "tcp", "dport", fmt.Sprintf("%d-%d", base, base+len(cases)-1), "accept"); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, l, policyFor(ports, "", ""))

	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := d.Metrics()
			c := goClient(t, l, netip.AddrPortFrom(lab.ServerAddr4, uint16(base+i)), "any", "any")
			tc.run(t, c)
			key := fmt.Sprintf(`ftpsalg_policy_refusals_total{reason=%q}`, tc.reason)
			d.WaitMetric(key, before[key]+1)
			after := d.Metrics()
			if after[`ftpsalg_pinholes_opened_total{data_mode="passive"}`] != before[`ftpsalg_pinholes_opened_total{data_mode="passive"}`] {
				t.Fatal("a pinhole was opened")
			}
			if els := d.PinholeElements(); els != "" {
				t.Fatalf("pinholes present:\n%s", els)
			}
		})
	}
	if sink.Conns() != 0 {
		t.Fatalf("the third party received %d connections", sink.Conns())
	}

	// Client-side hostility against the real vsftpd.
	t.Run("PORT octet 256", func(t *testing.T) {
		before := d.Metrics()
		c := goClient(t, l, netip.AddrPortFrom(lab.ServerAddr4, 21), v.User, v.Password)
		rep, err := c.Cmd("PORT 192,0,2,256,195,81")
		if err != nil {
			t.Fatal(err)
		}
		if rep.Code/100 == 2 {
			t.Fatalf("server accepted the neutralised PORT: %s", rep)
		}
		key := `ftpsalg_policy_refusals_total{reason="bad_octet"}`
		d.WaitMetric(key, before[key]+1)
		if els := d.PinholeElements(); els != "" {
			t.Fatalf("pinholes present:\n%s", els)
		}
	})
	t.Run("PORT to a third party", func(t *testing.T) {
		before := d.Metrics()
		c := goClient(t, l, netip.AddrPortFrom(lab.ServerAddr4, 21), v.User, v.Password)
		rep, err := c.Cmd("PORT 203,0,113,2,195,90")
		if err != nil {
			t.Fatal(err)
		}
		if rep.Code/100 == 2 {
			t.Fatalf("server accepted the neutralised PORT: %s", rep)
		}
		key := `ftpsalg_policy_refusals_total{reason="third_party_address"}`
		d.WaitMetric(key, before[key]+1)
	})
	t.Run("PORT starting mid-line", func(t *testing.T) {
		before := d.Metrics()
		c := goClient(t, l, netip.AddrPortFrom(lab.ServerAddr4, 21), v.User, v.Password)
		// Two writes, two segments: the second starts with "PORT" but
		// the line started with "NOOP".
		if err := c.Raw([]byte("NOOP " + strings.Repeat("x", 40) + " ")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // keep the writes in separate segments (not synchronisation)
		if err := c.Raw([]byte("PORT 192,0,2,2,195,81\r\n")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(); err != nil {
			t.Fatal(err)
		}
		rep, err := c.Cmd("NOOP")
		if err != nil || rep.Code != 200 {
			t.Fatalf("control connection broken: %v %v", rep, err)
		}
		after := d.Metrics()
		if after[`ftpsalg_control_commands_total{verb="PORT"}`] != before[`ftpsalg_control_commands_total{verb="PORT"}`] {
			t.Fatal("a PORT command was recognised in the middle of a line")
		}
		if after[`ftpsalg_pinholes_opened_total{data_mode="active"}`] != before[`ftpsalg_pinholes_opened_total{data_mode="active"}`] {
			t.Fatal("an active pinhole was opened")
		}
	})
	d.Stop()
}

// TestPinholeExpiresUnused: an announced port that nobody connects to
// closes by itself, and a late connection is refused by the firewall.
func TestPinholeExpiresUnused(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	l := lab.New(t, lab.Options{})
	l.InstallGatewayFirewall(ctMark)
	v := l.StartVsftpd(lab.VsftpdOptions{})
	d := startDaemon(t, l, policyFor([]int{21}, "", "pinholes:\n  timeout: 1s\n"))
	c := goClient(t, l, netip.AddrPortFrom(lab.ServerAddr4, 21), v.User, v.Password)
	rep, err := c.Cmd("EPSV")
	if err != nil || rep.Code != 229 {
		t.Fatalf("EPSV: %v %v", rep, err)
	}
	port, err := ftpc.ParseEPSV(rep.Text)
	if err != nil {
		t.Fatal(err)
	}
	if els := d.PinholeElements(); !strings.Contains(els, fmt.Sprint(port)) {
		t.Fatalf("pinhole for port %d not in the kernel set:\n%s", port, els)
	}
	d.WaitMetric("ftpsalg_pinholes_expired_total", 1)
	if els := d.PinholeElements(); els != "" {
		t.Fatalf("pinhole still present after expiry:\n%s", els)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if conn, err := l.Dial(ctx, lab.Client, "tcp4", netip.AddrPort{}, netip.AddrPortFrom(lab.ServerAddr4, port)); err == nil {
		conn.Close()
		t.Fatal("data connection through an expired pinhole succeeded")
	}
	d.Stop()
}

// TestKilledDaemonLeavesNothingOpen: SIGKILL mid-session leaves the table
// behind, but its pinholes expire in the kernel; control traffic is held
// (fail closed); a restart rebuilds the table and service resumes.
func TestKilledDaemonLeavesNothingOpen(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	l := lab.New(t, lab.Options{})
	l.InstallGatewayFirewall(ctMark)
	v := l.StartVsftpd(lab.VsftpdOptions{})
	if _, err := v.CreateFile("f.bin", 64<<10); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, l, policyFor([]int{21}, "", "pinholes:\n  timeout: 2s\n"))
	c := goClient(t, l, netip.AddrPortFrom(lab.ServerAddr4, 21), v.User, v.Password)
	if rep, err := c.Cmd("PASV"); err != nil || rep.Code != 227 {
		t.Fatalf("PASV: %v %v", rep, err)
	}
	if d.PinholeElements() == "" {
		t.Fatal("no pinhole after PASV")
	}
	if err := d.Proc.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = d.Proc.Wait(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for d.PinholeElements() != "" {
		if time.Now().After(deadline) {
			t.Fatal("pinhole did not expire in the kernel after SIGKILL")
		}
		time.Sleep(100 * time.Millisecond) // polling interval
	}
	// Fail closed: with nobody reading the queue, control packets drop.
	cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer ccancel()
	nd := harness.NSDialer{L: l, NS: lab.Client}
	if c2, err := ftpc.Dial(cctx, nd, nd, netip.AddrPortFrom(lab.ServerAddr4, 21).String()); err == nil {
		c2.Close()
		t.Fatal("control connection succeeded while the daemon was dead (want fail closed)")
	}
	d.Restart()
	if els := d.PinholeElements(); els != "" {
		t.Fatalf("restart kept stale pinholes:\n%s", els)
	}
	tctx, tcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer tcancel()
	if _, err := l.DownloadCurl(tctx, v.URL(lab.ServerAddr4, "f.bin"), lab.PASV); err != nil {
		t.Fatalf("transfer after restart: %v\n%s", err, d.Proc.Log())
	}
	d.Stop()
}

// TestReloadAndStatus: SIGHUP applies a new policy without dropping the
// table (a client prefix removed is refused from then on); an invalid
// policy is refused and the running one kept, and the reload metrics say
// so; `ftpsalg status` shows a live session and the pinhole its PASV
// opened, as a table and as JSON.
func TestReloadAndStatus(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	l := lab.New(t, lab.Options{})
	l.InstallGatewayFirewall(ctMark)
	v := l.StartVsftpd(lab.VsftpdOptions{})
	// A long pinhole timeout: the pinhole must still be pending when
	// status runs, however loaded the machine.
	d := startDaemon(t, l, policyFor([]int{21}, "", "pinholes: {timeout: 120s}"))
	c := goClient(t, l, netip.AddrPortFrom(lab.ServerAddr4, 21), v.User, v.Password)
	rep, err := c.Cmd("PASV")
	if err != nil || rep.Code != 227 {
		t.Fatalf("PASV: %v %v", rep, err)
	}
	pasv, err := ftpc.ParsePASV(rep.Text)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := l.Run(ctx, lab.Gateway, binary, "status", "--config", d.Config)
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	client := c.Conn().LocalAddr().String()
	// Rows by their first fields: the session (client, server, name, mode,
	// user, age, pinholes) and the pinhole (from, to, data mode, client).
	rows := map[string][]string{}
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) > 0 {
			rows[f[0]] = f
		}
	}
	if s := rows[client]; len(s) != 7 || s[1] != netip.AddrPortFrom(lab.ServerAddr4, 21).String() || s[2] != "lab" || s[3] != "inspect" || s[6] != "1" {
		t.Errorf("status: session row %q:\n%s", s, out)
	}
	if p := rows[lab.ClientAddr4.String()]; len(p) != 5 || p[1] != pasv.String() || p[2] != "passive" || p[3] != client {
		t.Errorf("status: pinhole row %q:\n%s", p, out)
	}
	if !strings.Contains(string(out), "SESSIONS (1)\n") || !strings.Contains(string(out), "PENDING PINHOLES (1)\n") {
		t.Errorf("status:\n%s", out)
	}
	out, err = l.Run(ctx, lab.Gateway, binary, "status", "--json", "--socket", harness.AdminSocket(l))
	if err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	var snap status.Snapshot
	if err := json.Unmarshal(out, &snap); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if len(snap.Sessions) != 1 || snap.Sessions[0].Client.String() != client || snap.Sessions[0].ServerName != "lab" ||
		snap.Sessions[0].Mode != "inspect" || snap.Sessions[0].Pinholes != 1 {
		t.Errorf("status --json sessions: %+v", snap.Sessions)
	}
	if len(snap.Pinholes) != 1 || snap.Pinholes[0].Dst != pasv || snap.Pinholes[0].Src != lab.ClientAddr4 ||
		snap.Pinholes[0].DataMode != "passive" || snap.Pinholes[0].Expires.Sub(snap.Time) <= 0 {
		t.Errorf("status --json pinholes: %+v", snap.Pinholes)
	}
	d.WaitMetric("ftpsalg_config_last_reload_successful", 1)

	// An invalid policy is refused; the daemon keeps running.
	if err := os.WriteFile(d.Config, []byte("servers: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, d, "reload refused")
	d.WaitMetric("ftpsalg_config_last_reload_successful", 0)

	// Only IPv6 clients from now on.
	pol := strings.Replace(policyFor([]int{21}, "", ""), `clients: ["192.0.2.0/24", "2001:db8:c::/64"]`, `clients: ["2001:db8:c::/64"]`, 1)
	if err := os.WriteFile(d.Config, []byte(pol), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, d, "policy reloaded")
	d.WaitMetric("ftpsalg_config_last_reload_successful", 1)
	dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer dcancel()
	nd := harness.NSDialer{L: l, NS: lab.Client}
	if c, err := ftpc.Dial(dctx, nd, nd, netip.AddrPortFrom(lab.ServerAddr4, 21).String()); err == nil {
		c.Close()
		t.Fatal("IPv4 client accepted after its prefix was removed")
	}
	// Counted per SYN (the client retransmits), so at least once.
	if got := d.Metrics()[`ftpsalg_policy_refusals_total{reason="client_not_allowed"}`]; got < 1 {
		t.Fatalf("client_not_allowed refusals = %v, want >= 1", got)
	}
	goClient(t, l, netip.AddrPortFrom(lab.ServerAddr6, 21), v.User, v.Password)
	d.Stop()
}

func waitLog(t *testing.T, d *harness.Daemon, msg string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(d.Proc.Log(), `"msg":"`+msg) {
		if time.Now().After(deadline) {
			t.Fatalf("ftpsalg never logged %q:\n%s", msg, d.Proc.Log())
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
}
