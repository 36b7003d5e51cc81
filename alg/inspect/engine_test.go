package inspect

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/gateway"
	"github.com/ftpsalg/ftpsalg/alg/policy"
	"github.com/ftpsalg/ftpsalg/conntrack"
	"github.com/ftpsalg/ftpsalg/nft"
)

var (
	cli4 = netip.MustParseAddrPort("192.0.2.2:40000")
	srv4 = netip.MustParseAddrPort("198.51.100.2:21")
	cli6 = netip.MustParseAddrPort("[2001:db8:c::2]:40000")
	srv6 = netip.MustParseAddrPort("[2001:db8:5::2]:21")
)

func testPolicy() *policy.Config {
	return &policy.Config{
		Pinholes: policy.Pinholes{Timeout: 5 * time.Second},
		Limits:   policy.Limits{MaxFlows: 4, MaxLine: 512},
		Servers: []policy.Server{{
			Name:         "lab",
			Addresses:    []netip.Addr{srv4.Addr(), srv6.Addr()},
			ControlPorts: []uint16{21},
			PassiveMin:   50000, PassiveMax: 50100,
			Mode:       policy.ModeInspect,
			ActiveMode: true,
			Clients:    []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8:c::/64")},
		}},
	}
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// conv drives one control connection through the engine.
type conv struct {
	t          *testing.T
	e          *Engine
	c, s       netip.AddrPort
	cseq, sseq uint32
}

func newEngine(t *testing.T) (*Engine, *fakeTable, *clock) {
	t.Helper()
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	tbl := newFakeTable(clk.now)
	return newTestEngine(testPolicy(), tbl, clk), tbl, clk
}

// newTestEngine returns an engine over a gateway of its own on tbl.
func newTestEngine(pol *policy.Config, tbl *fakeTable, clk *clock) *Engine {
	gw := gateway.New(gateway.Options{Policy: pol, Table: tbl, Now: clk.now})
	if err := gw.Apply(context.Background(), pol); err != nil {
		panic(err)
	}
	return New(Options{Gateway: gw, Now: clk.now})
}

func (cv *conv) send(fromClient bool, flags uint8, data string) Verdict {
	cv.t.Helper()
	var raw []byte
	if fromClient {
		raw = mkPacket(cv.c, cv.s, cv.cseq, cv.sseq, flags, data)
		cv.cseq += uint32(len(data))
	} else {
		raw = mkPacket(cv.s, cv.c, cv.sseq, cv.cseq, flags, data)
		cv.sseq += uint32(len(data))
	}
	return cv.e.Process(context.Background(), raw)
}

func (cv *conv) client(data string) Verdict { return cv.send(true, flagACK, data) }
func (cv *conv) server(data string) Verdict { return cv.send(false, flagACK, data) }

func open(t *testing.T, e *Engine, c, s netip.AddrPort) *conv {
	t.Helper()
	cv := &conv{t: t, e: e, c: c, s: s, cseq: 1000, sseq: 0xfffffff0} // server seq wraps
	if v := cv.send(true, flagSYN, ""); !v.Accept {
		t.Fatalf("SYN dropped: %s", v.Reason)
	}
	cv.cseq++
	if v := cv.send(false, flagSYN|flagACK, ""); !v.Accept {
		t.Fatalf("SYN-ACK dropped: %s", v.Reason)
	}
	cv.sseq++
	mustAccept(t, cv.server("220 (vsFTPd 3.0.3)\r\n"))
	mustAccept(t, cv.client("USER alice\r\n"))
	mustAccept(t, cv.server("331 Please specify the password.\r\n"))
	mustAccept(t, cv.client("PASS secret\r\n"))
	mustAccept(t, cv.server("230 Login successful.\r\n"))
	return cv
}

func mustAccept(t *testing.T, v Verdict) {
	t.Helper()
	if !v.Accept {
		t.Fatalf("packet dropped: %s", v.Reason)
	}
}

func hole(src, dst netip.Addr, port uint16) nft.Pinhole {
	return nft.Pinhole{Src: src, Dst: dst, DstPort: port}
}

func TestPassiveOpensExactPinhole(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		c, s     netip.AddrPort
		cmd, rep string
		port     uint16
	}{
		{"PASV", cli4, srv4, "PASV\r\n", "227 Entering Passive Mode (198,51,100,2,195,80).\r\n", 50000},
		{"EPSV v4", cli4, srv4, "EPSV\r\n", "229 Entering Extended Passive Mode (|||50001|)\r\n", 50001},
		{"EPSV v6", cli6, srv6, "EPSV\r\n", "229 Entering Extended Passive Mode (|||50002|)\r\n", 50002},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, tbl, _ := newEngine(t)
			cv := open(t, e, tc.c, tc.s)
			mustAccept(t, cv.client(tc.cmd))
			if tbl.adds != 0 {
				t.Fatal("pinhole opened before the reply")
			}
			mustAccept(t, cv.server(tc.rep))
			want := hole(tc.c.Addr(), tc.s.Addr(), tc.port)
			if !tbl.has(want) || tbl.adds != 1 {
				t.Fatalf("want exactly pinhole %+v, table has %v", want, tbl.holes)
			}
		})
	}
}

func TestActiveOpensOnlyAfter200(t *testing.T) {
	t.Parallel()
	e, tbl, _ := newEngine(t)
	cv := open(t, e, cli4, srv4)
	mustAccept(t, cv.client("PORT 192,0,2,2,195,81\r\n"))
	if tbl.adds != 0 {
		t.Fatal("active pinhole opened before the server accepted PORT")
	}
	mustAccept(t, cv.server("200 PORT command successful. Consider using PASV.\r\n"))
	if want := hole(srv4.Addr(), cli4.Addr(), 50001); !tbl.has(want) {
		t.Fatalf("want %+v, have %v", want, tbl.holes)
	}
	mustAccept(t, cv.client("EPRT |1|192.0.2.2|50002|\r\n"))
	mustAccept(t, cv.server("500 Illegal EPRT command.\r\n"))
	if tbl.adds != 1 {
		t.Fatal("pinhole opened although the server refused EPRT")
	}
}

func TestReplySplitAcrossSegments(t *testing.T) {
	t.Parallel()
	e, tbl, _ := newEngine(t)
	cv := open(t, e, cli4, srv4)
	mustAccept(t, cv.client("PASV\r\n"))
	rep := "227 Entering Passive Mode (198,51,100,2,195,80).\r\n"
	for i := 0; i < len(rep)-1; i++ {
		mustAccept(t, cv.server(rep[i:i+1]))
		if tbl.adds != 0 {
			t.Fatalf("pinhole opened after %d of %d bytes", i+1, len(rep))
		}
	}
	mustAccept(t, cv.server(rep[len(rep)-1:]))
	if tbl.adds != 1 {
		t.Fatalf("want 1 pinhole after the line end, got %d", tbl.adds)
	}
}

func TestRetransmissionAndGaps(t *testing.T) {
	t.Parallel()
	e, tbl, _ := newEngine(t)
	cv := open(t, e, cli4, srv4)
	mustAccept(t, cv.client("PASV\r\n"))
	rep := "227 Entering Passive Mode (198,51,100,2,195,80).\r\n"
	// A segment beyond a gap is dropped (the sender retransmits it).
	future := mkPacket(srv4, cli4, cv.sseq+10, cv.cseq, flagACK, rep[10:])
	if v := e.Process(context.Background(), future); v.Accept {
		t.Fatal("segment after a gap accepted")
	}
	seq := cv.sseq
	mustAccept(t, cv.server(rep))
	// Retransmission of the whole line, and an overlapping one.
	for _, raw := range [][]byte{
		mkPacket(srv4, cli4, seq, cv.cseq, flagACK, rep),
		mkPacket(srv4, cli4, seq+5, cv.cseq, flagACK, rep[5:]+"150 x\r\n"),
	} {
		mustAccept(t, e.Process(context.Background(), raw))
	}
	if tbl.adds != 1 {
		t.Fatalf("retransmissions opened %d pinholes, want 1", tbl.adds)
	}
}

func TestCommandMidLineIsNotACommand(t *testing.T) {
	t.Parallel()
	e, tbl, _ := newEngine(t)
	cv := open(t, e, cli4, srv4)
	// NAT-slipstreaming shape: "PORT" begins a segment but not a line.
	mustAccept(t, cv.client("SITE xxxxxxxxxxxxxxxxxxxx "))
	mustAccept(t, cv.client("PORT 192,0,2,2,195,81\r\n"))
	mustAccept(t, cv.server("200 SITE ok\r\n"))
	mustAccept(t, cv.client("NOOP\r\n"))
	mustAccept(t, cv.server("200 NOOP ok.\r\n"))
	if tbl.adds != 0 {
		t.Fatalf("mid-line PORT opened a pinhole: %v", tbl.holes)
	}
}

func TestHostileReplyIsNeutralised(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, cmd, rep, reason string }{
		{"third party", "PASV\r\n", "227 Entering Passive Mode (203,0,113,9,195,80).\r\n", "third_party_address"},
		{"port 22", "PASV\r\n", "227 Entering Passive Mode (198,51,100,2,0,22).\r\n", "privileged_port"},
		{"outside range", "PASV\r\n", "227 Entering Passive Mode (198,51,100,2,234,96).\r\n", "port_outside_range"},
		{"unsolicited", "NOOP\r\n", "227 Entering Passive Mode (198,51,100,2,195,80).\r\n", "unsolicited_reply"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, tbl, _ := newEngine(t)
			cv := open(t, e, cli4, srv4)
			mustAccept(t, cv.client(tc.cmd))
			v := cv.server(tc.rep)
			if tbl.adds != 0 {
				t.Fatal("hostile reply opened a pinhole")
			}
			if !v.Accept || v.Payload == nil {
				t.Fatalf("want the reply rewritten, got %+v", v)
			}
			p, err := parsePacket(v.Payload)
			if err != nil {
				t.Fatal(err)
			}
			if !p.checksumOK() {
				t.Fatal("bad checksum after rewrite")
			}
			if len(p.Payload) != len(tc.rep) || !strings.HasPrefix(string(p.Payload), "425") {
				t.Fatalf("want a same-length 425, got %q", p.Payload)
			}
			if got := testutilCount(e, tc.reason); got != 1 {
				t.Fatalf("refusals{reason=%q} = %v, want 1", tc.reason, got)
			}
		})
	}
}

func TestHostileCommandIsNeutralised(t *testing.T) {
	t.Parallel()
	e, tbl, _ := newEngine(t)
	cv := open(t, e, cli4, srv4)
	cmd := "PORT 192,0,2,256,195,81\r\n"
	seq := cv.cseq
	v := cv.client(cmd)
	if !v.Accept || v.Payload == nil {
		t.Fatalf("want the command rewritten, got %+v", v)
	}
	p, _ := parsePacket(v.Payload)
	if !strings.HasPrefix(string(p.Payload), "XXXX ") || !p.checksumOK() {
		t.Fatalf("got %q (checksum ok %v)", p.Payload, p.checksumOK())
	}
	// A retransmission of the refused command carries the same edit.
	v = e.Process(context.Background(), mkPacket(cli4, srv4, seq, cv.sseq, flagACK, cmd))
	if v.Payload == nil {
		t.Fatal("retransmission of a neutralised command went out unedited")
	}
	if p, _ := parsePacket(v.Payload); !strings.HasPrefix(string(p.Payload), "XXXX ") || !p.checksumOK() {
		t.Fatalf("retransmission: got %q", p.Payload)
	}
	mustAccept(t, cv.server("500 Unknown command.\r\n"))
	if tbl.adds != 0 {
		t.Fatal("pinhole opened for a bad PORT")
	}
}

func TestCommitFailureHoldsTheAnnouncement(t *testing.T) {
	t.Parallel()
	e, tbl, _ := newEngine(t)
	cv := open(t, e, cli4, srv4)
	mustAccept(t, cv.client("PASV\r\n"))
	tbl.fail = 1
	rep := "227 Entering Passive Mode (198,51,100,2,195,80).\r\n"
	seq := cv.sseq
	if v := cv.server(rep); v.Accept {
		t.Fatal("announcement released although its pinhole was not committed")
	}
	// The sender retransmits; now the commit succeeds and the reply passes.
	mustAccept(t, e.Process(context.Background(), mkPacket(srv4, cli4, seq, cv.cseq, flagACK, rep)))
	if !tbl.has(hole(cli4.Addr(), srv4.Addr(), 50000)) {
		t.Fatal("pinhole missing after the retry")
	}
}

func TestClientNotAllowedAndFlowLimit(t *testing.T) {
	t.Parallel()
	e, _, _ := newEngine(t)
	bad := netip.MustParseAddrPort("203.0.113.7:40000")
	if v := e.Process(context.Background(), mkPacket(bad, srv4, 1, 0, flagSYN, "")); v.Accept {
		t.Fatal("SYN from a client outside the allowed prefixes accepted")
	}
	for i := range 4 {
		c := netip.AddrPortFrom(cli4.Addr(), uint16(41000+i))
		mustAccept(t, e.Process(context.Background(), mkPacket(c, srv4, 1, 0, flagSYN, "")))
	}
	c := netip.AddrPortFrom(cli4.Addr(), 42000)
	if v := e.Process(context.Background(), mkPacket(c, srv4, 1, 0, flagSYN, "")); v.Accept || v.Reason != "flow_limit" {
		t.Fatalf("SYN over the flow limit: %+v", v)
	}
}

func TestSessionEndRemovesPinholes(t *testing.T) {
	t.Parallel()
	for _, end := range []string{"rst", "fin", "conntrack"} {
		t.Run(end, func(t *testing.T) {
			t.Parallel()
			e, tbl, _ := newEngine(t)
			cv := open(t, e, cli4, srv4)
			mustAccept(t, cv.client("PASV\r\n"))
			mustAccept(t, cv.server("227 Entering Passive Mode (198,51,100,2,195,80).\r\n"))
			h := hole(cli4.Addr(), srv4.Addr(), 50000)
			switch end {
			case "rst":
				cv.send(true, flagRST, "")
			case "fin":
				cv.send(true, flagFIN|flagACK, "")
				cv.send(false, flagFIN|flagACK, "")
			case "conntrack":
				e.ConntrackEvent(conntrack.Event{Type: conntrack.EventNew, ID: 7, Proto: 6, Src: cli4, Dst: srv4})
				// A late DESTROY of an earlier connection on the same
				// 4-tuple must not end this one.
				e.ConntrackEvent(conntrack.Event{Type: conntrack.EventDestroy, ID: 6, Proto: 6, Src: cli4, Dst: srv4})
				if e.Flows() != 1 {
					t.Fatal("DESTROY of another conntrack ID ended the flow")
				}
				e.ConntrackEvent(conntrack.Event{Type: conntrack.EventDestroy, ID: 7, Proto: 6, Src: cli4, Dst: srv4})
			}
			if e.Flows() != 0 {
				t.Fatal("flow still tracked")
			}
			// The gateway's ledger task settles ended sessions; here
			// the test does it.
			e.gw.Drain(context.Background())
			if tbl.has(h) {
				t.Fatal("pinhole not removed after the session ended")
			}
		})
	}
}

func TestPinholeUsedAndExpiredAreCounted(t *testing.T) {
	t.Parallel()
	e, tbl, clk := newEngine(t)
	cv := open(t, e, cli4, srv4)
	mustAccept(t, cv.client("PASV\r\n"))
	mustAccept(t, cv.server("227 Entering Passive Mode (198,51,100,2,195,80).\r\n"))
	mustAccept(t, cv.client("EPSV\r\n"))
	mustAccept(t, cv.server("229 Entering Extended Passive Mode (|||50001|)\r\n"))
	clk.add(time.Millisecond)
	if !tbl.use(hole(cli4.Addr(), srv4.Addr(), 50000)) {
		t.Fatal("pinhole not usable")
	}
	e.gw.Poll(context.Background())
	clk.add(6 * time.Second)
	e.gw.Poll(context.Background())
	if u, x := counterValue(e.m.PinholesUsed), counterValue(e.m.PinholesExpired); u != 1 || x != 1 {
		t.Fatalf("used %v expired %v, want 1 and 1", u, x)
	}
}

func TestOverlongLineBlocksTheFlow(t *testing.T) {
	t.Parallel()
	e, tbl, _ := newEngine(t)
	cv := open(t, e, cli4, srv4)
	if v := cv.client("SITE " + strings.Repeat("A", 600)); v.Accept {
		t.Fatal("over-long line released")
	}
	if v := cv.client("\r\nPORT 192,0,2,2,195,81\r\n"); v.Accept {
		t.Fatal("data after an over-long line released")
	}
	if v := cv.server("200 PORT command successful.\r\n"); v.Accept {
		t.Fatal("server data on a blocked flow released")
	}
	if tbl.adds != 0 || testutilCount(e, "line_too_long") != 1 {
		t.Fatalf("adds %d, refusals %v", tbl.adds, testutilCount(e, "line_too_long"))
	}
}

// A session that ends must not remove the identical pinhole a newer session
// of the same client opened for the same port in the meantime.
func TestEndedSessionDoesNotRemoveSuccessorsPinhole(t *testing.T) {
	t.Parallel()
	e, tbl, _ := newEngine(t)
	a := open(t, e, cli4, srv4)
	mustAccept(t, a.client("EPSV\r\n"))
	mustAccept(t, a.server("229 Entering Extended Passive Mode (|||50028|)\r\n"))
	h := hole(cli4.Addr(), srv4.Addr(), 50028)
	if !tbl.use(h) {
		t.Fatal("pinhole not usable")
	}
	a.send(true, flagRST, "") // A ends; its cleanup is queued
	b := open(t, e, netip.AddrPortFrom(cli4.Addr(), 40001), srv4)
	mustAccept(t, b.client("EPSV\r\n"))
	mustAccept(t, b.server("229 Entering Extended Passive Mode (|||50028|)\r\n"))
	e.gw.Drain(context.Background())
	if !tbl.has(h) {
		t.Fatal("the ended session's cleanup removed the new session's pinhole")
	}
}

// A new connection reusing the 4-tuple of a flow whose end went unseen
// starts a fresh flow with the new sequence numbers.
func TestReusedTupleStartsFreshFlow(t *testing.T) {
	t.Parallel()
	e, tbl, _ := newEngine(t)
	open(t, e, cli4, srv4) // never closed
	cv := open(t, e, cli4, srv4)
	mustAccept(t, cv.client("EPSV\r\n"))
	mustAccept(t, cv.server("229 Entering Extended Passive Mode (|||50030|)\r\n"))
	if !tbl.has(hole(cli4.Addr(), srv4.Addr(), 50030)) || e.Flows() != 1 {
		t.Fatalf("flows %d, pinholes %v", e.Flows(), tbl.holes)
	}
}
