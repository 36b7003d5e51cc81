package gateway

import (
	"crypto/tls"
	"net/netip"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/tlspeek"
)

const opaquePolicy = `servers:
  - name: sealed
    mode: opaque
    addresses: [198.51.100.20]
    implicit_tls_ports: [990]
    passive_ports: "50000-50100"
    opaque: {active_ports: "40000-40100"}
    tls: {min_version: "1.3"}
`

var opqSrv = netip.MustParseAddrPort("198.51.100.20:21")

// TestOpaqueLedger: the session's ranges are in the kernel from
// OpenOpaque to its end, refreshed before they expire, restored after a
// rebuild, taken over by a newer session of the same client, and admit
// nothing for another client or another port.
func TestOpaqueLedger(t *testing.T) {
	t.Parallel()
	r := newRig(t, opaquePolicy)
	ctx := t.Context()
	other := netip.MustParseAddr("192.0.2.3")
	s, ref := r.g.Admit(Packet, cli, opqSrv)
	if ref != nil {
		t.Fatalf("refused: %+v", ref)
	}
	if !s.Opaque() || s.Mode != "opaque" {
		t.Fatalf("session mode %q", s.Mode)
	}
	if r.tbl.Use(cli.Addr(), opqSrv.Addr(), 50000) {
		t.Fatal("range open before the handshake")
	}
	if err := s.OpenOpaque(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		src, dst netip.Addr
		port     uint16
		want     bool
	}{
		{cli.Addr(), opqSrv.Addr(), 50000, true}, {cli.Addr(), opqSrv.Addr(), 50100, true},
		{cli.Addr(), opqSrv.Addr(), 50101, false}, {other, opqSrv.Addr(), 50000, false},
		{opqSrv.Addr(), cli.Addr(), 40000, true}, {opqSrv.Addr(), other, 40000, false},
	} {
		if got := r.tbl.Use(c.src, c.dst, c.port); got != c.want {
			t.Errorf("Use(%s, %s, %d) = %v, want %v", c.src, c.dst, c.port, got, c.want)
		}
	}
	// Refreshed by the ledger's task before the timeout: alive after
	// three timeouts.
	for range 9 {
		r.clk.add(OpaqueTimeout/3+time.Second, r.tbl)
		r.g.refreshOpaque(ctx)
	}
	if !r.tbl.Use(cli.Addr(), opqSrv.Addr(), 50000) {
		t.Fatal("range expired while the session lives")
	}
	// A rebuild restores it.
	if err := r.g.Apply(ctx, r.cfg); err != nil {
		t.Fatal(err)
	}
	if !r.tbl.Use(cli.Addr(), opqSrv.Addr(), 50000) {
		t.Fatal("range not restored after a rebuild")
	}
	// A newer session of the same client owns it; the older one's end
	// leaves it.
	s2, _ := r.g.Admit(Packet, netip.AddrPortFrom(cli.Addr(), 40001), opqSrv)
	if err := s2.OpenOpaque(ctx); err != nil {
		t.Fatal(err)
	}
	s.End("fin")
	r.g.Drain(ctx)
	if !r.tbl.Use(cli.Addr(), opqSrv.Addr(), 50000) {
		t.Fatal("the older session's end closed the newer session's range")
	}
	s2.End("fin")
	r.g.Drain(ctx)
	if r.tbl.Use(cli.Addr(), opqSrv.Addr(), 50000) || r.tbl.Use(opqSrv.Addr(), cli.Addr(), 40000) {
		t.Fatal("range open after the session ended")
	}
	if els, _ := r.tbl.Opaques(ctx); len(els) != 0 {
		t.Fatalf("elements left: %v", els)
	}
	if n := len(r.log.lines(t, "opaque range closed")); n != 2 {
		t.Errorf("%d opaque range closed lines, want 2", n)
	}
}

// TestOpaqueJudge: the server's tls.min_version and the suite rule.
func TestOpaqueJudge(t *testing.T) {
	t.Parallel()
	r := newRig(t, opaquePolicy)
	s, _ := r.g.Admit(Packet, cli, opqSrv)
	if s.JudgeServerHello(&tlspeek.ServerHello{Version: tlspeek.VersionTLS12, Suite: tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}) {
		t.Error("TLS 1.2 passed a TLS 1.3 policy")
	}
	if !s.JudgeServerHello(&tlspeek.ServerHello{Version: tlspeek.VersionTLS13, Suite: tls.TLS_AES_128_GCM_SHA256}) {
		t.Error("TLS 1.3 refused")
	}
	if s.JudgeClientHello(&tlspeek.ClientHello{Versions: []uint16{tlspeek.VersionTLS12}, Suites: []uint16{tls.TLS_AES_128_GCM_SHA256}}) {
		t.Error("a TLS 1.2-only ClientHello passed a TLS 1.3 policy")
	}
	got := r.log.lines(t, "refused")
	if len(got) != 2 || got[0]["reason"] != tlspeek.ReasonVersion || got[1]["reason"] != tlspeek.ReasonClientOffer {
		t.Fatalf("refused lines %v", got)
	}
	s.End("rst")
	r.g.Drain(t.Context())

}
