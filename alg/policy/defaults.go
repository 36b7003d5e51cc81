package policy

import (
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

	// Room for a busy edge gateway's concurrent control connections. With
	// defaultMaxFlowBytes it bounds buffering at 16384 × 64 KiB = 1 GiB in
	// the worst case; lower it on small boxes.
	defaultMaxFlows = 16384

	// One TCP window without window scaling: enough to hold out-of-order
	// segments and a partial line of one control connection.
	defaultMaxFlowBytes = 65536

	// Holds the long paths real clients send in RETR/STOR and the long
	// replies of MLST, while bounding memory; same as ftp.DefaultMaxLine.
	defaultMaxLine = 2048

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

// defaultConfig returns a Config with every global default and no servers.
func defaultConfig() Config {
	return Config{
		Log:      Log{Level: defaultLogLevel},
		Metrics:  Metrics{Listen: defaultMetricsListen},
		NFTables: NFTables{Table: defaultTable, CtMark: defaultCtMark, PacketMark: defaultPacketMark},
		Queue:    Queue{Number: defaultQueueNumber, Length: defaultQueueLength, FailOpen: defaultFailOpen},
		Pinholes: Pinholes{Timeout: defaultPinholeTimeout},
		Limits:   Limits{MaxFlows: defaultMaxFlows, MaxFlowBytes: defaultMaxFlowBytes, MaxLine: defaultMaxLine},
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
