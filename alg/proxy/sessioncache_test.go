package proxy

import (
	"crypto/tls"
	"testing"
)

func TestSessionCache(t *testing.T) {
	t.Parallel()
	c := &sessionCache{}
	ctl, data := c.control(), c.data()
	if _, ok := data.Get("198.51.100.2:50000"); ok || c.has() {
		t.Fatal("empty cache returned a session")
	}
	a, b := &tls.ClientSessionState{}, &tls.ClientSessionState{}
	ctl.Put("198.51.100.2:21", a)
	// Any key finds it: without SNI crypto/tls keys by address and port.
	if got, ok := data.Get("198.51.100.2:50001"); !ok || got != a {
		t.Fatalf("data view: %v %v, want the control connection's session", got, ok)
	}
	data.Put("198.51.100.2:50001", b) // a ticket issued on a data connection
	data.Put("198.51.100.2:50001", nil)
	ctl.Put("198.51.100.2:21", nil)
	if got, _ := ctl.Get(""); got != a {
		t.Fatal("the control connection's session was replaced or deleted")
	}
	ctl.Put("198.51.100.2:21", b) // TLS 1.3: a later ticket of the control connection
	if got, _ := data.Get(""); got != b || !c.has() {
		t.Fatal("the control connection's newer ticket was not kept")
	}
}

// TestSessionCacheShared: a control connection resumes a session an
// earlier control session to the same server left in the shared cache;
// data connections then resume that one; a refused shared session is
// deleted from both; data connections never touch the shared cache.
func TestSessionCacheShared(t *testing.T) {
	t.Parallel()
	shared := tls.NewLRUClientSessionCache(4)
	first := &sessionCache{shared: shared}
	a := &tls.ClientSessionState{}
	first.control().Put("files.test", a)
	if got, ok := shared.Get("files.test"); !ok || got != a {
		t.Fatal("the control connection's session was not shared")
	}
	second := &sessionCache{shared: shared}
	if got, ok := second.control().Get("files.test"); !ok || got != a {
		t.Fatal("the next control session did not find the shared session")
	}
	if got, ok := second.data().Get("198.51.100.2:50000"); !ok || got != a {
		t.Fatal("data connections do not resume what the control connection resumed")
	}
	second.control().Put("files.test", nil) // the server refused it
	if _, ok := shared.Get("files.test"); ok || second.has() {
		t.Fatal("a refused session was kept")
	}
	second.data().Put("files.test", &tls.ClientSessionState{})
	if _, ok := shared.Get("files.test"); ok {
		t.Fatal("a data connection's ticket reached the shared cache")
	}
}
