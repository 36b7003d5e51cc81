package integration

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/test/ftpc"
	"github.com/ftpsalg/ftpsalg/test/harness"
	"github.com/ftpsalg/ftpsalg/test/lab"
)

// natLayout is one of the two NAT layouts of docs/nat.md.
type natLayout string

const (
	// published: the client reaches the server only through the gateway's
	// address on the client side (lab.GatewayClientAddr4); its IPv4 route
	// to the server's network is removed.
	published natLayout = "published"
	// masqueraded: the client's network is a clients entry translated to
	// the gateway's address on the server side (lab.GatewayServerAddr4);
	// the server's IPv4 route back to the client's network is removed.
	masqueraded natLayout = "masqueraded"
)

// natPublic is the published server's public address; natAddress the
// masqueraded clients' NAT address.
var (
	natPublic  = lab.GatewayClientAddr4
	natPublic6 = lab.GatewayClientAddr6 // NAT66: the published server's IPv6 public address
	natAddress = lab.GatewayServerAddr4
)

// natServerYAML is what the layout adds to the lab server's policy.
func natServerYAML(layout natLayout) string {
	if layout == published {
		return fmt.Sprintf("    public: [%s, \"%s\"]\n    public_ports: \"40000-40099\"\n", natPublic, natPublic6)
	}
	return ""
}

// natTopYAML is what the layout adds at the policy's top level: the
// clients entry, and a pinhole timeout long enough that a translation
// still there after its session is a bug, not a leftover about to expire.
func natTopYAML(layout natLayout) string {
	s := "pinholes:\n  timeout: 60s\n"
	if layout == masqueraded {
		s += fmt.Sprintf("clients:\n  - name: lab-office\n    prefixes: [\"192.0.2.0/24\"]\n    nat_addresses: [%s]\n    nat_ports: \"51000-51099\"\n", natAddress)
	}
	return s
}

// cutRoutes removes the IPv4 route that would let the layout work without
// translation: the client's to the server (published) or the server's to
// the client (masqueraded). IPv6 stays routed: it has no NAT in the lab.
func cutRoutes(t *testing.T, l *lab.Lab, layout natLayout) {
	t.Helper()
	ns := lab.Client
	if layout == masqueraded {
		ns = lab.Server
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := l.Run(ctx, ns, "ip", "-4", "route", "del", "default"); err != nil {
		t.Fatalf("failed to remove the default route in %s: %v %s", ns, err, out)
	}
}

// natTarget is the IPv4 address the client connects to in the layout.
func natTarget(layout natLayout) netip.Addr {
	if layout == published {
		return natPublic
	}
	return lab.ServerAddr4
}

// client tool variants: the lab's curl and lftp helpers trust the announced
// address (curl --no-ftp-skip-pasv-ip, lftp ftp:fix-pasv-address no); the
// "default" variants put back each tool's default.
type natTool struct {
	name  string
	lftp  bool
	extra []string
}

var natTools = []natTool{
	{name: "curl-trusting"},
	{name: "curl-default", extra: []string{"--ftp-skip-pasv-ip"}},
	{name: "lftp-trusting", lftp: true},
	{name: "lftp-default", lftp: true, extra: []string{"set ftp:fix-pasv-address yes"}},
}

// TestNATInspect: plaintext vsftpd through both layouts in inspect mode:
// every data mode over IPv4 with curl and lftp (address-trusting and
// default), uploads and downloads with the Go client, IPv6 routed without
// translation; every announcement translated, nothing refused or left
// open.
func TestNATInspect(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	for _, layout := range []natLayout{published, masqueraded} {
		t.Run(string(layout), func(t *testing.T) {
			t.Parallel()
			l := lab.New(t, lab.Options{})
			l.InstallGatewayFirewall(ctMark)
			v := l.StartVsftpd(lab.VsftpdOptions{})
			d := startDaemon(t, l, policyFor([]int{21}, natServerYAML(layout)+"    active_mode: true\n", natTopYAML(layout)))
			cutRoutes(t, l, layout)
			natTransfers(t, l, d, v, layout, nil)
		})
	}
}

// natTransfers runs the transfer matrix of a NAT layout and checks the
// daemon's counters afterwards. tlsArgs, when set, are the curl options of
// an FTPS run (and the Go client then uses goTLS).
func natTransfers(t *testing.T, l *lab.Lab, d *harness.Daemon, v *lab.Vsftpd, layout natLayout, tls *natTLS) {
	t.Helper()
	const size = 1 << 20
	if _, err := v.CreateFile("down.bin", size); err != nil {
		t.Fatal(err)
	}
	want, err := v.SHA256("down.bin")
	if err != nil {
		t.Fatal(err)
	}
	target := natTarget(layout)
	translated := 0
	passive, active := 0, 0 // transfers by data mode, IPv4
	for _, mode := range lab.Modes {
		for _, tool := range natTools {
			if tool.lftp && mode == lab.EPRT {
				continue // lftp 4.9 sends EPRT only over IPv6; curl and the Go client cover EPRT over IPv4
			}
			if !mode.Passive() && strings.HasSuffix(tool.name, "default") {
				continue // the defaults differ only in how they read a 227
			}
			if tls != nil && !tool.lftp && !mode.Passive() {
				continue // curl 7.88 cannot do active FTPS
			}
			name := fmt.Sprintf("%s/%s", mode, tool.name)
			t.Run(name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				var tr *lab.Transfer
				var err error
				url := v.URL(target, "down.bin")
				if tool.lftp {
					extra := tool.extra
					if tls != nil {
						extra = append(append([]string{}, extra...), tls.lftp...)
					}
					tr, err = l.DownloadLftp(ctx, url, mode, extra...)
				} else {
					extra := tool.extra
					if tls != nil {
						extra = append(append([]string{}, extra...), tls.curl...)
					}
					tr, err = l.DownloadCurl(ctx, url, mode, extra...)
				}
				if err != nil {
					out := ""
					if tr != nil {
						out = tr.Output
					}
					t.Fatalf("download: %v\n%s\n%s", err, out, d.Proc.Log())
				}
				if tr.SHA256 != want {
					t.Fatalf("download sha256 %s, want %s", tr.SHA256, want)
				}
			})
			translated++
			if mode.Passive() {
				passive++
			} else {
				active++
			}
		}
	}
	// The Go client, every mode, download and upload, trusting the 227.
	up, upSum, err := l.ClientFile("up.bin", size)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []ftpc.Mode{ftpc.PASV, ftpc.EPSV, ftpc.PORT, ftpc.EPRT} {
		t.Run(fmt.Sprintf("%s/go", mode), func(t *testing.T) {
			c := natGoClient(t, l, netip.AddrPortFrom(target, 21), v, tls)
			c.TrustPASV = true
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			sum, _, err := c.Retrieve(ctx, mode, "down.bin")
			if err != nil || sum != want {
				t.Fatalf("retrieve: %s %v; want %s\n%s", sum, err, want, d.Proc.Log())
			}
			remote := fmt.Sprintf("up-%s.bin", mode)
			if err := storeFile(ctx, c, mode, remote, up); err != nil {
				t.Fatalf("store: %v", err)
			}
			if got, err := v.SHA256(remote); err != nil || got != upSum {
				t.Fatalf("uploaded sha256 %s (%v), want %s", got, err, upSum)
			}
			if err := c.Quit(); err != nil {
				t.Fatalf("quit: %v", err)
			}
		})
		translated += 2
		if mode == ftpc.PASV || mode == ftpc.EPSV {
			passive += 2
		} else {
			active += 2
		}
	}
	// IPv6 is routed and not translated; it still works.
	t.Run("v6/EPSV/curl", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		var extra []string
		if tls != nil {
			extra = tls.curl
		}
		tr, err := l.DownloadCurl(ctx, v.URL(lab.ServerAddr6, "down.bin"), lab.EPSV, extra...)
		if err != nil || tr.SHA256 != want {
			t.Fatalf("IPv6 download: %v", err)
		}
	})
	if layout == published {
		// NAT66: the same server through its IPv6 public address.
		for _, mode := range []lab.Mode{lab.EPSV, lab.EPRT} {
			if tls != nil && mode == lab.EPRT {
				continue // curl 7.88 cannot do active FTPS
			}
			t.Run("v6-nat66/"+mode.String()+"/curl", func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				var extra []string
				if tls != nil {
					extra = tls.curl
				}
				tr, err := l.DownloadCurl(ctx, v.URL(natPublic6, "down.bin"), mode, extra...)
				if err != nil || tr.SHA256 != want {
					out := ""
					if tr != nil {
						out = tr.Output
					}
					t.Fatalf("NAT66 download: %v\n%s\n%s", err, out, d.Proc.Log())
				}
			})
			if mode == lab.EPSV {
				passive++
			}
		}
	}
	m := d.Metrics()
	count := func(mode string) float64 {
		return m[`ftpsalg_nat_translations_total{data_mode="`+mode+`",port="kept"}`] +
			m[`ftpsalg_nat_translations_total{data_mode="`+mode+`",port="moved"}`]
	}
	// Published: every passive announcement is translated, active ones
	// are not (the client knows its own address). Masqueraded: every
	// active one, passive ones not (the server's address is public).
	wantPassive, wantActive := passive, 0
	if layout == masqueraded {
		wantPassive, wantActive = 0, active
	}
	if count("passive") != float64(wantPassive) || count("active") != float64(wantActive) {
		t.Errorf("translations passive %v, active %v; want %d, %d (%d passive and %d active transfers)",
			count("passive"), count("active"), wantPassive, wantActive, passive, active)
	}
	for k, val := range m {
		if (strings.HasPrefix(k, "ftpsalg_policy_refusals_total") || strings.HasPrefix(k, "ftpsalg_nat_failures_total")) && val != 0 {
			t.Errorf("%s = %v, want 0", k, val)
		}
	}
	opened := m[`ftpsalg_pinholes_opened_total{data_mode="passive"}`] + m[`ftpsalg_pinholes_opened_total{data_mode="active"}`]
	d.WaitMetric("ftpsalg_pinholes_used_total", opened)
	if els := d.PinholeElements(); els != "" {
		t.Fatalf("pinholes left open:\n%s", els)
	}
	// Every reservation and every translation goes with its session, long
	// before its timeout (natTopYAML sets 60 s).
	if _, ok := d.Metrics()["ftpsalg_nat_ports_reserved"]; !ok {
		t.Fatal("no ftpsalg_nat_ports_reserved metric")
	}
	d.WaitMetric("ftpsalg_nat_ports_reserved", 0)
	deadline := time.Now().Add(10 * time.Second)
	for _, m := range []string{"dnat4", "dnat6", "snat4", "snat6"} {
		for {
			out, err := l.Nft(lab.Gateway, "list", "map", "inet", "ftpsalg", m)
			if err != nil {
				t.Fatalf("nft list map %s: %v", m, err)
			}
			if !strings.Contains(out, "elements") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("translations left in %s after their sessions ended:\n%s", m, out)
			}
			time.Sleep(100 * time.Millisecond) // poll interval
		}
	}
	t.Logf("%d transfers; translated as expected: %d passive, %d active announcements", translated, passive, active)
}

// natTLS are the FTPS settings of a mitm run.
type natTLS struct {
	curl, lftp []string
	pki        *harness.PKI
}

// natGoClient logs in with the Go client (over TLS with PROT P for a mitm
// run).
func natGoClient(t *testing.T, l *lab.Lab, addr netip.AddrPort, v *lab.Vsftpd, tls *natTLS) *ftpc.Client {
	t.Helper()
	if tls == nil {
		return goClient(t, l, addr, v.User, v.Password)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := ftpc.Dial(ctx, harness.NSDialer{L: l, NS: lab.Client}, harness.NSDialer{L: l, NS: lab.Client}, addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.AuthTLS(ctx, tls.pki.ClientTLS()); err != nil {
		t.Fatalf("AUTH TLS: %v", err)
	}
	if err := c.Login(v.User, v.Password); err != nil {
		t.Fatal(err)
	}
	if err := c.Protect(true); err != nil {
		t.Fatal(err)
	}
	return c
}

func storeFile(ctx context.Context, c *ftpc.Client, mode ftpc.Mode, remote, local string) error {
	f, err := os.Open(local)
	if err != nil {
		return err
	}
	defer f.Close()
	_, _, err = c.Store(ctx, mode, remote, f)
	return err
}

// TestNATMITM: FTPS vsftpd through both layouts in mitm mode: curl
// (passive) and lftp (all modes it has) trusting only the operator CA, the
// Go client in every mode with PROT P; IPv6 routed without translation.
func TestNATMITM(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	for _, layout := range []natLayout{published, masqueraded} {
		t.Run(string(layout), func(t *testing.T) {
			t.Parallel()
			// Passthrough: a server that does not require session reuse.
			l, v, d, tls := natMITMLab(t, layout, false, "")
			natTransfers(t, l, d, v, layout, tls)
			// Implicit FTPS (990) through the same layout, both data modes
			// of curl, which trusts only the operator CA.
			natImplicit(t, l, d, v, layout, tls)
		})
	}
}

// TestNATLongPipelinedSession: one control session through the published
// layout moves 50 files, each after a rewritten 227 (or a 229), with
// commands pipelined several to a write: no stall, no reset, and the
// session ends with 221.
func TestNATLongPipelinedSession(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	l := lab.New(t, lab.Options{})
	l.InstallGatewayFirewall(ctMark)
	v := l.StartVsftpd(lab.VsftpdOptions{})
	d := startDaemon(t, l, policyFor([]int{21}, natServerYAML(published), ""))
	cutRoutes(t, l, published)
	if _, err := v.CreateFile("f.bin", 64<<10); err != nil {
		t.Fatal(err)
	}
	want, err := v.SHA256("f.bin")
	if err != nil {
		t.Fatal(err)
	}
	c := goClient(t, l, netip.AddrPortFrom(natPublic, 21), v.User, v.Password)
	dialer := harness.NSDialer{L: l, NS: lab.Client}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	for i := range 50 {
		verb := "PASV"
		if i%3 == 2 {
			verb = "EPSV"
		}
		// Three commands in one write: the proxy must answer each in turn.
		if err := c.Raw([]byte("TYPE I\r\nNOOP\r\n" + verb + "\r\n")); err != nil {
			t.Fatalf("transfer %d: write: %v", i, err)
		}
		for _, wantCode := range []int{200, 200} {
			r, err := c.Read()
			if err != nil || r.Code != wantCode {
				t.Fatalf("transfer %d: reply %v %v; want %d\n%s", i, r, err, wantCode, d.Proc.Log())
			}
		}
		r, err := c.Read()
		if err != nil {
			t.Fatalf("transfer %d: %s reply: %v\n%s", i, verb, err, d.Proc.Log())
		}
		var target netip.AddrPort
		switch verb {
		case "PASV":
			if r.Code != 227 {
				t.Fatalf("transfer %d: %v", i, r)
			}
			if target, err = ftpc.ParsePASV(r.Text); err != nil || target.Addr() != natPublic {
				t.Fatalf("transfer %d: 227 %q names %s (%v); want the public address", i, r.Text, target, err)
			}
		default:
			p, err := ftpc.ParseEPSV(r.Text)
			if r.Code != 229 || err != nil {
				t.Fatalf("transfer %d: %v %v", i, r, err)
			}
			target = netip.AddrPortFrom(natPublic, p)
		}
		dc, err := dialer.DialContext(ctx, "tcp4", target.String())
		if err != nil {
			t.Fatalf("transfer %d: data connection to %s: %v", i, target, err)
		}
		// RETR and a pipelined NOOP behind it.
		if err := c.Raw([]byte("RETR f.bin\r\nNOOP\r\n")); err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		_, err = io.Copy(h, dc)
		dc.Close()
		if got := hex.EncodeToString(h.Sum(nil)); err != nil || got != want {
			t.Fatalf("transfer %d: sha256 %s (%v); want %s", i, got, err, want)
		}
		for _, want := range []int{226, 200} { // Read skips the 150
			r, err := c.Read()
			if err != nil || r.Code != want {
				t.Fatalf("transfer %d: reply %v %v; want %d", i, r, err, want)
			}
		}
	}
	// The session holds its public ports until it ends.
	if got := d.Metrics()["ftpsalg_nat_ports_reserved"]; got < 1 {
		t.Fatalf("ftpsalg_nat_ports_reserved = %v during the session; want at least 1", got)
	}
	if err := c.Quit(); err != nil {
		t.Fatalf("QUIT after 50 transfers: %v", err)
	}
	d.WaitMetric("ftpsalg_nat_ports_reserved", 0)
	m := d.Metrics()
	if got := m[`ftpsalg_nat_translations_total{data_mode="passive",port="kept"}`] + m[`ftpsalg_nat_translations_total{data_mode="passive",port="moved"}`]; got != 50 {
		t.Fatalf("passive translations = %v; want 50", got)
	}
}

// TestNATPortCollision: the server's only passive port is taken on the
// public side by a listener of the gateway's own: ftpsalg announces another
// public port, rewrites 227 and 229, and the data still reaches the server,
// not the listener. (Two sessions announcing the same port at once are
// covered by alg/proxy's TestNATPublishedPassive: vsftpd with one passive
// port cannot serve two at once.)
func TestNATPortCollision(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	l := lab.New(t, lab.Options{})
	l.InstallGatewayFirewall(ctMark)
	const port = 50050
	v := l.StartVsftpd(lab.VsftpdOptions{PasvMinPort: port, PasvMaxPort: port})
	d := startDaemon(t, l, policyFor([]int{21}, natServerYAML(published), ""))
	cutRoutes(t, l, published)
	// A service of the gateway itself holds public:50050.
	sink := l.StartSink(lab.Gateway, netip.AddrPortFrom(natPublic, port))
	if _, err := v.CreateFile("down.bin", 64<<10); err != nil {
		t.Fatal(err)
	}
	want, _ := v.SHA256("down.bin")
	for _, mode := range []lab.Mode{lab.PASV, lab.EPSV} {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		tr, err := l.DownloadCurl(ctx, v.URL(natPublic, "down.bin"), mode)
		cancel()
		if err != nil || tr.SHA256 != want {
			t.Fatalf("%s download with the port taken: %v\n%s", mode, err, d.Proc.Log())
		}
		if !strings.Contains(tr.Output, "(192,0,2,1,") && mode == lab.PASV {
			t.Fatalf("227 does not name the public address:\n%s", tr.Output)
		}
		if strings.Contains(tr.Output, fmt.Sprintf("|||%d|", port)) || strings.Contains(tr.Output, fmt.Sprintf(",%d,%d)", port>>8, port&0xff)) {
			t.Fatalf("%s: the client was told the taken port %d:\n%s", mode, port, tr.Output)
		}
	}
	if n := sink.Conns(); n != 0 {
		t.Fatalf("the gateway's own listener on the taken port got %d connections", n)
	}
	m := d.Metrics()
	if got := m[`ftpsalg_nat_translations_total{data_mode="passive",port="moved"}`]; got < 2 {
		t.Fatalf("moved translations = %v; want at least 2", got)
	}
}

// TestNATHairpinRefused: a host on a published server's own network that
// connects to the server's public address (hairpin NAT) is told with a 421
// why it is refused, and counted; the server's data connections could not
// reach it through the translation.
func TestNATHairpinRefused(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	l := lab.New(t, lab.Options{})
	l.InstallGatewayFirewall(ctMark)
	l.StartVsftpd(lab.VsftpdOptions{})
	// The server's own network may use the server (so the refusal is the
	// hairpin's, not the client prefix's).
	pol := strings.Replace(policyFor([]int{21}, natServerYAML(published), natTopYAML(published)),
		`clients: ["192.0.2.0/24", "2001:db8:c::/64"]`, `clients: ["192.0.2.0/24", "2001:db8:c::/64", "198.51.100.0/24"]`, 1)
	d := startDaemon(t, l, pol)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	// The server's own namespace stands for a host of its network.
	c, err := l.Dial(ctx, lab.Server, "tcp4", netip.AddrPort{}, netip.AddrPortFrom(natPublic, 21))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "421 ") || !strings.Contains(line, "hairpin") {
		t.Fatalf("hairpin connection got %q %v, want a 421 naming hairpin NAT", line, err)
	}
	d.WaitMetric(`ftpsalg_policy_refusals_total{reason="hairpin"}`, 1)
}
