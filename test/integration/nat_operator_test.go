package integration

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/test/harness"
	"github.com/ftpsalg/ftpsalg/test/lab"
)

// OperatorDNATRuleset is the operator's own port-forward exactly as
// docs/nat.md shows it ("The operator's own NAT"): a table of their own
// with dnat of the public address's ports 21 and 990 to the server, at the
// standard dstnat priority, and a forward chain accepting what it
// translated (the lab's firewall keeps its own policy of drop).
func operatorDNATRuleset() string {
	return fmt.Sprintf(`table inet operator_nat
delete table inet operator_nat
table inet operator_nat {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr %s tcp dport { 21, 990 } dnat ip to %s
		ip6 daddr %s tcp dport { 21, 990 } dnat ip6 to %s
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		ct status dnat tcp dport { 21, 990 } accept
	}
}
`, natPublic, lab.ServerAddr4, natPublic6, lab.ServerAddr6)
}

// operatorMasqueradeRuleset is the operator's own masquerade of the
// client network towards the server's side, as docs/nat.md shows it.
func operatorMasqueradeRuleset() string {
	return fmt.Sprintf(`table inet operator_nat
delete table inet operator_nat
table inet operator_nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "%s" ip saddr 192.0.2.0/24 masquerade
	}
}
`, lab.GatewayServerLink)
}

// TestNATOperatorRules: the operator keeps their own NAT rules and adds
// ftpsalg with no NAT keys in its policy (issue 10): ftpsalg follows the
// translation the kernel applied to each control connection — a
// port-forward by conntrack's original destination (SO_ORIGINAL_DST), a
// masquerade by the upstream connection's reply tuple (ctnetlink) — and
// translates announcements and data connections to match.
//
// Matrix: published (operator dnat, v4 and NAT66) and masqueraded
// (operator masquerade, v4), each with the data relay against vsftpd with
// require_ssl_reuse=YES (natTransfers' full FTPS matrix: curl, lftp and
// the Go client; PASV, EPSV, PORT, EPRT; get and put; then implicit FTPS)
// and in passthrough against vsftpd without reuse (the same matrix: the
// data connections are pinholes, translated by ftpsalg's own maps).
func TestNATOperatorRules(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	for _, tc := range []struct {
		layout   natLayout
		relay    bool
		operator string
		kind     string
	}{
		{published, true, operatorDNATRuleset(), "dnat"},
		{published, false, operatorDNATRuleset(), "dnat"},
		{masqueraded, true, operatorMasqueradeRuleset(), "masquerade"},
		{masqueraded, false, operatorMasqueradeRuleset(), "masquerade"},
	} {
		name := string(tc.layout) + map[bool]string{true: "/relay", false: "/passthrough"}[tc.relay]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			keys := ""
			if tc.relay {
				keys = relayPolicy
			}
			l, v, d, tls := natLab(t, tc.layout, tc.relay, keys, "pinholes:\n  timeout: 60s\n", tc.operator)
			natTransfers(t, l, d, v, tc.layout, tls)
			natImplicit(t, l, d, v, tc.layout, tls)
			m := d.Metrics()
			if m[`ftpsalg_nat_followed_sessions_total{kind="`+tc.kind+`"}`] == 0 {
				t.Errorf("no session followed the operator's %s", tc.kind)
			}
			for k, val := range m {
				if strings.HasPrefix(k, "ftpsalg_mitm_data_refusals_total") && val != 0 {
					t.Errorf("%s = %v", k, val)
				}
				if strings.HasPrefix(k, "ftpsalg_relay_connections_total") && !strings.Contains(k, `"ok"`) && val != 0 {
					t.Errorf("%s = %v", k, val)
				}
			}
			natNoPrivateLeak(t, v, tc.layout)
		})
	}
}

// TestNATOperatorConflict: the combination the issue found failing — the
// operator's port-forward of the public address left in place and the
// same address as the server's public: in ftpsalg's policy — is refused
// by check-config and at start-up, both naming the operator's rule.
// (What the kernel did with it, measured before the refusal existed: the
// client's SYN was diverted at mangle (-150) to ftpsalg's listener and
// then translated by the operator's dnat (-100), so the listener's
// handshake ran under the server's address; the client's ACK, still
// addressed to the public address at -150, was again assigned to the
// listener, which reset it. ftpsalg's listener never accepted, so it
// logged nothing; the client saw "Connection reset by peer".)
func TestNATOperatorConflict(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	l := lab.New(t, lab.Options{})
	if err := l.NftScript(lab.Gateway, operatorDNATRuleset()); err != nil {
		t.Fatal(err)
	}
	pki := harness.NewPKI(t, l.Dir(), harness.PKIOptions{ExtraIPs: []netip.Addr{natPublic, natPublic6}})
	pol := pki.MITMPolicy("info", natServerYAML(published)) + "admin:\n  socket: " + harness.AdminSocket(l) + "\n"
	path := filepath.Join(l.Dir(), "conflict.yaml")
	if err := os.WriteFile(path, []byte(pol), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, args := range [][]string{{"check-config", path}, {"run", path}} {
		out, err := l.Run(ctx, lab.Gateway, binary, args...)
		if err == nil {
			t.Fatalf("ftpsalg %s accepted a policy that conflicts with the operator's dnat:\n%s", args[0], out)
		}
		for _, want := range []string{"table inet operator_nat chain prerouting handle", "ip daddr 192.0.2.1",
			"public address 192.0.2.1 port 21 is also translated by the operator's rule"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("ftpsalg %s: output lacks %q:\n%s", args[0], want, out)
			}
		}
	}
}
