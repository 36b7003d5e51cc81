// Package ftpc is a small FTP client for tests, the demo and benchmarks: it
// speaks just enough RFC 959/2428 to log in, open data connections in the
// four modes, transfer files, and send raw (even malformed) lines.
package ftpc

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Mode is a data-connection mode.
type Mode string

// Modes.
const (
	PASV Mode = "PASV"
	EPSV Mode = "EPSV"
	PORT Mode = "PORT"
	EPRT Mode = "EPRT"
)

// Dialer creates sockets; tests pass one that creates them in a namespace.
type Dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// Listener creates listening sockets for active mode.
type Listener interface {
	Listen(ctx context.Context, network, addr string) (net.Listener, error)
}

// Client is one control connection.
type Client struct {
	conn    net.Conn
	r       *bufio.Reader
	dialer  Dialer
	lc      Listener
	Timeout time.Duration
	// TrustPASV makes PASV connect to the address the 227 reply names
	// (curl --no-ftp-skip-pasv-ip) instead of the control connection's
	// address (curl's default).
	TrustPASV bool

	// tlsConf is set once the control connection is TLS (AUTH TLS or
	// implicit); with protP data connections are TLS too (RFC 4217).
	tlsConf *tls.Config
	protP   bool

	// DataTLS is the TLS state of the last protected data connection
	// (DidResume says whether it resumed the control connection's
	// session); zero before the first one.
	DataTLS tls.ConnectionState
}

// Reply is a complete server reply.
type Reply struct {
	Code int
	Text string // all lines joined with "\n"
}

func (r Reply) String() string { return fmt.Sprintf("%d %s", r.Code, r.Text) }

// Error is a reply with an unexpected code.
type Error struct {
	Cmd   string
	Reply Reply
}

func (e *Error) Error() string { return fmt.Sprintf("%s: server replied %s", e.Cmd, e.Reply) }

// Dial connects to addr and reads the greeting.
func Dial(ctx context.Context, d Dialer, lc Listener, addr string) (*Client, error) {
	if d == nil {
		d = &net.Dialer{}
	}
	if lc == nil {
		lc = &net.ListenConfig{}
	}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("failed to connect to %s: %w", addr, err)
	}
	c := &Client{conn: conn, r: bufio.NewReader(conn), dialer: d, lc: lc, Timeout: 10 * time.Second}
	rep, err := c.read()
	if err != nil {
		conn.Close()
		return nil, err
	}
	if rep.Code != 220 {
		conn.Close()
		return nil, &Error{Cmd: "greeting", Reply: rep}
	}
	return c, nil
}

// DialTLS connects to an implicit-FTPS server (TLS from the first byte).
func DialTLS(ctx context.Context, d Dialer, lc Listener, addr string, conf *tls.Config) (*Client, error) {
	if d == nil {
		d = &net.Dialer{}
	}
	if lc == nil {
		lc = &net.ListenConfig{}
	}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("failed to connect to %s: %w", addr, err)
	}
	conf = withSessionCache(conf)
	tc := tls.Client(conn, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	c := &Client{conn: tc, r: bufio.NewReader(tc), dialer: d, lc: lc, Timeout: 10 * time.Second, tlsConf: conf}
	rep, err := c.read()
	if err != nil {
		tc.Close()
		return nil, err
	}
	if rep.Code != 220 {
		tc.Close()
		return nil, &Error{Cmd: "greeting", Reply: rep}
	}
	return c, nil
}

// NeverResume is a session cache that stores nothing: a client whose
// config holds it never resumes a TLS session on its data connections,
// like Python's ftplib.
var NeverResume tls.ClientSessionCache = neverResume{}

type neverResume struct{}

func (neverResume) Get(string) (*tls.ClientSessionState, bool) { return nil, false }
func (neverResume) Put(string, *tls.ClientSessionState)        {}

func withSessionCache(conf *tls.Config) *tls.Config {
	conf = conf.Clone()
	if conf.ClientSessionCache == nil {
		// Data connections resume the control connection's session, as
		// curl and lftp do.
		conf.ClientSessionCache = tls.NewLRUClientSessionCache(8)
	}
	return conf
}

// AuthTLS upgrades the control connection with AUTH TLS (RFC 4217).
func (c *Client) AuthTLS(ctx context.Context, conf *tls.Config) error {
	if _, err := c.expect("AUTH TLS", 2); err != nil {
		return err
	}
	conf = withSessionCache(conf)
	tc := tls.Client(c.conn, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	c.conn, c.r, c.tlsConf = tc, bufio.NewReader(tc), conf
	return nil
}

// Protect sends PBSZ 0 and PROT P (private) or PROT C (clear).
func (c *Client) Protect(private bool) error {
	if _, err := c.expect("PBSZ 0", 2); err != nil {
		return err
	}
	level := "C"
	if private {
		level = "P"
	}
	if _, err := c.expect("PROT "+level, 2); err != nil {
		return err
	}
	c.protP = private
	return nil
}

// TLSState returns the control connection's TLS state, if any.
func (c *Client) TLSState() (tls.ConnectionState, bool) {
	if tc, ok := c.conn.(*tls.Conn); ok {
		return tc.ConnectionState(), true
	}
	return tls.ConnectionState{}, false
}

// Secure wraps a data connection the caller made in TLS when PROT P is in
// force, as the client's own data connections are.
func (c *Client) Secure(ctx context.Context, dc net.Conn) (net.Conn, error) { return c.secure(ctx, dc) }

// secure wraps a data connection in TLS when PROT P is in force; the
// client is the TLS client whichever side opened the connection.
func (c *Client) secure(ctx context.Context, dc net.Conn) (net.Conn, error) {
	if !c.protP || c.tlsConf == nil {
		return dc, nil
	}
	tc := tls.Client(dc, c.tlsConf)
	hctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		dc.Close()
		return nil, fmt.Errorf("data connection TLS handshake: %w", err)
	}
	c.DataTLS = tc.ConnectionState()
	return tc, nil
}

// Close closes the control connection without QUIT.
func (c *Client) Close() error { return c.conn.Close() }

// Conn is the control connection.
func (c *Client) Conn() net.Conn { return c.conn }

func (c *Client) read() (Reply, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(c.Timeout))
	line, err := c.r.ReadString('\n')
	if err != nil {
		return Reply{}, fmt.Errorf("failed to read reply: %w", err)
	}
	line = strings.TrimRight(line, "\r\n")
	if len(line) < 4 {
		return Reply{}, fmt.Errorf("malformed reply %q", line)
	}
	code, err := strconv.Atoi(line[:3])
	if err != nil {
		return Reply{}, fmt.Errorf("malformed reply %q", line)
	}
	rep := Reply{Code: code, Text: line[4:]}
	if line[3] == '-' {
		for {
			l, err := c.r.ReadString('\n')
			if err != nil {
				return Reply{}, fmt.Errorf("failed to read reply: %w", err)
			}
			l = strings.TrimRight(l, "\r\n")
			rep.Text += "\n" + l
			if len(l) >= 4 && l[:3] == line[:3] && l[3] == ' ' {
				break
			}
		}
	}
	return rep, nil
}

// Raw writes b as it is (no CRLF added).
func (c *Client) Raw(b []byte) error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(c.Timeout))
	_, err := c.conn.Write(b)
	return err
}

// Cmd sends line with CRLF and returns the final reply (1xx are skipped).
func (c *Client) Cmd(line string) (Reply, error) {
	if err := c.Raw([]byte(line + "\r\n")); err != nil {
		return Reply{}, err
	}
	return c.Read()
}

// Read returns the next final reply.
func (c *Client) Read() (Reply, error) {
	for {
		rep, err := c.read()
		if err != nil || rep.Code >= 200 {
			return rep, err
		}
	}
}

// expect sends line and checks the reply code's first digit.
func (c *Client) expect(line string, class int) (Reply, error) {
	rep, err := c.Cmd(line)
	if err != nil {
		return rep, err
	}
	if rep.Code/100 != class {
		verb, _, _ := strings.Cut(line, " ")
		if verb == "PASS" {
			line = "PASS"
		}
		return rep, &Error{Cmd: line, Reply: rep}
	}
	return rep, nil
}

// Login sends USER and PASS.
func (c *Client) Login(user, pass string) error {
	rep, err := c.Cmd("USER " + user)
	if err != nil {
		return err
	}
	if rep.Code == 230 {
		return nil
	}
	if rep.Code != 331 {
		return &Error{Cmd: "USER", Reply: rep}
	}
	_, err = c.expect("PASS "+pass, 2)
	return err
}

// Quit sends QUIT and closes.
func (c *Client) Quit() error {
	_, err := c.Cmd("QUIT")
	c.conn.Close()
	return err
}

// ParsePASV extracts the address of a 227 reply.
func ParsePASV(text string) (netip.AddrPort, error) {
	i := strings.IndexByte(text, '(')
	j := strings.IndexByte(text, ')')
	if i < 0 || j < i {
		return netip.AddrPort{}, fmt.Errorf("no address in %q", text)
	}
	f := strings.Split(text[i+1:j], ",")
	if len(f) != 6 {
		return netip.AddrPort{}, fmt.Errorf("no address in %q", text)
	}
	var n [6]byte
	for k, s := range f {
		v, err := strconv.ParseUint(strings.TrimSpace(s), 10, 8)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("bad number in %q", text)
		}
		n[k] = byte(v)
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(n[:4])), uint16(n[4])<<8|uint16(n[5])), nil
}

// ParseEPSV extracts the port of a 229 reply.
func ParseEPSV(text string) (uint16, error) {
	i := strings.IndexByte(text, '(')
	j := strings.LastIndexByte(text, ')')
	if i < 0 || j < i+5 {
		return 0, fmt.Errorf("no port in %q", text)
	}
	inner := text[i+1 : j]
	d := inner[:1]
	parts := strings.Split(inner, d)
	if len(parts) != 5 {
		return 0, fmt.Errorf("no port in %q", text)
	}
	p, err := strconv.ParseUint(parts[3], 10, 16)
	if err != nil || p == 0 {
		return 0, fmt.Errorf("bad port in %q", text)
	}
	return uint16(p), nil
}

// data opens a data connection in mode and sends cmd over the control
// connection; it returns the data connection once the server accepted cmd.
func (c *Client) data(ctx context.Context, mode Mode, cmd string) (net.Conn, error) {
	ctl := c.conn.RemoteAddr().(*net.TCPAddr).AddrPort()
	local := c.conn.LocalAddr().(*net.TCPAddr).AddrPort()
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	switch mode {
	case PASV, EPSV:
		rep, err := c.expect(string(mode), 2)
		if err != nil {
			return nil, err
		}
		var target netip.AddrPort
		if mode == PASV {
			a, err := ParsePASV(rep.Text)
			if err != nil {
				return nil, err
			}
			// Like curl's default, ignore the announced address,
			// unless told to trust it.
			target = netip.AddrPortFrom(ctl.Addr(), a.Port())
			if c.TrustPASV {
				target = a
			}
		} else {
			p, err := ParseEPSV(rep.Text)
			if err != nil {
				return nil, err
			}
			target = netip.AddrPortFrom(ctl.Addr(), p)
		}
		dc, err := c.dialer.DialContext(ctx, "tcp", target.String())
		if err != nil {
			return nil, fmt.Errorf("failed to open data connection to %s: %w", target, err)
		}
		if err := c.Raw([]byte(cmd + "\r\n")); err != nil {
			dc.Close()
			return nil, err
		}
		// The preliminary 1xx reply: the final one comes after the data.
		rep, err = c.read()
		if err != nil {
			dc.Close()
			return nil, err
		}
		if rep.Code/100 != 1 {
			dc.Close()
			return nil, &Error{Cmd: cmd, Reply: rep}
		}
		return c.secure(ctx, dc)
	case PORT, EPRT:
		ln, err := c.lc.Listen(ctx, "tcp", netip.AddrPortFrom(local.Addr(), 0).String())
		if err != nil {
			return nil, fmt.Errorf("failed to listen for the data connection: %w", err)
		}
		defer ln.Close()
		ap := ln.Addr().(*net.TCPAddr).AddrPort()
		var line string
		if mode == PORT {
			a := ap.Addr().As4()
			line = fmt.Sprintf("PORT %d,%d,%d,%d,%d,%d", a[0], a[1], a[2], a[3], ap.Port()>>8, ap.Port()&0xff)
		} else {
			fam := 1
			if ap.Addr().Is6() {
				fam = 2
			}
			line = fmt.Sprintf("EPRT |%d|%s|%d|", fam, ap.Addr(), ap.Port())
		}
		if _, err := c.expect(line, 2); err != nil {
			return nil, err
		}
		if err := c.Raw([]byte(cmd + "\r\n")); err != nil {
			return nil, err
		}
		type res struct {
			c   net.Conn
			err error
		}
		ch := make(chan res, 1)
		go func() { dc, err := ln.Accept(); ch <- res{dc, err} }()
		select {
		case r := <-ch:
			if r.err != nil {
				return nil, fmt.Errorf("failed to accept the data connection: %w", r.err)
			}
			rep, err := c.read()
			if err != nil {
				r.c.Close()
				return nil, err
			}
			if rep.Code/100 != 1 {
				r.c.Close()
				return nil, &Error{Cmd: cmd, Reply: rep}
			}
			return c.secure(ctx, r.c)
		case <-ctx.Done():
			ln.Close()
			rep, err := c.read()
			if err == nil {
				return nil, fmt.Errorf("server did not connect back (%s): %w", rep, ctx.Err())
			}
			return nil, fmt.Errorf("server did not connect back: %w", ctx.Err())
		}
	}
	return nil, fmt.Errorf("unknown mode %q", mode)
}

// Retrieve downloads path and returns its SHA-256 and size.
func (c *Client) Retrieve(ctx context.Context, mode Mode, path string) (string, int64, error) {
	if _, err := c.expect("TYPE I", 2); err != nil {
		return "", 0, err
	}
	dc, err := c.data(ctx, mode, "RETR "+path)
	if err != nil {
		return "", 0, err
	}
	h := sha256.New()
	_ = dc.SetReadDeadline(time.Now().Add(2 * c.Timeout))
	n, err := io.Copy(h, dc)
	dc.Close()
	if err != nil {
		return "", n, fmt.Errorf("failed to read data: %w", err)
	}
	rep, err := c.Read()
	if err != nil {
		return "", n, err
	}
	if rep.Code/100 != 2 {
		return "", n, &Error{Cmd: "RETR", Reply: rep}
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// Store uploads r as path and returns the SHA-256 and size sent.
func (c *Client) Store(ctx context.Context, mode Mode, path string, r io.Reader) (string, int64, error) {
	if _, err := c.expect("TYPE I", 2); err != nil {
		return "", 0, err
	}
	dc, err := c.data(ctx, mode, "STOR "+path)
	if err != nil {
		return "", 0, err
	}
	h := sha256.New()
	_ = dc.SetDeadline(time.Now().Add(2 * c.Timeout))
	n, err := io.Copy(dc, io.TeeReader(r, h))
	if err == nil {
		err = finishUpload(dc)
	}
	dc.Close()
	if err != nil {
		return "", n, fmt.Errorf("failed to write data: %w", err)
	}
	rep, err := c.Read()
	if err != nil {
		return "", n, err
	}
	if rep.Code/100 != 2 {
		return "", n, &Error{Cmd: "STOR", Reply: rep}
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// List runs LIST and returns the listing.
func (c *Client) List(ctx context.Context, mode Mode) (string, error) {
	dc, err := c.data(ctx, mode, "LIST")
	if err != nil {
		return "", err
	}
	_ = dc.SetReadDeadline(time.Now().Add(2 * c.Timeout))
	b, err := io.ReadAll(dc)
	dc.Close()
	if err != nil {
		return "", err
	}
	rep, err := c.Read()
	if err != nil {
		return "", err
	}
	if rep.Code/100 != 2 {
		return "", &Error{Cmd: "LIST", Reply: rep}
	}
	return string(b), nil
}

// finishUpload ends an upload's data connection gracefully: close_notify
// (TLS), then FIN, then read until the server closes. Closing at once
// would reset the connection when unread bytes sit in the receive buffer
// (TLS 1.3 session tickets), and the server would report the upload
// failed (vsftpd: 426).
func finishUpload(dc net.Conn) error {
	raw := dc
	if tc, ok := dc.(*tls.Conn); ok {
		if err := tc.CloseWrite(); err != nil {
			return err
		}
		raw = tc.NetConn()
	}
	if tcp, ok := raw.(*net.TCPConn); ok {
		if err := tcp.CloseWrite(); err != nil {
			return err
		}
	}
	_, err := io.Copy(io.Discard, dc)
	return err
}
