package ftp

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// commandCases are shared with the fuzz seeds.
var commandCases = []struct {
	in      string
	want    Command
	wantErr error
}{
	{in: "USER anonymous", want: Command{Verb: "USER", Arg: "anonymous"}},
	{in: "pass secret", want: Command{Verb: "PASS", Arg: "secret"}},
	{in: "PASV", want: Command{Verb: "PASV"}},
	{in: "CWD", want: Command{Verb: "CWD"}},
	{in: "MKD new dir", want: Command{Verb: "MKD", Arg: "new dir"}},
	{in: "XPWD", want: Command{Verb: "XPWD"}},
	{in: "LIST ", want: Command{Verb: "LIST", Arg: ""}},
	{in: "USER  bob", want: Command{Verb: "USER", Arg: " bob"}},
	{in: "RETR caf\xc3\xa9.txt", want: Command{Verb: "RETR", Arg: "caf\xc3\xa9.txt"}},
	{in: "FOOB bar", want: Command{Verb: "FOOB", Arg: "bar"}},
	{in: "PORT 192,0,2,10,4,1", want: Command{Verb: "PORT", Arg: "192,0,2,10,4,1"}},
	{in: "", wantErr: ErrMalformed},
	{in: "GO", wantErr: ErrMalformed},
	{in: "PORTS 1", wantErr: ErrMalformed},
	{in: " PORT 1,2,3,4,5,6", wantErr: ErrMalformed},
	{in: "PORT,1,2,3,4,5,6", wantErr: ErrMalformed},
	{in: "PORT\t1,2,3,4,5,6", wantErr: ErrMalformed},
	{in: "NOOP\rPORT 1,2,3,4,5,6", wantErr: ErrMalformed},
	{in: "RETR a\x00b", wantErr: ErrMalformed},
	{in: "RETR a\x7fb", wantErr: ErrMalformed},
	{in: "Host: example.com", wantErr: ErrMalformed},
	{in: "POST / HTTP/1.1", want: Command{Verb: "POST", Arg: "/ HTTP/1.1"}},
	{in: "12AB", wantErr: ErrMalformed},
}

func TestParseCommand(t *testing.T) {
	t.Parallel()
	for _, tt := range commandCases {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseCommand(tt.in)
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("ParseCommand(%q) error = %v, want %v", tt.in, err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseCommand(%q) mismatch (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestParseCommandErrorHidesText(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"PASS:hunter2", "PASSWD hunter2", "PASS hunter2\x01"} {
		_, err := ParseCommand(in)
		if err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("ParseCommand(%q) error = %v, want an error that does not quote the line", in, err)
		}
	}
}

func TestKnownVerb(t *testing.T) {
	t.Parallel()
	for _, v := range strings.Fields("USER PASS ACCT AUTH ADAT PBSZ PROT CCC PORT EPRT LPRT PASV EPSV LPSV REIN QUIT RETR STOR STOU APPE LIST NLST MLSD MLST DELE RNFR RNTO MKD RMD CWD CDUP PWD TYPE MODE STRU REST ABOR FEAT OPTS SYST STAT HELP NOOP SIZE MDTM SITE ALLO XPWD") {
		if !KnownVerb(v) {
			t.Errorf("KnownVerb(%q) = false, want true", v)
		}
	}
	if KnownVerb("POST") {
		t.Error(`KnownVerb("POST") = true, want false`)
	}
}

func mustAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestVerbClasses(t *testing.T) {
	t.Parallel()
	type classes struct{ Active, Transfer, Data, Known bool }
	tests := map[string]classes{
		"PORT": {Active: true, Known: true},
		"EPRT": {Active: true, Known: true},
		"LPRT": {Active: true, Known: true},
		"PASV": {Known: true},
		"EPSV": {Known: true},
		"RETR": {Transfer: true, Data: true, Known: true},
		"STOR": {Transfer: true, Data: true, Known: true},
		"STOU": {Transfer: true, Data: true, Known: true},
		"APPE": {Transfer: true, Data: true, Known: true},
		"LIST": {Transfer: true, Data: true, Known: true},
		"NLST": {Transfer: true, Data: true, Known: true},
		"MLSD": {Transfer: true, Data: true, Known: true},
		"DELE": {Transfer: true, Known: true},
		"RNFR": {Transfer: true, Known: true},
		"RNTO": {Transfer: true, Known: true},
		"MKD":  {Transfer: true, Known: true},
		"RMD":  {Transfer: true, Known: true},
		"MLST": {Known: true},
		"XMKD": {Known: true},
		"CWD":  {Known: true},
		"retr": {}, // upper case only, as in Command.Verb
		"port": {},
		"":     {},
		"XYZZ": {},
	}
	for verb, want := range tests {
		got := classes{IsActiveVerb(verb), IsTransferVerb(verb), UsesDataConnection(verb), KnownVerb(verb)}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%q: classes mismatch (-want +got):\n%s", verb, diff)
		}
	}
}
