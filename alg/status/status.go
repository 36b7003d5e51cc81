package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Snapshot is the daemon's state at Time.
type Snapshot struct {
	Time     time.Time `json:"time"`
	Sessions []Session `json:"sessions"`
	Pinholes []Pinhole `json:"pinholes"`
	// Bans are the client addresses refused for failed logins (policy
	// throttle).
	Bans []Ban `json:"bans"`
}

// Ban is one banned client address: its new control connections are
// dropped until Expires.
type Ban struct {
	Client  netip.Addr `json:"client"`
	Expires time.Time  `json:"expires"`
}

// Session is one live control session.
type Session struct {
	Client     netip.AddrPort `json:"client"`
	Server     netip.AddrPort `json:"server"`
	ServerName string         `json:"server_name"`
	Mode       string         `json:"mode"`           // inspect or mitm
	User       string         `json:"user,omitempty"` // the USER argument, when the path reads it
	Started    time.Time      `json:"started"`
	Pinholes   int            `json:"pinholes"` // pending pinholes the session holds
}

// Pinhole is one pending pinhole: the kernel admits one connection from
// Src to Dst until Expires.
type Pinhole struct {
	Src      netip.Addr     `json:"src"`
	Dst      netip.AddrPort `json:"dst"`
	DataMode string         `json:"data_mode"` // passive or active
	Client   netip.AddrPort `json:"client"`    // the control session's client
	Expires  time.Time      `json:"expires"`
}

// Sort orders sessions by start and pinholes by expiry, for stable output.
func (s *Snapshot) Sort() {
	slices.SortFunc(s.Sessions, func(a, b Session) int {
		if c := a.Started.Compare(b.Started); c != 0 {
			return c
		}
		return a.Client.Compare(b.Client)
	})
	slices.SortFunc(s.Pinholes, func(a, b Pinhole) int {
		if c := a.Expires.Compare(b.Expires); c != 0 {
			return c
		}
		return a.Dst.Compare(b.Dst)
	})
	slices.SortFunc(s.Bans, func(a, b Ban) int {
		if c := a.Expires.Compare(b.Expires); c != 0 {
			return c
		}
		return a.Client.Compare(b.Client)
	})
}

// Serve listens on the Unix socket path and serves it (ServeOn) until ctx
// is done.
func Serve(ctx context.Context, path string, source func() Snapshot, log *slog.Logger) error {
	ln, err := Listen(path)
	if err != nil {
		return err
	}
	return ServeOn(ctx, ln, source, log)
}

// Listen creates the Unix socket path, mode 0600 (live sessions name
// clients and users: root only), replacing a stale socket file.
func Listen(path string) (net.Listener, error) {
	// Under systemd RuntimeDirectory= made it; run by hand, it may not exist.
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("failed to create the admin socket's directory: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("failed to remove stale admin socket %s: %w", path, err)
	}
	// Created 0600 from the start (umask), so no other user can connect
	// in between; the chmod is for filesystems that ignore the umask.
	old := umask(0o177)
	ln, err := net.Listen("unix", path)
	umask(old)
	if err != nil {
		return nil, fmt.Errorf("failed to listen on admin socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("failed to restrict admin socket %s: %w", path, err)
	}
	return ln, nil
}

// ServeOn answers GET / on ln with source's snapshot as JSON until ctx is
// done, then closes ln (removing the socket file).
func ServeOn(ctx context.Context, ln net.Listener, source func() Snapshot, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		s := source()
		s.Sort()
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(s)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("admin socket up", "path", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("failed to serve the admin socket: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx) // also removes the socket file
		return nil
	}
}

// Fetch reads a snapshot from the daemon's socket at path.
func Fetch(ctx context.Context, path string) (Snapshot, []byte, error) {
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://ftpsalg/", nil)
	if err != nil {
		return Snapshot{}, nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return Snapshot{}, nil, fmt.Errorf("failed to reach the daemon's admin socket %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return Snapshot{}, nil, fmt.Errorf("failed to read the daemon's status: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return Snapshot{}, nil, fmt.Errorf("daemon answered %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	var s Snapshot
	if err := json.Unmarshal(body, &s); err != nil {
		return Snapshot{}, nil, fmt.Errorf("failed to decode the daemon's status: %w", err)
	}
	return s, body, nil
}

// WriteTable prints s as three tables: sessions (client, server, name,
// mode, user, age, pinholes), pending pinholes (tuple, seconds left) and
// banned clients (address, expiry, seconds left).
func (s Snapshot) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "SESSIONS (%d)\n", len(s.Sessions))
	if len(s.Sessions) > 0 {
		fmt.Fprintln(tw, "CLIENT\tSERVER\tNAME\tMODE\tUSER\tAGE\tPINHOLES")
		for _, x := range s.Sessions {
			user := x.User
			if user == "" {
				user = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", x.Client, x.Server, x.ServerName, x.Mode, user,
				s.Time.Sub(x.Started).Truncate(time.Second), x.Pinholes)
		}
	}
	fmt.Fprintf(tw, "\nPENDING PINHOLES (%d)\n", len(s.Pinholes))
	if len(s.Pinholes) > 0 {
		fmt.Fprintln(tw, "FROM\tTO\tDATA MODE\tCONTROL CLIENT\tSECONDS LEFT")
		for _, p := range s.Pinholes {
			left := max(p.Expires.Sub(s.Time).Seconds(), 0)
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.1f\n", p.Src, p.Dst, p.DataMode, p.Client, left)
		}
	}
	fmt.Fprintf(tw, "\nBANNED CLIENTS (%d)\n", len(s.Bans))
	if len(s.Bans) > 0 {
		fmt.Fprintln(tw, "CLIENT\tEXPIRES\tSECONDS LEFT")
		for _, b := range s.Bans {
			left := max(b.Expires.Sub(s.Time).Seconds(), 0)
			fmt.Fprintf(tw, "%s\t%s\t%.0f\n", b.Client, b.Expires.UTC().Format(time.RFC3339), left)
		}
	}
	return tw.Flush()
}
