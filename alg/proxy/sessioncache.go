package proxy

import (
	"crypto/tls"
	"sync"
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
type sessionCache struct {
	mu sync.Mutex
	cs *tls.ClientSessionState
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

func (v controlView) Get(string) (*tls.ClientSessionState, bool) { return v.c.get() }

// Put keeps the newest session (TLS 1.3 servers send several tickets);
// crypto/tls's deletions (nil) are ignored: the control connection only
// deletes after a failed resumption, which it never attempts.
func (v controlView) Put(_ string, cs *tls.ClientSessionState) {
	if cs == nil {
		return
	}
	v.c.mu.Lock()
	defer v.c.mu.Unlock()
	v.c.cs = cs
}

type dataView struct{ c *sessionCache }

func (v dataView) Get(string) (*tls.ClientSessionState, bool) { return v.c.get() }
func (v dataView) Put(string, *tls.ClientSessionState)        {}
