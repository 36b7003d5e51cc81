package load

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/test/ftpc"
	"github.com/ftpsalg/ftpsalg/test/harness"
	"github.com/ftpsalg/ftpsalg/test/lab"
	"github.com/ftpsalg/ftpsalg/test/labftpd"
)

// The lab's load settings.
const (
	// fileName is the small file every session downloads, fileSize its
	// size: a real transfer, small enough that the session, not the
	// bytes, is what is measured.
	fileName = "small.bin"
	fileSize = 16 << 10
	// pasvMin and pasvMax are the passive ports of server and policy:
	// wider than the lab's default 101, since a thousand sessions may
	// each hold a passive listener at once.
	pasvMin, pasvMax = 40000, 49999
	// user and password of the embedded server.
	user, password = "load", "load-password"
	// fileLimit is the RLIMIT_NOFILE the test process asks for, for itself
	// and the daemon it starts: 10,000 held mitm sessions are 20,000
	// sockets in the daemon. Without CAP_SYS_RESOURCE the hard limit
	// stays what it is.
	fileLimit = 65536
	// serverCommand as the first argument makes the test binary the
	// embedded server (serveMain): a process of its own in the server's
	// namespace, with its own file limit and CPU time, apart from the
	// clients.
	serverCommand = "ftpsalg-load-server"
)

// Modes the generator drives.
const (
	modeMITM    = "mitm"    // explicit FTPS, the daemon terminating TLS
	modeInspect = "inspect" // plaintext FTP, the daemon on the packet path
)

// Servers behind the gateway.
const (
	serverLabftpd = "labftpd" // the embedded Go server, in this process
	serverVsftpd  = "vsftpd"  // vsftpd 3.0.3: a process per session, PAM logins
)

var (
	buildOnce sync.Once
	binDir    string
	binary    string
	buildErr  error
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == serverCommand {
		os.Exit(serveMain(os.Args[2:]))
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// daemonBinary builds ftpsalg once per test binary, without the race
// detector (the benchmarks measure the daemon as shipped), and only for the
// tests that need it: the unit tests run without root and without a build.
func daemonBinary(tb testing.TB) string {
	tb.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "ftpsalg-load-"); buildErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		binary, buildErr = harness.Build(ctx, "../..", binDir, false)
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return binary
}

// target is a lab with a server and the daemon between it and the client,
// ready for sessions.
type target struct {
	l       *lab.Lab
	d       *harness.Daemon
	srv     *lab.Process // the server (vsftpd: its listener, not the sessions)
	mode    string
	server  string
	user    string
	pass    string
	sum     string // the file's SHA-256
	tlsConf *tls.Config
	dial    *nsDialer
	listen  harness.NSDialer
}

// newTarget builds the lab: server (labftpd or vsftpd) with fileName,
// default-drop gateway firewall, the daemon in mode at info level (as in
// production), and sysctls that let one client address make tens of
// thousands of connections (see sysctls).
func newTarget(tb testing.TB, mode, server string) *target {
	tb.Helper()
	if _, err := RaiseFileLimit(fileLimit); err != nil {
		tb.Fatal(err)
	}
	l := lab.New(tb, lab.Options{})
	sysctls(tb, l)
	tg := &target{l: l, mode: mode, server: server, listen: harness.NSDialer{L: l, NS: lab.Client}}
	pki := harness.NewPKI(tb, l.Dir(), harness.PKIOptions{})
	tg.tlsConf = pki.ClientTLS()
	content := make([]byte, fileSize)
	_, _ = rand.Read(content)
	s := sha256.Sum256(content)
	tg.sum = hex.EncodeToString(s[:])
	switch server {
	case serverLabftpd:
		tg.user, tg.pass = user, password
		tg.srv = startServer(tb, l, mode, pki, content)
	case serverVsftpd:
		opts := lab.VsftpdOptions{PasvMinPort: pasvMin, PasvMaxPort: pasvMax,
			Extra: []string{"idle_session_timeout=1800"}}
		if mode == modeMITM {
			// No TLS 1.3 tickets after the data connection's handshake:
			// see TestMITMTransfers (the Go client reads them, but the
			// passthrough data connection ends as soon as the file is in).
			opts.TLS = &lab.VsftpdTLS{CertFile: pki.ServerCert, KeyFile: pki.Server}
			opts.OpenSSL = lab.OpenSSLNoTLS13Tickets
		}
		v := l.StartVsftpd(opts)
		if err := os.WriteFile(v.Home+"/"+fileName, content, 0o644); err != nil {
			tb.Fatal(err)
		}
		tg.user, tg.pass, tg.srv = v.User, v.Password, v.Process
	default:
		tb.Fatalf("unknown server %q", server)
	}
	l.InstallGatewayFirewall(harness.CtMark)
	tg.d = harness.Start(tb, l, daemonBinary(tb), policy(mode, pki))
	tg.dial = newNSDialer(tb, l, lab.Client, 32)
	return tg
}

// sysctls lets one client address open tens of thousands of connections
// to one server port, which a real gateway sees from many clients:
// ephemeral ports from 10000 (the passive range lives in the server's
// namespace, not the client's) and TIME_WAIT ports reused for new
// outgoing connections, in every namespace that opens connections.
func sysctls(tb testing.TB, l *lab.Lab) {
	tb.Helper()
	for _, ns := range []string{lab.Client, lab.Gateway, lab.Server} {
		if err := l.Sysctl(ns, map[string]string{
			"net.ipv4.ip_local_port_range": "10000 65000",
			"net.ipv4.tcp_tw_reuse":        "1",
			"net.core.somaxconn":           "65535",
			"net.ipv4.tcp_max_syn_backlog": "65535",
		}); err != nil {
			tb.Fatal(err)
		}
	}
}

// policy is the lab server in mode on port 21 with the load's passive
// range, at info level.
func policy(mode string, pki *harness.PKI) string {
	var b strings.Builder
	fmt.Fprintf(&b, "log:\n  level: info\n")
	// Every load session comes from the one client address: lift the
	// per-address cap above the levels measured.
	fmt.Fprintf(&b, "limits:\n  max_sessions_per_client: 100000\n")
	if mode == modeMITM {
		fmt.Fprintf(&b, "mitm:\n  ca_dir: %s\n", pki.CADir)
	}
	fmt.Fprintf(&b, `servers:
  - name: lab
    addresses: [%s, "%s"]
    control_ports: [21]
    passive_ports: "%d-%d"
    mode: %s
    clients: ["192.0.2.0/24", "2001:db8:c::/64"]
`, lab.ServerAddr4, lab.ServerAddr6, pasvMin, pasvMax, mode)
	if mode == modeMITM {
		fmt.Fprintf(&b, "    tls:\n      verify: ca\n      ca_file: %s\n", pki.CAFile)
	}
	return b.String()
}

// nsDialer connects from a namespace through a fixed pool of goroutines,
// each locked for its whole life to a thread inside the namespace: no
// setns(2) and no thread per connection, which at a thousand sessions
// would load the client more than the daemon.
type nsDialer struct {
	reqs chan dialReq
}

type dialReq struct {
	ctx  context.Context
	addr string
	res  chan dialRes
}

type dialRes struct {
	c   net.Conn
	err error
}

func newNSDialer(tb testing.TB, l *lab.Lab, ns string, workers int) *nsDialer {
	d := &nsDialer{reqs: make(chan dialReq)}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			_ = l.InNS(ns, func() error {
				var nd net.Dialer
				for r := range d.reqs {
					c, err := nd.DialContext(r.ctx, "tcp", r.addr)
					r.res <- dialRes{c, err}
				}
				return nil
			})
		})
	}
	tb.Cleanup(func() { close(d.reqs); wg.Wait() })
	return d
}

// DialContext implements ftpc.Dialer; addr must be a literal address.
func (d *nsDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	r := dialReq{ctx: ctx, addr: addr, res: make(chan dialRes, 1)}
	select {
	case d.reqs <- r:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	res := <-r.res
	return res.c, res.err
}

var serverAddr = netip.AddrPortFrom(lab.ServerAddr4, 21).String()

// open connects and logs in; for mitm after AUTH TLS. The client waits
// up to timeout for each reply.
func (tg *target) open(ctx context.Context, timeout time.Duration) (*ftpc.Client, error) {
	c, err := ftpc.Dial(ctx, tg.dial, tg.listen, serverAddr)
	if err != nil {
		return nil, err
	}
	c.Timeout = timeout
	if tg.mode == modeMITM {
		if err := c.AuthTLS(ctx, tg.tlsConf); err != nil {
			c.Close()
			return nil, err
		}
	}
	if err := c.Login(tg.user, tg.pass); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// session is one complete session: connect, (AUTH TLS), login, (PBSZ 0,
// PROT P), RETR of the small file over EPSV (mitm) or PASV (inspect),
// checked by its SHA-256, QUIT.
func (tg *target) session(ctx context.Context) error {
	timeout := 30 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	c, err := tg.open(ctx, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	mode := ftpc.PASV
	if tg.mode == modeMITM {
		mode = ftpc.EPSV
		if err := c.Protect(true); err != nil {
			return err
		}
	}
	sum, n, err := c.Retrieve(ctx, mode, fileName)
	if err != nil {
		return err
	}
	if sum != tg.sum || n != fileSize {
		return fmt.Errorf("downloaded %d bytes with the wrong SHA-256", n)
	}
	return c.Quit()
}

// TestLoadFunctional runs the generator for ten sessions per mode, two
// at a time, through the lab: the benchmarks' code paths, kept working
// by CI without measuring anything.
func TestLoadFunctional(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	for _, mode := range []string{modeMITM, modeInspect} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			tg := newTarget(t, mode, serverLabftpd)
			res := Run(context.Background(), Config{Concurrency: 2, Window: time.Minute, SessionTimeout: 20 * time.Second, MaxSessions: 10},
				tg.session)
			if res.Sessions != 10 || res.Failures != 0 {
				t.Fatalf("%v:\n%s", res, res.ErrorSummary())
			}
			t.Log(res)
			p, err := ReadProc(tg.d.Proc.PID())
			if err != nil {
				t.Fatal(err)
			}
			if p.RSS == 0 || p.CPU == 0 {
				t.Fatalf("daemon: %+v", p)
			}
			want := `ftpsalg_control_sessions_total{mode="` + mode + `"}`
			if got := tg.d.Metrics()[want]; got < 10 {
				t.Fatalf("%s = %v, want at least 10", want, got)
			}
			tg.d.Stop()
		})
	}
}

// startServer runs the embedded server as a process of its own in the
// server's namespace (the test binary with serverCommand) and waits until
// it greets.
func startServer(tb testing.TB, l *lab.Lab, mode string, pki *harness.PKI, content []byte) *lab.Process {
	tb.Helper()
	file := filepath.Join(l.Dir(), fileName)
	if err := os.WriteFile(file, content, 0o644); err != nil {
		tb.Fatal(err)
	}
	args := []string{serverCommand, "-file", file}
	if mode == modeMITM {
		args = append(args, "-cert", pki.ServerCert, "-key", pki.Server)
	}
	p := l.Start(lab.Server, os.Args[0], args...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		c, err := l.Dial(ctx, lab.Server, "tcp", netip.AddrPort{}, netip.AddrPortFrom(lab.ServerAddr4, 21))
		if err == nil {
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			line, rerr := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if rerr == nil && strings.HasPrefix(line, "220 ") {
				return p
			}
			err = fmt.Errorf("greeting %q: %v", line, rerr)
		}
		select {
		case <-p.Done():
			tb.Fatalf("server exited: %v\n%s", p.Err(), p.Log())
		case <-ctx.Done():
			tb.Fatalf("server not ready: %v\n%s", err, p.Log())
		case <-time.After(20 * time.Millisecond): // poll interval
		}
	}
}

// serveMain is the server process: labftpd on [::]:21 in the namespace it
// was started in, serving one file to one user, with TLS when given a
// certificate. It runs until killed (the lab's cleanup).
func serveMain(args []string) int {
	fs := flag.NewFlagSet(serverCommand, flag.ContinueOnError)
	file := fs.String("file", "", "the file to serve as "+fileName)
	certFile := fs.String("cert", "", "TLS certificate (PEM); none for plain FTP")
	keyFile := fs.String("key", "", "TLS key (PEM)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if _, err := RaiseFileLimit(fileLimit); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	content, err := os.ReadFile(*file)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg := labftpd.Config{User: user, Password: password, Files: map[string][]byte{fileName: content},
		PassiveMin: pasvMin, PassiveMax: pasvMax,
		// Held sessions wait far longer than the default minute.
		IdleTimeout: 30 * time.Minute,
		// No per-session debug log: at this rate it would be the load.
		Logger: slog.New(slog.DiscardHandler)}
	if *certFile != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		cfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln, err := net.Listen("tcp", "[::]:21")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "labftpd serving %s on %s\n", *file, ln.Addr())
	if err := labftpd.New(cfg).Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
