package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/ftp"
	"github.com/ftpsalg/ftpsalg/alg/policy"
	"github.com/ftpsalg/ftpsalg/metrics"
	"github.com/ftpsalg/ftpsalg/nft"
)

var (
	cli     = netip.MustParseAddrPort("192.0.2.2:40000")
	inspSrv = netip.MustParseAddrPort("198.51.100.2:21")
	mitmSrv = netip.MustParseAddrPort("198.51.100.10:21")
	relaySv = netip.MustParseAddrPort("198.51.100.11:21")
)

const testPolicy = `pinholes:
  timeout: 30s
limits:
  max_flows: 2
servers:
  - name: plain
    mode: inspect
    addresses: [198.51.100.2]
    passive_ports: "50000-50100"
  - name: secure
    mode: mitm
    addresses: [198.51.100.10]
    passive_ports: "50000-50100"
  - name: relayed
    mode: mitm
    addresses: [198.51.100.11]
    passive_ports: "50000-50100"
    data: relay
`

func parse(t *testing.T, doc string) *policy.Config {
	t.Helper()
	cfg, err := policy.Parse("policy.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// clock is a test clock the gateway and the fake table share.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration, f *nft.Fake) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
	f.Advance(d)
}

// logBuf collects JSON log lines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }

// lines returns the decoded lines whose msg is msg.
func (l *logBuf) lines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

type rig struct {
	g   *Gateway
	tbl *nft.Fake
	clk *clock
	log *logBuf
	cfg *policy.Config
}

func newRig(t *testing.T, doc string) *rig {
	t.Helper()
	r := &rig{tbl: nft.NewFake(), clk: &clock{t: time.Unix(1_800_000_000, 0)}, log: &logBuf{}, cfg: parse(t, doc)}
	r.g = New(Options{Policy: r.cfg, Table: r.tbl, QueueKind: nft.QueueCompat, Now: r.clk.now,
		Log: slog.New(slog.NewJSONHandler(r.log, nil))})
	if err := r.g.Ready(); err == nil {
		t.Fatal("ready before the table is built")
	}
	if err := r.g.Apply(t.Context(), r.cfg); err != nil {
		t.Fatal(err)
	}
	if err := r.g.Ready(); err != nil {
		t.Fatalf("not ready after Apply: %v", err)
	}
	return r
}

func passive(port uint16, srv netip.AddrPort) ftp.Decision {
	return ftp.Decision{Action: ftp.ActionOpenPinhole, Dir: ftp.FromServer, Verb: "EPSV", Code: 229,
		Pinhole: ftp.Pinhole{Mode: ftp.Passive, Src: cli.Addr(), Dst: srv.Addr(), DstPort: port}}
}

func live(t *testing.T, tbl *nft.Fake, hs ...nft.Pinhole) []bool {
	t.Helper()
	l, err := tbl.Live(t.Context(), hs...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestMaxFlowsSharedByTransports: limits.max_flows counts the sessions of
// both paths together; the refused one is told why with a 421 and counted.
func TestMaxFlowsSharedByTransports(t *testing.T) {
	t.Parallel()
	r := newRig(t, testPolicy)
	a, ref := r.g.Admit(Packet, cli, inspSrv)
	if ref != nil {
		t.Fatal(ref)
	}
	if _, ref := r.g.Admit(Stream, netip.AddrPortFrom(cli.Addr(), 40001), mitmSrv); ref != nil {
		t.Fatal(ref)
	}
	for _, tr := range []Transport{Packet, Stream} {
		srv := inspSrv
		if tr == Stream {
			srv = mitmSrv
		}
		_, ref := r.g.Admit(tr, netip.AddrPortFrom(cli.Addr(), 40002), srv)
		if ref == nil || ref.Reason != RefuseFlowLimit || !strings.HasPrefix(ref.Reply, "421 ") {
			t.Fatalf("transport %d: third session: %+v, want a flow_limit refusal with a 421", tr, ref)
		}
	}
	if n := counter(t, r.g.m, RefuseFlowLimit); n != 2 {
		t.Fatalf("flow_limit refusals counted %v, want 2", n)
	}
	a.End("fin")
	if _, ref := r.g.Admit(Stream, netip.AddrPortFrom(cli.Addr(), 40003), mitmSrv); ref != nil {
		t.Fatalf("after a session ended: %+v", ref)
	}
	if r.g.Sessions() != 2 {
		t.Fatalf("sessions %d, want 2", r.g.Sessions())
	}
	if n := testutilToFloat64(r.g.m.ServerSessions.WithLabelValues("secure")); n != 2 {
		t.Fatalf("sessions of server secure counted %v, want 2", n)
	}
}

// TestAdmitRefusals: the policy's own refusals, per transport.
func TestAdmitRefusals(t *testing.T) {
	t.Parallel()
	r := newRig(t, testPolicy)
	for _, tc := range []struct {
		tr     Transport
		srv    netip.AddrPort
		reason string
	}{
		{Packet, mitmSrv, RefuseNotInPolicy},                                   // a mitm server's packets are not the packet path's
		{Stream, inspSrv, RefuseNotInPolicy},                                   // nor an untranslated inspect session the stream path's
		{Packet, netip.MustParseAddrPort("203.0.113.9:21"), RefuseNotInPolicy}, // no such server
	} {
		if _, ref := r.g.Admit(tc.tr, cli, tc.srv); ref == nil || ref.Reason != tc.reason {
			t.Errorf("%d → %s: %+v, want %s", tc.tr, tc.srv, ref, tc.reason)
		}
	}
	if r.g.Sessions() != 0 {
		t.Fatalf("sessions %d after refusals", r.g.Sessions())
	}
}

// TestRebuildRestoresEveryKind: a reload and the loss of the table (found
// by the reconcile task) both rebuild the table; every live session's
// pinholes and relay elements come back with what is left of their
// timeout, and /readyz says not ready while the rebuild fails.
func TestRebuildRestoresEveryKind(t *testing.T) {
	t.Parallel()
	r := newRig(t, strings.Replace(testPolicy, "max_flows: 2", "max_flows: 10", 1))
	ctx := t.Context()
	a, _ := r.g.Admit(Packet, cli, inspSrv)
	b, _ := r.g.Admit(Stream, netip.AddrPortFrom(cli.Addr(), 40001), mitmSrv)
	c, _ := r.g.Admit(Stream, netip.AddrPortFrom(cli.Addr(), 40002), relaySv)
	oa, err := a.OpenPinhole(ctx, passive(50001, inspSrv), false)
	if err != nil {
		t.Fatal(err)
	}
	ob, err := b.OpenPinhole(ctx, passive(50002, mitmSrv), false)
	if err != nil {
		t.Fatal(err)
	}
	oc, err := c.OpenPinhole(ctx, passive(50003, relaySv), true)
	if err != nil {
		t.Fatal(err)
	}
	holes := []nft.Pinhole{oa.Hole, ob.Hole, oc.Hole}
	r.clk.add(10*time.Second, r.tbl)

	// A reload (the same policy applied again) rebuilds the table.
	if err := r.g.Apply(ctx, r.cfg); err != nil {
		t.Fatal(err)
	}
	if got := live(t, r.tbl, holes...); !slices.Equal(got, []bool{true, true, true}) {
		t.Fatalf("after a reload: live %v, want all", got)
	}
	els, _ := r.tbl.Pinholes(ctx)
	for _, el := range els {
		if el.Expires > 20*time.Second {
			t.Fatalf("restored %v with %v left, want at most the 20s that remained", el.Pinhole, el.Expires)
		}
	}

	// The table is lost; the reconcile task's rebuild fails once, then
	// succeeds.
	if err := r.tbl.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	rec := &Reconciler{G: r.g, Check: func(context.Context) (bool, error) {
		_, ok := r.tbl.Spec()
		return ok, nil
	}}
	r.tbl.FailNext(errors.New("injected: netlink busy"))
	if err := rec.Once(ctx); err == nil {
		t.Fatal("rebuild with a failing kernel succeeded")
	}
	if err := r.g.Ready(); err == nil {
		t.Fatal("ready while the table is missing")
	}
	srv := &metrics.Server{Ready: r.g.Ready}
	if code := readyz(t, srv); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz %d while the table is missing, want 503", code)
	}
	if err := rec.Once(ctx); err != nil {
		t.Fatal(err)
	}
	if code := readyz(t, srv); code != http.StatusOK {
		t.Fatalf("/readyz %d after the rebuild, want 200", code)
	}
	if got := live(t, r.tbl, holes...); !slices.Equal(got, []bool{true, true, true}) {
		t.Fatalf("after the table's loss: live %v, want all", got)
	}

	// An ended session's pinholes go, and are not restored by later
	// rebuilds.
	a.End("fin")
	r.g.Drain(ctx)
	if err := r.g.Apply(ctx, r.cfg); err != nil {
		t.Fatal(err)
	}
	if got := live(t, r.tbl, holes...); !slices.Equal(got, []bool{false, true, true}) {
		t.Fatalf("after the end of one session: live %v", got)
	}
	if !r.tbl.Use(cli.Addr(), mitmSrv.Addr(), 50002) || !r.tbl.Divert(cli.Addr(), relaySv.Addr(), 50003) {
		t.Fatal("restored elements do not admit their connections")
	}
}

// TestPinholeBound: a session holds at most MaxPinholes; the oldest goes.
func TestPinholeBound(t *testing.T) {
	t.Parallel()
	r := newRig(t, testPolicy)
	r.g.maxPH = 3
	ctx := t.Context()
	s, _ := r.g.Admit(Packet, cli, inspSrv)
	var hs []nft.Pinhole
	for p := range uint16(4) {
		o, err := s.OpenPinhole(ctx, passive(50010+p, inspSrv), false)
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, o.Hole)
	}
	r.g.Drain(ctx)
	if got := live(t, r.tbl, hs...); !slices.Equal(got, []bool{false, true, true, true}) {
		t.Fatalf("live %v, want the oldest retired", got)
	}
	if n := counter(t, r.g.m, "pinhole_limit"); n != 1 {
		t.Fatalf("pinhole_limit counted %v", n)
	}
}

// TestAuditSameKeys: both transports write the same session lines with the
// same keys.
func TestAuditSameKeys(t *testing.T) {
	t.Parallel()
	r := newRig(t, testPolicy)
	ctx := t.Context()
	for _, tc := range []struct {
		tr  Transport
		srv netip.AddrPort
	}{{Packet, inspSrv}, {Stream, mitmSrv}} {
		s, ref := r.g.Admit(tc.tr, cli, tc.srv)
		if ref != nil {
			t.Fatal(ref)
		}
		s.Start(false)
		s.Observe(ftp.Decision{Action: ftp.ActionCommand, Verb: "USER", Arg: "alice"})
		s.Observe(ftp.Decision{Action: ftp.ActionCommand, Verb: "RETR", Arg: "f.bin"})
		if _, err := s.OpenPinhole(ctx, passive(50020, tc.srv), false); err != nil {
			t.Fatal(err)
		}
		s.Observe(ftp.Decision{Action: ftp.ActionReply, Verb: "RETR", Code: 226})
		s.Refused("bad_port", "direction", "server")
		s.End("fin")
		r.g.Drain(ctx)
	}
	for _, msg := range []string{"session start", "transfer", "pinhole opened", "refused", "session end"} {
		ls := r.log.lines(t, msg)
		if len(ls) != 2 {
			t.Fatalf("%q: %d lines, want one per transport", msg, len(ls))
		}
		if k0, k1 := keys(ls[0]), keys(ls[1]); !slices.Equal(k0, k1) {
			t.Errorf("%q: keys differ between the transports:\n packet %v\n stream %v", msg, k0, k1)
		}
	}
	end := r.log.lines(t, "session end")[0]
	for _, k := range []string{"session_id", "client", "server", "server_name", "mode", "reason", "duration", "user",
		"transfers", "pinholes_opened", "pinholes_used", "pinholes_expired", "refusals"} {
		if _, ok := end[k]; !ok {
			t.Errorf("session end lacks %q: %v", k, end)
		}
	}
	if end["user"] != "alice" || end["transfers"] != 1.0 || end["pinholes_opened"] != 1.0 || end["refusals"] != 1.0 {
		t.Errorf("session end %v", end)
	}
}

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

func counter(t *testing.T, m *metrics.Metrics, reason string) float64 {
	t.Helper()
	return testutilToFloat64(m.Refusals.WithLabelValues(reason))
}

func readyz(t *testing.T, s *metrics.Server) int {
	t.Helper()
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	return w.Code
}

// TestReannouncedEndpointCounted: a server that announces the same port to
// the same client again (vsftpd picks from a small range) re-adds the same
// kernel element; the earlier admission is counted used when a data
// connection took it before, superseded otherwise — in one session or two.
func TestReannouncedEndpointCounted(t *testing.T) {
	t.Parallel()
	r := newRig(t, strings.Replace(testPolicy, "max_flows: 2", "max_flows: 10", 1))
	ctx := t.Context()
	a, _ := r.g.Admit(Packet, cli, inspSrv)
	b, _ := r.g.Admit(Packet, netip.AddrPortFrom(cli.Addr(), 40001), inspSrv)
	open := func(s *Session) {
		t.Helper()
		if _, err := s.OpenPinhole(ctx, passive(50030, inspSrv), false); err != nil {
			t.Fatal(err)
		}
	}
	use := func() {
		t.Helper()
		if !r.tbl.Use(cli.Addr(), inspSrv.Addr(), 50030) {
			t.Fatal("pinhole not usable")
		}
	}
	open(a)
	use()
	open(a) // the same session, after its first data connection
	use()
	open(b) // another session of the same client
	open(a) // and back, before b's was used
	a.End("fin")
	b.End("fin")
	r.g.Drain(ctx)
	m := r.g.m
	if u, rm := testutilToFloat64(m.PinholesUsed), testutilToFloat64(m.PinholesRemoved); u != 2 || rm != 2 {
		t.Fatalf("used %v removed %v; want 2 used (the first two) and 2 removed (b's superseded, a's last at its end)", u, rm)
	}
}

// TestPerClientCap: limits.max_sessions_per_client refuses the (cap+1)th
// session of one address, on either path, and not another address's.
func TestPerClientCap(t *testing.T) {
	t.Parallel()
	r := newRig(t, strings.Replace(testPolicy, "max_flows: 2", "max_flows: 10\n  max_sessions_per_client: 2", 1))
	a, ref := r.g.Admit(Packet, cli, inspSrv)
	if ref != nil {
		t.Fatal(ref)
	}
	if _, ref := r.g.Admit(Stream, netip.AddrPortFrom(cli.Addr(), 40001), mitmSrv); ref != nil {
		t.Fatal(ref)
	}
	_, ref = r.g.Admit(Stream, netip.AddrPortFrom(cli.Addr(), 40002), mitmSrv)
	if ref == nil || ref.Reason != RefuseClientLimit || !strings.HasPrefix(ref.Reply, "421 ") {
		t.Fatalf("third session of one address: %+v, want a client_limit refusal with a 421", ref)
	}
	other := netip.MustParseAddrPort("192.0.2.3:40000")
	if _, ref := r.g.Admit(Stream, other, mitmSrv); ref != nil {
		t.Fatalf("another address refused: %+v", ref)
	}
	a.End("fin")
	if _, ref := r.g.Admit(Packet, netip.AddrPortFrom(cli.Addr(), 40003), inspSrv); ref != nil {
		t.Fatalf("after one of its sessions ended: %+v", ref)
	}
	if n := counter(t, r.g.m, RefuseClientLimit); n != 1 {
		t.Fatalf("client_limit refusals %v, want 1", n)
	}
}

// TestTLSAuditUpstreamCertificate: the TLS audit line carries the upstream
// certificate's fingerprint and expiry; one that expires within two weeks
// is counted and warned about, one that does not is not.
func TestTLSAuditUpstreamCertificate(t *testing.T) {
	t.Parallel()
	r := newRig(t, strings.Replace(testPolicy, "max_flows: 2", "max_flows: 10", 1))
	for _, left := range []time.Duration{10 * 24 * time.Hour, 90 * 24 * time.Hour} {
		s, _ := r.g.Admit(Stream, cli, mitmSrv)
		crt := &x509.Certificate{Raw: []byte(left.String()), NotAfter: r.clk.now().Add(left)}
		s.TLSStarted(TLSInfo{SNI: "files.test", Client: &tls.ConnectionState{Version: tls.VersionTLS13},
			Upstream: &tls.ConnectionState{Version: tls.VersionTLS13, PeerCertificates: []*x509.Certificate{crt}}})
		s.End("fin")
	}
	if n := testutilToFloat64(r.g.m.UpstreamCertExpiring.WithLabelValues("secure")); n != 1 {
		t.Fatalf("expiring upstream certificates counted %v, want 1", n)
	}
	lines := r.log.lines(t, "tls started")
	if len(lines) != 2 || lines[0]["upstream_cert_sha256"] == nil || lines[0]["upstream_cert_not_after"] == nil {
		t.Fatalf("tls started lines %v", lines)
	}
	if w := r.log.lines(t, "upstream certificate expires soon"); len(w) != 1 {
		t.Fatalf("%d expiry warnings, want 1", len(w))
	}
}

// TestTakePeak: the most sessions held at once since the last call, across
// admissions and ends in between.
func TestTakePeak(t *testing.T) {
	t.Parallel()
	r := newRig(t, strings.Replace(testPolicy, "max_flows: 2", "max_flows: 10", 1))
	var ss []*Session
	for i := range 3 {
		s, _ := r.g.Admit(Packet, netip.AddrPortFrom(cli.Addr(), uint16(41000+i)), inspSrv)
		ss = append(ss, s)
	}
	ss[0].End("fin")
	ss[1].End("fin")
	if p := r.g.TakePeak(); p != 3 {
		t.Fatalf("peak %d, want 3", p)
	}
	if p := r.g.TakePeak(); p != 1 {
		t.Fatalf("peak after the reset %d, want the 1 in progress", p)
	}
}

// TestPollLargeLedger: beyond pollListMax entries a poll looks entries up
// instead of listing the table, and still counts every used and expired
// admission: fresh ones at once, older ones in turns (here two, with 1,300
// older entries), expired ones when their deadline passes.
func TestPollLargeLedger(t *testing.T) {
	t.Parallel()
	doc := strings.Replace(testPolicy, "max_flows: 2", "max_flows: 2000\n  max_sessions_per_client: 2000", 1)
	doc = strings.ReplaceAll(doc, `passive_ports: "50000-50100"`, `passive_ports: "50000-51999"`)
	r := newRig(t, doc)
	ctx := t.Context()
	open := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			s, refused := r.g.Admit(Packet, netip.AddrPortFrom(cli.Addr(), uint16(20000+i)), inspSrv)
			if refused != nil {
				t.Fatal(refused.Reason)
			}
			if _, err := s.OpenPinhole(ctx, passive(uint16(50000+i), inspSrv), false); err != nil {
				t.Fatal(err)
			}
		}
	}
	use := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if !r.tbl.Use(cli.Addr(), inspSrv.Addr(), uint16(50000+i)) {
				t.Fatalf("pinhole %d not usable", i)
			}
		}
	}
	used := func() float64 { return testutilToFloat64(r.g.m.PinholesUsed) }
	const old, fresh = 1300, 5
	open(0, old)
	r.clk.add(3*time.Second, r.tbl) // older than four intervals, not yet due
	open(old, old+fresh)
	use(old, old+fresh) // fresh: looked up at every poll
	use(100, 120)       // old: in turns
	r.g.Poll(ctx)
	if u := used(); u <= fresh || u >= fresh+20 {
		t.Fatalf("used after one poll: %v, want the %d fresh ones and some but not all of the 20 old ones (two turns)", u, fresh)
	}
	r.clk.add(500*time.Millisecond, r.tbl)
	r.g.Poll(ctx)
	if u := used(); u != fresh+20 {
		t.Fatalf("used after two turns: %v, want %d", u, fresh+20)
	}
	// Past their deadline: due, all of them within two polls (budget).
	r.clk.add(30*time.Second, r.tbl)
	r.g.Poll(ctx)
	r.g.Poll(ctx)
	if e := testutilToFloat64(r.g.m.PinholesExpired); e != old-20 {
		t.Fatalf("expired: %v, want %d", e, old-20)
	}
}

// TestHairpinRefused: a client on a published server's own network that
// connects to its public address is refused with the reason (its data
// connections would bypass the translation); one from elsewhere is not.
func TestHairpinRefused(t *testing.T) {
	t.Parallel()
	cfg := parse(t, `servers:
  - name: pub
    mode: inspect
    addresses: [198.51.100.20]
    public: [203.0.113.1]
    passive_ports: "50000-50100"
`)
	g := New(Options{Policy: cfg, Table: nft.NewFake(), QueueKind: nft.QueueCompat,
		LocalPrefixes: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("192.0.2.0/24")}})
	public := netip.MustParseAddrPort("203.0.113.1:21")
	_, ref := g.Admit(Stream, netip.MustParseAddrPort("198.51.100.30:40000"), public)
	if ref == nil || ref.Reason != RefuseHairpin || !strings.HasPrefix(ref.Reply, "421 ") {
		t.Fatalf("inside client: %+v, want a hairpin refusal with a 421", ref)
	}
	if _, ref := g.Admit(Stream, cli, public); ref != nil {
		t.Fatalf("outside client refused: %+v", ref)
	}
}
