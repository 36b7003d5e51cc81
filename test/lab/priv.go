package lab

import "os"

// PrivEnv, when set to 1, makes RequirePrivileged fail instead of skip
// when not root, like CI=true.
const PrivEnv = "FTPSALG_PRIV_TESTS"

// Skipper is the part of testing.TB that RequirePrivileged needs.
type Skipper interface {
	Helper()
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
}

// RequirePrivileged is the one gate for privileged tests: when not root it
// fails the test if CI=true or FTPSALG_PRIV_TESTS=1 (privilege is required
// there, a skip would hide the tests) and skips it otherwise.
func RequirePrivileged(t Skipper) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	const why = "needs root (network namespaces, nftables, useradd); run `sudo -E go test ./test/lab/`"
	if os.Getenv("CI") == "true" || os.Getenv(PrivEnv) == "1" {
		t.Fatalf("privileged test %s, and CI=true or %s=1 requires it to run", why, PrivEnv)
	}
	t.Skipf("SKIPPING PRIVILEGED TEST: it %s; set %s=1 to make this a failure", why, PrivEnv)
}
