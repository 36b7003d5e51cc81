package lab

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Defaults of VsftpdOptions.
const (
	DefaultPasvMinPort = 50000
	DefaultPasvMaxPort = 50100
	// vsftpdReadyTimeout bounds the wait for vsftpd's first 220 banner.
	vsftpdReadyTimeout = 10 * time.Second
	// userTimeout bounds useradd/userdel retries (they fail while another
	// process holds the /etc/passwd lock).
	userTimeout = 15 * time.Second
)

// VsftpdOptions configures StartVsftpd. The zero value is a plain-FTP
// server on port 21 with passive ports 50000-50100.
type VsftpdOptions struct {
	// Port is the control port (default 21).
	Port uint16
	// PasvMinPort and PasvMaxPort bound passive ports (default 50000-50100).
	PasvMinPort, PasvMaxPort uint16
	// PasvAddress, when valid, is announced in 227 replies instead of the
	// server's own address (vsftpd's pasv_address): a misconfigured or
	// hostile server naming a third party. It must be IPv4, and it makes
	// the instance IPv4-only: on a listen_ipv6 socket vsftpd 3.0.3
	// announces pasv_address as 0,0,0,0.
	PasvAddress netip.Addr
	// ActiveFromEphemeralPort makes active-mode data connections leave from
	// an ephemeral port (connect_from_port_20=NO). By default they leave
	// from port 20 as RFC 959 says and as firewalls expect.
	ActiveFromEphemeralPort bool
	// TLS, when set, turns on explicit FTPS (AUTH TLS) and optionally a
	// second, implicit-FTPS instance.
	TLS *VsftpdTLS
	// Extra lines ("key=value") are appended to the generated config and
	// override earlier keys.
	Extra []string
	// OpenSSL, when set, is an OpenSSL configuration for both instances'
	// system_default section (OPENSSL_CONF), e.g. OpenSSLNoTickets or
	// OpenSSLMaxTLS12: what vsftpd's own options cannot say.
	OpenSSL string
}

// OpenSSL system_default settings for VsftpdOptions.OpenSSL (OpenSSL 3,
// SSL_CONF_cmd(3)).
const (
	// OpenSSLNoTickets sets SSL_OP_NO_TICKET: TLS 1.2 then resumes with
	// session IDs only, TLS 1.3 with stateful tickets.
	OpenSSLNoTickets = "Options = -SessionTicket"
	// OpenSSLMaxTLS12 caps the server at TLS 1.2.
	OpenSSLMaxTLS12 = "MaxProtocol = TLSv1.2"
	// OpenSSLNoTLS13Tickets stops the TLS 1.3 tickets sent after each
	// full handshake (SSL_CTX_set_num_tickets 0). A client that never
	// reads them (curl uploading on a data connection) closes with unread
	// data and resets the connection, which vsftpd may see before the
	// last bytes (426).
	OpenSSLNoTLS13Tickets = "NumTickets = 0"
)

// VsftpdTLS holds vsftpd's TLS settings (Debian 12: OpenSSL 3).
type VsftpdTLS struct {
	// CertFile and KeyFile are PEM files (rsa_cert_file, rsa_private_key_file).
	CertFile, KeyFile string
	// ForceData and ForceLogin require TLS for data connections and logins
	// (force_local_data_ssl, force_local_logins_ssl).
	ForceData, ForceLogin bool
	// RequireSSLReuse requires data connections to resume the control
	// connection's TLS session (require_ssl_reuse). vsftpd's default is YES;
	// the lab's is NO so that clients that never resume (Python ftplib)
	// work too. curl and lftp resume.
	RequireSSLReuse bool
	// ImplicitPort, when non-zero, starts a second instance with
	// implicit_ssl=YES on that port (990 by convention).
	ImplicitPort uint16
}

// Vsftpd is a running vsftpd in the server namespace with its own system
// user. Files for download go in Home.
type Vsftpd struct {
	User, Password string
	// Home is the user's home and login directory; URL paths are relative
	// to it.
	Home     string
	UID, GID int
	Port     uint16
	// ImplicitPort is the implicit-FTPS port, 0 when there is none.
	ImplicitPort uint16
	// ConfigPath is the generated config; Log the vsftpd-format log with
	// the FTP dialogue (log_ftp_protocol); XferLog the wu-ftpd transfer log.
	ConfigPath, Log, XferLog string
	Process                  *Process
	// Implicit is the implicit-FTPS instance, when VsftpdTLS.ImplicitPort
	// is set.
	Implicit *Process

	lab *Lab
}

// HaveVsftpd reports whether the vsftpd binary is installed.
func HaveVsftpd() bool {
	_, err := vsftpdPath()
	return err == nil
}

func vsftpdPath() (string, error) {
	if p, err := exec.LookPath("vsftpd"); err == nil {
		return p, nil
	}
	const sbin = "/usr/sbin/vsftpd"
	if _, err := os.Stat(sbin); err != nil {
		return "", fmt.Errorf("vsftpd is not installed: %w", err)
	}
	return sbin, nil
}

// StartVsftpd creates a throw-away system user (ftpsalgNNNN, shell
// /bin/bash, random password, home in the lab directory), writes a config
// and starts vsftpd in the server namespace. One instance with
// listen_ipv6=YES serves IPv4 (as mapped addresses) and IPv6. It returns
// once the server has sent its 220 banner; it calls t.Fatalf on failure.
// The user is deleted in cleanup, after vsftpd and its session processes
// have been killed.
func (l *Lab) StartVsftpd(opts VsftpdOptions) *Vsftpd {
	l.t.Helper()
	v, err := l.startVsftpd(opts)
	if err != nil {
		l.t.Fatalf("lab: %v", err)
	}
	return v
}

func (l *Lab) startVsftpd(opts VsftpdOptions) (*Vsftpd, error) {
	bin, err := vsftpdPath()
	if err != nil {
		return nil, err
	}
	if opts.Port == 0 {
		opts.Port = 21
	}
	if opts.PasvMinPort == 0 && opts.PasvMaxPort == 0 {
		opts.PasvMinPort, opts.PasvMaxPort = DefaultPasvMinPort, DefaultPasvMaxPort
	}
	if opts.PasvAddress.IsValid() && !opts.PasvAddress.Unmap().Is4() {
		return nil, fmt.Errorf("vsftpd pasv_address must be IPv4, got %s", opts.PasvAddress)
	}
	ctx, cancel := context.WithTimeout(context.Background(), userTimeout+vsftpdReadyTimeout)
	defer cancel()

	n := l.nextSeq()
	v := &Vsftpd{
		Port:       opts.Port,
		Home:       filepath.Join(l.dir, fmt.Sprintf("home-%d", n)),
		ConfigPath: filepath.Join(l.dir, fmt.Sprintf("vsftpd-%d.conf", n)),
		Log:        filepath.Join(l.dir, "logs", fmt.Sprintf("%03d-vsftpd-protocol.log", n)),
		XferLog:    filepath.Join(l.dir, "logs", fmt.Sprintf("%03d-vsftpd-xferlog.log", n)),
		lab:        l,
	}
	empty := filepath.Join(l.dir, "vsftpd-empty")
	for _, d := range []string{empty, filepath.Join(l.dir, "logs"), v.Home} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("failed to create %s: %w", d, err)
		}
	}
	if err := l.addFTPUser(ctx, v); err != nil {
		return nil, err
	}
	if err := os.Chown(v.Home, v.UID, v.GID); err != nil {
		return nil, fmt.Errorf("failed to chown %s: %w", v.Home, err)
	}
	if err := os.WriteFile(v.ConfigPath, []byte(vsftpdConfig(opts, v, empty, opts.Port, false)), 0o600); err != nil {
		return nil, fmt.Errorf("failed to write vsftpd config: %w", err)
	}
	var env []string
	if opts.OpenSSL != "" {
		p := filepath.Join(l.dir, fmt.Sprintf("openssl-%d.cnf", n))
		conf := "openssl_conf = openssl_init\n[openssl_init]\nssl_conf = ssl_sect\n[ssl_sect]\n" +
			"system_default = system_default_sect\n[system_default_sect]\n" + opts.OpenSSL + "\n"
		if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
			return nil, fmt.Errorf("failed to write OpenSSL config: %w", err)
		}
		env = []string{"OPENSSL_CONF=" + p}
	}
	v.Process, err = l.startEnv(Server, env, bin, v.ConfigPath)
	if err != nil {
		return nil, err
	}
	if err := l.waitFTP(ctx, v.Process, opts.Port, true); err != nil {
		return nil, err
	}
	if opts.TLS != nil && opts.TLS.ImplicitPort != 0 {
		v.ImplicitPort = opts.TLS.ImplicitPort
		conf := strings.TrimSuffix(v.ConfigPath, ".conf") + "-implicit.conf"
		if err := os.WriteFile(conf, []byte(vsftpdConfig(opts, v, empty, opts.TLS.ImplicitPort, true)), 0o600); err != nil {
			return nil, fmt.Errorf("failed to write vsftpd config: %w", err)
		}
		v.Implicit, err = l.startEnv(Server, env, bin, conf)
		if err != nil {
			return nil, err
		}
		// The banner comes after the TLS handshake: wait for the port only.
		if err := l.waitFTP(ctx, v.Implicit, opts.TLS.ImplicitPort, false); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// vsftpdConfig renders the config. The choices that matter are commented
// in the output itself, so that a failing test's log explains them.
func vsftpdConfig(opts VsftpdOptions, v *Vsftpd, empty string, port uint16, implicit bool) string {
	yn := func(b bool) string {
		if b {
			return "YES"
		}
		return "NO"
	}
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	line("# generated by ftpsalg test/lab")
	if opts.PasvAddress.IsValid() {
		line("# IPv4 only: with listen_ipv6=YES vsftpd 3.0.3 announces pasv_address as 0,0,0,0")
		line("listen=YES")
		line("listen_ipv6=NO")
	} else {
		line("# one dual-stack listener: IPv4 clients appear as ::ffff:a.b.c.d")
		line("listen=NO")
		line("listen_ipv6=YES")
	}
	line("listen_port=%d", port)
	line("background=NO")
	line("ftpd_banner=ftpsalg lab vsftpd")
	line("anonymous_enable=NO")
	line("local_enable=YES")
	line("write_enable=YES")
	line("local_umask=022")
	line("pam_service_name=vsftpd")
	line("userlist_enable=NO")
	line("session_support=NO")
	line("chroot_local_user=NO")
	line("secure_chroot_dir=%s", empty)
	line("# no seccomp (breaks TLS on this kernel), no private net/pid namespaces:")
	line("# every session process stays in the server namespace, where cleanup finds it")
	line("seccomp_sandbox=NO")
	line("isolate=NO")
	line("isolate_network=NO")
	line("pasv_enable=YES")
	line("pasv_min_port=%d", opts.PasvMinPort)
	line("pasv_max_port=%d", opts.PasvMaxPort)
	if opts.PasvAddress.IsValid() {
		line("pasv_address=%s", opts.PasvAddress.Unmap())
		line("pasv_addr_resolve=NO")
	}
	line("pasv_promiscuous=NO")
	line("port_enable=YES")
	line("port_promiscuous=NO")
	line("connect_from_port_20=%s", yn(!opts.ActiveFromEphemeralPort))
	line("max_clients=0")
	line("max_per_ip=0")
	line("delay_failed_login=0")
	line("idle_session_timeout=120")
	line("data_connection_timeout=60")
	line("accept_timeout=20")
	line("connect_timeout=20")
	line("xferlog_enable=YES")
	line("dual_log_enable=YES")
	line("xferlog_file=%s", v.XferLog)
	line("vsftpd_log_file=%s", v.Log)
	line("log_ftp_protocol=YES")
	if t := opts.TLS; t != nil {
		line("ssl_enable=YES")
		line("rsa_cert_file=%s", t.CertFile)
		line("rsa_private_key_file=%s", t.KeyFile)
		line("# vsftpd's default cipher list fails with OpenSSL 3")
		line("ssl_ciphers=HIGH")
		line("ssl_sslv2=NO")
		line("ssl_sslv3=NO")
		line("ssl_tlsv1=YES")
		line("allow_anon_ssl=NO")
		line("force_local_data_ssl=%s", yn(t.ForceData))
		line("force_local_logins_ssl=%s", yn(t.ForceLogin))
		line("require_ssl_reuse=%s", yn(t.RequireSSLReuse))
		line("implicit_ssl=%s", yn(implicit))
	} else {
		line("ssl_enable=NO")
	}
	for _, e := range opts.Extra {
		line("%s", e)
	}
	return b.String()
}

// waitFTP polls until a TCP connection to the server namespace's port
// succeeds (and, with banner, a 220 reply arrives), or the process exits,
// or ctx ends.
func (l *Lab) waitFTP(ctx context.Context, p *Process, port uint16, banner bool) error {
	target := netip.AddrPortFrom(ServerAddr4, port)
	var lastErr error
	for {
		select {
		case <-p.Done():
			return fmt.Errorf("vsftpd exited before being ready (%v):\n%s", p.Err(), p.Log())
		default:
		}
		lastErr = probeFTP(ctx, l, target, banner)
		if lastErr == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("vsftpd not ready on %s: %v:\n%s", target, lastErr, p.Log())
		case <-time.After(20 * time.Millisecond): // poll
		}
	}
}

func probeFTP(ctx context.Context, l *Lab, target netip.AddrPort, banner bool) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := l.Dial(ctx, Server, "tcp", netip.AddrPort{}, target)
	if err != nil {
		return err
	}
	defer c.Close()
	if !banner {
		return nil
	}
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("failed to read banner: %w", err)
	}
	if !strings.HasPrefix(line, "220") {
		return fmt.Errorf("unexpected banner %q", line)
	}
	_, _ = c.Write([]byte("QUIT\r\n"))
	return nil
}

// addFTPUser creates a unique system user for v and registers its removal.
func (l *Lab) addFTPUser(ctx context.Context, v *Vsftpd) error {
	v.Password = randomPassword(20)
	for {
		name := fmt.Sprintf("ftpsalg%04d", randomInt(10000))
		out, err := l.command(ctx, "", "useradd", "-M", "-d", v.Home, "-s", "/bin/bash", "-c", "ftpsalg test lab", name).CombinedOutput()
		switch code := ExitCode(err); {
		case err == nil:
			v.User = name
		case code == 9: // name in use: pick another
			continue
		case code == 1 || code == 10: // cannot lock or update /etc/passwd: retry
			if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
				return fmt.Errorf("failed to add user: %s: %w", out, err)
			}
			continue
		default:
			return fmt.Errorf("failed to add user %s: %w: %s", name, err, out)
		}
		break
	}
	l.addCleanup(func() error { return l.deleteUser(v.User) })
	u, err := user.Lookup(v.User)
	if err != nil {
		return fmt.Errorf("failed to look up user %s: %w", v.User, err)
	}
	v.UID, _ = strconv.Atoi(u.Uid)
	v.GID, _ = strconv.Atoi(u.Gid)
	cmd := l.command(ctx, "", "chpasswd")
	cmd.Stdin = strings.NewReader(v.User + ":" + v.Password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("failed to set password of %s: %w: %s", v.User, err, out)
	}
	return nil
}

// deleteUser removes the user (and its group), retrying while a process of
// the user is still exiting or another tool holds the lock.
func (l *Lab) deleteUser(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), userTimeout)
	defer cancel()
	for {
		out, err := l.command(ctx, "", "userdel", name).CombinedOutput()
		if err == nil {
			return nil
		}
		switch ExitCode(err) {
		case 6: // no such user
			return nil
		case 1, 8, 10: // lock held, or a process of the user still exiting
			if serr := sleepCtx(ctx, 50*time.Millisecond); serr != nil {
				return fmt.Errorf("failed to delete user %s: %w: %s", name, err, out)
			}
			continue
		}
		return fmt.Errorf("failed to delete user %s: %w: %s", name, err, out)
	}
}

// Path returns the absolute path of name in the user's home.
func (v *Vsftpd) Path(name string) string { return filepath.Join(v.Home, filepath.Clean("/"+name)) }

// CreateFile writes size random bytes to name in the user's home, owned by
// the user, and returns their SHA-256 (hex).
func (v *Vsftpd) CreateFile(name string, size int64) (string, error) {
	p := v.Path(name)
	sum, err := RandomFile(p, size)
	if err != nil {
		return "", err
	}
	if err := os.Chown(p, v.UID, v.GID); err != nil {
		return "", fmt.Errorf("failed to chown %s: %w", p, err)
	}
	return sum, nil
}

// SHA256 returns the SHA-256 (hex) of name in the user's home, e.g. after
// an upload.
func (v *Vsftpd) SHA256(name string) (string, error) {
	sum, _, err := FileSHA256(v.Path(name))
	return sum, err
}

// URL returns ftp://user:password@addr[:port]/name for a client.
func (v *Vsftpd) URL(addr netip.Addr, name string) string {
	return ftpURL("ftp", v.User, v.Password, addr, v.Port, 21, name)
}

// ImplicitURL returns ftps://user:password@addr:port/name for the
// implicit-FTPS instance (VsftpdTLS.ImplicitPort).
func (v *Vsftpd) ImplicitURL(addr netip.Addr, name string) string {
	return ftpURL("ftps", v.User, v.Password, addr, v.ImplicitPort, 990, name)
}

// ProtocolLog returns vsftpd's log of the FTP dialogue so far.
func (v *Vsftpd) ProtocolLog() string {
	b, _ := os.ReadFile(v.Log)
	return string(b)
}

func ftpURL(scheme, user, pass string, addr netip.Addr, port, defPort uint16, name string) string {
	host := addr.String()
	if port != defPort {
		host = net.JoinHostPort(host, strconv.Itoa(int(port)))
	} else if addr.Is6() {
		host = "[" + host + "]"
	}
	u := url.URL{Scheme: scheme, Host: host, Path: "/" + strings.TrimPrefix(name, "/")}
	if user != "" {
		u.User = url.UserPassword(user, pass)
	}
	return u.String()
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
