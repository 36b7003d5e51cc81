package lab

import (
	"context"
	"fmt"
	"strings"
)

// FirewallTable is the operator's table in the gateway, "inet labfw". It
// stands for the firewall that ftpsalg runs next to: ftpsalg must not touch
// it, and it trusts ftpsalg's pinholes only through the conntrack mark.
const FirewallTable = "labfw"

// GatewayFirewallRuleset returns the nft script of InstallGatewayFirewall:
// a default-drop forward chain that lets through established/related
// packets, connections whose conntrack mark has all bits of ctMark set
// (ftpsalg's pinholes) and new control connections to the server (21 and
// 990, IPv4 and IPv6). Data connections therefore pass only when ftpsalg
// marks them.
func GatewayFirewallRuleset(ctMark uint32) string {
	return fmt.Sprintf(`add table inet %[1]s
delete table inet %[1]s
table inet %[1]s {
	chain forward {
		type filter hook forward priority 0; policy drop;
		ct state established,related accept
		ct mark & 0x%08[2]x == 0x%08[2]x accept comment "ftpsalg pinholes"
		ip daddr %[3]s tcp dport { 21, 990 } accept
		ip6 daddr %[4]s tcp dport { 21, 990 } accept
	}
}
`, FirewallTable, ctMark, ServerAddr4, ServerAddr6)
}

// GatewayHelperRuleset returns the nft script of GatewayHelperFirewall: the
// same default-drop policy, with the kernel's FTP conntrack helper
// (nf_conntrack_ftp) assigned to control connections on port 21, so that
// the data connections it expects are "related". Port 990 (implicit FTPS)
// is accepted without a helper, which cannot read encrypted commands.
func GatewayHelperRuleset() string {
	return fmt.Sprintf(`add table inet %[1]s
delete table inet %[1]s
table inet %[1]s {
	ct helper ftp-21 {
		type "ftp" protocol tcp
		l3proto inet
	}
	chain forward {
		type filter hook forward priority 0; policy drop;
		ct state established,related accept
		ip daddr %[2]s tcp dport 21 ct helper set "ftp-21" accept
		ip6 daddr %[3]s tcp dport 21 ct helper set "ftp-21" accept
		ip daddr %[2]s tcp dport 990 accept
		ip6 daddr %[3]s tcp dport 990 accept
	}
}
`, FirewallTable, ServerAddr4, ServerAddr6)
}

// InstallGatewayFirewall loads the operator table of
// GatewayFirewallRuleset(ctMark) in the gateway, with extra control ports
// let through as well, replacing any earlier version of the table in one
// transaction. It uses netlink, not the nft binary, so that the lab (and
// `make demo`) works where nftables' command-line tool is not installed.
// ctMark must not be zero (a zero mask would accept everything).
func (l *Lab) InstallGatewayFirewall(ctMark uint32, extraPorts ...uint16) {
	l.t.Helper()
	if ctMark == 0 {
		l.t.Fatalf("lab: InstallGatewayFirewall: ctMark must not be 0")
	}
	if err := l.installFirewallNetlink(ctMark, extraPorts); err != nil {
		l.t.Fatalf("lab: failed to install gateway firewall: %v", err)
	}
}

// GatewayHelperFirewall loads GatewayHelperRuleset in the gateway (the
// kernel-helper baseline for benchmarks), replacing any earlier table.
func (l *Lab) GatewayHelperFirewall() {
	l.t.Helper()
	if err := l.NftScript(Gateway, GatewayHelperRuleset()); err != nil {
		l.t.Fatalf("lab: failed to install gateway helper firewall: %v", err)
	}
}

// RemoveGatewayFirewall deletes the operator table (plain routing again).
func (l *Lab) RemoveGatewayFirewall() {
	l.t.Helper()
	if err := l.NftScript(Gateway, fmt.Sprintf("add table inet %[1]s\ndelete table inet %[1]s\n", FirewallTable)); err != nil {
		l.t.Fatalf("lab: failed to remove gateway firewall: %v", err)
	}
}

// NftScript loads script with `nft -f -` in ns (one transaction).
func (l *Lab) NftScript(ns, script string) error {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	_, err := l.RunInput(ctx, script, ns, "nft", "-f", "-")
	return err
}

// Nft runs `nft ARGS...` in ns and returns its output, e.g.
// Nft(lab.Gateway, "list", "ruleset").
func (l *Lab) Nft(ns string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	out, err := l.Run(ctx, ns, "nft", args...)
	return string(out), err
}

// Conntrack runs `conntrack ARGS...` in ns (`conntrack -L` without
// arguments) and returns its output. The table is per namespace and only
// filled once a rule there uses conntrack.
func (l *Lab) Conntrack(ns string, args ...string) (string, error) {
	if len(args) == 0 {
		args = []string{"-L"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	out, err := l.Run(ctx, ns, "conntrack", args...)
	// conntrack prints its summary on stderr; keep only entries when asked
	// to list.
	s := string(out)
	if args[0] == "-L" || args[0] == "--dump" {
		var lines []string
		for line := range strings.Lines(s) {
			if !strings.HasPrefix(line, "conntrack v") {
				lines = append(lines, line)
			}
		}
		s = strings.Join(lines, "")
	}
	return s, err
}
