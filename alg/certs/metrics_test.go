package certs

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestExpiryCollector(t *testing.T) {
	t.Parallel()
	certs := []CertExpiry{
		{Kind: KindCA, NotAfter: time.Unix(2000000000, 0)},
		{Kind: KindStatic, Server: "own-files", NotAfter: time.Unix(1900000000, 500)},
	}
	c := NewExpiryCollector(func() []CertExpiry { return certs })
	want := `
# HELP ftpsalg_tls_certificate_expiry_timestamp_seconds Time in seconds since the Unix epoch at which a certificate ftpsalg presents or signs with expires (its NotAfter).
# TYPE ftpsalg_tls_certificate_expiry_timestamp_seconds gauge
ftpsalg_tls_certificate_expiry_timestamp_seconds{kind="ca",server=""} 2e+09
ftpsalg_tls_certificate_expiry_timestamp_seconds{kind="static",server="own-files"} 1.9e+09
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), NameCertificateExpiry); err != nil {
		t.Error(err)
	}
	if probs, err := testutil.CollectAndLint(c); err != nil || len(probs) > 0 {
		t.Errorf("lint: %v %v", probs, err)
	}

	certs = nil
	if n := testutil.CollectAndCount(c); n != 0 {
		t.Errorf("%d samples without certificates", n)
	}
}
