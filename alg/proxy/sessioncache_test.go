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
