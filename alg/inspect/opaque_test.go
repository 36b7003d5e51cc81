package inspect

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/gateway"
	"github.com/ftpsalg/ftpsalg/alg/policy"
	"github.com/ftpsalg/ftpsalg/nft"
)

// tlsChunk is what one side of a real crypto/tls connection wrote.
type tlsChunk struct {
	fromClient bool
	b          []byte
}

type tlsRecorder struct {
	net.Conn
	fromClient bool
	mu         *sync.Mutex
	log        *[]tlsChunk
}

func (r tlsRecorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	*r.log = append(*r.log, tlsChunk{r.fromClient, append([]byte(nil), p...)})
	r.mu.Unlock()
	return r.Conn.Write(p)
}

// recordHandshake runs a crypto/tls client (limited to max) and server
// (limited to serverMax)
// over loopback TCP and returns what each wrote, in order.
func recordHandshake(t *testing.T, max, serverMax uint16) []tlsChunk {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "files.example.com"},
		DNSNames: []string{"files.example.com"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	_ = a.SetDeadline(deadline)
	_ = b.SetDeadline(deadline)
	var mu sync.Mutex
	var log []tlsChunk
	srv := tls.Server(tlsRecorder{b, false, &mu, &log}, &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MaxVersion: serverMax})
	done := make(chan struct{})
	go func() {
		defer close(done)
		if srv.Handshake() == nil {
			buf := make([]byte, 64)
			_, _ = srv.Read(buf)
		}
		b.Close()
	}()
	cli := tls.Client(tlsRecorder{a, true, &mu, &log}, &tls.Config{ServerName: "files.example.com", InsecureSkipVerify: true, MaxVersion: max})
	if cli.Handshake() == nil {
		_, _ = cli.Write([]byte("USER alice\r\n"))
	}
	<-done
	a.Close()
	return log
}

type injected struct {
	mu   sync.Mutex
	pkts [][]byte
}

func (i *injected) Inject(p []byte) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.pkts = append(i.pkts, append([]byte(nil), p...))
	return nil
}

func opaqueEngine(t *testing.T, min uint16) (*Engine, *nft.Fake, *gateway.Gateway, *injected) {
	t.Helper()
	pol := testPolicy()
	pol.Servers[0].Mode = policy.ModeOpaque
	pol.Servers[0].ActiveMode = false
	pol.Servers[0].Opaque = &policy.Opaque{MinVersion: min}
	pol.NFTables.Table = nft.DefaultTable
	pol.Queue.Number = 7
	pol.NFTables.CtMark, pol.NFTables.PacketMark = 0x10, 0x20
	tbl := nft.NewFake()
	gw := gateway.New(gateway.Options{Policy: pol, Table: tbl, QueueKind: nft.QueueCompat})
	if err := gw.Apply(context.Background(), pol); err != nil {
		t.Fatal(err)
	}
	inj := &injected{}
	return New(Options{Gateway: gw, Injector: inj}), tbl, gw, inj
}

// TestOpaqueHandshakeOpensRange: a real TLS 1.3 handshake after AUTH TLS
// opens the client's range when it completes, and the range closes with
// the connection.
func TestOpaqueHandshakeOpensRange(t *testing.T) {
	t.Parallel()
	e, tbl, gw, _ := opaqueEngine(t, tls.VersionTLS12)
	cv := open(t, e, cli4, srv4)
	mustAccept(t, cv.client("AUTH TLS\r\n"))
	mustAccept(t, cv.server("234 Proceed with negotiation.\r\n"))
	for i, c := range recordHandshake(t, 0, 0) {
		if els, _ := tbl.Opaques(t.Context()); len(els) != 0 && i == 0 {
			t.Fatal("range open before the handshake")
		}
		mustAccept(t, cv.send(c.fromClient, flagACK, string(c.b)))
	}
	if !tbl.Use(cli4.Addr(), srv4.Addr(), 50042) || tbl.Use(netip.MustParseAddr("192.0.2.3"), srv4.Addr(), 50042) {
		t.Fatal("the range is not exactly the client's")
	}
	mustAccept(t, cv.send(true, flagACK|flagFIN, ""))
	mustAccept(t, cv.send(false, flagACK|flagFIN, ""))
	gw.Drain(t.Context())
	if els, _ := tbl.Opaques(t.Context()); len(els) != 0 {
		t.Fatalf("range left after the connection ended: %v", els)
	}
}

// TestOpaqueServerHelloReset is the reset of a refused ServerHello.
func TestOpaqueServerHelloReset(t *testing.T) {
	t.Parallel()
	// The policy's minimum is 1.3, the client offers 1.3 and 1.2, the
	// server (MaxVersion 1.2) selects 1.2: the ClientHello passes, the
	// ServerHello is refused.
	e, tbl, _, inj := opaqueEngine(t, tls.VersionTLS13)
	cv := open(t, e, cli4, srv4)
	mustAccept(t, cv.client("AUTH TLS\r\n"))
	mustAccept(t, cv.server("234 Proceed with negotiation.\r\n"))
	chunks := recordHandshake(t, 0, tls.VersionTLS12)
	mustAccept(t, cv.send(true, flagACK, string(chunks[0].b)))
	seq, ack := cv.sseq, cv.cseq
	v := cv.send(false, flagACK, string(chunks[1].b))
	if !v.Accept || v.Reason != "tls_refused" || v.Payload == nil {
		t.Fatalf("ServerHello verdict %+v", v)
	}
	var rst packet
	if err := rst.parse(v.Payload); err != nil || rst.Flags != flagRST || rst.Seq != seq || rst.Dst != cli4 || len(rst.Payload) != 0 || !rst.checksumOK() {
		t.Fatalf("verdict packet %+v (%v)", rst, err)
	}
	if len(inj.pkts) != 1 {
		t.Fatalf("%d injected packets, want 1", len(inj.pkts))
	}
	var rev packet
	if err := rev.parse(inj.pkts[0]); err != nil || rev.Flags != flagRST || rev.Seq != ack || rev.Src != cli4 || rev.Dst != srv4 || !rev.checksumOK() {
		t.Fatalf("injected packet %+v (%v)", rev, err)
	}
	if v := cv.client("anything"); v.Accept {
		t.Fatal("the refused flow passed data")
	}
	if els, _ := tbl.Opaques(t.Context()); len(els) != 0 {
		t.Fatalf("range opened for a refused handshake: %v", els)
	}
}
