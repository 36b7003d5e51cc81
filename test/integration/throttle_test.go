package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/ftpsalg/ftpsalg/alg/status"
	"github.com/ftpsalg/ftpsalg/test/ftpc"
	"github.com/ftpsalg/ftpsalg/test/harness"
	"github.com/ftpsalg/ftpsalg/test/lab"
)

// throttleTop bans after 3 failed logins within a minute, for 3 s: short
// enough to watch the ban expire.
const throttleTop = "throttle:\n  max_failures: 3\n  window: 1m\n  ban: 3s\n"

// TestThrottleBansGuesser: through a plain-text inspect server and a mitm
// server (vsftpd, which answers a wrong password with 530), three failed
// logins from the client's IPv4 address ban it: the fourth control
// connection from it is dropped in the kernel (its SYN never answered),
// while the client's IPv6 address still logs in; the ban is counted,
// listed by the admin socket (ftpsalg status) and expires after 3 s.
func TestThrottleBansGuesser(t *testing.T) {
	lab.RequirePrivileged(t)
	t.Parallel()
	type login func(ctx context.Context, addr netip.Addr, pass string) error
	kinds := []struct {
		name  string
		start func(t *testing.T) (*harness.Daemon, *lab.Vsftpd, login)
	}{
		{"inspect", func(t *testing.T) (*harness.Daemon, *lab.Vsftpd, login) {
			l := lab.New(t, lab.Options{})
			l.InstallGatewayFirewall(ctMark)
			v := l.StartVsftpd(lab.VsftpdOptions{})
			d := startDaemon(t, l, policyFor([]int{21}, "", throttleTop))
			return d, v, func(ctx context.Context, addr netip.Addr, pass string) error {
				c, err := harness.Client(ctx, l, netip.AddrPortFrom(addr, 21), v.User, pass)
				if err == nil {
					c.Close()
				}
				return err
			}
		}},
		{"mitm", func(t *testing.T) (*harness.Daemon, *lab.Vsftpd, login) {
			ml := newMITMLab(t, mitmOpts{edit: func(p string) string { return p + throttleTop }})
			pool := x509.NewCertPool()
			pem, err := os.ReadFile(ml.caFile)
			if err != nil {
				t.Fatal(err)
			}
			pool.AppendCertsFromPEM(pem)
			conf := &tls.Config{RootCAs: pool, ServerName: "files.lab", MinVersion: tls.VersionTLS12}
			return ml.d, ml.v, func(ctx context.Context, addr netip.Addr, pass string) error {
				nd := harness.NSDialer{L: ml.l, NS: lab.Client}
				c, err := ftpc.Dial(ctx, nd, nd, netip.AddrPortFrom(addr, 21).String())
				if err != nil {
					return err
				}
				defer c.Close()
				c.Timeout = 5 * time.Second
				if err := c.AuthTLS(ctx, conf); err != nil {
					return err
				}
				return c.Login(ml.v.User, pass)
			}
		}},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			d, v, try := k.start(t)
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			short := func(d time.Duration) (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, d) }
			for i := range 3 {
				c, cancel := short(15 * time.Second)
				err := try(c, lab.ServerAddr4, "wrong-"+v.Password)
				cancel()
				if err == nil {
					t.Fatalf("failed login %d: logged in with a wrong password", i+1)
				}
				t.Logf("failed login %d: %v", i+1, err)
			}
			d.WaitMetric(`ftpsalg_bans_total`, 1)
			m := d.Metrics()
			if got := m[`ftpsalg_login_failures_total{reason="login"}`]; got != 3 {
				t.Errorf("login failures %v, want 3", got)
			}
			if got := m[`ftpsalg_bans_active`]; got != 1 {
				t.Errorf("active bans %v, want 1", got)
			}
			// The fourth connection, even with the right password: its
			// SYN is dropped (a dial timeout, not a 421 or a reset).
			c, cancel := short(time.Second)
			err := try(c, lab.ServerAddr4, v.Password)
			cancel()
			if err == nil || !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
				t.Fatalf("banned address: got %v, want the connection dropped (timeout)", err)
			}
			// Another address of the same client logs in.
			c, cancel = short(15 * time.Second)
			if err := try(c, lab.ServerAddr6, v.Password); err != nil {
				t.Fatalf("another address refused: %v", err)
			}
			cancel()
			sctx, scancel := short(5 * time.Second)
			snap, _, err := status.Fetch(sctx, harness.AdminSocket(d.L))
			scancel()
			if err != nil {
				t.Fatal(err)
			}
			if len(snap.Bans) != 1 || snap.Bans[0].Client != lab.ClientAddr4 {
				t.Errorf("ftpsalg status bans: %+v, want %s", snap.Bans, lab.ClientAddr4)
			}
			// The ban expires: the right password gets in again.
			deadline := time.Now().Add(15 * time.Second)
			for {
				c, cancel := short(time.Second)
				err := try(c, lab.ServerAddr4, v.Password)
				cancel()
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the 3s ban still holds after 15s: %v", err)
				}
			}
			d.WaitMetric(`ftpsalg_bans_active`, 0)
		})
	}
}

// isTimeout reports a network timeout.
func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}
