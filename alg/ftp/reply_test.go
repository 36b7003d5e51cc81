package ftp

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestReplyAssembler(t *testing.T) {
	t.Parallel()
	// step is one Add call: done and wantErr describe its result, want
	// the reply when done.
	type step struct {
		line    string
		done    bool
		want    Reply
		wantErr bool
	}
	tests := []struct {
		name     string
		maxLines int
		steps    []step
	}{
		{
			name: "single line",
			steps: []step{
				{line: "220 (vsFTPd 3.0.5)", done: true, want: Reply{Code: 220, Lines: []string{"220 (vsFTPd 3.0.5)"}}},
				{line: "200", done: true, want: Reply{Code: 200, Lines: []string{"200"}}},
			},
		},
		{
			name: "vsftpd FEAT with a 227 line inside",
			steps: []step{
				{line: "211-Features:"},
				{line: " EPRT"},
				{line: "227 Entering Passive Mode (203,0,113,9,0,22)."},
				{line: "211-not the end"},
				{line: " UTF8"},
				{line: "211 End", done: true, want: Reply{Code: 211, Lines: []string{
					"211-Features:", " EPRT", "227 Entering Passive Mode (203,0,113,9,0,22).", "211-not the end", " UTF8", "211 End",
				}}},
			},
		},
		{
			name:     "bounded lines",
			maxLines: 2,
			steps: []step{
				{line: "214-The following commands are recognized."},
				{line: " ABOR ACCT ALLO APPE CDUP CWD  DELE EPRT EPSV FEAT HELP LIST MDTM MKD"},
				{line: " MODE NLST NOOP OPTS PASS PASV PORT PWD  QUIT REIN REST RETR RMD  RNFR"},
				{line: "214 Help OK.", done: true, want: Reply{Code: 214, Lines: []string{
					"214-The following commands are recognized.", "214 Help OK.",
				}, Omitted: 2}},
			},
		},
		{
			name: "malformed start then recovery",
			steps: []step{
				{line: "hello", wantErr: true},
				{line: "22", wantErr: true},
				{line: "220x", wantErr: true},
				{line: "720 no such class", wantErr: true},
				{line: "", wantErr: true},
				{line: "220 ready", done: true, want: Reply{Code: 220, Lines: []string{"220 ready"}}},
			},
		},
		{
			name: "protected reply code",
			steps: []step{
				{line: "631 base64data", done: true, want: Reply{Code: 631, Lines: []string{"631 base64data"}}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a := ReplyAssembler{MaxLines: tt.maxLines}
			for i, st := range tt.steps {
				got, done, err := a.Add(st.line)
				if (err != nil) != st.wantErr || (err != nil && !errors.Is(err, ErrMalformed)) {
					t.Fatalf("step %d Add(%q) error = %v, want error %v", i, st.line, err, st.wantErr)
				}
				if done != st.done {
					t.Fatalf("step %d Add(%q) done = %v, want %v", i, st.line, done, st.done)
				}
				if diff := cmp.Diff(st.want, got); diff != "" {
					t.Errorf("step %d Add(%q) mismatch (-want +got):\n%s", i, st.line, diff)
				}
				if a.InProgress() == done && !done && !st.wantErr {
					t.Errorf("step %d: InProgress() = %v inside a multi-line reply", i, a.InProgress())
				}
			}
		})
	}
}

func TestReplyText(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		r    Reply
		want string
	}{
		{Reply{Code: 227, Lines: []string{"227 Entering Passive Mode (198,51,100,2,195,80)."}}, "Entering Passive Mode (198,51,100,2,195,80)."},
		{Reply{Code: 200, Lines: []string{"200"}}, ""},
		{Reply{}, ""},
	} {
		if got := tt.r.Text(); got != tt.want {
			t.Errorf("%v.Text() = %q, want %q", tt.r, got, tt.want)
		}
	}
}
