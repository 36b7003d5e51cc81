package policy

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"
)

// Config is a validated policy with every default filled in.
type Config struct {
	Log      Log
	Admin    Admin
	Metrics  Metrics
	NFTables NFTables
	Queue    Queue
	Pinholes Pinholes
	Limits   Limits
	// Throttle bans client addresses that fail to log in too often (key
	// throttle).
	Throttle Throttle
	// MITM holds the settings shared by every mitm-mode server. It has its
	// defaults even when the policy has no mitm section or no mitm server.
	MITM MITMGlobal
	// Servers is never empty: a policy without servers is refused.
	Servers []Server
	// Clients are the masqueraded client networks (top-level key clients):
	// their control connections go through the transparent listener, and
	// their PORT/EPRT announcements are translated to a NAT address
	// (docs/nat.md). Empty by default.
	Clients []ClientNAT
}

// ClientNAT is one masqueraded client network (an item of the top-level
// key clients).
type ClientNAT struct {
	// Name identifies the entry in logs; unique among clients (key name).
	Name string
	// Prefixes are the inside prefixes (key prefixes): masked, never
	// empty, overlapping no other entry's.
	Prefixes []netip.Prefix
	// NAT are the gateway's outside addresses these clients are
	// translated to (key nat_addresses): at most one per family, never
	// empty, each on the host.
	NAT []netip.Addr
	// PortMin and PortMax bound, inclusively, the gateway ports reserved
	// for translated PORT/EPRT announcements (key nat_ports).
	PortMin, PortMax uint16
}

// ClientNAT returns the clients entry whose prefixes contain a.
func (c *Config) ClientNAT(a netip.Addr) (*ClientNAT, bool) {
	a = a.Unmap().WithZone("")
	for i := range c.Clients {
		for _, p := range c.Clients[i].Prefixes {
			if p.Contains(a) {
				return &c.Clients[i], true
			}
		}
	}
	return nil, false
}

// Address returns the entry's NAT address of the same family as family.
func (n *ClientNAT) Address(family netip.Addr) (netip.Addr, bool) {
	is4 := family.Unmap().Is4()
	for _, a := range n.NAT {
		if a.Is4() == is4 {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// Stream reports whether any control connection goes through the
// transparent listener: a mitm server, a published server or a clients
// entry.
func (c *Config) Stream() bool {
	if len(c.Clients) > 0 {
		return true
	}
	for _, s := range c.Servers {
		if s.Mode == ModeMITM || s.Published() {
			return true
		}
	}
	return false
}

// CheckHost checks the policy against the host's addresses: every public
// and NAT address must be one of local (the gateway answers for them).
// Load does not call it, so that a policy can be checked elsewhere.
func CheckHost(c *Config, local []netip.Addr) error {
	has := func(a netip.Addr) bool {
		for _, l := range local {
			if l.Unmap() == a {
				return true
			}
		}
		return false
	}
	var missing []string
	for _, s := range c.Servers {
		for _, a := range s.Public {
			if !has(a) {
				missing = append(missing, fmt.Sprintf("server %q: public address %s", s.Name, a))
			}
		}
	}
	for _, n := range c.Clients {
		for _, a := range n.NAT {
			if !has(a) {
				missing = append(missing, fmt.Sprintf("clients %q: nat address %s", n.Name, a))
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("not an address of this host (add it to an interface, or fix the policy): %s", strings.Join(missing, "; "))
	}
	return nil
}

// Log configures the daemon's logger (key log).
type Log struct {
	// Level is the minimum level logged (key level: debug, info, warn or
	// error).
	Level slog.Level
	// Format is how records are written (key format): LogJSON (one JSON
	// object a line) or LogText (logfmt-like key=value). Read at start: a
	// reload keeps the running format.
	Format string
}

// Log formats (key log.format).
const (
	LogJSON = "json"
	LogText = "text"
)

// Admin configures the local admin endpoint `ftpsalg status` reads (key
// admin).
type Admin struct {
	// Socket is the absolute path of the Unix socket (key socket), created
	// mode 0600: live sessions name clients and users, so only root reads
	// them. Read at start: a reload keeps the running socket.
	Socket string
}

// Metrics configures the Prometheus endpoint (key metrics).
type Metrics struct {
	// Listen is the host:port the metrics HTTP server listens on (key
	// listen). The port is numeric; the host may be empty (all addresses).
	Listen string
}

// NFTables configures the one nftables table ftpsalg owns (key nftables).
type NFTables struct {
	// Table is the name of the inet table ftpsalg creates and removes (key
	// table).
	Table string
	// CtMark is the conntrack mark bits ftpsalg sets on connections it
	// handles (key ct_mark). Never zero. How other rule sets must treat
	// these bits is described in docs/integration.md.
	CtMark uint32
	// PacketMark is the packet mark bits ftpsalg sets on packets it has
	// seen (key packet_mark). Never zero; never shares a bit with CtMark.
	PacketMark uint32
}

// Queue configures the NFQUEUE the packet path reads (key queue).
type Queue struct {
	// Number is the (first) NFQUEUE number (key number: N, or a range
	// N-M).
	Number uint16
	// Count is how many queues from Number on the daemon reads, one reader
	// each (1 for a single number, M-N+1 for a range). The queue rule
	// spreads flows over them by the kernel's flow hash, which is
	// symmetric: both directions of a flow land on the same queue.
	Count uint16
	// Length is the kernel queue length in packets (key length).
	Length uint32
	// FailOpen lets packets through uninspected when ftpsalg is not
	// reading the queue or the queue is full (key failure: open). The
	// default, failure: closed, drops them.
	FailOpen bool
}

// Pinholes configures data-connection pinholes (key pinholes).
type Pinholes struct {
	// Timeout is how long a pinhole waits for its data connection before
	// it expires (key timeout).
	Timeout time.Duration
}

// Limits bounds the memory ftpsalg uses for control connections (key
// limits).
type Limits struct {
	// MaxFlows is the most control connections tracked at once (key
	// max_flows).
	MaxFlows int
	// MaxLine is the longest command or reply line in bytes, CRLF included
	// (key max_line).
	MaxLine int
	// MaxSessionsPerClient is the most control connections one client
	// address holds at once, both paths (key max_sessions_per_client).
	MaxSessionsPerClient int
	// FirstCommandTimeout bounds the time from a stream-path connection's
	// accept to its first complete command, the TLS handshake of an
	// implicit port included (key first_command_timeout).
	FirstCommandTimeout time.Duration
	// IdleTimeout ends a stream-path control connection on which the
	// client sent no complete command for this long (key idle_timeout).
	IdleTimeout time.Duration
}

// Throttle is the brute-force throttle (key throttle): a client address
// with MaxFailures failed logins within Window is refused new control
// connections for Ban, by a kernel set element (docs/config.md).
type Throttle struct {
	// MaxFailures is how many failed logins within Window ban an address
	// (key max_failures); 0 turns throttling off.
	MaxFailures int
	// Window is the sliding window failures are counted in (key window).
	Window time.Duration
	// Ban is how long a banned address is refused (key ban).
	Ban time.Duration
	// Allow are prefixes that are never banned (key allow).
	Allow []netip.Prefix
}

// Enabled reports whether failed logins lead to bans.
func (t Throttle) Enabled() bool { return t.MaxFailures > 0 }

// Allowed reports whether a is in an allow-listed prefix (never banned).
func (t Throttle) Allowed(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	for _, p := range t.Allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Mode says how ftpsalg handles a server's control connections.
type Mode uint8

const (
	// ModeInspect reads the control connection on the packet path and
	// follows it while it is clear text; after AUTH TLS (RFC 4217) it only
	// tracks TLS records until CCC returns to clear text (RFC 2228).
	ModeInspect Mode = iota + 1
	// ModeMITM terminates TLS on the control connection and inspects the
	// plaintext.
	ModeMITM
	// ModeOpaque reads the control connection on the packet path like
	// ModeInspect while it is clear text, but does not need to read it once
	// TLS starts (explicit or implicit FTPS that ftpsalg must not or cannot
	// decrypt): it checks the TLS handshake it sees against the server's
	// TLS policy and, while the TLS control connection lives, admits that
	// client's data connections to the server's passive range (one kernel
	// element per session), and the server's to the client's active range
	// if one is configured (docs/opaque.md).
	ModeOpaque
)

// String returns the policy spelling of m ("inspect" or "mitm").
func (m Mode) String() string {
	switch m {
	case ModeInspect:
		return "inspect"
	case ModeMITM:
		return "mitm"
	case ModeOpaque:
		return "opaque"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// Server is the policy for one protected FTP server (an item of key
// servers).
type Server struct {
	// Name identifies the server in logs and metrics; unique in the policy
	// (key name).
	Name string
	// Addresses are the server's addresses as clients reach them (key
	// addresses). Never empty; no address and port pair belongs to two
	// servers.
	Addresses []netip.Addr
	// ControlPorts are the ports of plain and explicit-TLS (AUTH TLS)
	// control connections (key control_ports).
	ControlPorts []uint16
	// ImplicitTLSPorts are the ports whose control connections start with
	// TLS (key implicit_tls_ports); disjoint from ControlPorts.
	ImplicitTLSPorts []uint16
	// PassiveMin and PassiveMax bound, inclusively, the ports the server
	// may announce for passive data connections (key passive_ports).
	// PassiveMin is at least 1024.
	PassiveMin, PassiveMax uint16
	// Mode is how the control connection is handled (key mode).
	Mode Mode
	// ActiveMode permits active data connections: PORT, EPRT, LPRT (key
	// active_mode).
	ActiveMode bool
	// ThirdParty permits data connections to or from an address other than
	// the control connection's peer, i.e. FXP (key allow_third_party).
	ThirdParty bool
	// Clients are the prefixes clients may connect from (key clients).
	// Never empty; every prefix is masked.
	Clients []netip.Prefix
	// Public are the gateway's addresses clients reach this server at
	// (key public; docs/nat.md): at most one per family, each mapping to
	// the server's one address of its family. Empty: not published.
	Public []netip.Addr
	// PublicPortMin and PublicPortMax bound, inclusively, the public ports
	// announced instead of the server's when its port is taken on the
	// public side (key public_ports). Default: the passive range.
	PublicPortMin, PublicPortMax uint16
	// MITM holds the settings that apply in mitm mode only. It is non-nil
	// exactly when Mode is ModeMITM.
	MITM *MITM
	// Opaque holds the settings that apply in opaque mode only. It is
	// non-nil exactly when Mode is ModeOpaque.
	Opaque *Opaque
}

// Opaque holds an opaque-mode server's settings (docs/opaque.md).
type Opaque struct {
	// MinVersion is the lowest TLS version the control connection's
	// handshake may select, tls.VersionTLS12 or tls.VersionTLS13 (key
	// tls.min_version).
	MinVersion uint16
	// ActiveMin and ActiveMax bound, inclusively, the client ports the
	// server may connect to for active data connections while the TLS
	// control connection lives (key opaque.active_ports). Zero: no active
	// mode (PORT and EPRT travel encrypted, so a narrower admission is not
	// possible).
	ActiveMin, ActiveMax uint16
}

// MITMGlobal configures what every mitm-mode server shares: the operator's
// CA and the transparent-proxy plumbing (key mitm). docs/tls.md describes
// mitm mode.
type MITMGlobal struct {
	// CADir is the directory holding the operator's CA, ca.crt and ca.key
	// (key ca_dir); an absolute path. Whether it exists is checked when the
	// daemon starts, not by the parser: check-config runs anywhere.
	CADir string
	// LeafLifetime is the longest a leaf certificate minted from the CA is
	// valid (key leaf_lifetime); a leaf never outlives the upstream
	// certificate it copies.
	LeafLifetime time.Duration
	// ListenPort is the port of the TPROXY listener on the gateway that
	// intercepted control connections are delivered to (key listen_port).
	ListenPort uint16
	// RouteTable is the routing table that delivers TPROXY-marked packets
	// locally (key route_table); never 0 or the kernel's reserved 253-255.
	RouteTable uint32
	// RulePriority is the priority of the policy routing rule that sends
	// TPROXY-marked packets to RouteTable (key rule_priority); below the
	// main table's 32766 so that it is consulted first.
	RulePriority uint32
	// TProxyMark is the packet mark bits that select that rule (key
	// tproxy_mark). Never zero; no bit in common with NFTables.CtMark or
	// NFTables.PacketMark.
	TProxyMark uint32
	// RelayPort is the port of the TPROXY listener that data connections
	// of servers with data: relay are delivered to (key relay_port);
	// never ListenPort.
	RelayPort uint16
}

// MITM holds a server's mitm-mode settings (keys valid only in a server with
// mode: mitm).
type MITM struct {
	// TLS is the policy for the two TLS legs (key tls).
	TLS ServerTLS
	// RequireTLS refuses USER before AUTH TLS with 530, so that
	// credentials are never forwarded in clear text (key require_tls).
	RequireTLS bool
	// AllowAnonymous permits anonymous login (USER anonymous or ftp) (key
	// allow_anonymous).
	AllowAnonymous bool
	// UpstreamSource is the source address of the connection to the server
	// (key upstream_source).
	UpstreamSource UpstreamSource
	// Data is how TLS data connections are carried (key data).
	Data DataPath
}

// DataPath says how a mitm server's data connections cross the gateway.
type DataPath uint8

const (
	// DataPassthrough lets the kernel forward each announced data
	// connection through a single-use pinhole; client and server do TLS
	// with each other end to end on it.
	DataPassthrough DataPath = iota + 1
	// DataRelay steers each announced data connection to ftpsalg, which
	// terminates it (presenting the control connection's certificate and
	// letting the client resume its control session), makes its own
	// connection to the other end (resuming its own upstream control
	// session) and relays the bytes. For servers that require TLS session
	// reuse on data connections (vsftpd's require_ssl_reuse, proftpd's
	// mod_tls, FileZilla Server).
	DataRelay
)

// String returns the policy spelling of p.
func (p DataPath) String() string {
	switch p {
	case DataPassthrough:
		return "passthrough"
	case DataRelay:
		return "relay"
	}
	return fmt.Sprintf("DataPath(%d)", uint8(p))
}

// ServerTLS is a mitm server's TLS policy (key tls).
type ServerTLS struct {
	// MinVersion is the lowest TLS version accepted on either leg,
	// tls.VersionTLS12 or tls.VersionTLS13 (key min_version).
	MinVersion uint16
	// Verify is how the server's certificate is verified (key verify).
	Verify VerifyMode
	// CAFile is a PEM file of the CA certificates that verify the server
	// (key ca_file); set exactly when Verify is VerifyCA.
	CAFile string
	// PinSHA256 are SHA-256 digests of accepted SubjectPublicKeyInfos, each
	// 32 bytes (key pin_sha256); non-empty exactly when Verify is VerifyPin.
	PinSHA256 [][]byte
	// ServerName is the name the server's certificate is verified against
	// when the client sends no SNI (key server_name). Empty means the
	// address the client connected to is verified as an IP SAN.
	ServerName string
	// Certificate and Key are PEM files of a static leaf certificate shown
	// to clients instead of one minted from the CA, for servers the
	// operator owns (keys certificate and key). Both or neither are set.
	Certificate, Key string
	// HandshakeTimeout bounds each TLS handshake, client-facing and
	// server-facing (key handshake_timeout).
	HandshakeTimeout time.Duration
	// RequireClientReuse refuses a relayed TLS data connection on which
	// the client did not resume its control connection's TLS session (key
	// require_client_reuse), as the server itself would. Only with
	// DataRelay.
	RequireClientReuse bool
}

// VerifyMode says how the server's certificate is verified on the
// server-facing leg.
type VerifyMode uint8

const (
	// VerifySystem verifies against the system's root CAs and the server
	// name.
	VerifySystem VerifyMode = iota + 1
	// VerifyCA verifies against the CAs in ServerTLS.CAFile only, and the
	// server name.
	VerifyCA
	// VerifyPin accepts exactly the certificates whose public key is one of
	// ServerTLS.PinSHA256, whatever their issuer, name or validity.
	VerifyPin
	// VerifyNone accepts any certificate. The daemon logs a warning.
	VerifyNone
)

// String returns the policy spelling of v.
func (v VerifyMode) String() string {
	switch v {
	case VerifySystem:
		return "system"
	case VerifyCA:
		return "ca"
	case VerifyPin:
		return "pin"
	case VerifyNone:
		return "none"
	}
	return fmt.Sprintf("VerifyMode(%d)", uint8(v))
}

// UpstreamSource says which source address the connection to the server
// uses.
type UpstreamSource uint8

const (
	// UpstreamClient connects from the client's address (transparently,
	// IP_TRANSPARENT), so the server sees and logs the real client.
	UpstreamClient UpstreamSource = iota + 1
	// UpstreamGateway connects from the gateway's own address.
	UpstreamGateway
)

// String returns the policy spelling of u.
func (u UpstreamSource) String() string {
	switch u {
	case UpstreamClient:
		return "client"
	case UpstreamGateway:
		return "gateway"
	}
	return fmt.Sprintf("UpstreamSource(%d)", uint8(u))
}

// PacketPathPorts returns the control ports (plain, explicit and implicit
// TLS) of the servers whose control connections the packet path reads
// (inspect and opaque modes), sorted, each once.
func (c *Config) PacketPathPorts() []uint16 {
	ports := []uint16{}
	for _, s := range c.Servers {
		if s.Mode == ModeMITM {
			continue
		}
		ports = append(ports, s.ControlPorts...)
		ports = append(ports, s.ImplicitTLSPorts...)
	}
	slices.Sort(ports)
	return slices.Compact(ports)
}

// ServerFor returns the server that owns the control port port on address
// addr, if any. Port may be a control port or an implicit TLS port. An
// IPv4-mapped IPv6 addr is matched as the IPv4 address it carries, and a
// zone is ignored.
func (c *Config) ServerFor(addr netip.Addr, port uint16) (*Server, bool) {
	addr = addr.Unmap().WithZone("")
	// A linear scan: policies hold a handful of servers and the lookup runs
	// once per new control connection.
	for i := range c.Servers {
		s := &c.Servers[i]
		if !slices.Contains(s.Addresses, addr) && !slices.Contains(s.Public, addr) {
			continue
		}
		if slices.Contains(s.ControlPorts, port) || slices.Contains(s.ImplicitTLSPorts, port) {
			return s, true
		}
	}
	return nil, false
}

// Published reports whether the server has public addresses.
func (s *Server) Published() bool { return len(s.Public) > 0 }

// Private returns the server's address for its public address public
// (the one of the same family), false when public is not one of s.Public.
func (s *Server) Private(public netip.Addr) (netip.Addr, bool) {
	public = public.Unmap().WithZone("")
	if !slices.Contains(s.Public, public) {
		return netip.Addr{}, false
	}
	for _, a := range s.Addresses {
		if a.Is4() == public.Is4() {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// ClientAllowed reports whether a client at a may use the server. An
// IPv4-mapped IPv6 a is matched as the IPv4 address it carries, and a zone is
// ignored.
func (s *Server) ClientAllowed(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	for _, p := range s.Clients {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Load reads and parses the policy file at path. An invalid policy is
// reported as an *Errors naming path; a file that cannot be read as a
// wrapped I/O error.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read policy: %w", err)
	}
	return Parse(path, data)
}

// Parse parses and validates a policy. Name is used as the file name in
// errors. When the policy is invalid the error is an *Errors holding every
// problem found, in line order.
func Parse(name string, data []byte) (*Config, error) {
	d := &decoder{file: name}
	cfg := defaultConfig()
	if root, ok := d.document(data); ok {
		d.config(root, &cfg)
	}
	if len(d.errs) > 0 {
		return nil, d.errors()
	}
	return &cfg, nil
}
