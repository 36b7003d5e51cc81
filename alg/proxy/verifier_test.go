package proxy

import (
	"testing"

	"github.com/ftpsalg/ftpsalg/alg/policy"
)

// TestUpstreamVerifierPerPolicy: sessions of one server share its verifier
// (the CA file read once, verified chains remembered), and a reload, which
// makes new policy.Server values, gets a new one: nothing verified under
// the old policy is taken on trust under the new.
func TestUpstreamVerifierPerPolicy(t *testing.T) {
	p := &Proxy{}
	t1 := policy.ServerTLS{Verify: policy.VerifyNone}
	srv := &policy.Server{Name: "files"}
	u1, err := p.upstream(srv, t1)
	if err != nil {
		t.Fatal(err)
	}
	if u2, _ := p.upstream(srv, t1); u2 != u1 {
		t.Error("a second session of the same server got another verifier")
	}
	reloaded := &policy.Server{Name: "files"}
	u3, err := p.upstream(reloaded, policy.ServerTLS{Verify: policy.VerifySystem})
	if err != nil {
		t.Fatal(err)
	}
	if u3 == u1 {
		t.Error("the reloaded server kept the old policy's verifier")
	}
	if u4, _ := p.upstream(reloaded, policy.ServerTLS{Verify: policy.VerifySystem}); u4 != u3 {
		t.Error("sessions after the reload do not share the new verifier")
	}
	if _, err := p.upstream(&policy.Server{Name: "bad"}, policy.ServerTLS{Verify: policy.VerifyCA, CAFile: "/nonexistent/ca.pem"}); err == nil {
		t.Error("an unreadable ca_file gave no error")
	}
}
