package inspect

import (
	"context"
	"testing"
)

// FuzzProcess feeds arbitrary packets to the engine after a valid session
// start. Invariants: no panic; a verdict that carries a payload keeps the
// packet's length (the packet path never resizes) and a valid checksum.
func FuzzProcess(f *testing.F) {
	f.Add(mkPacket(srv4, cli4, 0xfffffff1, 1001, flagACK, "227 Entering Passive Mode (198,51,100,2,195,80).\r\n"), byte(0))
	f.Add(mkPacket(cli4, srv4, 1001, 0xfffffff1, flagACK, "PORT 192,0,2,256,195,81\r\n"), byte(1))
	f.Add(mkPacket(cli4, srv4, 1001, 0, flagSYN, ""), byte(2))
	f.Add(mkPacket(cli6, srv6, 1001, 0, flagACK, "EPRT |2|2001:db8:c::2|50000|\r\n"), byte(3))
	f.Add([]byte{0x45, 0, 0, 20}, byte(4))
	f.Fuzz(func(t *testing.T, raw []byte, mutate byte) {
		e, _, _ := newEngine(t)
		cv := &conv{t: t, e: e, c: cli4, s: srv4, cseq: 1000, sseq: 0xfffffff0}
		cv.send(true, flagSYN, "")
		cv.cseq++
		cv.send(false, flagSYN|flagACK, "")
		cv.sseq++
		cv.client("PASV\r\n")
		pkt := append([]byte(nil), raw...)
		if len(pkt) > 0 {
			pkt[int(mutate)%len(pkt)] ^= mutate
		}
		for _, p := range [][]byte{raw, pkt} {
			in := len(p)
			v := e.Process(context.Background(), append([]byte(nil), p...))
			if v.Payload != nil {
				if len(v.Payload) > in {
					t.Fatalf("verdict payload grew from %d to %d bytes", in, len(v.Payload))
				}
				q, err := parsePacket(v.Payload)
				if err != nil || !q.checksumOK() {
					t.Fatalf("rewritten packet invalid: %v", err)
				}
			}
		}
	})
}
