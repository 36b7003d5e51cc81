package lab

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Mode is how a client sets up data connections.
type Mode int

// The four data-connection modes. PASV and PORT carry IPv4 addresses only
// (RFC 959); EPSV and EPRT work for both families (RFC 2428).
const (
	PASV Mode = iota + 1 // passive, 227 reply with address and port
	EPSV                 // passive, 229 reply with port only
	PORT                 // active, client sends h1,h2,h3,h4,p1,p2
	EPRT                 // active, client sends |af|addr|port|
)

// Modes lists all modes, for table tests.
var Modes = []Mode{PASV, EPSV, PORT, EPRT}

func (m Mode) String() string {
	switch m {
	case PASV:
		return "PASV"
	case EPSV:
		return "EPSV"
	case PORT:
		return "PORT"
	case EPRT:
		return "EPRT"
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

// Passive reports whether the client opens the data connection.
func (m Mode) Passive() bool { return m == PASV || m == EPSV }

// IPv4Only reports whether the mode's command cannot carry IPv6.
func (m Mode) IPv4Only() bool { return m == PASV || m == PORT }

// CurlArgs returns curl 7.88 options that force m. Without --disable-epsv
// curl tries EPSV first and falls back to PASV; without --disable-eprt it
// tries EPRT then PORT; over IPv6 it always uses EPSV/EPRT (so the lab's
// helpers refuse PASV/PORT there). "--ftp-port -" listens on the control
// connection's local address. Passive modes add --no-ftp-skip-pasv-ip:
// since 7.74 curl ignores the 227 address by default and reuses the
// control address, which would hide a rewritten or hostile 227.
func (m Mode) CurlArgs() []string {
	switch m {
	case PASV:
		return []string{"--ftp-pasv", "--disable-epsv", "--no-ftp-skip-pasv-ip"}
	case EPSV:
		return []string{"--ftp-pasv", "--epsv", "--no-ftp-skip-pasv-ip"}
	case PORT:
		return []string{"--ftp-port", "-", "--disable-eprt"}
	case EPRT:
		return []string{"--ftp-port", "-", "--eprt"}
	}
	return nil
}

// LftpSettings returns lftp 4.9 settings that force m over the given
// address family, or an error when lftp cannot: it has no switch for EPRT
// and sends PORT over IPv4 and EPRT over IPv6, and over IPv6 it always
// uses EPSV in passive mode (ftp:prefer-epsv only matters for IPv4).
func (m Mode) LftpSettings(ipv6 bool) ([]string, error) {
	if ipv6 && m.IPv4Only() {
		return nil, fmt.Errorf("%v carries IPv4 addresses only", m)
	}
	switch m {
	case PASV:
		return []string{"set ftp:passive-mode on", "set ftp:prefer-epsv no"}, nil
	case EPSV:
		return []string{"set ftp:passive-mode on", "set ftp:prefer-epsv yes"}, nil
	case PORT:
		return []string{"set ftp:passive-mode off"}, nil
	case EPRT:
		if !ipv6 {
			return nil, errors.New("lftp 4.9 sends EPRT only over IPv6 (use curl)")
		}
		return []string{"set ftp:passive-mode off"}, nil
	}
	return nil, fmt.Errorf("unknown mode %d", int(m))
}

// ModeError says a client set up its data connection with another command
// than the one asked for (a silent fallback), or with none.
type ModeError struct {
	Want Mode
	Got  string // the last data-setup command in the client's output, or ""
}

func (e *ModeError) Error() string {
	if e.Got == "" {
		return fmt.Sprintf("client sent no %v (no data-setup command in its output)", e.Want)
	}
	return fmt.Sprintf("client used %s, not %v", e.Got, e.Want)
}

// lastDataCommand returns the last of PASV/EPSV/PORT/EPRT the client sent,
// as found after prefix (curl: "> ", lftp: "---> ") in its verbose output.
func lastDataCommand(output, prefix string) string {
	last := ""
	for line := range strings.Lines(output) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), strings.TrimSpace(prefix)+" ")
		if !ok {
			continue
		}
		verb, _, _ := strings.Cut(rest, " ")
		switch verb = strings.ToUpper(verb); verb {
		case "PASV", "EPSV", "PORT", "EPRT":
			last = verb
		}
	}
	return last
}

func checkMode(output, prefix string, want Mode) error {
	if got := lastDataCommand(output, prefix); got != want.String() {
		return &ModeError{Want: want, Got: got}
	}
	return nil
}

// Transfer is the result of a client helper.
type Transfer struct {
	Tool string // "curl" or "lftp"
	Mode Mode
	URL  string
	// Local is the downloaded file, or the uploaded source.
	Local string
	// SHA256 and Size describe Local after the transfer.
	SHA256 string
	Size   int64
	// Output is the client's verbose output: the whole FTP dialogue.
	Output  string
	Elapsed time.Duration
}

// Curl runs curl with args in the client namespace (with -q first so that
// no .curlrc is read) and returns its combined output.
func (l *Lab) Curl(ctx context.Context, args ...string) ([]byte, error) {
	return l.Run(ctx, Client, "curl", append([]string{"-q"}, args...)...)
}

// Lftp runs script (commands separated by newlines or ';') with lftp in
// the client namespace and returns its combined output. Nothing is
// prepended; see DownloadLftp for settings that make lftp fail fast.
func (l *Lab) Lftp(ctx context.Context, script string) ([]byte, error) {
	p := filepath.Join(l.dir, fmt.Sprintf("lftp-%d.script", l.nextSeq()))
	if err := os.WriteFile(p, []byte(script), 0o600); err != nil {
		return nil, err
	}
	defer os.Remove(p)
	return l.Run(ctx, Client, "lftp", "-f", p)
}

// curlBaseArgs makes curl verbose (the dialogue is the evidence), fail on
// errors and give up before ctx does.
func curlBaseArgs(ctx context.Context) []string {
	args := []string{"-g", "-sS", "-v", "--connect-timeout", "5"}
	if d, ok := ctx.Deadline(); ok {
		secs := math.Floor(time.Until(d).Seconds() - 0.5)
		args = append(args, "--max-time", strconv.Itoa(int(max(secs, 1))))
	}
	return args
}

// urlFamily reports whether rawURL names an IPv6 literal.
func urlFamily(rawURL string) (*url.URL, bool, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, false, fmt.Errorf("bad URL %q: %w", rawURL, err)
	}
	a, err := netip.ParseAddr(u.Hostname())
	if err != nil {
		return nil, false, fmt.Errorf("URL %q must name a literal address", rawURL)
	}
	return u, a.Is6() && !a.Is4In6(), nil
}

func (l *Lab) downloadPath(rawURL string) (string, error) {
	if err := os.MkdirAll(l.ClientDir(), 0o755); err != nil {
		return "", err
	}
	base := "download"
	if u, err := url.Parse(rawURL); err == nil && path.Base(u.Path) != "/" && path.Base(u.Path) != "." {
		base = path.Base(u.Path)
	}
	return filepath.Join(l.ClientDir(), fmt.Sprintf("dl-%d-%s", l.nextSeq(), base)), nil
}

// DownloadCurl downloads url into ClientDir with curl forced into mode and
// returns the file's SHA-256. Extra arguments go before the URL (and win
// over the defaults: curl keeps the last). It fails with a *CommandError
// (the output, exit code via ExitCode) or a *ModeError.
func (l *Lab) DownloadCurl(ctx context.Context, rawURL string, mode Mode, extra ...string) (*Transfer, error) {
	_, v6, err := urlFamily(rawURL)
	if err != nil {
		return nil, err
	}
	if v6 && mode.IPv4Only() {
		return nil, fmt.Errorf("%v carries IPv4 addresses only (curl would silently use the extended command)", mode)
	}
	local, err := l.downloadPath(rawURL)
	if err != nil {
		return nil, err
	}
	args := append(curlBaseArgs(ctx), mode.CurlArgs()...)
	args = append(args, extra...)
	args = append(args, "-o", local, rawURL)
	return l.finish(ctx, "curl", mode, rawURL, local, "> ", func() ([]byte, error) { return l.Curl(ctx, args...) })
}

// UploadCurl uploads the file local to url (which names the remote file)
// with curl forced into mode.
func (l *Lab) UploadCurl(ctx context.Context, rawURL, local string, mode Mode, extra ...string) (*Transfer, error) {
	_, v6, err := urlFamily(rawURL)
	if err != nil {
		return nil, err
	}
	if v6 && mode.IPv4Only() {
		return nil, fmt.Errorf("%v carries IPv4 addresses only (curl would silently use the extended command)", mode)
	}
	args := append(curlBaseArgs(ctx), mode.CurlArgs()...)
	args = append(args, extra...)
	args = append(args, "-T", local, rawURL)
	return l.finish(ctx, "curl", mode, rawURL, local, "> ", func() ([]byte, error) { return l.Curl(ctx, args...) })
}

// lftpScript builds an lftp script: settings that make it fail fast and
// show the dialogue, the mode's settings, extra lines, then the commands.
// ftp:fix-pasv-address is off so that lftp, like the curl helpers, uses
// the 227 address as given.
func lftpScript(u *url.URL, ipv6 bool, mode Mode, extra []string, commands ...string) (string, error) {
	modeSettings, err := mode.LftpSettings(ipv6)
	if err != nil {
		return "", err
	}
	lines := []string{
		"set cmd:fail-exit yes",
		"set cmd:interactive no",
		"set net:max-retries 1",
		"set net:persist-retries 0",
		"set net:reconnect-interval-base 1",
		"set net:timeout 5",
		"set ftp:ssl-allow no",
		"set ftp:fix-pasv-address no",
		"set xfer:clobber on",
		"debug 9",
	}
	lines = append(lines, modeSettings...)
	lines = append(lines, extra...)
	pass, _ := u.User.Password()
	host := u.Scheme + "://" + u.Host
	lines = append(lines, "open -u "+lftpQuote(u.User.Username()+","+pass)+" "+lftpQuote(host))
	lines = append(lines, commands...)
	return strings.Join(lines, "\n") + "\n", nil
}

// lftpQuote quotes s for lftp's command parser.
func lftpQuote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}

// remotePath is the URL's path relative to the login directory, as curl
// treats it (the first "/" separates host and path).
func remotePath(u *url.URL) string {
	return strings.TrimPrefix(u.Path, "/")
}

// DownloadLftp downloads url into ClientDir with lftp forced into mode.
// Extra lines (lftp commands, e.g. "set ftp:port-ipv4 203.0.113.2") run
// after the lab's settings and before "open".
func (l *Lab) DownloadLftp(ctx context.Context, rawURL string, mode Mode, extra ...string) (*Transfer, error) {
	u, v6, err := urlFamily(rawURL)
	if err != nil {
		return nil, err
	}
	local, err := l.downloadPath(rawURL)
	if err != nil {
		return nil, err
	}
	script, err := lftpScript(u, v6, mode, extra, "get "+lftpQuote(remotePath(u))+" -o "+lftpQuote(local))
	if err != nil {
		return nil, err
	}
	return l.finish(ctx, "lftp", mode, rawURL, local, "---> ", func() ([]byte, error) { return l.Lftp(ctx, script) })
}

// UploadLftp uploads the file local to url with lftp forced into mode.
func (l *Lab) UploadLftp(ctx context.Context, rawURL, local string, mode Mode, extra ...string) (*Transfer, error) {
	u, v6, err := urlFamily(rawURL)
	if err != nil {
		return nil, err
	}
	script, err := lftpScript(u, v6, mode, extra, "put "+lftpQuote(local)+" -o "+lftpQuote(remotePath(u)))
	if err != nil {
		return nil, err
	}
	return l.finish(ctx, "lftp", mode, rawURL, local, "---> ", func() ([]byte, error) { return l.Lftp(ctx, script) })
}

// finish runs a client, checks the mode it used and hashes the local file.
func (l *Lab) finish(ctx context.Context, tool string, mode Mode, rawURL, local, prefix string, run func() ([]byte, error)) (*Transfer, error) {
	t := &Transfer{Tool: tool, Mode: mode, URL: rawURL, Local: local}
	start := time.Now()
	out, err := run()
	t.Elapsed = time.Since(start)
	t.Output = string(out)
	if err != nil {
		return t, err
	}
	if err := checkMode(t.Output, prefix, mode); err != nil {
		return t, err
	}
	t.SHA256, t.Size, err = FileSHA256(local)
	return t, err
}
