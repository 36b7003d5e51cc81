package labftpd

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestTransfers(t *testing.T) {
	t.Parallel()
	hosts := []string{"127.0.0.1"}
	if haveIPv6Loopback() {
		hosts = append(hosts, "::1")
	}
	for _, host := range hosts {
		for _, store := range []string{"dir", "mem"} {
			for _, mode := range []string{"PASV", "EPSV", "PORT", "EPRT"} {
				if strings.Contains(host, ":") && (mode == "PASV" || mode == "PORT") {
					continue // RFC 959 commands carry IPv4 only
				}
				t.Run(fmt.Sprintf("%s/%s/%s", host, store, mode), func(t *testing.T) {
					t.Parallel()
					want := randomBytes(t, 300<<10+7)
					cfg := Config{User: "u", Password: "p"}
					dir := t.TempDir()
					if store == "dir" {
						cfg.Root = dir
					}
					c := dialFTP(t, serve(t, New(cfg), host))
					c.login("u", "p")
					c.expect(200, "TYPE I")
					c.stor(mode, "up.bin", want)
					if store == "dir" {
						got, err := os.ReadFile(filepath.Join(dir, "up.bin"))
						if err != nil || sum(got) != sum(want) {
							t.Fatalf("stored file: sha256 %s (err %v), want %s", sum(got), err, sum(want))
						}
					}
					if got := c.expect(213, "SIZE up.bin"); got != fmt.Sprint(len(want)) {
						t.Errorf("SIZE: got %s, want %d", got, len(want))
					}
					got := c.retr(mode, "up.bin")
					if sum(got) != sum(want) {
						t.Fatalf("download: sha256 %s, want %s", sum(got), sum(want))
					}
					list := string(c.download(mode, "LIST"))
					if !strings.Contains(list, "up.bin") || !strings.HasPrefix(list, "-rw-r--r--") {
						t.Errorf("LIST: got %q", list)
					}
					c.expect(221, "QUIT")
				})
			}
		}
	}
}

func TestDirectories(t *testing.T) {
	t.Parallel()
	srv := New(Config{Files: map[string][]byte{
		"a/b/file.txt": []byte("hello\n"),
		"top.txt":      []byte("top"),
	}})
	c := dialFTP(t, serve(t, srv, "127.0.0.1"))
	c.login("anyone", "anything")
	if got := c.expect(257, "PWD"); got != `"/" is the current directory` {
		t.Errorf("PWD: got %q", got)
	}
	c.expect(250, "CWD a/b")
	if got := c.expect(257, "PWD"); got != `"/a/b" is the current directory` {
		t.Errorf("PWD: got %q", got)
	}
	if got := string(c.retr("EPSV", "file.txt")); got != "hello\n" {
		t.Errorf("RETR: got %q", got)
	}
	c.expect(550, "CWD file.txt")
	c.expect(550, "CWD nowhere")
	c.expect(250, "CDUP")
	c.expect(250, "CWD ../../../..")
	if got := c.expect(257, "PWD"); got != `"/" is the current directory` {
		t.Errorf("PWD after climbing: got %q", got)
	}
	c.send("NLST")
	if code, msg := c.read(); code != 425 {
		t.Errorf("NLST without PASV: got %d %q, want 425", code, msg)
	}
	if got := string(c.download("PASV", "NLST -a /")); got != "a\r\ntop.txt\r\n" {
		t.Errorf("NLST -a /: got %q", got)
	}
	if got := string(c.download("EPSV", "LIST /a")); !strings.HasPrefix(got, "drwxr-xr-x 1 ftp ftp            0 ") || !strings.HasSuffix(got, " b\r\n") {
		t.Errorf("LIST /a: got %q", got)
	}
	if got := string(c.download("PORT", "NLST a")); got != "b\r\n" {
		t.Errorf("NLST a: got %q", got)
	}
	c.expect(550, "SIZE a")
	c.expect(550, "RETR missing")
	c.expect(553, "STOR a")
}

func TestDirStoreConfinement(t *testing.T) {
	t.Parallel()
	parent := t.TempDir()
	root := filepath.Join(parent, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(parent, "secret"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../secret", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	c := dialFTP(t, serve(t, New(Config{Root: root}), "127.0.0.1"))
	c.login("u", "p")
	for _, p := range []string{"../secret", "/../secret", "link", "..%2fsecret"} {
		c.expect(550, "SIZE %s", p)
		c.expect(550, "RETR %s", p)
	}
}

func TestLogin(t *testing.T) {
	t.Parallel()
	c := dialFTP(t, serve(t, New(Config{User: "alice", Password: "pw"}), "127.0.0.1"))
	for _, cmd := range []string{"PWD", "PASV", "EPSV", "RETR x", "STOR x", "LIST", "CWD /", "SIZE x", "PORT 127,0,0,1,4,1"} {
		c.expect(530, "%s", cmd)
	}
	c.expect(503, "PASS pw")
	c.expect(331, "USER alice")
	c.expect(530, "PASS wrong")
	c.expect(530, "PWD")
	c.expect(331, "USER bob")
	c.expect(530, "PASS pw")
	c.login("alice", "pw")
	c.expect(257, "PWD")
	c.expect(215, "SYST")
	if got := c.expect(211, "FEAT"); !strings.Contains(got, " EPSV") {
		t.Errorf("FEAT: got %q", got)
	}
}

func TestHostileAnnounce(t *testing.T) {
	t.Parallel()
	srv := New(Config{
		AnnounceAddr: netip.MustParseAddr("203.0.113.2"),
		AnnouncePort: func(uint16) uint16 { return 22 },
	})
	c := dialFTP(t, serve(t, srv, "127.0.0.1"))
	c.login("u", "p")
	if got := c.expect(227, "PASV"); got != "Entering Passive Mode (203,0,113,2,0,22)." {
		t.Errorf("PASV: got %q", got)
	}
	if got := c.expect(229, "EPSV"); got != "Entering Extended Passive Mode (|||22|)" {
		t.Errorf("EPSV: got %q", got)
	}
}

func TestPassiveRange(t *testing.T) {
	t.Parallel()
	const lo, hi = 47100, 47139
	c := dialFTP(t, serve(t, New(Config{PassiveMin: lo, PassiveMax: hi}), "127.0.0.1"))
	c.login("u", "p")
	for range 5 {
		msg := c.expect(229, "EPSV")
		var port int
		if _, err := fmt.Sscanf(msg, "Entering Extended Passive Mode (|||%d|)", &port); err != nil {
			t.Fatalf("bad 229 %q: %v", msg, err)
		}
		if port < lo || port > hi {
			t.Errorf("port %d outside %d-%d", port, lo, hi)
		}
	}
}

func TestScript(t *testing.T) {
	t.Parallel()
	const unsolicited = "227 Entering Passive Mode (203,0,113,2,0,21)\r\n"
	srv := New(Config{Script: func(verb, arg string) Action {
		switch verb {
		case "PASS":
			return Action{After: unsolicited}
		case "SYST":
			return Action{Replace: true, Before: "215-evil\r\n 227 Entering Passive Mode (1,2,3,4,5,6)\r\n215 end\r\n"}
		case "HELP":
			return Action{Before: "214 bye\r\n", Replace: true, Close: true}
		}
		return Action{}
	}})
	c := dialFTP(t, serve(t, srv, "127.0.0.1"))
	c.login("u", "p")
	if code, msg := c.read(); code != 227 || !strings.Contains(msg, "203,0,113,2,0,21") {
		t.Errorf("unsolicited reply: got %d %q", code, msg)
	}
	if got := c.expect(215, "SYST"); !strings.Contains(got, "evil") {
		t.Errorf("SYST: got %q", got)
	}
	c.expect(200, "NOOP")
	c.expect(214, "HELP")
	if _, _, err := c.readErr(); err != io.EOF {
		t.Errorf("after Close action: got %v, want EOF", err)
	}
}

// recordingListener wraps accepted connections to record write sizes.
type recordingListener struct {
	net.Listener
	mu     sync.Mutex
	writes []int
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &recordingConn{Conn: c, l: l}, nil
}

type recordingConn struct {
	net.Conn
	l *recordingListener
}

func (c *recordingConn) Write(b []byte) (int, error) {
	c.l.mu.Lock()
	c.l.writes = append(c.l.writes, len(b))
	c.l.mu.Unlock()
	return c.Conn.Write(b)
}

func TestSplitWrites(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rl := &recordingListener{Listener: ln}
	srv := New(Config{SplitWrites: 3, SplitDelay: time.Millisecond})
	c := dialFTP(t, serveOn(t, srv, rl))
	c.login("u", "p")
	if got := c.expect(227, "PASV"); !strings.HasPrefix(got, "Entering Passive Mode (127,0,0,1,") {
		t.Errorf("PASV: got %q", got)
	}
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if len(rl.writes) < 20 {
		t.Errorf("got %d writes, want many small ones", len(rl.writes))
	}
	for _, n := range rl.writes {
		if n > 3 {
			t.Fatalf("write of %d bytes, want <= 3", n)
		}
	}
}

func TestGarbage(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	var logMu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&logs, &logMu}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := New(Config{MaxLine: 64, Logger: logger})
	c := dialFTP(t, serve(t, srv, "127.0.0.1"))
	c.send("%s", strings.Repeat("A", 10000))
	if code, _ := c.read(); code != 500 {
		t.Errorf("long line: got %d, want 500", code)
	}
	c.expect(200, "NOOP")
	c.expect(500, "")
	c.expect(530, "\x00\x01\x02\xfe garbage") // unknown before login
	c.expect(530, "\x80\x81 \xff")
	c.expect(200, "\xff\xf4\xff\xf2NOOP") // Telnet IP, DM
	c.expect(200, "noop")
	c.login("u", "p")
	c.expect(502, "\x00\x01\x02\xfe garbage")
	c.expect(502, "SITE EXEC /bin/sh")
	for _, arg := range []string{"", "1,2,3", "1,2,3,4,5,6,7", "256,0,0,1,1,1", "-1,0,0,1,1,1", "a,b,c,d,e,f", "1,,2,3,4,5", "+1,0,0,1,1,1"} {
		c.expect(501, "PORT %s", arg)
	}
	for _, arg := range []string{"", "|", "|1|127.0.0.1|", "|3|127.0.0.1|5000|", "|1|::1|5000|", "|2|127.0.0.1|5000|", "|1|127.0.0.1|70000|", "1127.0.0.11500011", "|1|127.0.0.1|5000|x", "|2|fe80::1%eth0|5000|"} {
		c.expect(501, "EPRT %s", arg)
	}
	// Foreign targets and privileged ports are refused (RFC 2577).
	c.expect(500, "PORT 127,0,0,2,19,136")
	c.expect(500, "PORT 127,0,0,1,0,21")
	c.expect(500, "EPRT |1|203.0.113.2|5000|")
	c.expect(501, "EPSV 3")
	c.expect(522, "EPSV 2")
	c.expect(504, "TYPE X")
	c.expect(200, "TYPE a n")
	c.expect(200, "EPSV ALL")
	c.expect(500, "PASV")
	c.expect(500, "PORT 127,0,0,1,19,136")
	c.expect(229, "EPSV")
	c.expect(225, "ABOR")
	c.expect(221, "QUIT")
	logMu.Lock()
	defer logMu.Unlock()
	if strings.Contains(logs.String(), "panic") {
		t.Errorf("session panicked:\n%s", logs.String())
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (w lockedWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(b)
}

func TestForeignPassivePeerRejectedOnTransfer(t *testing.T) {
	t.Parallel()
	srv := New(Config{Files: map[string][]byte{"f": []byte("data")}})
	c := dialFTP(t, serve(t, srv, "127.0.0.1"))
	c.login("u", "p")
	msg := c.expect(229, "EPSV")
	var port int
	if _, err := fmt.Sscanf(msg, "Entering Extended Passive Mode (|||%d|)", &port); err != nil {
		t.Fatal(err)
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: testTimeout}
	conn, err := d.DialContext(ctx(t), "tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Skipf("cannot bind 127.0.0.2: %v", err)
	}
	defer conn.Close()
	if code, msg := c.cmd("RETR f"); code != 425 || !strings.Contains(msg, "Bad IP") {
		t.Fatalf("RETR with foreign data peer: got %d %q, want 425", code, msg)
	}
}

func TestAllowForeignData(t *testing.T) {
	t.Parallel()
	// A sink on 127.0.0.2 stands for a third-party host.
	sink, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2: %v", err)
	}
	defer sink.Close()
	got := make(chan []byte, 1)
	go func() {
		conn, err := sink.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(testTimeout))
		b, _ := io.ReadAll(conn)
		got <- b
	}()
	srv := New(Config{AllowForeignData: true, Files: map[string][]byte{"f": []byte("bounced")}})
	c := dialFTP(t, serve(t, srv, "127.0.0.1"))
	c.login("u", "p")
	c.expect(200, "EPRT %s", formatEPRT(netip.MustParseAddrPort(sink.Addr().String())))
	c.expect(150, "RETR f")
	c.read()
	select {
	case b := <-got:
		if string(b) != "bounced" {
			t.Errorf("sink got %q", b)
		}
	case <-time.After(testTimeout):
		t.Fatal("sink got nothing")
	}
}

func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	c := dialFTP(t, serve(t, New(Config{IdleTimeout: 50 * time.Millisecond}), "127.0.0.1"))
	if _, _, err := c.readErr(); err != io.EOF {
		t.Errorf("idle session: got %v, want EOF", err)
	}
}

func TestCloseWithPendingData(t *testing.T) {
	t.Parallel()
	srv := New(Config{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	c := dialFTP(t, ln.Addr().String())
	c.login("u", "p")
	c.expect(229, "EPSV")
	c.send("STOR x") // the server now blocks in Accept
	closed := make(chan error, 1)
	go func() { closed <- srv.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Close did not return")
	}
	select {
	case err := <-done:
		if err != ErrServerClosed {
			t.Errorf("Serve: got %v, want ErrServerClosed", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Serve did not return")
	}
	if err := srv.Serve(ln); err != ErrServerClosed {
		t.Errorf("Serve after Close: got %v", err)
	}
}

func TestBadRoot(t *testing.T) {
	t.Parallel()
	srv := New(Config{Root: filepath.Join(t.TempDir(), "missing")})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(ln); err == nil || !strings.Contains(err.Error(), "failed to open root") {
		t.Errorf("Serve: got %v", err)
	}
}
