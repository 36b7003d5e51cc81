package integration

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ftpsalg/ftpsalg/test/ftpc"
	"github.com/ftpsalg/ftpsalg/test/harness"
	"github.com/ftpsalg/ftpsalg/test/lab"
)

// The gateway layer (alg/gateway) seen from outside: the pinhole ledger
// restores every live session's kernel entries after any rebuild of the
// table, admission bounds both transports, the reconcile task puts a lost
// table back at once, and both modes write the same audit lines.

// longPinholes is a top-level policy block (column 0, so it can also be
// appended to a server's keys) that keeps announced pinholes open long
// enough for a reload or a rebuild under the race detector: the test is
// about what a rebuild does to an entry, not about its timeout.
const longPinholes = "pinholes:\n  timeout: 30s\n"

// rebuildLab is a logged-in control session through ftpsalg and what its
// data connections need.
type rebuildLab struct {
	l *lab.Lab
	v *lab.Vsftpd
	d *harness.Daemon
	c *ftpc.Client
	// data is the TLS configuration of PROT P data connections (it shares
	// the control connection's session cache, so a data connection to
	// ftpsalg resumes its session); nil for plain FTP.
	data *tls.Config
	// resumes says the data connection must resume the control session
	// (the relay terminates it; passthrough reaches the server).
	resumes bool
	verb    string // PASV or EPSV
}

// TestRebuildKeepsAnnouncedDataConnection: for each kind of session
// (inspect, mitm passthrough, mitm relay, a published server translated by
// the stream path), a SIGHUP reload and a `nft delete table inet ftpsalg`
// by another process, each between the server's announcement and the
// client's data connection, leave that data connection working: the
// ledger commits the pinhole (relay element, translation) again into the
// rebuilt table. Before the gateway layer, a reload lost the entries of
// mitm sessions and a deleted table lost every kind but inspect's; the
// firewall drops the data connection then (or, published, nothing
// translates it), so the transfer fails.
func TestRebuildKeepsAnnouncedDataConnection(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	mitmClient := func(t *testing.T, ml *mitmLab) (*ftpc.Client, *tls.Config) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var conf *tls.Config
		cache := tls.NewLRUClientSessionCache(8)
		c := ml.goTLSClientWith(t, ctx, lab.ServerAddr4, false, func(c *tls.Config) {
			c.ClientSessionCache = cache // shared with the data connections' config
			conf = c
		})
		return c, conf
	}
	kinds := []struct {
		name  string
		start func(t *testing.T) *rebuildLab
	}{
		{"inspect", func(t *testing.T) *rebuildLab {
			l := lab.New(t, lab.Options{})
			l.InstallGatewayFirewall(ctMark)
			v := l.StartVsftpd(lab.VsftpdOptions{})
			d := startDaemon(t, l, policyFor([]int{21}, "", longPinholes))
			c := goClient(t, l, netip.AddrPortFrom(lab.ServerAddr4, 21), v.User, v.Password)
			return &rebuildLab{l: l, v: v, d: d, c: c, verb: "PASV"}
		}},
		{"mitm passthrough", func(t *testing.T) *rebuildLab {
			ml := newMITMLab(t, mitmOpts{server: longPinholes})
			c, conf := mitmClient(t, ml)
			return &rebuildLab{l: ml.l, v: ml.v, d: ml.d, c: c, data: conf, verb: "EPSV"}
		}},
		{"mitm relay", func(t *testing.T) *rebuildLab {
			// vsftpd requires session reuse: only the relay, which
			// resumes upstream, gets the data through.
			ml := newRelayLab(t, relayPolicy+longPinholes, lab.VsftpdOptions{})
			c, conf := mitmClient(t, ml)
			return &rebuildLab{l: ml.l, v: ml.v, d: ml.d, c: c, data: conf, resumes: true, verb: "EPSV"}
		}},
		{"published", func(t *testing.T) *rebuildLab {
			// The client reaches the server only through its public
			// address: without the translation the data connection ends
			// at the gateway itself.
			l := lab.New(t, lab.Options{})
			l.InstallGatewayFirewall(ctMark)
			v := l.StartVsftpd(lab.VsftpdOptions{})
			d := startDaemon(t, l, policyFor([]int{21}, natServerYAML(published), longPinholes))
			cutRoutes(t, l, published)
			c := goClient(t, l, netip.AddrPortFrom(natPublic, 21), v.User, v.Password)
			return &rebuildLab{l: l, v: v, d: d, c: c, verb: "PASV"}
		}},
	}
	events := []struct {
		name string
		do   func(t *testing.T, d *harness.Daemon)
	}{
		{"SIGHUP", reloadSamePolicy},
		{"nft delete table", deleteOurTable},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			rl := k.start(t)
			want, err := rl.v.CreateFile("f.bin", 512<<10)
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range events {
				t.Run(ev.name, func(t *testing.T) {
					ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
					defer cancel()
					if rep, err := rl.c.Cmd("TYPE I"); err != nil || rep.Code != 200 {
						t.Fatalf("TYPE I: %v %v", rep, err)
					}
					target := announce(t, rl)
					restored := rl.d.Metrics()["ftpsalg_pinholes_restored_total"]
					ev.do(t, rl.d)
					if sum := fetchAnnounced(t, ctx, rl, target, "f.bin"); sum != want {
						t.Fatalf("sha256 %s, want %s", sum, want)
					}
					// It worked because the ledger put this session's entry
					// into the rebuilt table.
					waitMetricAtLeast(t, rl.d, "ftpsalg_pinholes_restored_total", restored+1)
				})
			}
			if err := rl.c.Quit(); err != nil {
				t.Fatalf("QUIT: %v", err)
			}
			// Every entry was consumed by its data connection; none expired
			// (the timeout is 30 s) and none is left.
			rl.d.WaitMetric(`ftpsalg_control_sessions_active{mode="inspect"}`, 0)
			rl.d.WaitMetric(`ftpsalg_control_sessions_active{mode="mitm"}`, 0)
			if got := rl.d.Metrics()["ftpsalg_pinholes_expired_total"]; got != 0 {
				t.Errorf("ftpsalg_pinholes_expired_total = %v, want 0", got)
			}
			if els := rl.d.PinholeElements(); els != "" {
				t.Errorf("pinholes left open:\n%s", els)
			}
		})
	}
}

// announce sends the lab's PASV or EPSV and returns the data connection's
// target as the client must use it: the 227's address (a published
// server's public one), or the control connection's address with the
// 229's port.
func announce(t *testing.T, rl *rebuildLab) netip.AddrPort {
	t.Helper()
	rep, err := rl.c.Cmd(rl.verb)
	if err != nil {
		t.Fatalf("%s: %v", rl.verb, err)
	}
	switch rl.verb {
	case "PASV":
		if rep.Code != 227 {
			t.Fatalf("PASV: %v", rep)
		}
		a, err := ftpc.ParsePASV(rep.Text)
		if err != nil {
			t.Fatal(err)
		}
		return a
	default:
		if rep.Code != 229 {
			t.Fatalf("EPSV: %v", rep)
		}
		p, err := ftpc.ParseEPSV(rep.Text)
		if err != nil {
			t.Fatal(err)
		}
		ctl := netip.MustParseAddrPort(rl.c.Conn().RemoteAddr().String())
		return netip.AddrPortFrom(ctl.Addr().Unmap(), p)
	}
}

// fetchAnnounced opens the announced data connection, retrieves name over
// it and returns its SHA-256 once the server confirmed the transfer.
func fetchAnnounced(t *testing.T, ctx context.Context, rl *rebuildLab, target netip.AddrPort, name string) string {
	t.Helper()
	nd := harness.NSDialer{L: rl.l, NS: lab.Client}
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	dc, err := nd.DialContext(dctx, "tcp", target.String())
	dcancel()
	if err != nil {
		t.Fatalf("the announced data connection to %s: %v\n%s", target, err, tail(rl.d.Proc.Log()))
	}
	defer dc.Close()
	_ = dc.SetDeadline(time.Now().Add(20 * time.Second))
	if err := rl.c.Raw([]byte("RETR " + name + "\r\n")); err != nil {
		t.Fatal(err)
	}
	var r io.Reader = dc
	if rl.data != nil {
		tc := tls.Client(dc, rl.data)
		hctx, hcancel := context.WithTimeout(ctx, 10*time.Second)
		err := tc.HandshakeContext(hctx)
		hcancel()
		if err != nil {
			rep, rerr := rl.c.Read()
			t.Fatalf("data connection TLS handshake: %v (control: %v %v)\n%s", err, rep, rerr, tail(rl.d.Proc.Log()))
		}
		if rl.resumes && !tc.ConnectionState().DidResume {
			t.Error("the data connection did not resume the control connection's TLS session")
		}
		r = tc
	}
	h := sha256.New()
	_, err = io.Copy(h, r)
	// Close before reading the reply: a TLS server waits for the client's
	// side of the data connection to end before it confirms (as
	// ftpc.Retrieve does).
	if c, ok := r.(io.Closer); ok {
		c.Close()
	}
	if err != nil {
		t.Fatalf("failed to read the data connection: %v", err)
	}
	// Read skips the 150.
	if rep, err := rl.c.Read(); err != nil || rep.Code != 226 {
		t.Fatalf("after RETR: %v %v\n%s", rep, err, tail(rl.d.Proc.Log()))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// reloadSamePolicy rewrites the daemon's policy file unchanged and sends
// SIGHUP; it returns once the daemon logged the reload.
func reloadSamePolicy(t *testing.T, d *harness.Daemon) {
	t.Helper()
	pol, err := os.ReadFile(d.Config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.Config, pol, 0o600); err != nil {
		t.Fatal(err)
	}
	n := logCount(d, "policy reloaded")
	if err := d.Proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLogCount(t, d, "policy reloaded", n+1)
}

// deleteOurTable deletes ftpsalg's table as another process would and
// returns once the daemon rebuilt it.
func deleteOurTable(t *testing.T, d *harness.Daemon) {
	t.Helper()
	const key = `ftpsalg_nft_reconciles_total{result="rebuilt"}`
	before := d.Metrics()[key]
	n := logCount(d, "nftables table rebuilt")
	if out, err := d.L.Nft(lab.Gateway, "delete", "table", "inet", "ftpsalg"); err != nil {
		t.Fatalf("nft delete table: %v %s", err, out)
	}
	waitLogCount(t, d, "nftables table rebuilt", n+1)
	waitMetricAtLeast(t, d, key, before+1)
}

// TestStreamFlowLimit: limits.max_flows bounds the stream path. With
// max_flows N, N control connections to a mitm server are greeted through
// the proxy; connection N+1 gets ftpsalg's 421 and is closed, counted as a
// flow_limit refusal. Once the N are gone the daemon is back to its idle
// goroutine count and a legit FTPS session works.
func TestStreamFlowLimit(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	const n = 20
	ml := newMITMLab(t, mitmOpts{server: fmt.Sprintf("limits:\n  max_flows: %d\n", n)})
	d := ml.d
	want, err := ml.v.CreateFile("f.bin", 256<<10)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	idle := goroutines(t, d)
	addr := netip.AddrPortFrom(lab.ServerAddr4, 21)
	nd := harness.NSDialer{L: ml.l, NS: lab.Client}
	conns := make([]*ftpc.Client, 0, n)
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
		conns = nil
	}
	defer closeAll()
	for i := range n {
		c, err := ftpc.Dial(ctx, nd, nd, addr.String()) // reads the 220
		if err != nil {
			t.Fatalf("control connection %d of %d: %v\n%s", i+1, n, err, tail(d.Proc.Log()))
		}
		conns = append(conns, c)
	}
	d.WaitMetric(`ftpsalg_control_sessions_active{mode="mitm"}`, n)
	peak := goroutines(t, d)

	// Connection N+1.
	connects := strings.Count(ml.v.ProtocolLog(), "CONNECT: Client")
	raw, err := ml.l.Dial(ctx, lab.Client, "tcp4", netip.AddrPort{}, addr)
	if err != nil {
		t.Fatalf("connection %d: %v", n+1, err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(raw)
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "421 ") {
		t.Fatalf("connection %d got %q (%v), want a line starting with 421", n+1, line, err)
	}
	if !strings.Contains(line, "too many sessions") {
		t.Errorf("the 421 does not say why: %q", line)
	}
	// Then ftpsalg closes it (EOF, not the read deadline).
	if rest, err := io.ReadAll(br); err != nil {
		t.Fatalf("connection %d not closed after the 421: %v (read %q)", n+1, err, rest)
	}
	waitMetricAtLeast(t, d, `ftpsalg_policy_refusals_total{reason="flow_limit"}`, 1)
	if got := d.Metrics()[`ftpsalg_control_sessions_active{mode="mitm"}`]; got != n {
		t.Errorf("active mitm sessions after the refusal = %v, want %d", got, n)
	}
	if log := d.Proc.Log(); !strings.Contains(log, `"reason":"flow_limit"`) {
		t.Error("the refusal is not logged with its reason")
	}
	if got := strings.Count(ml.v.ProtocolLog(), "CONNECT: Client"); got != connects {
		t.Errorf("the server saw connection %d: %d connections logged, want %d", n+1, got, connects)
	}

	closeAll()
	d.WaitMetric(`ftpsalg_control_sessions_active{mode="mitm"}`, 0)
	const margin = 5
	after := waitGoroutines(t, d, idle+margin)
	t.Logf("go_goroutines: idle %v, with %d sessions %v, after they closed %v", idle, n, peak, after)

	c := ml.goTLSClient(t, ctx, lab.ServerAddr4, false)
	sum, _, err := c.Retrieve(ctx, ftpc.EPSV, "f.bin")
	if err != nil || sum != want {
		t.Fatalf("legit session after the flood: %v (sha256 %s, want %s)", err, sum, want)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	d.Stop()
}

// goroutines is the daemon's go_goroutines.
func goroutines(t *testing.T, d *harness.Daemon) float64 {
	t.Helper()
	v, ok := d.Sample("go_goroutines")
	if !ok {
		t.Fatal("the daemon exports no go_goroutines")
	}
	return v
}

// waitGoroutines polls until go_goroutines is at most max (15 s) and
// returns it.
func waitGoroutines(t *testing.T, d *harness.Daemon, max float64) float64 {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		g := goroutines(t, d)
		if g <= max {
			return g
		}
		if time.Now().After(deadline) {
			t.Fatalf("go_goroutines = %v, want at most %v", g, max)
		}
		time.Sleep(100 * time.Millisecond) // poll interval
	}
}

// TestTableLossWindow: another process deletes ftpsalg's table, or flushes
// the whole ruleset as Debian's nftables reload does; the reconcile task
// learns of it from nftables' notifications and rebuilds the table within
// a second (the goal is well under 100 ms: the figures are logged), and a
// control connection made afterwards is inspected: it is counted, its
// PASV opens a pinhole and the transfer goes through it under the
// operator's default-drop firewall.
func TestTableLossWindow(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	l := lab.New(t, lab.Options{})
	l.InstallGatewayFirewall(ctMark)
	v := l.StartVsftpd(lab.VsftpdOptions{})
	want, err := v.CreateFile("f.bin", 256<<10)
	if err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, l, policyFor([]int{21}, "", ""))
	list := func() error {
		_, err := l.Nft(lab.Gateway, "list", "table", "inet", "ftpsalg")
		return err
	}
	// What one nft command costs here: the resolution of the window.
	start := time.Now()
	if err := list(); err != nil {
		t.Fatalf("nft list table: %v", err)
	}
	resolution := time.Since(start)
	for _, tc := range []struct {
		name  string
		args  []string
		after func()
	}{
		{"delete table", []string{"delete", "table", "inet", "ftpsalg"}, nil},
		// The flush took the operator's table too: the operator's reload
		// puts it back.
		{"flush ruleset", []string{"flush", "ruleset"}, func() { l.InstallGatewayFirewall(ctMark) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := logCount(d, "nftables table rebuilt")
			if out, err := l.Nft(lab.Gateway, tc.args...); err != nil {
				t.Fatalf("nft %s: %v %s", strings.Join(tc.args, " "), err, out)
			}
			returned := time.Now()
			deadline := returned.Add(5 * time.Second)
			missing := 0
			for list() != nil {
				missing++
				if time.Now().After(deadline) {
					t.Fatalf("table not back 5 s after nft %s\n%s", strings.Join(tc.args, " "), tail(d.Proc.Log()))
				}
			}
			window := time.Since(returned)
			line := waitRebuilt(t, d, n+1)
			s, _ := line["since_change"].(string)
			since, err := time.ParseDuration(s)
			if err != nil {
				t.Fatalf("rebuilt line without a since_change duration: %v", line)
			}
			t.Logf("nft %s: table listable again %v after the command returned (%d failed listings before; one nft command takes ~%v); "+
				"daemon: since_change %v, duration %v, cause %q, pinholes_restored %v",
				strings.Join(tc.args, " "), window.Round(time.Microsecond), missing, resolution.Round(time.Microsecond),
				since, line["duration"], line["cause"], line["pinholes_restored"])
			if window >= time.Second || since >= time.Second {
				t.Errorf("table missing for %v (daemon: %v), want under 1 s", window, since)
			}
			if tc.after != nil {
				tc.after()
			}
			d.WaitMetric(`ftpsalg_control_sessions_active{mode="inspect"}`, 0)
			before := d.Metrics()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c := goClient(t, l, netip.AddrPortFrom(lab.ServerAddr4, 21), v.User, v.Password)
			sum, _, err := c.Retrieve(ctx, ftpc.PASV, "f.bin")
			if err != nil || sum != want {
				t.Fatalf("transfer after the rebuild: %v (sha256 %s, want %s)\n%s", err, sum, want, tail(d.Proc.Log()))
			}
			after := d.Metrics()
			for _, k := range []string{`ftpsalg_control_sessions_total{mode="inspect"}`, `ftpsalg_pinholes_opened_total{data_mode="passive"}`} {
				if after[k] != before[k]+1 {
					t.Errorf("%s went from %v to %v, want +1: the new session was not inspected", k, before[k], after[k])
				}
			}
			if err := c.Quit(); err != nil {
				t.Fatal(err)
			}
			// The session's end (its FINs) is seen before the next case
			// deletes the table again: FINs crossing a missing table are
			// not queued, and the flow would then live until conntrack
			// or idle eviction ends it.
			d.WaitMetric(`ftpsalg_control_sessions_active{mode="inspect"}`, 0)
		})
	}
	if code, body, err := d.Get("/readyz"); err != nil || code != 200 {
		t.Errorf("/readyz after the rebuilds: %d %v %s", code, err, body)
	}
	d.Stop()
}

// waitRebuilt waits for the daemon's n-th "nftables table rebuilt" line
// and returns it.
func waitRebuilt(t *testing.T, d *harness.Daemon, n int) map[string]any {
	t.Helper()
	waitLogCount(t, d, "nftables table rebuilt", n)
	lines := logLines(d, "nftables table rebuilt")
	if len(lines) < n {
		t.Fatalf("%d rebuilt lines parsed, want %d", len(lines), n)
	}
	return lines[n-1]
}

// TestAuditKeysSameInBothModes: an inspect session and mitm sessions, each
// with a login and a transfer, write "session start" and "session end"
// lines with the same keys. A mitm session in plain FTP must match the
// inspect one exactly; an FTPS one adds only the TLS keys (when and what
// TLS was started).
func TestAuditKeysSameInBothModes(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// Inspect: plain vsftpd.
	l := lab.New(t, lab.Options{})
	l.InstallGatewayFirewall(ctMark)
	v := l.StartVsftpd(lab.VsftpdOptions{})
	want, err := v.CreateFile("f.bin", 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	di := startDaemon(t, l, policyFor([]int{21}, "", ""))
	c := goClient(t, l, netip.AddrPortFrom(lab.ServerAddr4, 21), v.User, v.Password)
	if sum, _, err := c.Retrieve(ctx, ftpc.PASV, "f.bin"); err != nil || sum != want {
		t.Fatalf("inspect transfer: %v", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	insp := auditSessions(t, di, 1)

	// Mitm: FTPS, then plain FTP through the same server.
	ml := newMITMLab(t, mitmOpts{server: "    require_tls: false\n"})
	mwant, err := ml.v.CreateFile("f.bin", 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	tc := ml.goTLSClient(t, ctx, lab.ServerAddr4, false)
	if sum, _, err := tc.Retrieve(ctx, ftpc.EPSV, "f.bin"); err != nil || sum != mwant {
		t.Fatalf("mitm FTPS transfer: %v", err)
	}
	if err := tc.Quit(); err != nil {
		t.Fatal(err)
	}
	auditSessions(t, ml.d, 1) // the FTPS session ends first
	pc := goClient(t, ml.l, netip.AddrPortFrom(lab.ServerAddr4, 21), ml.v.User, ml.v.Password)
	if sum, _, err := pc.Retrieve(ctx, ftpc.PASV, "f.bin"); err != nil || sum != mwant {
		t.Fatalf("mitm plain transfer: %v", err)
	}
	if err := pc.Quit(); err != nil {
		t.Fatal(err)
	}
	mitm := auditSessions(t, ml.d, 2)
	var ftps, plain auditSession
	for _, s := range mitm {
		if s.end["tls"] == true {
			ftps = s
		} else {
			plain = s
		}
	}
	if ftps.end == nil || plain.end == nil {
		t.Fatalf("want one FTPS and one plain mitm session, got %v", mitm)
	}
	is := insp[0]
	for _, s := range []struct {
		name string
		sess auditSession
		user string
	}{{"inspect", is, v.User}, {"mitm ftps", ftps, ml.v.User}, {"mitm plain", plain, ml.v.User}} {
		for _, k := range []string{"session_id", "client", "server", "server_name", "mode"} {
			if _, ok := s.sess.start[k]; !ok {
				t.Errorf("%s: session start lacks %s: %v", s.name, k, s.sess.start)
			}
		}
		for _, k := range []string{"transfers", "pinholes_opened", "pinholes_used"} {
			if n, ok := s.sess.end[k].(float64); !ok || n < 1 {
				t.Errorf("%s: session end %s = %v, want at least 1", s.name, k, s.sess.end[k])
			}
		}
		if s.sess.end["user"] != s.user {
			t.Errorf("%s: session end user = %v, want %s", s.name, s.sess.end["user"], s.user)
		}
	}
	if is.start["mode"] != "inspect" || ftps.start["mode"] != "mitm" {
		t.Errorf("modes: %v, %v", is.start["mode"], ftps.start["mode"])
	}
	// The same keys, whatever the mode.
	for _, m := range []struct {
		name string
		s    auditSession
	}{{"mitm plain", plain}, {"mitm ftps", ftps}} {
		if diff := cmp.Diff(keys(is.start), keys(m.s.start)); diff != "" {
			t.Errorf("session start keys, inspect vs %s (-inspect +%s):\n%s", m.name, m.name, diff)
		}
	}
	if diff := cmp.Diff(keys(is.end), keys(plain.end)); diff != "" {
		t.Errorf("session end keys, inspect vs mitm plain (-inspect +mitm):\n%s", diff)
	}
	// TLS adds when it started and what was negotiated on each leg.
	tlsKeys := []string{"client_tls_suite", "client_tls_version", "tls_started", "upstream_cert_not_after",
		"upstream_cert_sha256", "upstream_resumed", "upstream_tls_suite", "upstream_tls_version"}
	wantFTPS := append(keys(is.end), tlsKeys...)
	slices.Sort(wantFTPS)
	if diff := cmp.Diff(wantFTPS, keys(ftps.end)); diff != "" {
		t.Errorf("session end keys, inspect plus the TLS keys vs mitm ftps (-want +got):\n%s", diff)
	}
	t.Logf("session start keys: %v", keys(is.start))
	t.Logf("session end keys: %v (+ TLS: %v)", keys(is.end), tlsKeys)
	di.Stop()
	ml.d.Stop()
}

// auditSession is one session's start and end lines.
type auditSession struct{ start, end map[string]any }

// auditSessions waits until the daemon logged n "session end" lines and
// returns the sessions that ended, in order, with their start lines.
func auditSessions(t *testing.T, d *harness.Daemon, n int) []auditSession {
	t.Helper()
	waitLogCount(t, d, "session end", n)
	starts := map[float64]map[string]any{}
	for _, s := range logLines(d, "session start") {
		id, _ := s["session_id"].(float64)
		starts[id] = s
	}
	var out []auditSession
	for _, e := range logLines(d, "session end") {
		id, _ := e["session_id"].(float64)
		s, ok := starts[id]
		if !ok {
			t.Fatalf("session %v ended without a start line", id)
		}
		out = append(out, auditSession{start: s, end: e})
	}
	return out
}

// keys are a log line's keys but time, sorted.
func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		if k != "time" {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// logLines parses the daemon's JSON log lines whose msg is msg.
func logLines(d *harness.Daemon, msg string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(d.Proc.Log(), "\n") {
		if !strings.Contains(line, `"msg":"`+msg+`"`) {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// logCount is how many lines with msg the daemon logged.
func logCount(d *harness.Daemon, msg string) int {
	return strings.Count(d.Proc.Log(), `"msg":"`+msg+`"`)
}

// waitLogCount polls until the daemon logged msg at least n times (15 s).
func waitLogCount(t *testing.T, d *harness.Daemon, msg string, n int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for logCount(d, msg) < n {
		if time.Now().After(deadline) {
			t.Fatalf("ftpsalg logged %q %d times, want %d:\n%s", msg, logCount(d, msg), n, tail(d.Proc.Log()))
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
}

// waitMetricAtLeast polls until key reaches min (15 s).
func waitMetricAtLeast(t *testing.T, d *harness.Daemon, key string, min float64) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := d.Metrics()[key]
		if got >= min {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metric %s = %v, want at least %v", key, got, min)
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
}
