package proxy

import (
	"crypto/tls"
	"sync"

	"github.com/ftpsalg/ftpsalg/alg/certs"
	"github.com/ftpsalg/ftpsalg/alg/policy"
)

// sessionCache holds the TLS session of one upstream control connection,
// so that the relay's data connections to the same server resume it, as
// servers that require session reuse demand (vsftpd's require_ssl_reuse:
// the data connection must resume the control connection's session).
//
// crypto/tls keys its client session cache by Config.ServerName or, when
// there is none (a client without SNI and no tls.server_name), by the
// remote address with its port: every data connection, to another port,
// would then miss the control connection's session. The cache belongs to
// one control session and holds one session, so it ignores the key.
//
// The control connection stores through control(); data connections read
// through data(), whose Put does nothing: they always resume the control
// connection's own session, never a ticket issued on an earlier data
// connection (servers that compare the resumed session with the control
// session's, such as proftpd, need exactly that), and a data connection
// whose resumption failed cannot make crypto/tls forget the session for
// the next one.
//
// shared, when set, is the proxy's cache of sessions of the same server:
// the control connection resumes one of an earlier control session when
// the server allows it, and stores its own there too. Data connections
// never use it.
type sessionCache struct {
	mu       sync.Mutex
	cs       *tls.ClientSessionState
	borrowed bool // cs came from shared and was not replaced since
	shared   tls.ClientSessionCache
}

// control is the view for the upstream control connection.
func (c *sessionCache) control() tls.ClientSessionCache { return controlView{c} }

// data is the read-only view for the relay's upstream data connections.
func (c *sessionCache) data() tls.ClientSessionCache { return dataView{c} }

// has reports whether the server gave the control connection a session it
// can resume: a TLS 1.2 session ticket or a TLS 1.3 PSK ticket. A TLS 1.2
// server that offers only session IDs gives none (crypto/tls resumes with
// tickets only).
func (c *sessionCache) has() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cs != nil
}

func (c *sessionCache) get() (*tls.ClientSessionState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cs, c.cs != nil
}

type controlView struct{ c *sessionCache }

// Get returns the control session's own session or else, when the proxy
// shares sessions of this server, one of an earlier control session: that
// one becomes this control session's own (data connections resume what
// the control connection resumed, when the server sends no new ticket).
func (v controlView) Get(key string) (*tls.ClientSessionState, bool) {
	if cs, ok := v.c.get(); ok || v.c.shared == nil {
		return cs, ok
	}
	cs, ok := v.c.shared.Get(key)
	if ok {
		v.c.mu.Lock()
		v.c.cs, v.c.borrowed = cs, true
		v.c.mu.Unlock()
	}
	return cs, ok
}

// Put keeps the newest session (TLS 1.3 servers send several tickets) and
// shares it. crypto/tls deletes (nil) after a failed resumption: only a
// shared session the server refused goes, from both.
func (v controlView) Put(key string, cs *tls.ClientSessionState) {
	v.c.mu.Lock()
	switch {
	case cs != nil:
		v.c.cs, v.c.borrowed = cs, false
	case v.c.borrowed:
		v.c.cs, v.c.borrowed = nil, false
	default:
		v.c.mu.Unlock()
		return
	}
	v.c.mu.Unlock()
	if v.c.shared != nil {
		v.c.shared.Put(key, cs)
	}
}

type dataView struct{ c *sessionCache }

func (v dataView) Get(string) (*tls.ClientSessionState, bool) { return v.c.get() }
func (v dataView) Put(string, *tls.ClientSessionState)        {}

// upstreamCacheSize bounds the sessions kept per server for the control
// connections' resumption (TLS 1.3 servers send several tickets per
// handshake).
const upstreamCacheSize = 64

// upstreamCache returns the proxy's session cache for the server named
// name, made on first use.
func (p *Proxy) upstreamCache(name string) tls.ClientSessionCache {
	if c, ok := p.upCaches.Load(name); ok {
		return c.(tls.ClientSessionCache)
	}
	c, _ := p.upCaches.LoadOrStore(name, tls.NewLRUClientSessionCache(upstreamCacheSize))
	return c.(tls.ClientSessionCache)
}

// upstreamVerifier is the verifier of one server under one policy: a
// reload makes new policy.Server values, and with them a new verifier (its
// CA file read again, its memo of verified chains empty).
type upstreamVerifier struct {
	srv *policy.Server
	u   *certs.Upstream
}

// upstream returns the verifier of srv's certificates (certs.Upstream),
// made on first use and again after each reload of the policy.
func (p *Proxy) upstream(srv *policy.Server, t policy.ServerTLS) (*certs.Upstream, error) {
	if v, ok := p.verifiers.Load(srv.Name); ok && v.(upstreamVerifier).srv == srv {
		return v.(upstreamVerifier).u, nil
	}
	u, err := certs.NewUpstream(t, p.o.Roots)
	if err != nil {
		return nil, err
	}
	p.verifiers.Store(srv.Name, upstreamVerifier{srv: srv, u: u})
	return u, nil
}
