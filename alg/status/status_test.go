package status

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestServeFetch(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	want := Snapshot{
		Time: now,
		Sessions: []Session{
			{Client: netip.MustParseAddrPort("192.0.2.2:40000"), Server: netip.MustParseAddrPort("198.51.100.10:21"),
				ServerName: "files", Mode: "inspect", Started: now.Add(-90 * time.Second), Pinholes: 1},
			{Client: netip.MustParseAddrPort("[2001:db8::2]:40001"), Server: netip.MustParseAddrPort("[2001:db8:1::10]:21"),
				ServerName: "secure", Mode: "mitm", User: "alice", Started: now.Add(-5 * time.Second)},
		},
		Pinholes: []Pinhole{{Src: netip.MustParseAddr("192.0.2.2"), Dst: netip.MustParseAddrPort("198.51.100.10:50001"),
			DataMode: "passive", Client: netip.MustParseAddrPort("192.0.2.2:40000"), Expires: now.Add(3500 * time.Millisecond)}},
		Bans: []Ban{
			{Client: netip.MustParseAddr("203.0.113.66"), Expires: now.Add(90 * time.Second)},
			{Client: netip.MustParseAddr("2001:db8:bad::1"), Expires: now.Add(30 * time.Minute)},
		},
	}
	// The source returns them out of order; Serve sorts.
	src := want
	src.Sessions = []Session{want.Sessions[1], want.Sessions[0]}
	path := filepath.Join(t.TempDir(), "admin.sock")
	if err := os.WriteFile(path, nil, 0o644); err != nil { // a stale file is replaced
		t.Fatal(err)
	}
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- ServeOn(ctx, ln, func() Snapshot {
			return Snapshot{Time: src.Time, Sessions: append([]Session(nil), src.Sessions...), Pinholes: src.Pinholes,
				Bans: []Ban{src.Bans[1], src.Bans[0]}}
		}, nil)
	}()
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v (%v), want 0600", fi.Mode(), err)
	}
	fctx, fcancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer fcancel()
	got, raw, err := Fetch(fctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateComparable(netip.Addr{}, netip.AddrPort{})); diff != "" {
		t.Errorf("snapshot (-want +got):\n%s", diff)
	}
	if !strings.Contains(string(raw), `"server_name": "files"`) {
		t.Errorf("JSON: %s", raw)
	}
	var b bytes.Buffer
	if err := got.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	wantTable := `SESSIONS (2)
CLIENT               SERVER               NAME    MODE     USER   AGE    PINHOLES
192.0.2.2:40000      198.51.100.10:21     files   inspect  -      1m30s  1
[2001:db8::2]:40001  [2001:db8:1::10]:21  secure  mitm     alice  5s     0

PENDING PINHOLES (1)
FROM       TO                   DATA MODE  CONTROL CLIENT   SECONDS LEFT
192.0.2.2  198.51.100.10:50001  passive    192.0.2.2:40000  3.5

BANNED CLIENTS (2)
CLIENT           EXPIRES               SECONDS LEFT
203.0.113.66     2026-11-21T12:01:30Z  90
2001:db8:bad::1  2026-11-21T12:30:00Z  1800
`
	if diff := cmp.Diff(wantTable, b.String()); diff != "" {
		t.Errorf("table (-want +got):\n%s", diff)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket left after shutdown: %v", err)
	}
}
