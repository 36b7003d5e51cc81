package lab_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/test/lab"
	"github.com/ftpsalg/ftpsalg/test/labftpd"
)

// pinholeMark is the conntrack mark the operator firewall trusts.
const pinholeMark = 0x10

// fileSize is big enough for many segments, small enough for speed.
const fileSize = 1<<20 + 123

func newLab(t *testing.T, opts lab.Options) *lab.Lab {
	t.Helper()
	lab.RequirePrivileged(t)
	return lab.New(t, opts)
}

func timeout(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

var families = []struct {
	name string
	addr netip.Addr
}{
	{"IPv4", lab.ServerAddr4},
	{"IPv6", lab.ServerAddr6},
}

// transferCase is one client run through the lab.
type transferCase struct {
	tool   string // curl or lftp
	upload bool
	mode   lab.Mode
}

func (c transferCase) String() string {
	dir := "download"
	if c.upload {
		dir = "upload"
	}
	return fmt.Sprintf("%s-%s-%v", c.tool, dir, c.mode)
}

// plainCases are the transfers that must work through a gateway that only
// routes: curl passive both ways, curl active, lftp active and passive.
func plainCases(v6 bool) []transferCase {
	active := lab.PORT
	if v6 {
		active = lab.EPRT
	}
	cases := []transferCase{
		{"curl", false, lab.EPSV},
		{"curl", true, lab.EPSV},
		{"curl", false, lab.EPRT},
		{"lftp", false, active},
		{"lftp", true, lab.EPSV},
	}
	if !v6 {
		cases = append(cases,
			transferCase{"curl", false, lab.PASV},
			transferCase{"curl", true, lab.PASV},
			transferCase{"curl", true, lab.PORT},
			transferCase{"lftp", false, lab.PASV},
		)
	}
	return cases
}

// run performs c against url (a server directory URL ending in "/") and
// checks SHA-256 on both sides; remoteSum returns the server's view.
func run(t *testing.T, l *lab.Lab, c transferCase, dirURL, downName, downSum string, remoteSum func(string) (string, error)) {
	t.Helper()
	ctx := timeout(t, 20*time.Second)
	if !c.upload {
		var tr *lab.Transfer
		var err error
		if c.tool == "curl" {
			tr, err = l.DownloadCurl(ctx, dirURL+downName, c.mode)
		} else {
			tr, err = l.DownloadLftp(ctx, dirURL+downName, c.mode)
		}
		if err != nil {
			t.Fatalf("%v: %v", c, err)
		}
		if tr.SHA256 != downSum || tr.Size != fileSize {
			t.Fatalf("%v: downloaded %d bytes sha256 %s, want %d bytes %s", c, tr.Size, tr.SHA256, fileSize, downSum)
		}
		t.Logf("%v: %d bytes in %v", c, tr.Size, tr.Elapsed.Round(time.Millisecond))
		return
	}
	// Unique per (sub)test: parallel subtests (IPv4 and IPv6) share the
	// client directory and the server's store, and must not overwrite
	// each other's files.
	name := strings.ToLower(strings.NewReplacer("/", "-", " ", "_", ":", "_").Replace(t.Name()+"-"+c.String())) + ".bin"
	src, sum, err := l.ClientFile("src-"+name, fileSize)
	if err != nil {
		t.Fatal(err)
	}
	var tr *lab.Transfer
	if c.tool == "curl" {
		tr, err = l.UploadCurl(ctx, dirURL+name, src, c.mode)
	} else {
		tr, err = l.UploadLftp(ctx, dirURL+name, src, c.mode)
	}
	if err != nil {
		t.Fatalf("%v: %v", c, err)
	}
	got, err := remoteSum(name)
	if err != nil || got != sum {
		t.Fatalf("%v: server has sha256 %s (%v), want %s", c, got, err, sum)
	}
	t.Logf("%v: %d bytes in %v", c, fileSize, tr.Elapsed.Round(time.Millisecond))
}

// TestPlainRouting proves the lab itself: with no ALG and no firewall, the
// gateway routes and every client and mode works against vsftpd.
func TestPlainRouting(t *testing.T) {
	t.Parallel()
	l := newLab(t, lab.Options{})
	v := l.StartVsftpd(lab.VsftpdOptions{})
	sum, err := v.CreateFile("down.bin", fileSize)
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			t.Parallel()
			for _, c := range plainCases(fam.addr.Is6()) {
				t.Run(c.String(), func(t *testing.T) {
					t.Parallel()
					run(t, l, c, v.URL(fam.addr, ""), "down.bin", sum, v.SHA256)
				})
			}
		})
	}
}

// TestFirewallBlocksData shows why an ALG is needed: behind the default-drop
// operator firewall, with no ftpsalg marking pinholes, the control
// connection works but data connections are dropped.
func TestFirewallBlocksData(t *testing.T) {
	t.Parallel()
	l := newLab(t, lab.Options{})
	// vsftpd gives up on a blocked active connection after 1 s (425).
	v := l.StartVsftpd(lab.VsftpdOptions{Extra: []string{"connect_timeout=1"}})
	if _, err := v.CreateFile("down.bin", fileSize); err != nil {
		t.Fatal(err)
	}
	l.InstallGatewayFirewall(pinholeMark)
	rules, err := l.Nft(lab.Gateway, "list", "table", "inet", lab.FirewallTable)
	if err != nil || !strings.Contains(rules, `ct mark & 0x00000010 == 0x00000010 accept comment "ftpsalg pinholes"`) {
		t.Fatalf("firewall not installed: %v\n%s", err, rules)
	}
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			t.Parallel()
			url := v.URL(fam.addr, "down.bin")
			// Control only: curl -I does USER/PASS/SIZE/MDTM, no data.
			out, err := l.Curl(timeout(t, 10*time.Second), "-g", "-sS", "-v", "-I", url)
			if err != nil {
				t.Fatalf("control connection blocked: %v", err)
			}
			if !strings.Contains(string(out), "< 230") || !strings.Contains(string(out), fmt.Sprintf("Content-Length: %d", fileSize)) {
				t.Fatalf("control dialogue incomplete:\n%s", out)
			}
			// Passive data: the client's SYN to the passive port is dropped.
			start := time.Now()
			tr, err := l.DownloadCurl(timeout(t, 10*time.Second), url, lab.EPSV, "--connect-timeout", "2")
			if err == nil {
				t.Fatalf("passive download succeeded through the firewall:\n%s", tr.Output)
			}
			// curl says 28 (timeout), or 7/8 when it gives up on EPSV
			// after the connect timeout; either way the SYN went
			// unanswered (dropped, not refused).
			if code := lab.ExitCode(err); code != 28 && code != 7 && code != 8 {
				t.Fatalf("passive download: got %v (exit %d), want a data connect failure (7, 8, 28)", err, code)
			}
			if lower := strings.ToLower(tr.Output); !strings.Contains(lower, "timeout") && !strings.Contains(lower, "time-out") {
				t.Errorf("data connection failed without a timeout:\n%s", tr.Output)
			}
			for _, want := range []string{"< 230", "> EPSV", "< 229"} {
				if !strings.Contains(tr.Output, want) {
					t.Errorf("control dialogue lacks %q:\n%s", want, tr.Output)
				}
			}
			t.Logf("passive download blocked after %v (curl exit %d)", time.Since(start).Round(time.Millisecond), lab.ExitCode(err))
		})
	}
	t.Run("IPv4-active", func(t *testing.T) {
		t.Parallel()
		// Active data: vsftpd's SYN from port 20 to the client is dropped.
		tr, err := l.DownloadCurl(timeout(t, 10*time.Second), v.URL(lab.ServerAddr4, "down.bin"), lab.PORT)
		if err == nil {
			t.Fatalf("active download succeeded through the firewall:\n%s", tr.Output)
		}
		for _, want := range []string{"< 200 PORT command successful", "< 425 Failed to establish connection"} {
			if !strings.Contains(tr.Output, want) {
				t.Errorf("no %q in:\n%s", want, tr.Output)
			}
		}
	})
}

// TestGatewayHelperFirewall checks the benchmark baseline: the same
// default-drop policy with the kernel's FTP helper lets data through.
func TestGatewayHelperFirewall(t *testing.T) {
	t.Parallel()
	l := newLab(t, lab.Options{})
	v := l.StartVsftpd(lab.VsftpdOptions{})
	sum, err := v.CreateFile("down.bin", fileSize)
	if err != nil {
		t.Fatal(err)
	}
	l.GatewayHelperFirewall()
	for _, c := range []struct {
		addr netip.Addr
		c    transferCase
	}{
		{lab.ServerAddr4, transferCase{"curl", false, lab.PASV}},
		{lab.ServerAddr4, transferCase{"lftp", false, lab.PORT}},
		{lab.ServerAddr6, transferCase{"curl", false, lab.EPSV}},
		{lab.ServerAddr6, transferCase{"curl", true, lab.EPRT}},
	} {
		run(t, l, c.c, v.URL(c.addr, ""), "down.bin", sum, v.SHA256)
	}
	ct, err := l.Conntrack(lab.Gateway)
	if err != nil || !strings.Contains(ct, "helper=ftp") {
		t.Errorf("no helper-assigned conntrack entry (%v):\n%s", err, ct)
	}
}

// TestLabftpd runs the embedded server inside the server namespace (its
// passive listeners must be created there too) and a hostile variant that
// points clients at the third-party host.
func TestLabftpd(t *testing.T) {
	t.Parallel()
	l := newLab(t, lab.Options{Other: true})
	data := make([]byte, fileSize)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(data)
	sum := hex.EncodeToString(h[:])
	files := map[string][]byte{"down.bin": data}
	l.StartLabftpd(lab.Server, 21, labftpd.Config{User: "u", Password: "p", Files: files, PassiveMin: 50000, PassiveMax: 50100})
	remote := func(name string) (string, error) {
		// Download it back through the server: the store is in memory.
		tr, err := l.DownloadCurl(timeout(t, 10*time.Second), "ftp://u:p@198.51.100.2/"+name, lab.EPSV)
		if err != nil {
			return "", err
		}
		return tr.SHA256, nil
	}
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			t.Parallel()
			host := fam.addr.String()
			if fam.addr.Is6() {
				host = "[" + host + "]"
			}
			for _, c := range plainCases(fam.addr.Is6()) {
				run(t, l, c, "ftp://u:p@"+host+"/", "down.bin", sum, remote)
			}
		})
	}
	t.Run("hostile-227", func(t *testing.T) {
		t.Parallel()
		sink := l.StartSink(lab.Other, netip.AddrPortFrom(lab.OtherAddr4, 0))
		l.StartLabftpd(lab.Server, 2121, labftpd.Config{
			Files:        files,
			AnnounceAddr: lab.OtherAddr4,
			AnnouncePort: func(uint16) uint16 { return sink.Addr().Port() },
			DataTimeout:  time.Second,
		})
		tr, err := l.DownloadCurl(timeout(t, 10*time.Second), "ftp://x:y@198.51.100.2:2121/down.bin", lab.PASV)
		if err == nil {
			t.Fatalf("download via a third-party 227 succeeded:\n%s", tr.Output)
		}
		want := fmt.Sprintf("< 227 Entering Passive Mode (203,0,113,2,%d,%d)", sink.Addr().Port()>>8, sink.Addr().Port()&0xff)
		if !strings.Contains(tr.Output, want) {
			t.Errorf("no %q in:\n%s", want, tr.Output)
		}
		// With plain routing the client does reach the third party: the
		// plumbing negative tests rely on (an ALG must stop this).
		deadline := time.Now().Add(5 * time.Second)
		for sink.Conns() == 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond) // poll with a deadline
		}
		if sink.Conns() != 1 {
			t.Errorf("sink in %s got %d connections, want 1", lab.Other, sink.Conns())
		}
	})
}

// TestNamespaces checks addressing, routing, sysctls, InNS and that cleanup
// kills tracked and stray processes and deletes every namespace.
func TestNamespaces(t *testing.T) {
	t.Parallel()
	var names []string
	var tracked int
	var stray *exec.Cmd
	t.Run("lab", func(t *testing.T) {
		l := newLab(t, lab.Options{Other: true})
		for _, ns := range []string{lab.Client, lab.Gateway, lab.Server, lab.Other} {
			names = append(names, l.Name(ns))
			if !strings.HasPrefix(l.Name(ns), "ftpsalg-"+l.ID()+"-") {
				t.Errorf("namespace name %q", l.Name(ns))
			}
		}
		ctx := timeout(t, 10*time.Second)
		for _, c := range []struct{ ns, link, want string }{
			{lab.Gateway, lab.GatewayClientLink, "1\n1\n0\n"},
			{lab.Client, lab.HostLink, "0\n0\n0\n"},
		} {
			out, err := l.Run(ctx, c.ns, "sysctl", "-n", "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding", "net.ipv6.conf."+c.link+".accept_dad")
			if err != nil || string(out) != c.want {
				t.Errorf("%s sysctls: got %q (%v), want %q", c.ns, out, err, c.want)
			}
		}
		for _, ns := range []string{lab.Client, lab.Gateway, lab.Server, lab.Other} {
			out, err := l.Run(ctx, ns, "ip", "-6", "address", "show", "tentative")
			if err != nil || len(out) != 0 {
				t.Errorf("%s has tentative IPv6 addresses (%v):\n%s", ns, err, out)
			}
		}
		// Go sockets through InNS: server listens, client and other dial
		// across the gateway on both families.
		for _, target := range []netip.Addr{lab.ServerAddr4, lab.ServerAddr6} {
			ln, err := l.Listen(lab.Server, "tcp", netip.AddrPortFrom(target, 0).String())
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				io.Copy(c, c)
			}()
			for _, from := range []string{lab.Client, lab.Other} {
				c, err := l.Dial(ctx, from, "tcp", netip.AddrPort{}, netip.MustParseAddrPort(ln.Addr().String()))
				if err != nil {
					t.Fatalf("dial %s from %s: %v", ln.Addr(), from, err)
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if from == lab.Client {
					want := "ping " + target.String()
					fmt.Fprint(c, want)
					c.(*net.TCPConn).CloseWrite()
					b, err := io.ReadAll(c)
					if err != nil || string(b) != want {
						t.Errorf("echo via %s: got %q (%v)", target, b, err)
					}
					local := netip.MustParseAddrPort(c.LocalAddr().String()).Addr()
					if local != lab.ClientAddr4 && local != lab.ClientAddr6 {
						t.Errorf("client's source address %s", local)
					}
				}
				c.Close()
			}
		}
		err := l.InNS(lab.Client, func() error {
			ifs, err := net.Interfaces()
			if err != nil {
				return err
			}
			for _, i := range ifs {
				if i.Name == lab.HostLink {
					return nil
				}
			}
			return errors.New("no eth0 in client")
		})
		if err != nil {
			t.Error(err)
		}
		tracked = l.Start(lab.Server, "sleep", "300").PID()
		// Start returns once `ip netns exec` runs, before it has switched
		// to the namespace: cleanup listing the namespace's processes
		// then would miss it, and the sleep would outlive a deleted
		// namespace. The stray says it is in the namespace (the shell
		// runs after the switch) before the lab ends.
		stray = l.Exec(lab.Client, "sh", "-c", "echo in-namespace; exec sleep 300")
		out, err := stray.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := stray.Start(); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil || line != "in-namespace\n" {
			t.Fatalf("stray: %q, %v", line, err)
		}
	})
	if stray == nil {
		return
	}
	waited := make(chan error, 1)
	go func() { waited <- stray.Wait() }()
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Errorf("stray process %d survived cleanup", stray.Process.Pid)
	}
	if err := syscall.Kill(tracked, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("tracked process %d survived cleanup (kill 0: %v)", tracked, err)
	}
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if strings.Contains(string(out), n) {
			t.Errorf("namespace %s survived cleanup", n)
		}
	}
}

// TestStandalone checks the adapter for programs: cleanup runs on Close.
func TestStandalone(t *testing.T) {
	t.Parallel()
	lab.RequirePrivileged(t)
	tb := lab.Standalone(nil)
	l := lab.New(tb, lab.Options{})
	name := l.Name(lab.Gateway)
	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), name) {
		t.Errorf("namespace %s survived Close", name)
	}
}

// TestVsftpdTLS checks the TLS settings: explicit FTPS (AUTH TLS) on 21 and
// implicit FTPS on 990, with a certificate minted by the lab.
func TestVsftpdTLS(t *testing.T) {
	t.Parallel()
	l := newLab(t, lab.Options{})
	cert, key := l.SelfSignedCert()
	v := l.StartVsftpd(lab.VsftpdOptions{TLS: &lab.VsftpdTLS{
		CertFile: cert, KeyFile: key, ForceData: true, ForceLogin: true, ImplicitPort: 990,
	}})
	sum, err := v.CreateFile("down.bin", fileSize)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		url  string
		mode lab.Mode
	}{
		{"explicit-IPv4", v.URL(lab.ServerAddr4, "down.bin"), lab.PASV},
		{"explicit-IPv6", v.URL(lab.ServerAddr6, "down.bin"), lab.EPSV},
		{"implicit-IPv4", v.ImplicitURL(lab.ServerAddr4, "down.bin"), lab.EPSV},
	} {
		start := time.Now()
		tr, err := l.DownloadCurl(timeout(t, 10*time.Second), c.url, c.mode, "--ssl-reqd", "--cacert", cert)
		t.Logf("%s: %v", c.name, time.Since(start))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if tr.SHA256 != sum {
			t.Fatalf("%s: sha256 %s, want %s", c.name, tr.SHA256, sum)
		}
		if !strings.Contains(tr.Output, "SSL connection using TLSv1.3") {
			t.Errorf("%s: no TLS 1.3 in:\n%s", c.name, tr.Output)
		}
	}
	// Without TLS the login is refused (force_local_logins_ssl).
	if _, err := l.DownloadCurl(timeout(t, 10*time.Second), v.URL(lab.ServerAddr4, "down.bin"), lab.EPSV); err == nil {
		t.Error("plain-FTP login accepted by a TLS-only server")
	}
}

// TestVsftpdPasvAddress checks the hostile-server knob of vsftpd: a 227
// naming the third-party host, which plain routing lets the client reach.
func TestVsftpdPasvAddress(t *testing.T) {
	t.Parallel()
	l := newLab(t, lab.Options{Other: true})
	const port = 50500
	sink := l.StartSink(lab.Other, netip.AddrPortFrom(lab.OtherAddr4, port))
	v := l.StartVsftpd(lab.VsftpdOptions{
		PasvAddress: lab.OtherAddr4, PasvMinPort: port, PasvMaxPort: port,
		Extra: []string{"accept_timeout=1"}, // 425 soon after the client went elsewhere
	})
	if _, err := v.CreateFile("down.bin", 1000); err != nil {
		t.Fatal(err)
	}
	tr, err := l.DownloadCurl(timeout(t, 10*time.Second), v.URL(lab.ServerAddr4, "down.bin"), lab.PASV)
	if err == nil {
		t.Fatalf("download through a third-party 227 succeeded:\n%s", tr.Output)
	}
	if want := "< 227 Entering Passive Mode (203,0,113,2,197,68)."; !strings.Contains(tr.Output, want) {
		t.Errorf("no %q in:\n%s", want, tr.Output)
	}
	if sink.Conns() != 1 {
		t.Errorf("third party got %d connections, want 1", sink.Conns())
	}
}
