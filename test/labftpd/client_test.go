package labftpd

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

// testTimeout bounds every blocking step of the unit tests.
const testTimeout = 10 * time.Second

// ftpClient is a minimal FTP client for the tests (RFC 959 §4.2 replies).
type ftpClient struct {
	t    testing.TB
	conn net.Conn // raw, or a TLS layer over it
	r    *bufio.Reader
	raw  net.Conn // the TCP connection

	dataTLS   *tls.Config         // set after PROT P: data connections use TLS
	dataState tls.ConnectionState // of the last TLS data connection
}

// dialFTP connects to addr and reads the 220 greeting.
func dialFTP(t testing.TB, addr string) *ftpClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatalf("failed to dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &ftpClient{t: t, conn: conn, r: bufio.NewReader(conn), raw: conn}
	if code, msg := c.read(); code != 220 {
		t.Fatalf("greeting: got %d %q, want 220", code, msg)
	}
	return c
}

// read reads one reply, joining the lines of a multi-line reply.
func (c *ftpClient) read() (int, string) {
	c.t.Helper()
	code, msg, err := c.readErr()
	if err != nil {
		c.t.Fatalf("failed to read reply: %v", err)
	}
	return code, msg
}

func (c *ftpClient) readErr() (int, string, error) {
	if err := c.conn.SetReadDeadline(time.Now().Add(testTimeout)); err != nil {
		return 0, "", err
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		return 0, "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if len(line) < 4 {
		return 0, "", fmt.Errorf("short reply %q", line)
	}
	code, err := strconv.Atoi(line[:3])
	if err != nil {
		return 0, "", fmt.Errorf("bad reply %q", line)
	}
	msg := line[4:]
	if line[3] == '-' {
		for {
			l, err := c.r.ReadString('\n')
			if err != nil {
				return 0, "", err
			}
			l = strings.TrimRight(l, "\r\n")
			msg += "\n" + l
			if strings.HasPrefix(l, line[:3]+" ") {
				break
			}
		}
	}
	return code, msg, nil
}

func (c *ftpClient) send(format string, args ...any) {
	c.t.Helper()
	if err := c.conn.SetWriteDeadline(time.Now().Add(testTimeout)); err != nil {
		c.t.Fatal(err)
	}
	if _, err := fmt.Fprintf(c.conn, format+"\r\n", args...); err != nil {
		c.t.Fatalf("failed to send %q: %v", format, err)
	}
}

// cmd sends a command and returns its reply.
func (c *ftpClient) cmd(format string, args ...any) (int, string) {
	c.t.Helper()
	c.send(format, args...)
	return c.read()
}

// expect sends a command and fails unless the reply has code want.
func (c *ftpClient) expect(want int, format string, args ...any) string {
	c.t.Helper()
	code, msg := c.cmd(format, args...)
	if code != want {
		c.t.Fatalf("%s: got %d %q, want %d", fmt.Sprintf(format, args...), code, msg, want)
	}
	return msg
}

func (c *ftpClient) login(user, pass string) {
	c.t.Helper()
	c.expect(331, "USER %s", user)
	c.expect(230, "PASS %s", pass)
}

// prepareData sends PASV, EPSV, PORT or EPRT and returns a function that
// yields the data connection once the transfer command has been sent.
func (c *ftpClient) prepareData(mode string) func() net.Conn {
	c.t.Helper()
	host := addrOf(c.conn.LocalAddr())
	peer := addrOf(c.conn.RemoteAddr())
	switch mode {
	case "PASV", "EPSV":
		msg := c.expect(map[string]int{"PASV": 227, "EPSV": 229}[mode], "%s", mode)
		var ap netip.AddrPort
		if mode == "PASV" {
			open, end := strings.IndexByte(msg, '('), strings.IndexByte(msg, ')')
			if open < 0 || end < open {
				c.t.Fatalf("bad 227 %q", msg)
			}
			var err error
			if ap, err = parsePORT(msg[open+1 : end]); err != nil {
				c.t.Fatalf("bad 227 %q: %v", msg, err)
			}
		} else {
			open := strings.Index(msg, "(|||")
			end := strings.Index(msg, "|)")
			if open < 0 || end < open {
				c.t.Fatalf("bad 229 %q", msg)
			}
			port, err := strconv.Atoi(msg[open+4 : end])
			if err != nil {
				c.t.Fatalf("bad 229 %q", msg)
			}
			ap = netip.AddrPortFrom(peer, uint16(port))
		}
		conn, err := net.DialTimeout("tcp", ap.String(), testTimeout)
		if err != nil {
			c.t.Fatalf("failed to dial data %s: %v", ap, err)
		}
		c.t.Cleanup(func() { conn.Close() })
		return func() net.Conn { return conn }
	case "PORT", "EPRT":
		ln, err := net.Listen("tcp", netip.AddrPortFrom(host, 0).String())
		if err != nil {
			c.t.Fatal(err)
		}
		c.t.Cleanup(func() { ln.Close() })
		ap := netip.MustParseAddrPort(ln.Addr().String())
		if mode == "PORT" {
			a := ap.Addr().As4()
			c.expect(200, "PORT %d,%d,%d,%d,%d,%d", a[0], a[1], a[2], a[3], ap.Port()>>8, ap.Port()&0xff)
		} else {
			c.expect(200, "EPRT %s", formatEPRT(ap))
		}
		return func() net.Conn {
			c.t.Helper()
			ln.(*net.TCPListener).SetDeadline(time.Now().Add(testTimeout))
			conn, err := ln.Accept()
			if err != nil {
				c.t.Fatalf("failed to accept data connection: %v", err)
			}
			c.t.Cleanup(func() { conn.Close() })
			return conn
		}
	}
	c.t.Fatalf("unknown mode %q", mode)
	return nil
}

// retr downloads name over a data connection set up with mode.
func (c *ftpClient) retr(mode, name string) []byte {
	c.t.Helper()
	return c.download(mode, "RETR "+name)
}

// download runs a command that sends data to the client (RETR, LIST, NLST).
func (c *ftpClient) download(mode, command string) []byte {
	c.t.Helper()
	data := c.prepareData(mode)
	c.send("%s", command)
	conn := data()
	if code, msg := c.read(); code != 150 {
		c.t.Fatalf("%s: got %d %q, want 150", command, code, msg)
	}
	conn = c.secureData(conn)
	conn.SetDeadline(time.Now().Add(testTimeout))
	b, err := io.ReadAll(conn)
	if err != nil {
		c.t.Fatalf("failed to read data: %v", err)
	}
	if code, msg := c.read(); code != 226 {
		c.t.Fatalf("%s end: got %d %q, want 226", command, code, msg)
	}
	return b
}

// stor uploads b as name over a data connection set up with mode.
func (c *ftpClient) stor(mode, name string, b []byte) {
	c.t.Helper()
	data := c.prepareData(mode)
	c.send("STOR %s", name)
	conn := data()
	if code, msg := c.read(); code != 150 {
		c.t.Fatalf("STOR: got %d %q, want 150", code, msg)
	}
	conn = c.secureData(conn)
	conn.SetDeadline(time.Now().Add(testTimeout))
	if _, err := conn.Write(b); err != nil {
		c.t.Fatalf("failed to write data: %v", err)
	}
	conn.Close()
	if code, msg := c.read(); code != 226 {
		c.t.Fatalf("STOR end: got %d %q, want 226", code, msg)
	}
}

// secureData runs the TLS client handshake on a data connection after
// PROT P (RFC 4217 §7: the FTP client is the TLS client).
func (c *ftpClient) secureData(conn net.Conn) net.Conn {
	c.t.Helper()
	if c.dataTLS == nil {
		return conn
	}
	tc := tls.Client(conn, c.dataTLS)
	tc.SetDeadline(time.Now().Add(testTimeout))
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("data TLS handshake: %v", err)
	}
	c.dataState = tc.ConnectionState()
	return tc
}

// serve starts srv on a loopback listener at host and returns its address.
func serve(t testing.TB, srv *Server, host string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("failed to listen: %v", err)
	}
	return serveOn(t, srv, ln)
}

func serveOn(t testing.TB, srv *Server, ln net.Listener) string {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		select {
		case err := <-done:
			if !errors.Is(err, ErrServerClosed) {
				t.Errorf("Serve returned %v, want ErrServerClosed", err)
			}
		case <-time.After(testTimeout):
			t.Errorf("Serve did not return after Close")
		}
	})
	return ln.Addr().String()
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func sum(b []byte) string { return fmt.Sprintf("%x", sha256.Sum256(b)) }

// haveIPv6Loopback reports whether ::1 can be listened on.
func haveIPv6Loopback() bool {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

// ctx returns a context bounded by testTimeout.
func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return c
}
