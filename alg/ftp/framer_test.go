package ftp

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFramer(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("A", 20)
	tests := []struct {
		name string
		max  int
		in   string
		want []FramedLine
	}{
		{
			name: "crlf lines",
			max:  64,
			in:   "USER anonymous\r\nPASV\r\n",
			want: []FramedLine{
				{Ref: LineRef{0, 16}, Raw: []byte("USER anonymous\r\n"), Text: "USER anonymous"},
				{Ref: LineRef{16, 6}, Raw: []byte("PASV\r\n"), Text: "PASV"},
			},
		},
		{
			name: "bare lf and empty lines",
			max:  64,
			in:   "NOOP\n\r\n\nSYST\n",
			want: []FramedLine{
				{Ref: LineRef{0, 5}, Raw: []byte("NOOP\n"), Text: "NOOP"},
				{Ref: LineRef{5, 2}, Raw: []byte("\r\n"), Text: ""},
				{Ref: LineRef{7, 1}, Raw: []byte("\n"), Text: ""},
				{Ref: LineRef{8, 5}, Raw: []byte("SYST\n"), Text: "SYST"},
			},
		},
		{
			name: "bare cr does not end a line and only one cr is stripped",
			max:  64,
			in:   "NOOP\rPORT 1,2,3,4,5,6\r\r\n",
			want: []FramedLine{
				{Ref: LineRef{0, 24}, Raw: []byte("NOOP\rPORT 1,2,3,4,5,6\r\r\n"), Text: "NOOP\rPORT 1,2,3,4,5,6\r"},
			},
		},
		{
			name: "incomplete line is not reported",
			max:  64,
			in:   "NOOP\r\nPORT 1,2,3",
			want: []FramedLine{
				{Ref: LineRef{0, 6}, Raw: []byte("NOOP\r\n"), Text: "NOOP"},
			},
		},
		{
			name: "telnet sequences",
			max:  64,
			in:   "\xff\xf4\xff\xf2ABOR\r\nSTOR a\xff\xffb\r\nNO\xff\xfb\x01OP\r\nSYST\xff\r\nCWD x\xff\xfd\r\n",
			want: []FramedLine{
				{Ref: LineRef{0, 10}, Raw: []byte("\xff\xf4\xff\xf2ABOR\r\n"), Text: "ABOR"},
				{Ref: LineRef{10, 11}, Raw: []byte("STOR a\xff\xffb\r\n"), Text: "STOR a\xffb"},
				{Ref: LineRef{21, 9}, Raw: []byte("NO\xff\xfb\x01OP\r\n"), Text: "NOOP"},
				{Ref: LineRef{30, 7}, Raw: []byte("SYST\xff\r\n"), Text: "SYST"},
				{Ref: LineRef{37, 9}, Raw: []byte("CWD x\xff\xfd\r\n"), Text: "CWD x"},
			},
		},
		{
			name: "line of exactly max bytes fits",
			max:  8,
			in:   "ABCDEF\r\n",
			want: []FramedLine{
				{Ref: LineRef{0, 8}, Raw: []byte("ABCDEF\r\n"), Text: "ABCDEF"},
			},
		},
		{
			name: "too long then resync at the next lf",
			max:  24,
			in:   long + long + "\r\nPORT 1,2,3,4,5,6\r\nNOOP\r\n",
			want: []FramedLine{
				{Ref: LineRef{0, 24}, Raw: []byte((long + long)[:24]), Text: (long + long)[:24], TooLong: true},
				{Ref: LineRef{42, 18}, Raw: []byte("PORT 1,2,3,4,5,6\r\n"), Text: "PORT 1,2,3,4,5,6"},
				{Ref: LineRef{60, 6}, Raw: []byte("NOOP\r\n"), Text: "NOOP"},
			},
		},
		{
			name: "too long hides a command that starts mid-line",
			max:  16,
			in:   "SITE " + long + "PORT 1,2,3,4,5,6\r\nNOOP\r\n",
			want: []FramedLine{
				{Ref: LineRef{0, 16}, Raw: []byte(("SITE " + long)[:16]), Text: ("SITE " + long)[:16], TooLong: true},
				{Ref: LineRef{43, 6}, Raw: []byte("NOOP\r\n"), Text: "NOOP"},
			},
		},
		{
			name: "cr just before the limit",
			max:  6,
			in:   "ABCDE\r\nX\n",
			want: []FramedLine{
				{Ref: LineRef{0, 6}, Raw: []byte("ABCDE\r"), Text: "ABCDE\r", TooLong: true},
				{Ref: LineRef{7, 2}, Raw: []byte("X\n"), Text: "X"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			check := func(how string, got []FramedLine) {
				t.Helper()
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("%s: lines mismatch (-want +got):\n%s", how, diff)
				}
			}

			f := NewFramer(tt.max)
			check("one chunk", f.Feed([]byte(tt.in)))
			if got, want := f.Offset(), uint64(len(tt.in)); got != want {
				t.Errorf("Offset() = %d, want %d", got, want)
			}

			for i := 0; i <= len(tt.in); i++ {
				f := NewFramer(tt.max)
				got := f.Feed([]byte(tt.in[:i]))
				got = append(got, f.Feed([]byte(tt.in[i:]))...)
				check(fmt.Sprintf("split at %d", i), got)
				if f.Buffered() >= tt.max {
					t.Errorf("Buffered() = %d, want < %d", f.Buffered(), tt.max)
				}
			}

			f = NewFramer(tt.max)
			var got []FramedLine
			for i := range len(tt.in) {
				got = append(got, f.Feed([]byte{tt.in[i]})...)
			}
			check("byte by byte", got)
		})
	}
}

func TestFramerDoesNotRetainInput(t *testing.T) {
	t.Parallel()
	f := NewFramer(64)
	in := []byte("PASS secret\r\nNOOP\r")
	lines := f.Feed(in)
	rest := []byte("\n")
	for i := range in {
		in[i] = 'Z'
	}
	lines = append(lines, f.Feed(rest)...)
	rest[0] = 'Z'
	want := []FramedLine{
		{Ref: LineRef{0, 13}, Raw: []byte("PASS secret\r\n"), Text: "PASS secret"},
		{Ref: LineRef{13, 6}, Raw: []byte("NOOP\r\n"), Text: "NOOP"},
	}
	if diff := cmp.Diff(want, lines); diff != "" {
		t.Errorf("lines mismatch (-want +got):\n%s", diff)
	}
}

func TestFramerBoundedBuffer(t *testing.T) {
	t.Parallel()
	f := NewFramer(100)
	chunk := bytes.Repeat([]byte("x"), 7)
	for range 1000 {
		f.Feed(chunk)
		if cap(f.buf) > 100 {
			t.Fatalf("buffer capacity %d exceeds the line bound 100", cap(f.buf))
		}
	}
	if got := NewFramer(0).max; got != DefaultMaxLine {
		t.Errorf("NewFramer(0) bound = %d, want %d", got, DefaultMaxLine)
	}
}
