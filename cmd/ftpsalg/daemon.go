package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/ftpsalg/ftpsalg/alg/certs"
	"github.com/ftpsalg/ftpsalg/alg/gateway"
	"github.com/ftpsalg/ftpsalg/alg/inspect"
	"github.com/ftpsalg/ftpsalg/alg/instance"
	"github.com/ftpsalg/ftpsalg/alg/nat"
	"github.com/ftpsalg/ftpsalg/alg/policy"
	"github.com/ftpsalg/ftpsalg/alg/proxy"
	"github.com/ftpsalg/ftpsalg/alg/route"
	"github.com/ftpsalg/ftpsalg/alg/status"
	"github.com/ftpsalg/ftpsalg/cmd/ftpsalg/internal/journald"
	"github.com/ftpsalg/ftpsalg/conntrack"
	"github.com/ftpsalg/ftpsalg/metrics"
	"github.com/ftpsalg/ftpsalg/nft"
)

// cmdRun is the daemon: flags → logger → config → metrics → kernel state →
// tasks under one errgroup.
func cmdRun(args []string, stdout, stderr io.Writer) int {
	c := newCommand("run", "run [--config] [FILE]",
		"Run the gateway daemon (as root, or with CAP_NET_ADMIN and CAP_NET_RAW) with the policy FILE\n(default "+defaultConfig+"). SIGHUP reloads the policy; SIGTERM removes the nftables table and exits.", stdout, stderr)
	config := c.configFlag()
	pos, code, ok := c.parse(args)
	if !ok {
		return code
	}
	path, ok := config(pos)
	if !ok {
		return 2
	}
	cfg, err := policy.Load(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	level := new(slog.LevelVar)
	level.Set(cfg.Log.Level)
	log := slog.New(journald.NewHandler(stdout, cfg.Log.Format, &slog.HandlerOptions{Level: level}, os.Getenv("JOURNAL_STREAM"))) // hook: log.format, journald priorities

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := daemon(ctx, path, cfg, level, log); err != nil {
		log.Error("ftpsalg stopped", stopAttrs(err)...) // hook: CAP_NET_ADMIN hint
		return 1
	}
	return 0
}

// hostAddrs returns the host's addresses, for policy.CheckHost.
func hostAddrs() ([]netip.Addr, error) {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("failed to list the host's addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range as {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out, nil
}

// hostPrefixes returns the networks of the host's interfaces (not the
// loopback's), for the gateway's hairpin check.
func hostPrefixes() ([]netip.Prefix, error) {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("failed to list the host's addresses: %w", err)
	}
	var out []netip.Prefix
	for _, a := range as {
		if p, err := netip.ParsePrefix(a.String()); err == nil && !p.Addr().IsLoopback() {
			out = append(out, p.Masked())
		}
	}
	return out, nil
}

// mitmState is what mitm mode loads at start: the operator CA, the leaf
// minter and the static certificates, all checked before the kernel is
// touched.
type mitmState struct {
	ca     *certs.CA
	minter *certs.Minter
	static map[string]*tls.Certificate
}

func loadMITM(cfg *policy.Config, log *slog.Logger) (*mitmState, error) {
	ca, err := certs.LoadCA(cfg.MITM.CADir)
	if err != nil {
		return nil, fmt.Errorf("mitm mode needs the operator CA (create one with `ftpsalg ca init --dir %s`): %w", cfg.MITM.CADir, err)
	}
	st := &mitmState{ca: ca, minter: certs.NewMinter(ca, cfg.MITM.LeafLifetime, nil), static: map[string]*tls.Certificate{}}
	for _, srv := range cfg.Servers {
		if srv.MITM == nil {
			continue
		}
		if srv.MITM.TLS.Verify == policy.VerifyNone {
			log.Warn("upstream certificate verification is disabled for this server: anyone between the gateway and the server can read its sessions", "server_name", srv.Name)
		}
		if srv.MITM.TLS.Certificate != "" {
			c, err := certs.LoadStatic(srv.MITM.TLS.Certificate, srv.MITM.TLS.Key)
			if err != nil {
				return nil, fmt.Errorf("server %q: %w", srv.Name, err)
			}
			st.static[srv.Name] = c
		}
	}
	nc := certs.ConstraintsOf(ca.Cert)
	log.Info("operator CA loaded", "dir", cfg.MITM.CADir, "subject", ca.Cert.Subject.String(),
		"not_after", ca.Cert.NotAfter, "fingerprint", certs.Fingerprint(ca.Cert), "name_constraints", describeConstraints(nc))
	// A warning, not a refusal: the other servers work, and the minter
	// refuses (and logs) each leaf the constraints forbid.
	for _, w := range constraintWarnings(cfg, nc) {
		log.Warn("a mitm server's name or address is outside the operator CA's name constraints: clients would refuse a certificate minted for it",
			"server_name", w.server, "key", w.key, "name", w.err.Name, "constraint", w.constraint())
	}
	return st, nil
}

func (st *mitmState) expiries() []certs.CertExpiry {
	out := []certs.CertExpiry{{Kind: certs.KindCA, NotAfter: st.ca.Cert.NotAfter}}
	for name, c := range st.static {
		if c.Leaf != nil {
			out = append(out, certs.CertExpiry{Kind: certs.KindStatic, Server: name, NotAfter: c.Leaf.NotAfter})
		}
	}
	return out
}

func daemon(ctx context.Context, path string, cfg *policy.Config, level *slog.LevelVar, log *slog.Logger) error {
	lock, err := instance.Acquire(cfg.NFTables.Table) // before anything of another instance's is touched
	if err != nil {
		return err
	}
	defer lock.Close()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, buildInfo())
	life := newLifecycle(m, log) // hook: sd_notify and reload metrics (lifecycle.go)
	for i := range max(int(cfg.Queue.Count), 1) {
		reg.MustRegister(metrics.NewQueueStats(cfg.Queue.Number + uint16(i)))
	}

	var mitm *mitmState
	if gateway.HasMITM(cfg) {
		var err error
		if mitm, err = loadMITM(cfg, log); err != nil {
			return err
		}
		reg.MustRegister(certs.NewExpiryCollector(mitm.expiries))
	}
	if err := checkHost(cfg); err != nil {
		return err
	}
	msrv := &metrics.Server{Addr: cfg.Metrics.Listen, Gath: reg, Log: log}
	if err := msrv.Listen(); err != nil {
		return err
	}

	kind, err := nft.ProbeQueue(ctx)
	if err != nil {
		return fmt.Errorf("failed to probe the kernel's queue support: %w", err)
	}
	log.Info("kernel queue support probed", "queue_expression", kind.String())
	tbl, err := nft.New(nft.WithLogger(log))
	if err != nil {
		return err
	}
	ports := &nat.Ports{Probe: nat.BindProbe}
	reg.MustRegister(metrics.NewNATReserved(ports.Held))
	local, err := hostPrefixes()
	if err != nil {
		return err
	}
	gw := gateway.New(gateway.Options{Policy: cfg, Table: tbl, QueueKind: kind, Metrics: m, Log: log, Ports: ports,
		LocalPrefixes: local})
	reg.MustRegister(metrics.NewBansActive(gw.ActiveBans))
	if err := gw.Apply(ctx, cfg); err != nil {
		return err
	}
	log.Info("nftables table built", "table", "inet "+cfg.NFTables.Table, "queue", cfg.Queue.Number,
		"queues", max(cfg.Queue.Count, 1), "fail_open", cfg.Queue.FailOpen, "ct_mark", fmt.Sprintf("%#x", cfg.NFTables.CtMark))
	if cfg.Queue.FailOpen {
		log.Warn("fail-open: while the daemon is absent or its queue is full, control traffic passes uninspected")
	}
	defer deleteTable(tbl, cfg, log)

	g, gctx := errgroup.WithContext(ctx)
	if cfg.Stream() {
		stop, err := startStream(gctx, g, cfg, gw, mitm, m, log)
		if err != nil {
			return err
		}
		defer stop()
	}
	// The reverse RST of a refused opaque-mode handshake goes out of a
	// raw socket of the daemon's own namespace, where it forwards.
	inj := &inspect.RawInjector{}
	defer inj.Close()
	eng := inspect.New(inspect.Options{Gateway: gw, Metrics: m, Log: log, Injector: inj})
	q := &inspect.Queue{Num: cfg.Queue.Number, Count: cfg.Queue.Count, MaxLen: cfg.Queue.Length, FailOpen: cfg.Queue.FailOpen,
		PacketMark: cfg.NFTables.PacketMark, Engine: eng, Metrics: m, Log: log}
	// The engine follows only its own control connections' conntrack
	// entries: the kernel filters the events of every other connection
	// the gateway forwards (docs/benchmarks.md, unrelated connections).
	ct := &conntrack.Listener{Log: log, OnRestart: func(error) { m.ConntrackRest.Inc() },
		Types: []conntrack.EventType{conntrack.EventNew, conntrack.EventDestroy},
		Ports: func() []uint16 { return gw.Policy().PacketPathPorts() }}
	rec := &gateway.Reconciler{G: gw, Watch: watchTable(tbl), Check: func(ctx context.Context) (bool, error) {
		h, err := tbl.Check(ctx)
		if err == nil && !h.Intact {
			log.Warn("nftables table incomplete", "missing", h.Missing)
		}
		return h.Intact, err
	}}
	msrv.Ready = func() error {
		if !q.Ready() {
			return errors.New("queue not bound")
		}
		return gw.Ready()
	}

	g.Go(func() error { return msrv.Run(gctx) })
	g.Go(func() error { return gw.Run(gctx) })
	mp := memoryPolicy{Interval: 5 * time.Second, MinDrop: 256, TuneGC: os.Getenv("GOGC") == ""}
	g.Go(func() error { return releaseMemory(gctx, gw, mp, log) })
	g.Go(func() error { return rec.Run(gctx) })
	// READY=1 once every task is up, the watchdog, STOPPING=1 (lifecycle.go);
	// the admin socket of ftpsalg status.
	g.Go(func() error { return life.Run(gctx, msrv.Ready) })
	g.Go(func() error { return status.Serve(gctx, cfg.Admin.Socket, gw.Status, log) })
	g.Go(func() error { return eng.Run(gctx) })
	g.Go(func() error { return q.Run(gctx) })
	g.Go(func() error {
		if err := ct.Run(gctx, eng.ConntrackEvent); err != nil {
			// Without ctnetlink the daemon still works: flows end on
			// FIN/RST and idle eviction.
			log.Warn("conntrack events unavailable", "err", err)
		}
		return nil
	})
	g.Go(func() error {
		return reloads(gctx, path, cfg, gw, life, level, log, func() {
			if err := ct.Refilter(); err != nil {
				log.Warn("conntrack event filter not updated", "err", err)
			}
		})
	})
	log.Info("ftpsalg running", "version", version, "config", path, "servers", len(cfg.Servers))
	err = g.Wait()
	log.Info("ftpsalg stopping")
	return err
}

// watchTable reports other processes' changes to our table (an operator's
// nft delete table or flush ruleset) as they happen. It subscribes first,
// then asks for a check: nothing that happened before is missed.
func watchTable(tbl *nft.Kernel) gateway.Watcher {
	return func(ctx context.Context, changed func()) error {
		w, err := tbl.NewWatcher()
		if err != nil {
			return err
		}
		defer w.Close()
		changed()
		return w.Run(ctx, func(c nft.Change) {
			if !c.Own {
				changed()
			}
		})
	}
}

// checkHost refuses a policy whose public and NAT addresses are not this
// host's.
func checkHost(cfg *policy.Config) error {
	local, err := hostAddrs()
	if err != nil {
		return err
	}
	if err := policy.CheckHost(cfg, local); err != nil {
		return err
	}
	return checkOperatorNAT(cfg)
}

// deleteTable removes our table on a clean exit, pinholes with it.
func deleteTable(tbl *nft.Kernel, cfg *policy.Config, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tbl.Delete(ctx); err != nil {
		log.Error("failed to delete the nftables table", "err", err)
		return
	}
	log.Info("nftables table deleted", "table", "inet "+cfg.NFTables.Table)
}

// startStream sets up the stream path: policy routing for diverted
// connections, the transparent control and relay listeners, and the proxy
// serving them as tasks of g. stop removes the policy routing.
func startStream(ctx context.Context, g *errgroup.Group, cfg *policy.Config, gw *gateway.Gateway, mitm *mitmState,
	m *metrics.Metrics, log *slog.Logger) (stop func(), err error) {
	// Policy routing first: diverted connections and the server's replies
	// to spoofed upstream connections reach local sockets.
	rt, err := route.New(cfg.MITM.TProxyMark, cfg.MITM.RouteTable, cfg.MITM.RulePriority, route.Options{Logger: log})
	if err != nil {
		return nil, err
	}
	if err := rt.Ensure(ctx); err != nil {
		return nil, err
	}
	stop = func() {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := rt.Remove(dctx); err != nil {
			log.Error("failed to remove the policy routing", "err", err)
		}
	}
	var listeners, relayListeners []net.Listener
	for _, network := range []string{"tcp4", "tcp6"} {
		ln, err := proxy.ListenTransparent(ctx, network, cfg.MITM.ListenPort)
		if err != nil {
			stop()
			return nil, err
		}
		listeners = append(listeners, ln)
		// The relay listener is open with any mitm server, so that a
		// reload can switch a server to data: relay; the kernel diverts
		// nothing to it until then.
		rln, err := proxy.ListenTransparent(ctx, network, cfg.MITM.RelayPort)
		if err != nil {
			stop()
			return nil, err
		}
		relayListeners = append(relayListeners, rln)
	}
	o := proxy.Options{Gateway: gw, Metrics: m, Log: log}
	if mitm != nil {
		o.Leaf = mitm.minter.Leaf
		o.Static = func(name string) *tls.Certificate { return mitm.static[name] }
	}
	p := proxy.New(o)
	for _, ln := range listeners {
		g.Go(func() error { return p.Serve(ctx, ln) })
	}
	for _, ln := range relayListeners {
		g.Go(func() error { return p.ServeRelay(ctx, ln) })
	}
	log.Info("transparent stream listener up (mitm servers, published servers, masqueraded clients)", "port", cfg.MITM.ListenPort,
		"relay_port", cfg.MITM.RelayPort, "route_table", cfg.MITM.RouteTable, "tproxy_mark", fmt.Sprintf("%#x", cfg.MITM.TProxyMark))
	return stop, nil
}

// reloads applies the policy file again on each SIGHUP: a valid policy
// rebuilds the table and restores every live session's pinholes, relay
// elements and translations; an invalid one changes nothing.
func reloads(ctx context.Context, path string, cfg *policy.Config, gw *gateway.Gateway, life *lifecycle, level *slog.LevelVar, log *slog.Logger, applied func()) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
		}
		life.Reloading()
		ncfg, err := policy.Load(path)
		if err == nil {
			err = checkHost(ncfg)
		}
		if err != nil {
			log.Error("reload refused: policy invalid; keeping the running policy", "err", err)
			life.Reloaded(err)
			continue
		}
		if ncfg.NFTables != cfg.NFTables || ncfg.Queue != cfg.Queue || ncfg.Metrics != cfg.Metrics ||
			ncfg.MITM != cfg.MITM || gateway.HasMITM(ncfg) != gateway.HasMITM(cfg) || ncfg.Stream() != cfg.Stream() {
			log.Error("reload refused: nftables, queue, metrics and mitm settings, and adding the first (or removing the last) mitm server, published server or clients entry, need a restart")
			life.Reloaded(errNeedsRestart)
			continue
		}
		if err := gw.Apply(ctx, ncfg); err != nil {
			log.Error("reload failed", "err", err)
			life.Reloaded(err)
			continue
		}
		applied()
		level.Set(ncfg.Log.Level)
		cfg = ncfg
		log.Info("policy reloaded", "servers", len(ncfg.Servers))
		life.Reloaded(nil)
	}
}
