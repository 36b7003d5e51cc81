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
	"slices"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/ftpsalg/ftpsalg/alg/certs"
	"github.com/ftpsalg/ftpsalg/alg/inspect"
	"github.com/ftpsalg/ftpsalg/alg/nat"
	"github.com/ftpsalg/ftpsalg/alg/policy"
	"github.com/ftpsalg/ftpsalg/alg/proxy"
	"github.com/ftpsalg/ftpsalg/alg/status"
	"github.com/ftpsalg/ftpsalg/conntrack"
	"github.com/ftpsalg/ftpsalg/internal/journald"
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

// spec derives the nftables table's desired state from the policy.
func spec(cfg *policy.Config, kind nft.QueueKind) nft.Spec {
	s := nft.Spec{
		Table:      cfg.NFTables.Table,
		Queue:      cfg.Queue.Number,
		QueueKind:  kind,
		FailOpen:   cfg.Queue.FailOpen,
		CtMark:     cfg.NFTables.CtMark,
		PacketMark: cfg.NFTables.PacketMark,
		TProxyPort: cfg.MITM.ListenPort,
		TProxyMark: cfg.MITM.TProxyMark,
	}
	for _, srv := range cfg.Servers {
		var eps []netip.AddrPort
		for _, a := range srv.Addresses {
			for _, p := range srv.ControlPorts {
				eps = append(eps, netip.AddrPortFrom(a, p))
			}
			for _, p := range srv.ImplicitTLSPorts {
				eps = append(eps, netip.AddrPortFrom(a, p))
			}
		}
		// Published addresses: their control connections always go to
		// the transparent listener, which translates them (docs/nat.md).
		for _, a := range srv.Public {
			for _, p := range append(slices.Clone(srv.ControlPorts), srv.ImplicitTLSPorts...) {
				s.MITM = append(s.MITM, netip.AddrPortFrom(a, p))
			}
		}
		if srv.Mode == policy.ModeMITM {
			s.MITM = append(s.MITM, eps...)
			if srv.MITM.Data == policy.DataRelay {
				// The relay objects exist only when a server uses them,
				// so that the table is otherwise the plain mitm table.
				s.RelayPort = cfg.MITM.RelayPort
			}
		} else {
			s.Control = append(s.Control, eps...)
		}
	}
	for _, c := range cfg.Clients {
		s.Masqueraded = append(s.Masqueraded, c.Prefixes...)
	}
	return s
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

func hasMITM(cfg *policy.Config) bool {
	for _, srv := range cfg.Servers {
		if srv.Mode == policy.ModeMITM {
			return true
		}
	}
	return false
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
	log.Info("operator CA loaded", "dir", cfg.MITM.CADir, "subject", ca.Cert.Subject.String(),
		"not_after", ca.Cert.NotAfter, "fingerprint", certs.Fingerprint(ca.Cert))
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
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, buildInfo())
	life := newLifecycle(m, log) // hook: sd_notify and reload metrics (lifecycle.go)
	reg.MustRegister(metrics.NewQueueStats(cfg.Queue.Number))

	var mitm *mitmState
	if hasMITM(cfg) {
		var err error
		if mitm, err = loadMITM(cfg, log); err != nil {
			return err
		}
		reg.MustRegister(certs.NewExpiryCollector(mitm.expiries))
	}

	if local, err := hostAddrs(); err != nil {
		return err
	} else if err := policy.CheckHost(cfg, local); err != nil {
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
	var current *policy.Config
	apply := func(c *policy.Config) error {
		start := time.Now()
		err := tbl.Apply(ctx, spec(c, kind))
		m.NFTSyncSeconds.Observe(time.Since(start).Seconds())
		if err != nil {
			m.NFTSyncs.WithLabelValues("error").Inc()
			return err
		}
		m.NFTSyncs.WithLabelValues("ok").Inc()
		m.NFTLastSuccess.SetToCurrentTime()
		current = c
		return nil
	}
	if err := apply(cfg); err != nil {
		return err
	}
	log.Info("nftables table built", "table", "inet "+cfg.NFTables.Table, "queue", cfg.Queue.Number,
		"fail_open", cfg.Queue.FailOpen, "ct_mark", fmt.Sprintf("%#x", cfg.NFTables.CtMark))
	if cfg.Queue.FailOpen {
		log.Warn("fail-open: while the daemon is absent or its queue is full, control traffic passes uninspected")
	}
	defer func() {
		// Clean exit: our table goes, pinholes with it.
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tbl.Delete(dctx); err != nil {
			log.Error("failed to delete the nftables table", "err", err)
			return
		}
		log.Info("nftables table deleted", "table", "inet "+cfg.NFTables.Table)
	}()

	var proxies []*proxy.Proxy
	var listeners, relayListeners []net.Listener
	if cfg.Stream() {
		// Policy routing first: diverted connections and the server's
		// replies to spoofed upstream connections reach local sockets.
		rt, err := nft.NewRouter(cfg.MITM.TProxyMark, cfg.MITM.RouteTable, cfg.MITM.RulePriority, nft.WithLogger(log))
		if err != nil {
			return err
		}
		if err := rt.Ensure(ctx); err != nil {
			return err
		}
		defer func() {
			dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := rt.Remove(dctx); err != nil {
				log.Error("failed to remove the policy routing", "err", err)
			}
		}()
		for _, network := range []string{"tcp4", "tcp6"} {
			ln, err := proxy.ListenTransparent(ctx, network, cfg.MITM.ListenPort)
			if err != nil {
				return err
			}
			listeners = append(listeners, ln)
			// The relay listener is open with any mitm server, so that a
			// reload can switch a server to data: relay; the kernel
			// diverts nothing to it until then.
			rln, err := proxy.ListenTransparent(ctx, network, cfg.MITM.RelayPort)
			if err != nil {
				return err
			}
			relayListeners = append(relayListeners, rln)
		}
		ports := &nat.Ports{Probe: nat.BindProbe}
		reg.MustRegister(metrics.NewNATReserved(ports.Held))
		o := proxy.Options{Policy: cfg, Table: tbl, Metrics: m, Log: log, Ports: ports}
		if mitm != nil {
			o.Leaf = mitm.minter.Leaf
			o.Static = func(name string) *tls.Certificate { return mitm.static[name] }
		}
		p := proxy.New(o)
		proxies = append(proxies, p)
		log.Info("transparent stream listener up (mitm servers, published servers, masqueraded clients)", "port", cfg.MITM.ListenPort, "relay_port", cfg.MITM.RelayPort, "route_table", cfg.MITM.RouteTable,
			"tproxy_mark", fmt.Sprintf("%#x", cfg.MITM.TProxyMark))
	}

	eng := inspect.New(inspect.Options{Policy: cfg, Table: tbl, Metrics: m, Log: log,
		Rebuild: func(context.Context) error { return apply(current) }})
	q := &inspect.Queue{Num: cfg.Queue.Number, MaxLen: cfg.Queue.Length, FailOpen: cfg.Queue.FailOpen,
		PacketMark: cfg.NFTables.PacketMark, Engine: eng, Metrics: m, Log: log}
	ct := &conntrack.Listener{Log: log, OnRestart: func(error) { m.ConntrackRest.Inc() },
		Types: []conntrack.EventType{conntrack.EventNew, conntrack.EventDestroy}}
	msrv.Ready = func() error {
		if !q.Ready() {
			return errors.New("queue not bound")
		}
		return nil
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return msrv.Run(gctx) })
	// hooks: READY=1, watchdog, STOPPING=1 (lifecycle.go); the admin socket (statussource.go)
	g.Go(func() error { return life.Run(gctx, msrv.Ready) })
	g.Go(func() error { return status.Serve(gctx, cfg.Admin.Socket, statusSource(eng, proxies), log) })
	g.Go(func() error { return eng.Run(gctx) })
	g.Go(func() error { return q.Run(gctx) })
	for _, p := range proxies {
		for _, ln := range listeners {
			g.Go(func() error { return p.Serve(gctx, ln) })
		}
		for _, ln := range relayListeners {
			g.Go(func() error { return p.ServeRelay(gctx, ln) })
		}
	}
	g.Go(func() error {
		if err := ct.Run(gctx, eng.ConntrackEvent); err != nil {
			// Without ctnetlink the daemon still works: flows end on
			// FIN/RST and idle eviction.
			log.Warn("conntrack events unavailable", "err", err)
		}
		return nil
	})
	g.Go(func() error {
		// Someone may flush the whole ruleset (Debian's nftables.service
		// does on restart): notice and rebuild our table.
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-t.C:
				if rebuilt, err := eng.Repair(gctx); err != nil {
					log.Error("failed to rebuild the missing nftables table", "err", err)
				} else if rebuilt {
					log.Warn("nftables table was missing and has been rebuilt")
				}
			}
		}
	})
	g.Go(func() error {
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-hup:
				life.Reloading() // hook
				ncfg, err := policy.Load(path)
				if err == nil {
					var local []netip.Addr
					if local, err = hostAddrs(); err == nil {
						err = policy.CheckHost(ncfg, local)
					}
				}
				if err != nil {
					log.Error("reload refused: policy invalid; keeping the running policy", "err", err)
					life.Reloaded(err) // hook
					continue
				}
				if ncfg.NFTables != cfg.NFTables || ncfg.Queue != cfg.Queue || ncfg.Metrics != cfg.Metrics ||
					ncfg.MITM != cfg.MITM || hasMITM(ncfg) != hasMITM(cfg) || ncfg.Stream() != cfg.Stream() {
					log.Error("reload refused: nftables, queue, metrics and mitm settings, and adding the first (or removing the last) mitm server, published server or clients entry, need a restart")
					life.Reloaded(errNeedsRestart) // hook
					continue
				}
				if err := eng.SetPolicy(gctx, ncfg, func() error { return apply(ncfg) }); err != nil {
					log.Error("reload failed", "err", err)
					life.Reloaded(err) // hook
					continue
				}
				for _, p := range proxies {
					p.SetPolicy(ncfg)
				}
				level.Set(ncfg.Log.Level)
				cfg = ncfg
				log.Info("policy reloaded", "servers", len(ncfg.Servers))
				life.Reloaded(nil) // hook
			}
		}
	})
	log.Info("ftpsalg running", "version", version, "config", path, "servers", len(cfg.Servers))
	err = g.Wait()
	log.Info("ftpsalg stopping")
	return err
}
