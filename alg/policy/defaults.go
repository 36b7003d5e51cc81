package policy

import (
	"crypto/tls"
	"log/slog"
	"net/netip"
	"time"
)

// Defaults, each with the reason it was chosen. docs/config.md repeats them
// for operators; keep the two in step.
const (
	// Info logs sessions, refusals and syncs without per-line noise; debug
	// is for chasing one problem.
	defaultLogLevel = slog.LevelInfo
	// JSON: one object a line, what log shippers parse without a grammar.
	defaultLogFormat = LogJSON

	// Under systemd's RuntimeDirectory=ftpsalg (/run/ftpsalg), which is
	// root's and goes away with the service.
	defaultAdminSocket = "/run/ftpsalg/admin.sock"

	// Loopback only: metrics reveal server names and traffic levels, so
	// exposing them beyond the gateway is an explicit choice. 9641 is not
	// a well-known port and is easy to remember as "FTP ALG metrics".
	defaultMetricsListen = "127.0.0.1:9641"

	// Named after the daemon so that `nft list tables` shows who owns it.
	defaultTable = "ftpsalg"

	// Single high bits, well clear of the low bits commonly used for
	// policy routing and of kube-proxy's 0x4000/0x8000. See
	// docs/integration.md for the rule other rule sets must follow.
	defaultCtMark     = 0x10000000
	defaultPacketMark = 0x20000000

	// Away from queue 0, which other NFQUEUE users take when unconfigured.
	defaultQueueNumber = 4040

	// Four times the kernel's 1024: absorbs bursts of control segments on
	// a busy gateway; a packet that does not fit is dropped (or let
	// through with failure: open).
	defaultQueueLength = 4096

	// Closed: when ftpsalg is down or behind, FTP stops instead of flowing
	// uninspected. A gateway that prefers availability says so.
	defaultFailOpen = false

	// Clients open the data connection right after the reply or command
	// that announced it; 5s covers slow links while keeping short the
	// window in which someone else could use the pinhole.
	defaultPinholeTimeout = 5 * time.Second

	// Room for a busy edge gateway's concurrent control connections. The
	// packet path buffers no packets; per flow it holds at most one line
	// per direction (max_line), so 16384 flows cost tens of MiB at worst.
	defaultMaxFlows = 16384

	// Holds the long paths real clients send in RETR/STOR and the long
	// replies of MLST, while bounding memory; same as ftp.DefaultMaxLine.
	defaultMaxLine = 2048

	// One client address rarely holds more than a few control sessions
	// (clients open one, a few more for parallel transfers); 64 leaves
	// room for a small office behind one NAT address while stopping one
	// address from taking the whole max_flows.
	defaultMaxSessionsPerClient = 64

	// A client sends its first command (USER, AUTH) right after the
	// greeting, its ClientHello right after connecting to an implicit
	// port; 30s covers a human typing at a command-line client while
	// freeing a connection that trickles bytes without a line end.
	defaultFirstCommandTimeout = 30 * time.Second

	// Longer than the servers' own idle timeouts (vsftpd 300s, proftpd
	// 600s, pure-ftpd 900s), so the server normally ends an idle session
	// with its own 421; this bounds a session whose server does not.
	defaultIdleTimeout = 30 * time.Minute

	// Many clients still use PORT/EPRT, and each announcement is checked
	// (own address, unprivileged port) before a pinhole opens. Turn it off
	// per server when clients are known to use passive mode.
	defaultActiveMode = true

	// FXP (server-to-server transfer) is what the FTP bounce attack uses
	// (RFC 2577 section 3); allow it only for servers that need it.
	defaultThirdParty = false

	// The whole unprivileged range works with any server out of the box;
	// operators should narrow it to the server's configured passive range.
	defaultPassiveMin = 1024
	defaultPassiveMax = 65535

	// mitm section.

	// Where packaged configuration lives; ftpsalg ca init writes there.
	defaultCADir = "/etc/ftpsalg/ca"

	// A day: a leaked leaf key is useful for a day at most, and minting
	// again (about 0.25 ms; see alg/certs/README.md) once a day per
	// upstream certificate costs nothing. Clients never see the lifetime
	// unless their clock is wrong.
	defaultLeafLifetime = 24 * time.Hour

	// Unprivileged and unassigned, and reads as "FTP (21) on 15000":
	// clients never connect to it directly (TPROXY delivers to it).
	defaultListenPort = 15021

	// The port after listen_port: reads as "FTP, and its data". Clients
	// never connect to it directly either.
	defaultRelayPort = 15022

	// Both read as "FTP 21 twice": easy to spot in `ip rule` and `ip route
	// show table all`, and well away from the reserved tables (253-255)
	// and the low numbers other tools pick.
	defaultRouteTable   = 2121
	defaultRulePriority = 2121

	// The next single high bit after ct_mark and packet_mark: same
	// reasoning, and disjoint from both defaults.
	defaultTProxyMark = 0x40000000

	// mitm servers.

	// TLS 1.2 is the oldest version without known protocol-level attacks
	// (RFC 8996 deprecates 1.0 and 1.1) and the newest many FTP servers
	// and clients still stop at.
	defaultMinTLSVersion = tls.VersionTLS12

	// The system's roots with name checking: what a client would have done
	// had ftpsalg not been in the path.
	defaultVerify = VerifySystem

	// Generous for a slow server or client on a loaded link, short enough
	// that a stalled peer does not hold a connection slot for long.
	defaultHandshakeTimeout = 10 * time.Second

	// Never forward credentials in clear: the point of FTPS. A server that
	// must accept plain logins turns it off.
	defaultRequireTLS = true

	// Anonymous FTP is common and harmless to forward; a server that has
	// no anonymous access refuses it itself. Turn it off to stop anonymous
	// sessions at the gateway.
	defaultAllowAnonymous = true

	// The server sees the real client address (its logs, its own access
	// rules), as it does without ftpsalg. gateway is for servers whose
	// return route does not pass through the gateway.
	defaultUpstreamSource = UpstreamClient

	// Passthrough: the kernel forwards data connections at full speed with
	// ftpsalg out of the path, and TLS stays end to end between client
	// and server on them. Servers that require TLS session reuse on data
	// connections (vsftpd's default) need relay, which costs the gateway
	// the bytes' encryption twice; docs/relay.md has the figures.
	defaultData = DataPassthrough

	// Off: the relay resumes its own session with the server whether or
	// not the client resumed with ftpsalg, so clients that never resume
	// (Python's ftplib) keep working. Turn it on to demand of clients what
	// the server demands.
	defaultRequireClientReuse = false
)

// defaultControlPorts is the port assigned to FTP (RFC 959).
func defaultControlPorts() []uint16 { return []uint16{21} }

// defaultClients allows every client: by default ftpsalg guards what the
// server and client announce, and who may connect is left to the firewall.
func defaultClients() []netip.Prefix {
	return []netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/0"),
		netip.MustParsePrefix("::/0"),
	}
}

// Implicit TLS ports have no default: implicit FTPS (conventionally port
// 990) is legacy, and RFC 4217 describes explicit AUTH TLS on the control
// port; a server that offers it lists the port.

// Brute-force throttle. A user who mistypes a password tries a few times
// and then looks it up: ten failures in ten minutes is well beyond that,
// while a guessing run reaches it within seconds. The half-hour ban then
// limits a guesser to about ten passwords per 40 minutes (some 360 a day,
// where an unthrottled run tries thousands a minute), and a locked-out
// user waits a coffee break, not a day.
const (
	defaultThrottleFailures = 10
	defaultThrottleWindow   = 10 * time.Minute
	defaultThrottleBan      = 30 * time.Minute
)

// Throttle bounds: a window or ban below a second is a typo (the kernel
// counts ban timeouts in milliseconds, the daemon's clock in seconds is
// what operators think in); a week is the longest ban a gateway should
// hold without an operator looking.
const (
	maxThrottleFailures = 1000
	minThrottleWindow   = time.Second
	maxThrottleWindow   = 24 * time.Hour
	minThrottleBan      = time.Second
	maxThrottleBan      = 7 * 24 * time.Hour
)

// defaultConfig returns a Config with every global default and no servers.
func defaultConfig() Config {
	return Config{
		Log:      Log{Level: defaultLogLevel, Format: defaultLogFormat},
		Admin:    Admin{Socket: defaultAdminSocket},
		Metrics:  Metrics{Listen: defaultMetricsListen},
		NFTables: NFTables{Table: defaultTable, CtMark: defaultCtMark, PacketMark: defaultPacketMark},
		Queue:    Queue{Number: defaultQueueNumber, Count: 1, Length: defaultQueueLength, FailOpen: defaultFailOpen},
		Pinholes: Pinholes{Timeout: defaultPinholeTimeout},
		Limits: Limits{MaxFlows: defaultMaxFlows, MaxLine: defaultMaxLine, MaxSessionsPerClient: defaultMaxSessionsPerClient,
			FirstCommandTimeout: defaultFirstCommandTimeout, IdleTimeout: defaultIdleTimeout},
		Throttle: Throttle{MaxFailures: defaultThrottleFailures, Window: defaultThrottleWindow, Ban: defaultThrottleBan},
		MITM: MITMGlobal{
			CADir:        defaultCADir,
			LeafLifetime: defaultLeafLifetime,
			ListenPort:   defaultListenPort,
			RelayPort:    defaultRelayPort,
			RouteTable:   defaultRouteTable,
			RulePriority: defaultRulePriority,
			TProxyMark:   defaultTProxyMark,
		},
	}
}

// defaultMITM returns a mitm server's settings with every default.
func defaultMITM() *MITM {
	return &MITM{
		TLS: ServerTLS{
			MinVersion:         defaultMinTLSVersion,
			Verify:             defaultVerify,
			HandshakeTimeout:   defaultHandshakeTimeout,
			RequireClientReuse: defaultRequireClientReuse,
		},
		RequireTLS:     defaultRequireTLS,
		AllowAnonymous: defaultAllowAnonymous,
		UpstreamSource: defaultUpstreamSource,
		Data:           defaultData,
	}
}

// defaultServer returns a Server with every default that does not depend on
// the server's other keys. Name, Addresses and Mode have no default.
func defaultServer() Server {
	return Server{
		ControlPorts: defaultControlPorts(),
		PassiveMin:   defaultPassiveMin,
		PassiveMax:   defaultPassiveMax,
		ActiveMode:   defaultActiveMode,
		ThirdParty:   defaultThirdParty,
		Clients:      defaultClients(),
	}
}
