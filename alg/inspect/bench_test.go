package inspect

import (
	"context"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"
)

// BenchmarkProcessSession feeds one whole plaintext control session
// (handshake, login, PASV with its pinhole, LIST, QUIT, FINs) through the
// engine with an in-memory table: the daemon's own CPU cost per session,
// without the queue's system calls.
func BenchmarkProcessSession(b *testing.B) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	tbl := newFakeTable(clk.now)
	pol := testPolicy()
	pol.Limits.MaxFlows = 1 << 20
	e := newTestEngine(pol, tbl, clk)
	ctx := context.Background()
	type step struct {
		fromClient bool
		flags      uint8
		data       string
	}
	script := []step{
		{true, flagSYN, ""}, {false, flagSYN | flagACK, ""}, {true, flagACK, ""},
		{false, flagACK, "220 (vsFTPd 3.0.3)\r\n"}, {true, flagACK, "USER alice\r\n"},
		{false, flagACK, "331 Please specify the password.\r\n"}, {true, flagACK, "PASS secret\r\n"},
		{false, flagACK, "230 Login successful.\r\n"}, {true, flagACK, "PASV\r\n"},
		{false, flagACK, "227 Entering Passive Mode (198,51,100,2,195,80).\r\n"}, {true, flagACK, "LIST\r\n"},
		{false, flagACK, "150 Here comes the directory listing.\r\n"}, {false, flagACK, "226 Directory send OK.\r\n"},
		{true, flagACK, "QUIT\r\n"}, {false, flagACK, "221 Goodbye.\r\n"},
		{false, flagFIN | flagACK, ""}, {true, flagFIN | flagACK, ""},
	}
	// Build the packets once per client port; the engine copies nothing.
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		c := netip.AddrPortFrom(cli4.Addr(), uint16(1024+i%60000))
		cseq, sseq := uint32(1000), uint32(5000)
		for _, s := range script {
			var raw []byte
			if s.fromClient {
				raw = mkPacket(c, srv4, cseq, sseq, s.flags, s.data)
				cseq += uint32(len(s.data))
				if s.flags&(flagSYN|flagFIN) != 0 {
					cseq++
				}
			} else {
				raw = mkPacket(srv4, c, sseq, cseq, s.flags, s.data)
				sseq += uint32(len(s.data))
				if s.flags&(flagSYN|flagFIN) != 0 {
					sseq++
				}
			}
			if v := e.Process(ctx, raw); !v.Accept {
				b.Fatalf("dropped: %s", v.Reason)
			}
		}
		e.gw.Drain(ctx)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(script)), "ns/packet")
}

// BenchmarkProcessPacket feeds the engine the packets of a logged-in
// session's NOOP round trips (command, reply), built once and renumbered
// in place: the per-packet cost of an established flow, which must not
// allocate.
func BenchmarkProcessPacket(b *testing.B) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	tbl := newFakeTable(clk.now)
	e := newTestEngine(testPolicy(), tbl, clk)
	ctx := context.Background()
	c := netip.AddrPortFrom(cli4.Addr(), 40000)
	cseq, sseq := uint32(1000), uint32(5000)
	for _, p := range [][]byte{
		mkPacket(c, srv4, cseq, 0, flagSYN, ""), mkPacket(srv4, c, sseq, cseq+1, flagSYN|flagACK, ""),
	} {
		if v := e.Process(ctx, p); !v.Accept {
			b.Fatalf("handshake dropped: %s", v.Reason)
		}
	}
	cseq, sseq = cseq+1, sseq+1
	cmd := mkPacket(c, srv4, cseq, sseq, flagACK|0x08, "NOOP\r\n")
	rep := mkPacket(srv4, c, sseq, cseq, flagACK|0x08, "200 NOOP ok.\r\n")
	renumber := func(p []byte, seq uint32) {
		pk, err := parsePacket(p)
		if err != nil {
			b.Fatal(err)
		}
		binary.BigEndian.PutUint32(pk.Raw[pk.tcpOff+4:], seq)
		pk.fixChecksum()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += 2 {
		b.StopTimer()
		renumber(cmd, cseq)
		renumber(rep, sseq)
		b.StartTimer()
		if v := e.Process(ctx, cmd); !v.Accept {
			b.Fatalf("command dropped: %s", v.Reason)
		}
		if v := e.Process(ctx, rep); !v.Accept {
			b.Fatalf("reply dropped: %s", v.Reason)
		}
		cseq += 6
		sseq += 14
	}
}
