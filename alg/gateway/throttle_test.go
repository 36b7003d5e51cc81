package gateway

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/ftp"
)

const throttlePolicy = `throttle:
  max_failures: 3
  window: 1m
  ban: 30s
  allow: [203.0.113.128/25]
servers:
  - name: plain
    mode: inspect
    addresses: [198.51.100.2]
  - name: secure
    mode: mitm
    addresses: [198.51.100.10]
`

// failLogin is one session of client on transport t whose login fails:
// the core's 530 reply to PASS, as both paths report it.
func failLogin(t *testing.T, r *rig, tr Transport, client netip.AddrPort, srv netip.AddrPort) {
	t.Helper()
	s, ref := r.g.Admit(tr, client, srv)
	if ref != nil {
		t.Fatalf("%s: %+v", client, ref)
	}
	s.Observe(ftp.Decision{Action: ftp.ActionCommand, Dir: ftp.FromClient, Verb: "USER", Arg: "alice"})
	s.Observe(ftp.Decision{Action: ftp.ActionCommand, Dir: ftp.FromClient, Verb: "PASS", Arg: "<redacted>"})
	s.Observe(ftp.Decision{Action: ftp.ActionReply, Dir: ftp.FromServer, Verb: "PASS", Code: 530})
	s.End("fin")
}

// TestThrottleBans: the max_failures-th failed login within the window,
// counted over both paths, bans the address in the kernel and in Admit
// (both transports), while another address still gets in; the ban
// expires; allow-listed addresses are never banned.
func TestThrottleBans(t *testing.T) {
	t.Parallel()
	r := newRig(t, throttlePolicy)
	bad := netip.MustParseAddr("192.0.2.66")
	at := func(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

	// Two failures, then the window passes: they no longer count.
	failLogin(t, r, Packet, at(bad, 40000), inspSrv)
	failLogin(t, r, Stream, at(bad, 40001), mitmSrv)
	r.clk.add(time.Minute, r.tbl)
	failLogin(t, r, Packet, at(bad, 40002), inspSrv)
	failLogin(t, r, Stream, at(bad, 40003), mitmSrv)
	if r.tbl.Refused(bad, inspSrv) || r.g.ActiveBans() != 0 {
		t.Fatal("banned after 2 failures in the window (max_failures 3)")
	}
	failLogin(t, r, Packet, at(bad, 40004), inspSrv) // the third within a minute
	if !r.tbl.Refused(bad, inspSrv) || !r.tbl.Refused(bad, mitmSrv) {
		t.Fatal("the kernel does not drop the banned client's control connections")
	}
	for _, tc := range []struct {
		tr  Transport
		srv netip.AddrPort
	}{{Packet, inspSrv}, {Stream, mitmSrv}} {
		_, ref := r.g.Admit(tc.tr, at(bad, 40010), tc.srv)
		if ref == nil || ref.Reason != RefuseBanned || !strings.HasPrefix(ref.Reply, "421 ") {
			t.Errorf("transport %d: banned client admitted: %+v", tc.tr, ref)
		}
	}
	if _, ref := r.g.Admit(Packet, cli, inspSrv); ref != nil {
		t.Fatalf("another client refused: %+v", ref)
	}
	if n := testutilToFloat64(r.g.m.LoginFailures.WithLabelValues(FailureLogin)); n != 5 {
		t.Errorf("login failures counted %v, want 5", n)
	}
	if n := testutilToFloat64(r.g.m.Bans); n != 1 || r.g.ActiveBans() != 1 {
		t.Errorf("bans counted %v, active %d; want 1, 1", n, r.g.ActiveBans())
	}
	lines := r.log.lines(t, "client banned")
	if len(lines) != 1 || lines[0]["client"] != bad.String() || lines[0]["failures"] != float64(3) ||
		lines[0]["window"] != "1m0s" || lines[0]["ban"] != "30s" {
		t.Errorf("client banned lines: %v", lines)
	}
	st := r.g.Status()
	if len(st.Bans) != 1 || st.Bans[0].Client != bad || !st.Bans[0].Expires.Equal(r.clk.now().Add(30*time.Second)) {
		t.Errorf("status bans: %+v", st.Bans)
	}

	// A reload keeps the ban (the kernel carries it over), and so does
	// the loss of the table (the gateway adds it again).
	if err := r.g.Apply(t.Context(), r.cfg); err != nil {
		t.Fatal(err)
	}
	if !r.tbl.Refused(bad, inspSrv) {
		t.Fatal("ban lost by a reload")
	}
	r.clk.add(10*time.Second, r.tbl)
	if err := r.tbl.Delete(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := (&Reconciler{G: r.g}).Once(t.Context()); err != nil {
		t.Fatal(err)
	}
	bans, err := r.tbl.Bans(t.Context())
	if err != nil || len(bans) != 1 || bans[0].Addr != bad || bans[0].Expires != 20*time.Second {
		t.Fatalf("bans after the table was lost: %+v, %v; want %s with 20s left", bans, err, bad)
	}

	// The ban expires in the kernel and in Admit.
	r.clk.add(20*time.Second, r.tbl)
	if r.tbl.Refused(bad, inspSrv) || r.g.ActiveBans() != 0 {
		t.Fatal("the ban outlived its time")
	}
	if _, ref := r.g.Admit(Packet, at(bad, 40020), inspSrv); ref != nil {
		t.Fatalf("after the ban: %+v", ref)
	}

	// Allow-listed: counted, never banned.
	ok := netip.MustParseAddr("203.0.113.200")
	for i := range 5 {
		failLogin(t, r, Stream, at(ok, uint16(41000+i)), mitmSrv)
	}
	if r.tbl.Refused(ok, mitmSrv) || r.g.ActiveBans() != 0 {
		t.Fatal("an allow-listed address was banned")
	}
}

// TestCountFailure: the opaque-mode entry points count towards the same
// ban; a 530 to another command does not count; throttle off never bans.
func TestCountFailure(t *testing.T) {
	t.Parallel()
	r := newRig(t, throttlePolicy)
	a := netip.MustParseAddr("2001:db8:bad::5")
	s, ref := r.g.Admit(Stream, netip.AddrPortFrom(netip.MustParseAddr("192.0.2.70"), 40000), mitmSrv)
	if ref != nil {
		t.Fatal(ref)
	}
	s.Observe(ftp.Decision{Action: ftp.ActionReply, Dir: ftp.FromServer, Verb: "CWD", Code: 530})
	s.LoginFailed(FailureUnauthenticated)
	s.End("fin")
	r.g.CountFailure(a, FailureHandshake)
	r.g.CountFailure(netip.AddrFrom16(a.As16()), FailureHandshake)
	if r.g.ActiveBans() != 0 {
		t.Fatal("banned before max_failures")
	}
	r.g.CountFailure(a, FailureUnauthenticated)
	if !r.tbl.Refused(a, mitmSrv) {
		t.Fatal("three opaque failures did not ban")
	}
	if n := testutilToFloat64(r.g.m.LoginFailures.WithLabelValues(FailureHandshake)); n != 2 {
		t.Errorf("handshake failures %v, want 2", n)
	}

	off := newRig(t, "throttle: {max_failures: 0}\n"+throttlePolicy[strings.Index(throttlePolicy, "servers:"):])
	if spec, _ := off.tbl.Spec(); spec.Bans {
		t.Error("throttle off: the table has the ban objects")
	}
	for range 20 {
		off.g.CountFailure(a, FailureLogin)
	}
	if off.g.ActiveBans() != 0 {
		t.Fatal("throttle off banned")
	}
}

// TestHandshakeFailureCounts: an opaque session's failed TLS handshake
// counts against its client like a failed login.
func TestHandshakeFailureCounts(t *testing.T) {
	t.Parallel()
	r := newRig(t, throttlePolicy)
	s, ref := r.g.Admit(Stream, netip.AddrPortFrom(netip.MustParseAddr("192.0.2.71"), 40000), mitmSrv)
	if ref != nil {
		t.Fatal(ref)
	}
	s.TLSHandshakeFailed("alert", "an alert before the handshake completed")
	if n := testutilToFloat64(r.g.m.LoginFailures.WithLabelValues(FailureHandshake)); n != 1 {
		t.Fatalf("handshake failures counted %v, want 1", n)
	}
}
