package labftpd

import (
	"bufio"
	"bytes"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

func FuzzParsePORT(f *testing.F) {
	for _, s := range []string{"192,0,2,2,4,1", "0,0,0,0,0,0", "255,255,255,255,255,255", "1,2,3", "256,0,0,1,1,1", " 1, 2,3,4,5,6", "+1,0,0,1,1,1", "1,2,3,4,5,6,7"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ap, err := parsePORT(s)
		if err != nil {
			return
		}
		if !ap.Addr().Is4() {
			t.Fatalf("parsePORT(%q) = %v: not IPv4", s, ap)
		}
		text, err := formatPASV(ap)
		if err != nil {
			t.Fatalf("formatPASV(%v): %v", ap, err)
		}
		inner := text[strings.IndexByte(text, '(')+1 : strings.IndexByte(text, ')')]
		if again, err := parsePORT(inner); err != nil || again != ap {
			t.Fatalf("round trip %q -> %v -> %q -> %v, %v", s, ap, inner, again, err)
		}
	})
}

func FuzzParseEPRT(f *testing.F) {
	for _, s := range []string{"|1|192.0.2.2|6275|", "|2|2001:db8::1|5282|", "!1!192.0.2.2!1!", "|3|x|1|", "|1|::1|1|", "||||", "|2|fe80::1%eth0|1|", "|1|1.2.3.4|65536|"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ap, err := parseEPRT(s)
		if err != nil {
			return
		}
		again, err := parseEPRT(formatEPRT(ap))
		if err != nil || again != ap {
			t.Fatalf("round trip %q -> %v -> %q -> %v, %v", s, ap, formatEPRT(ap), again, err)
		}
	})
}

// pipeListener hands out the server ends of net.Pipe pairs.
type pipeListener struct {
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 21} }

func (l *pipeListener) dial() net.Conn {
	client, server := net.Pipe()
	l.conns <- server
	return client
}

// FuzzSession feeds arbitrary command lines to a logged-in session and
// checks that it never panics (the session recovers panics and logs them)
// and answers or hangs up within its deadlines.
func FuzzSession(f *testing.F) {
	seeds := []string{
		"USER u\r\nPASS p\r\nPWD\r\nQUIT\r\n",
		"PASV\r\nEPSV\r\nEPSV ALL\r\nPORT 1,2,3,4,5,6\r\nEPRT |1|192.0.2.2|5000|\r\n",
		"CWD ../../..\r\nLIST -la\r\nNLST\r\nRETR f\r\nSTOR g\r\nSIZE f\r\nMDTM f\r\n",
		"\xff\xf4\xff\xf2ABOR\r\n\xff\xff\xff\r\n\x00\x00\r\n",
		strings.Repeat("A", 5000) + "\r\nNOOP\n",
		"TYPE L 8\r\nMODE S\r\nSTRU R\r\nCDUP\r\nFEAT\r\nSYST\r\n",
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, input string) {
		var logs bytes.Buffer
		var mu sync.Mutex
		srv := New(Config{
			Files:       map[string][]byte{"f": []byte("data"), "d/g": nil},
			IdleTimeout: time.Second,
			DataTimeout: 50 * time.Millisecond,
			MaxLine:     256,
			Logger:      slog.New(slog.NewTextHandler(lockedWriter{&logs, &mu}, nil)),
		})
		ln := newPipeListener()
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ln) }()
		c := ln.dial()
		c.SetDeadline(time.Now().Add(testTimeout))
		// Drain replies concurrently: net.Pipe writes block until read.
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			br := bufio.NewReader(c)
			for {
				if _, err := br.ReadString('\n'); err != nil {
					return
				}
			}
		}()
		c.Write([]byte("USER u\r\nPASS p\r\n" + input + "\r\nQUIT\r\n"))
		c.Close()
		<-drained
		if err := srv.Close(); err != nil {
			t.Fatal(err)
		}
		<-done
		mu.Lock()
		defer mu.Unlock()
		if strings.Contains(logs.String(), "session panic") {
			t.Fatalf("panic for input %q:\n%s", input, logs.String())
		}
	})
}

func TestResolve(t *testing.T) {
	for _, tc := range []struct{ cwd, p, rel, abs string }{
		{"/", "", ".", "/"},
		{"/", "a", "a", "/a"},
		{"/a", "b/../c", "a/c", "/a/c"},
		{"/a", "/x", "x", "/x"},
		{"/a", "../../..", ".", "/"},
		{"/", "..\\x", "..\\x", "/..\\x"},
	} {
		rel, abs := resolve(tc.cwd, tc.p)
		if rel != tc.rel || abs != tc.abs {
			t.Errorf("resolve(%q, %q) = %q, %q; want %q, %q", tc.cwd, tc.p, rel, abs, tc.rel, tc.abs)
		}
	}
}

func TestFormatEPRT(t *testing.T) {
	for ap, want := range map[netip.AddrPort]string{
		netip.MustParseAddrPort("192.0.2.2:6275"):       "|1|192.0.2.2|6275|",
		netip.MustParseAddrPort("[::ffff:192.0.2.2]:1"): "|1|192.0.2.2|1|",
		netip.MustParseAddrPort("[2001:db8:c::2]:5282"): "|2|2001:db8:c::2|5282|",
	} {
		if got := formatEPRT(ap); got != want {
			t.Errorf("formatEPRT(%v) = %q, want %q", ap, got, want)
		}
	}
}
