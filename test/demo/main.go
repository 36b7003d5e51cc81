// Command demo runs ftpsalg's main job on a built-in lab: three network
// namespaces (client, gateway, server), a default-drop firewall on the
// gateway, a real FTP server (vsftpd when installed, else an embedded Go
// server) and real clients (curl when installed, else a Go client), with
// ftpsalg between them. It prints what happened and cleans up. Run as root:
//
//	make demo
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/ftpsalg/ftpsalg/nft"
	"github.com/ftpsalg/ftpsalg/test/ftpc"
	"github.com/ftpsalg/ftpsalg/test/harness"
	"github.com/ftpsalg/ftpsalg/test/lab"
	"github.com/ftpsalg/ftpsalg/test/labftpd"
)

const ctMark = 0x10000000

func main() {
	bin := flag.String("bin", "bin/ftpsalg", "the ftpsalg binary")
	embedded := flag.Bool("embedded", false, "use the embedded Go FTP server and client even when vsftpd and curl are installed")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: needs root (it creates network namespaces and nftables tables)")
		os.Exit(1)
	}
	abs, err := filepath.Abs(*bin)
	if err != nil {
		fail(err)
	}
	tb := lab.Standalone(slog.New(slog.NewTextHandler(io.Discard, nil)))
	code := run(tb, abs, *embedded)
	if err := tb.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "demo: cleanup:", err)
		code = 1
	}
	os.Exit(code)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "demo:", err)
	os.Exit(1)
}

func step(format string, args ...any) { fmt.Printf("\n== "+format+"\n", args...) }

func run(tb *lab.StandaloneTB, bin string, embedded bool) int {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	step("lab: client %s | gateway (default-drop forward policy) | server %s", lab.ClientAddr4, lab.ServerAddr4)
	l := lab.New(tb, lab.Options{Other: true})
	l.InstallGatewayFirewall(ctMark, 2121)
	fmt.Println("   gateway firewall (the operator's table; port 2121 is let through like 21):")
	printIndented(lab.GatewayFirewallRuleset(ctMark))

	useVsftpd := lab.HaveVsftpd() && !embedded
	var user, pass, file string
	var ftps ftpsTarget
	if useVsftpd {
		v := l.StartVsftpd(lab.VsftpdOptions{})
		user, pass, file = v.User, v.Password, "report.bin"
		if _, err := v.CreateFile(file, 4<<20); err != nil {
			fmt.Println("demo:", err)
			return 1
		}
		fmt.Println("   server: vsftpd on port 21, passive ports 50000-50100")
	} else {
		user, pass, file = "demo", "demo", "report.bin"
		l.StartLabftpd(lab.Server, 21, labftpd.Config{User: user, Password: pass,
			Files: map[string][]byte{file: demoData()}, PassiveMin: 50000, PassiveMax: 50100})
		fmt.Println("   server: embedded Go FTP server on port 21 (vsftpd not installed)")
	}
	// A misbehaving server that announces a third party's address.
	l.StartLabftpd(lab.Server, 2121, labftpd.Config{Files: map[string][]byte{"x": []byte("x")},
		PassiveMin: 50090, PassiveMax: 50090, AnnounceAddr: lab.OtherAddr4})

	// An FTPS server too (explicit on 2100, implicit on 990), which
	// ftpsalg reads in mitm mode: the operator's CA signs both the leaves
	// ftpsalg shows clients and, since the operator owns this server, the
	// server's own certificate.
	pki := harness.NewPKI(tb, l.Dir(), harness.PKIOptions{})
	if useVsftpd {
		fv := l.StartVsftpd(lab.VsftpdOptions{Port: 2100, PasvMinPort: 50200, PasvMaxPort: 50300,
			TLS: &lab.VsftpdTLS{CertFile: pki.ServerCert, KeyFile: pki.Server, ImplicitPort: 990}})
		ftps = ftpsTarget{user: fv.User, pass: fv.Password, vsftpd: fv}
		if _, err := fv.CreateFile(file, 4<<20); err != nil {
			fmt.Println("demo:", err)
			return 1
		}
		fmt.Println("   FTPS server: vsftpd, AUTH TLS on port 2100, implicit TLS on 990, passive ports 50200-50300")
	} else {
		cert, err := tls.LoadX509KeyPair(pki.ServerCert, pki.Server)
		if err != nil {
			fmt.Println("demo:", err)
			return 1
		}
		conf := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		files := map[string][]byte{file: demoData()}
		l.StartLabftpd(lab.Server, 2100, labftpd.Config{User: "demo", Password: "demo", Files: files,
			PassiveMin: 50200, PassiveMax: 50300, TLS: conf})
		l.StartLabftpd(lab.Server, 990, labftpd.Config{User: "demo", Password: "demo", Files: files,
			PassiveMin: 50200, PassiveMax: 50300, TLS: conf, ImplicitTLS: true})
		ftps = ftpsTarget{user: "demo", pass: "demo"}
		fmt.Println("   FTPS server: embedded Go server, AUTH TLS on port 2100, implicit TLS on 990")
	}

	policy := fmt.Sprintf(`mitm:
  ca_dir: %[3]s
servers:
  - name: files
    addresses: [%[1]s, "%[2]s"]
    control_ports: [21, 2121]
    passive_ports: "50000-50100"
    mode: inspect
    public: [%[5]s]
  - name: secure
    addresses: [%[1]s, "%[2]s"]
    control_ports: [2100]
    implicit_tls_ports: [990]
    passive_ports: "50200-50300"
    mode: mitm
    tls:
      verify: ca
      ca_file: %[4]s
`, lab.ServerAddr4, lab.ServerAddr6, pki.CADir, pki.CAFile, lab.GatewayClientAddr4)
	step("ftpsalg policy")
	printIndented(policy)
	d := harness.Start(tb, l, bin, policy).Proc
	step("ftpsalg's own table while idle (read back from the kernel)")
	printIndented(tableDump(ctx, l))

	step("transfers through the gateway, sha256-checked")
	ok := true
	haveCurl := commandExists("curl") && !embedded
	for _, tc := range []struct {
		addr netip.Addr
		mode lab.Mode
	}{
		{lab.ServerAddr4, lab.PASV}, {lab.ServerAddr4, lab.EPSV}, {lab.ServerAddr4, lab.PORT},
		{lab.ServerAddr4, lab.EPRT}, {lab.ServerAddr6, lab.EPSV}, {lab.ServerAddr6, lab.EPRT},
	} {
		start := time.Now()
		var sum string
		var n int64
		var err error
		tool := "go client"
		if haveCurl && useVsftpd {
			tool = "curl"
			var tr *lab.Transfer
			tr, err = l.DownloadCurl(ctx, fmt.Sprintf("ftp://%s:%s@%s/%s", user, pass, urlHost(tc.addr), file), tc.mode)
			if err == nil {
				sum, n = tr.SHA256, tr.Size
			}
		} else {
			sum, n, err = goDownload(ctx, l, netip.AddrPortFrom(tc.addr, 21), user, pass, file, tc.mode)
		}
		status := "ok"
		if err != nil {
			status, ok = "FAILED: "+err.Error(), false
		}
		fmt.Printf("   %-4s %-13s via %-9s %8d bytes  sha256 %.16s…  %6.0f ms  %s\n",
			tc.mode, tc.addr, tool, n, sum, float64(time.Since(start).Microseconds())/1000, status)
	}

	step("FTPS through mitm mode: clients trust only the operator CA (%s)", pki.CAFile)
	for _, tc := range []struct {
		addr     netip.Addr
		implicit bool
		mode     lab.Mode
	}{
		{lab.ServerAddr4, false, lab.EPSV}, {lab.ServerAddr4, true, lab.PASV}, {lab.ServerAddr4, false, lab.EPRT},
		{lab.ServerAddr6, true, lab.EPSV}, {lab.ServerAddr6, false, lab.EPRT},
	} {
		start := time.Now()
		sum, n, tool, err := ftps.download(ctx, l, pki, tc.addr, tc.implicit, tc.mode, file, haveCurl)
		status := "ok"
		if err != nil {
			status, ok = "FAILED: "+err.Error(), false
		}
		kind := "AUTH TLS"
		if tc.implicit {
			kind = "implicit"
		}
		fmt.Printf("   %-4s %-8s %-13s via %-9s %8d bytes  sha256 %.16s…  %6.0f ms  %s\n",
			tc.mode, kind, tc.addr, tool, n, sum, float64(time.Since(start).Microseconds())/1000, status)
	}

	step("NAT: the same server published at the gateway's address %s (public: in the policy)", lab.GatewayClientAddr4)
	for _, mode := range []lab.Mode{lab.PASV, lab.EPSV} {
		start := time.Now()
		reply, sum, n, err := publishedDownload(ctx, l, netip.AddrPortFrom(lab.GatewayClientAddr4, 21), user, pass, file, mode)
		status := "ok"
		if err != nil {
			status, ok = "FAILED: "+err.Error(), false
		}
		fmt.Printf("   %-4s %-13s via %-9s %8d bytes  sha256 %.16s…  %6.0f ms  %s\n",
			mode, lab.GatewayClientAddr4, "go client", n, sum, float64(time.Since(start).Microseconds())/1000, status)
		if mode == lab.PASV {
			fmt.Printf("        the server announced its own address %s; the client was told %q\n", lab.ServerAddr4, reply)
		} else {
			fmt.Printf("        EPSV names only a port, reachable at the control address: %q\n", reply)
		}
	}

	step("a hostile server (port 2121) announces a third party, 203.0.113.2")
	sum, _, err := goDownload(ctx, l, netip.AddrPortFrom(lab.ServerAddr4, 2121), "any", "any", "x", lab.PASV)
	if err == nil {
		fmt.Println("   FAILED: the transfer went through:", sum)
		ok = false
	} else {
		fmt.Println("   client was refused, as it should be:", err)
	}

	// Let the pinhole accounting catch up with the last sessions.
	waitFor(ctx, time.Second)
	step("what ftpsalg logged (pinholes and refusals)")
	printLog(d.Log())
	step("ftpsalg status")
	st, _ := l.Run(ctx, lab.Gateway, bin, "status", "--socket", harness.AdminSocket(l))
	printIndented(string(st))

	step("stopping ftpsalg: its table goes with it")
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	defer scancel()
	if err := d.Stop(sctx); err != nil {
		fmt.Println("   ftpsalg exit:", err)
		ok = false
	}
	printIndented(tableDump(ctx, l))
	if !ok {
		fmt.Println("\ndemo: FAILED")
		return 1
	}
	fmt.Println("\ndemo: ok — every transfer used one exact, single-use pinhole; the hostile announcement opened nothing")
	return 0
}

func urlHost(a netip.Addr) string {
	if a.Is6() {
		return "[" + a.String() + "]"
	}
	return a.String()
}

func commandExists(name string) bool { _, err := exec.LookPath(name); return err == nil }

func waitFor(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func goDownload(ctx context.Context, l *lab.Lab, addr netip.AddrPort, user, pass, file string, mode lab.Mode) (string, int64, error) {
	c, err := harness.Client(ctx, l, addr, user, pass)
	if err != nil {
		return "", 0, err
	}
	defer c.Close()
	sum, n, err := c.Retrieve(ctx, ftpc.Mode(mode.String()), file)
	if err != nil {
		return "", n, err
	}
	_ = c.Quit()
	return sum, n, nil
}

// publishedDownload downloads file from a published server with a client
// that trusts the address the 227 names, and returns the announcement it
// was given (the rewritten one).
func publishedDownload(ctx context.Context, l *lab.Lab, addr netip.AddrPort, user, pass, file string, mode lab.Mode) (string, string, int64, error) {
	c, err := harness.Client(ctx, l, addr, user, pass)
	if err != nil {
		return "", "", 0, err
	}
	defer c.Close()
	c.TrustPASV = true
	rep, err := c.Cmd(mode.String())
	if err != nil {
		return "", "", 0, err
	}
	sum, n, err := c.Retrieve(ctx, ftpc.Mode(mode.String()), file)
	if err != nil {
		return rep.String(), "", n, err
	}
	_ = c.Quit()
	return rep.String(), sum, n, nil
}

func printIndented(s string) {
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		fmt.Println("   " + line)
	}
}

// printLog shows the daemon's JSON log lines an operator cares about here.
func printLog(log string) {
	for _, line := range strings.Split(log, "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		msg, _ := rec["msg"].(string)
		switch msg {
		case "pinhole opened", "pinhole used", "pinhole expired", "refused", "session start", "session end",
			"kernel queue support probed", "tls started", "transfer", "operator CA loaded", "mitm listening":
		default:
			continue
		}
		var b strings.Builder
		fmt.Fprintf(&b, "%-16s", msg)
		for _, k := range []string{"client", "server", "mode", "data_mode", "src", "dst", "port", "reason", "detail", "queue_expression",
			"client_tls_version", "upstream_tls_version", "verb", "path", "code", "subject"} {
			if v, ok := rec[k]; ok {
				fmt.Fprintf(&b, " %s=%v", k, v)
			}
		}
		fmt.Println("   " + b.String())
	}
}

func demoData() []byte {
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	return data
}

// ftpsTarget is the demo's FTPS server (vsftpd, or the embedded one).
type ftpsTarget struct {
	user, pass string
	vsftpd     *lab.Vsftpd
}

// download fetches file over FTPS through ftpsalg: with curl when vsftpd
// and curl are installed (curl 7.88 cannot do active FTPS: the Go client
// does those), else with the Go client.
func (f ftpsTarget) download(ctx context.Context, l *lab.Lab, pki *harness.PKI, addr netip.Addr, implicit bool, mode lab.Mode, file string, haveCurl bool) (string, int64, string, error) {
	if f.vsftpd != nil && haveCurl && mode.Passive() {
		url := fmt.Sprintf("ftp://%s:%s@%s:2100/%s", f.user, f.pass, urlHost(addr), file)
		if implicit {
			url = f.vsftpd.ImplicitURL(addr, file)
		}
		tr, err := l.DownloadCurl(ctx, url, mode, "--cacert", pki.CAFile, "--ssl-reqd")
		if err != nil {
			return "", 0, "curl", err
		}
		return tr.SHA256, tr.Size, "curl", nil
	}
	nd := harness.NSDialer{L: l, NS: lab.Client}
	var c *ftpc.Client
	var err error
	if implicit {
		c, err = ftpc.DialTLS(ctx, nd, nd, netip.AddrPortFrom(addr, 990).String(), pki.ClientTLS())
	} else if c, err = ftpc.Dial(ctx, nd, nd, netip.AddrPortFrom(addr, 2100).String()); err == nil {
		err = c.AuthTLS(ctx, pki.ClientTLS())
	}
	if err != nil {
		return "", 0, "go client", err
	}
	defer c.Close()
	c.Timeout = 5 * time.Second
	if err := c.Login(f.user, f.pass); err != nil {
		return "", 0, "go client", err
	}
	if err := c.Protect(true); err != nil {
		return "", 0, "go client", err
	}
	sum, n, err := c.Retrieve(ctx, ftpc.Mode(mode.String()), file)
	if err != nil {
		return "", n, "go client", err
	}
	_ = c.Quit()
	return sum, n, "go client", nil
}

// tableDump reads ftpsalg's table back from the gateway's kernel with the
// nft package (no nft binary needed).
func tableDump(ctx context.Context, l *lab.Lab) string {
	ns, err := os.Open(l.NetNSPath(lab.Gateway))
	if err != nil {
		return err.Error()
	}
	defer ns.Close()
	k, err := nft.New(nft.WithNetNS(int(ns.Fd())), nft.WithTable(nft.DefaultTable))
	if err != nil {
		return err.Error()
	}
	defer k.Close()
	out, err := k.Dump(ctx)
	if errors.Is(err, nft.ErrNoTable) {
		return "table inet ftpsalg: gone"
	}
	if err != nil {
		return err.Error()
	}
	return out
}
