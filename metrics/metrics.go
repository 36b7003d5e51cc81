package metrics

import (
	"github.com/ftpsalg/ftpsalg/alg/ftp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metric names, for tests and dashboards.
const (
	NameBuildInfo          = "ftpsalg_build_info"
	NameSessionsActive     = "ftpsalg_control_sessions_active"
	NameSessionsTotal      = "ftpsalg_control_sessions_total"
	NameCommandsTotal      = "ftpsalg_control_commands_total"
	NameRepliesTotal       = "ftpsalg_control_replies_total"
	NamePinholesOpened     = "ftpsalg_pinholes_opened_total"
	NamePinholesUsed       = "ftpsalg_pinholes_used_total"
	NamePinholesExpired    = "ftpsalg_pinholes_expired_total"
	NamePinholesRemoved    = "ftpsalg_pinholes_removed_total"
	NamePinholeErrors      = "ftpsalg_pinholes_errors_total"
	NamePinholeCommit      = "ftpsalg_pinholes_commit_seconds"
	NameRefusals           = "ftpsalg_policy_refusals_total"
	NameQueuePackets       = "ftpsalg_queue_packets_total"
	NameQueueVerdicts      = "ftpsalg_queue_verdicts_total"
	NameQueueErrors        = "ftpsalg_queue_errors_total"
	NameQueueDropped       = "ftpsalg_queue_kernel_dropped_packets_total"
	NameQueueUserDropped   = "ftpsalg_queue_kernel_user_dropped_packets_total"
	NameQueueWaiting       = "ftpsalg_queue_kernel_waiting_packets"
	NameVerdictLatency     = "ftpsalg_queue_verdict_latency_seconds"
	NameFlowsActive        = "ftpsalg_inspect_flows_active"
	NameFlowEvictions      = "ftpsalg_inspect_flow_evictions_total"
	NameConntrackEvents    = "ftpsalg_conntrack_events_total"
	NameConntrackRestarts  = "ftpsalg_conntrack_listener_restarts_total"
	NameNFTSyncs           = "ftpsalg_nft_syncs_total"
	NameNFTSyncSeconds     = "ftpsalg_nft_sync_duration_seconds"
	NameNFTLastSyncSuccess = "ftpsalg_nft_last_sync_success_timestamp_seconds"
	NameTLSHandshakes      = "ftpsalg_tls_handshakes_total"
	NameTLSHandshakeFails  = "ftpsalg_tls_handshake_failures_total"
	NameTLSHandshakeTime   = "ftpsalg_tls_handshake_duration_seconds"
	NameDataRefused        = "ftpsalg_mitm_data_refusals_total"
	NameMITMConnections    = "ftpsalg_mitm_connections_total"
	NameMITMParked         = "ftpsalg_mitm_parked_legs"
	NameRelayConnections   = "ftpsalg_relay_connections_total"
	NameRelayActive        = "ftpsalg_relay_connections_active"
	NameRelayBytes         = "ftpsalg_relay_bytes_total"
	NameRelayDuration      = "ftpsalg_relay_duration_seconds"
	NameRelayHandshakes    = "ftpsalg_relay_tls_handshakes_total"
	NameNATTranslations    = "ftpsalg_nat_translations_total"
	NameNATFailures        = "ftpsalg_nat_failures_total"
	NameNATOpaque          = "ftpsalg_nat_opaque_sessions_total"
	NameNATFollowed        = "ftpsalg_nat_followed_sessions_total"
	NameNATReserved        = "ftpsalg_nat_ports_reserved"

	// The table's health (gateway.Reconciler) and restoration.
	NameReconciles           = "ftpsalg_nft_reconciles_total"
	NameReconcileSeconds     = "ftpsalg_nft_reconcile_duration_seconds"
	NameReconcileLastSuccess = "ftpsalg_nft_reconcile_last_success_timestamp_seconds"
	NamePinholesRestored     = "ftpsalg_pinholes_restored_total"

	// Brute-force throttling (policy throttle). Label reason: login (a 530
	// to PASS or USER), or what a transport that cannot read the replies
	// reports (alg/gateway's Failure constants).
	NameLoginFailures = "ftpsalg_login_failures_total"
	NameBans          = "ftpsalg_bans_total"
	NameBansActive    = "ftpsalg_bans_active"

	// Per server of the policy (label server: the policy's server names,
	// a set the operator bounds).
	NameServerSessions = "ftpsalg_server_sessions_total"
	NameServerPinholes = "ftpsalg_server_pinholes_opened_total"

	// Upstream certificates seen by mitm sessions.
	NameUpstreamCertExpiry   = "ftpsalg_tls_upstream_cert_expiry_timestamp_seconds"
	NameUpstreamCertExpiring = "ftpsalg_tls_upstream_cert_expiring_total"
	NameReloadSuccessful     = "ftpsalg_config_last_reload_successful"

	// Opaque mode (docs/opaque.md).
	NameOpaqueOpened      = "ftpsalg_opaque_sessions_opened_total"
	NameOpaqueActive      = "ftpsalg_opaque_sessions_active"
	NameOpaqueRefreshes   = "ftpsalg_opaque_refreshes_total"
	NameOpaqueHandshakes  = "ftpsalg_opaque_tls_handshakes_total"
	NameOpaqueRefusals    = "ftpsalg_opaque_tls_refusals_total"
	NameReloadSuccessTime = "ftpsalg_config_last_reload_success_timestamp_seconds"
)

// BuildInfo is what the build stamped into the binary (-ldflags -X), the
// labels of ftpsalg_build_info.
type BuildInfo struct {
	Version   string // a semantic version from `git describe --tags`, or the VERSION file
	Commit    string // the commit hash
	GoVersion string // runtime.Version()
	BuildDate string // RFC 3339, UTC (SOURCE_DATE_EPOCH when set)
}

// Label values used across packages.
const (
	ModeInspect = "inspect"
	ModeMITM    = "mitm"
	ModeOpaque  = "opaque"

	// Directions of relayed bytes (RelayBytes).
	DirClientToServer = "client_to_server"
	DirServerToClient = "server_to_client"
)

// Results of relayed data connections (RelayConnections), a bounded set.
const (
	// RelayOK: the bytes were relayed until both ends closed.
	RelayOK = "ok"
	// RelayAborted: a read or write failed or timed out mid-transfer.
	RelayAborted = "aborted"
	// RelayUnexpected: a connection reached the relay listener without a
	// matching announcement (expired, or the session is gone).
	RelayUnexpected = "unexpected"
	// RelayUpstreamUnreachable: the relay could not connect onwards.
	RelayUpstreamUnreachable = "upstream_unreachable"
	// RelayClientTLSFailed, RelayUpstreamTLSFailed: a TLS handshake on
	// the data connection failed.
	RelayClientTLSFailed   = "client_tls_failed"
	RelayUpstreamTLSFailed = "upstream_tls_failed"
	// RelayClientNotResumed: refused because the client did not resume
	// its control session (tls.require_client_reuse).
	RelayClientNotResumed = "client_not_resumed"
)

// Metrics is the set of ftpsalg's own metrics.
type Metrics struct {
	SessionsActive *prometheus.GaugeVec   // mode
	SessionsTotal  *prometheus.CounterVec // mode
	Commands       *prometheus.CounterVec // verb
	Replies        *prometheus.CounterVec // class (1xx..5xx)

	PinholesOpened  *prometheus.CounterVec // mode (passive|active)
	PinholesUsed    prometheus.Counter
	PinholesExpired prometheus.Counter
	PinholesRemoved prometheus.Counter
	PinholeErrors   prometheus.Counter
	PinholeCommit   prometheus.Histogram

	Refusals *prometheus.CounterVec // reason

	QueuePackets   *prometheus.CounterVec // direction (client|server|other)
	QueueVerdicts  *prometheus.CounterVec // verdict (accept|drop|rewrite)
	QueueErrors    *prometheus.CounterVec // kind
	VerdictLatency prometheus.Histogram

	FlowsActive    prometheus.Gauge
	FlowEvictions  *prometheus.CounterVec // reason
	ConntrackEvent *prometheus.CounterVec // type
	ConntrackRest  prometheus.Counter

	NFTSyncs       *prometheus.CounterVec // result
	NFTSyncSeconds prometheus.Histogram
	NFTLastSuccess prometheus.Gauge

	TLSHandshakes     *prometheus.CounterVec // leg (client|upstream)
	TLSHandshakeFails *prometheus.CounterVec // leg, reason
	TLSHandshakeTime  *prometheus.HistogramVec
	DataRefused       *prometheus.CounterVec // reason
	MITMConnections   *prometheus.CounterVec // result
	MITMParked        prometheus.Gauge

	NATTranslations *prometheus.CounterVec // data_mode, port (kept|moved)
	NATFailures     *prometheus.CounterVec // data_mode, reason
	NATOpaque       prometheus.Counter
	NATFollowed     *prometheus.CounterVec // kind

	RelayConnections *prometheus.CounterVec // result
	RelayActive      prometheus.Gauge
	RelayBytes       *prometheus.CounterVec // direction
	RelayDuration    prometheus.Histogram
	RelayHandshakes  *prometheus.CounterVec // leg (client|upstream), resumed (true|false)

	Reconciles           *prometheus.CounterVec // result (intact|rebuilt|error)
	ReconcileSeconds     prometheus.Histogram
	ReconcileLastSuccess prometheus.Gauge
	PinholesRestored     prometheus.Counter
	LoginFailures        *prometheus.CounterVec // reason
	Bans                 prometheus.Counter
	ServerSessions       *prometheus.CounterVec // server
	ServerPinholes       *prometheus.CounterVec // server
	UpstreamCertExpiry   *prometheus.GaugeVec   // server
	UpstreamCertExpiring *prometheus.CounterVec // server
	ReloadSuccessful     prometheus.Gauge       // 1 when the last policy load (start or SIGHUP) was accepted
	ReloadSuccessTime    prometheus.Gauge       // Unix time of the last accepted policy load

	OpaqueOpened     prometheus.Counter
	OpaqueActive     prometheus.Gauge
	OpaqueRefreshes  prometheus.Counter
	OpaqueHandshakes *prometheus.CounterVec // result (ok|alert|closed|malformed|refused)
	OpaqueRefusals   *prometheus.CounterVec // reason (tls_version|tls_suite|tls_client_offer)
}

// VerbLabel maps a command verb to a bounded label value: the verbs the
// FTP core knows by name (ftp.KnownVerb, the one list of them) are their
// own label, unknown verbs count as "other" so a hostile client cannot grow
// the label set.
func VerbLabel(verb string) string {
	if ftp.KnownVerb(verb) {
		return verb
	}
	return "other"
}

// ReplyClassLabel maps a reply code to its class label ("2xx").
func ReplyClassLabel(code int) string {
	if code < 100 || code > 599 {
		return "invalid"
	}
	return string(rune('0'+code/100)) + "xx"
}

// New creates ftpsalg's metrics and registers them, the Go and process
// collectors and build information with reg.
func New(reg prometheus.Registerer, build BuildInfo) *Metrics {
	m := &Metrics{
		SessionsActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: NameSessionsActive,
			Help: "Control sessions currently tracked, by mode."}, []string{"mode"}),
		SessionsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameSessionsTotal,
			Help: "Control sessions seen since start, by mode."}, []string{"mode"}),
		Commands: prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameCommandsTotal,
			Help: "FTP commands seen on control connections, by verb (unknown verbs count as other)."}, []string{"verb"}),
		Replies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameRepliesTotal,
			Help: "FTP replies seen on control connections, by reply class."}, []string{"class"}),
		PinholesOpened: prometheus.NewCounterVec(prometheus.CounterOpts{Name: NamePinholesOpened,
			Help: "Data-connection pinholes committed to the kernel, by data mode."}, []string{"data_mode"}),
		PinholesUsed: prometheus.NewCounter(prometheus.CounterOpts{Name: NamePinholesUsed,
			Help: "Pinholes consumed by a new data connection (kernel rule counter)."}),
		PinholesExpired: prometheus.NewCounter(prometheus.CounterOpts{Name: NamePinholesExpired,
			Help: "Pinholes that timed out in the kernel without being used."}),
		PinholesRemoved: prometheus.NewCounter(prometheus.CounterOpts{Name: NamePinholesRemoved,
			Help: "Unused pinholes removed because their control session ended."}),
		PinholeErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: NamePinholeErrors,
			Help: "Pinholes that could not be committed to the kernel (the announcement was not released)."}),
		PinholeCommit: prometheus.NewHistogram(prometheus.HistogramOpts{Name: NamePinholeCommit,
			Help:    "Time to commit a pinhole to the kernel.",
			Buckets: prometheus.ExponentialBuckets(25e-6, 2, 14)}),
		Refusals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameRefusals,
			Help: "Commands, replies, packets and connections refused by policy, by reason."}, []string{"reason"}),
		QueuePackets: prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameQueuePackets,
			Help: "Packets received from the NFQUEUE, by control-connection direction."}, []string{"direction"}),
		QueueVerdicts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameQueueVerdicts,
			Help: "Verdicts issued to the NFQUEUE, by verdict."}, []string{"verdict"}),
		QueueErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameQueueErrors,
			Help: "NFQUEUE errors, by kind (enobufs, verdict, receive, truncated, parse)."}, []string{"kind"}),
		VerdictLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: NameVerdictLatency,
			Help:    "Time from a packet's arrival in the daemon to its verdict, including pinhole commits.",
			Buckets: prometheus.ExponentialBuckets(5e-6, 2, 16)}),
		FlowsActive: prometheus.NewGauge(prometheus.GaugeOpts{Name: NameFlowsActive,
			Help: "Control connections the gateway holds, both paths (limits.max_flows bounds it; the name is kept from when only the inspect path counted)."}),
		FlowEvictions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameFlowEvictions,
			Help: "Control sessions ended, both paths, by reason (fin, rst, conntrack, idle on the packet path; client_closed, server_closed, tls_failed and others on the stream path)."}, []string{"reason"}),
		ConntrackEvent: prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameConntrackEvents,
			Help: "Conntrack events received, by type."}, []string{"type"}),
		ConntrackRest: prometheus.NewCounter(prometheus.CounterOpts{Name: NameConntrackRestarts,
			Help: "Times the conntrack event listener was restarted after an error."}),
		NFTSyncs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameNFTSyncs,
			Help: "Full rebuilds of ftpsalg's nftables table, by result."}, []string{"result"}),
		NFTSyncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: NameNFTSyncSeconds,
			Help:    "Duration of full rebuilds of ftpsalg's nftables table.",
			Buckets: prometheus.ExponentialBuckets(1e-4, 4, 8)}),
		NFTLastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{Name: NameNFTLastSyncSuccess,
			Help: "Unix time of the last successful rebuild of ftpsalg's nftables table."}),
		TLSHandshakes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameTLSHandshakes,
			Help: "Completed TLS handshakes of mitm control connections, by leg (client or upstream)."}, []string{"leg"}),
		TLSHandshakeFails: prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameTLSHandshakeFails,
			Help: "Failed TLS handshakes of mitm control connections, by leg and reason."}, []string{"leg", "reason"}),
		TLSHandshakeTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: NameTLSHandshakeTime,
			Help:    "Duration of TLS handshakes of mitm control connections, by leg.",
			Buckets: prometheus.ExponentialBuckets(1e-4, 2, 16)}, []string{"leg"}),
		DataRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameDataRefused,
			Help: "Data connections the server refused in mitm mode, by reason (tls_session_reuse: passthrough to a server that requires TLS session reuse; upstream_not_resumed: the relay could not resume the server's session)."}, []string{"reason"}),
		MITMConnections: prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameMITMConnections,
			Help: "Control connections diverted to the mitm proxy, by result (accepted, refused, upstream_failed)."}, []string{"result"}),
		MITMParked: prometheus.NewGauge(prometheus.GaugeOpts{Name: NameMITMParked,
			Help: "Legs (client or upstream) of mitm control sessions parked: idle, watched by the proxy's poller without a goroutine or a line buffer; a fully idle session has two."}),
		NATTranslations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameNATTranslations,
			Help: "Data announcements translated across the NAT, by data mode (passive: a published server's 227/228/229; active: a translated client's PORT/EPRT/LPRT) and port (kept: the announced port; moved: another, because it was taken)."}, []string{"data_mode", "port"}),
		NATFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameNATFailures,
			Help: "Data announcements that could not be translated (the client got a 4xx/5xx reply), by data mode and reason (ports_exhausted, error)."}, []string{"data_mode", "reason"}),
		NATOpaque: prometheus.NewCounter(prometheus.CounterOpts{Name: NameNATOpaque,
			Help: "Translated inspect-mode control sessions that turned to TLS (AUTH TLS or implicit TLS): relayed unread, their data connections cannot be translated."}),
		NATFollowed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameNATFollowed,
			Help: "Control sessions whose translation ftpsalg learned from the kernel instead of its policy, by kind (dnat: the operator's port-forward; masquerade: the operator's source NAT of the upstream connection)."}, []string{"kind"}),
		RelayConnections: prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameRelayConnections,
			Help: "Data connections diverted to the relay, by result (ok, aborted, unexpected, upstream_unreachable, client_tls_failed, upstream_tls_failed, client_not_resumed)."}, []string{"result"}),
		RelayActive: prometheus.NewGauge(prometheus.GaugeOpts{Name: NameRelayActive,
			Help: "Data connections being relayed."}),
		RelayBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameRelayBytes,
			Help: "Payload bytes relayed on data connections (plaintext, after TLS), by direction."}, []string{"direction"}),
		RelayDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: NameRelayDuration,
			Help:    "Lifetime of relayed data connections, from arrival at the relay to close.",
			Buckets: prometheus.ExponentialBuckets(1e-3, 4, 10)}),
		RelayHandshakes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameRelayHandshakes,
			Help: "Completed TLS handshakes of relayed data connections, by leg (client or upstream) and whether they resumed the control connection's session."}, []string{"leg", "resumed"}),
		ReloadSuccessful: prometheus.NewGauge(prometheus.GaugeOpts{Name: NameReloadSuccessful,
			Help: "Whether the last policy load (at start or on SIGHUP) was accepted (1) or refused (0)."}),
		ReloadSuccessTime: prometheus.NewGauge(prometheus.GaugeOpts{Name: NameReloadSuccessTime,
			Help: "Unix time of the last accepted policy load (at start or on SIGHUP)."}),
	}
	m.Reconciles = prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameReconciles,
		Help: "Checks of the nftables table by the reconcile task, by result: intact, rebuilt (it was missing or incomplete and was rebuilt with the live sessions' pinholes), error (the rebuild failed and is retried)."}, []string{"result"})
	m.ReconcileSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: NameReconcileSeconds,
		Help:    "Time a check of the nftables table took, including a rebuild and the restoration of pinholes when one was needed.",
		Buckets: prometheus.ExponentialBuckets(1e-4, 4, 8)})
	m.ReconcileLastSuccess = prometheus.NewGauge(prometheus.GaugeOpts{Name: NameReconcileLastSuccess,
		Help: "Unix time of the last check that found the nftables table intact or rebuilt it."})
	m.PinholesRestored = prometheus.NewCounter(prometheus.CounterOpts{Name: NamePinholesRestored,
		Help: "Pinholes, relay elements and translations committed again after a rebuild of the table (reload, repair) emptied it."})
	m.ServerSessions = prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameServerSessions,
		Help: "Control sessions admitted, by the policy's server name (both paths)."}, []string{"server"})
	m.ServerPinholes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameServerPinholes,
		Help: "Pinholes and relay elements committed, by the policy's server name (both paths)."}, []string{"server"})
	m.UpstreamCertExpiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: NameUpstreamCertExpiry,
		Help: "Unix time at which the certificate a mitm server presented in its latest verified handshake expires, by the policy's server name."}, []string{"server"})
	m.UpstreamCertExpiring = prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameUpstreamCertExpiring,
		Help: "mitm sessions whose server presented a certificate that expires within 14 days, by the policy's server name."}, []string{"server"})
	m.LoginFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameLoginFailures,
		Help: "Failed logins counted towards bans, by reason (login: a 530 reply to PASS or USER)."}, []string{"reason"})
	m.Bans = prometheus.NewCounter(prometheus.CounterOpts{Name: NameBans,
		Help: "Client addresses banned for failing to log in too often (policy throttle)."})
	reg.MustRegister(m.LoginFailures, m.Bans)
	m.OpaqueOpened = prometheus.NewCounter(prometheus.CounterOpts{Name: NameOpaqueOpened,
		Help: "Opaque-mode sessions whose TLS control connection got its data-connection ranges (one kernel element per range)."})
	m.OpaqueActive = prometheus.NewGauge(prometheus.GaugeOpts{Name: NameOpaqueActive,
		Help: "Opaque-mode sessions holding data-connection ranges now."})
	m.OpaqueRefreshes = prometheus.NewCounter(prometheus.CounterOpts{Name: NameOpaqueRefreshes,
		Help: "Transactions that refreshed the timeouts of live opaque sessions' elements."})
	m.OpaqueHandshakes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameOpaqueHandshakes,
		Help: "TLS handshakes of opaque-mode control connections, by result: ok, alert (an alert before it completed), closed (the connection ended before it completed), malformed, refused (by the TLS policy)."}, []string{"result"})
	m.OpaqueRefusals = prometheus.NewCounterVec(prometheus.CounterOpts{Name: NameOpaqueRefusals,
		Help: "Opaque-mode TLS handshakes refused by the server's TLS policy and reset, by reason: tls_version (the server selected a version below tls.min_version), tls_suite (not AEAD with (EC)DHE), tls_client_offer (the client offered nothing acceptable)."}, []string{"reason"})
	reg.MustRegister(m.OpaqueOpened, m.OpaqueActive, m.OpaqueRefreshes, m.OpaqueHandshakes, m.OpaqueRefusals)
	reg.MustRegister(m.Reconciles, m.ReconcileSeconds, m.ReconcileLastSuccess, m.PinholesRestored,
		m.ServerSessions, m.ServerPinholes, m.UpstreamCertExpiry, m.UpstreamCertExpiring)
	info := prometheus.NewGauge(prometheus.GaugeOpts{Name: NameBuildInfo,
		Help: "Build information (version, commit, Go version, build date); the value is always 1.",
		ConstLabels: prometheus.Labels{"version": build.Version, "commit": build.Commit,
			"goversion": build.GoVersion, "build_date": build.BuildDate}})
	info.Set(1)
	reg.MustRegister(info, m.ReloadSuccessful, m.ReloadSuccessTime,
		m.SessionsActive, m.SessionsTotal, m.Commands, m.Replies,
		m.PinholesOpened, m.PinholesUsed, m.PinholesExpired, m.PinholesRemoved, m.PinholeErrors, m.PinholeCommit,
		m.Refusals, m.QueuePackets, m.QueueVerdicts, m.QueueErrors, m.VerdictLatency,
		m.FlowsActive, m.FlowEvictions, m.ConntrackEvent, m.ConntrackRest,
		m.NFTSyncs, m.NFTSyncSeconds, m.NFTLastSuccess,
		m.TLSHandshakes, m.TLSHandshakeFails, m.TLSHandshakeTime, m.DataRefused, m.MITMConnections, m.MITMParked,
		m.NATTranslations, m.NATFailures, m.NATOpaque, m.NATFollowed,
		m.RelayConnections, m.RelayActive, m.RelayBytes, m.RelayDuration, m.RelayHandshakes,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// NewNATReserved returns the gauge of gateway ports held for NAT
// translations, read from held at each scrape; register it with the
// registry New was given.
func NewNATReserved(held func() int) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: NameNATReserved,
		Help: "Gateway ports reserved for live NAT translations (public ports of published servers, NAT-address ports of translated active announcements); compare with the size of public_ports and nat_ports."},
		func() float64 { return float64(held()) })
}

// NewBansActive returns the gauge of bans in force, read from active at
// each scrape; register it with the registry New was given.
func NewBansActive(active func() int) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: NameBansActive,
		Help: "Client addresses banned now (kernel set elements banned4 and banned6 not yet expired)."},
		func() float64 { return float64(active()) })
}

// NewDiscard returns metrics registered with a throw-away registry, for
// tests and tools that do not export them.
func NewDiscard() *Metrics { return New(prometheus.NewRegistry(), BuildInfo{Version: "test"}) }
