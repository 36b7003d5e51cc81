package certs

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// NameCertificateExpiry is the metric NewExpiryCollector emits.
const NameCertificateExpiry = "ftpsalg_tls_certificate_expiry_timestamp_seconds"

// Values of CertExpiry.Kind (label kind).
const (
	// KindCA is the operator's CA certificate.
	KindCA = "ca"
	// KindStatic is a static leaf certificate of a server (policy keys
	// tls.certificate and tls.key).
	KindStatic = "static"
)

// CertExpiry is one certificate whose expiry is exported.
type CertExpiry struct {
	// Kind is KindCA or KindStatic.
	Kind string
	// Server is the policy name of the server a static certificate
	// belongs to; empty for the CA.
	Server string
	// NotAfter is the end of the certificate's validity.
	NotAfter time.Time
}

type expiryCollector struct {
	source func() []CertExpiry
	desc   *prometheus.Desc
}

// NewExpiryCollector returns a collector that, at each scrape, emits
// NameCertificateExpiry{kind, server} for every certificate source returns.
// source is called on the scrape goroutine; it must be safe for that and
// must not return two certificates with the same kind and server. Minted
// leaves are not exported: they are short-lived and renewed automatically,
// and their number is not bounded by the policy.
func NewExpiryCollector(source func() []CertExpiry) prometheus.Collector {
	return &expiryCollector{
		source: source,
		desc: prometheus.NewDesc(NameCertificateExpiry,
			"Time in seconds since the Unix epoch at which a certificate ftpsalg presents or signs with expires (its NotAfter).",
			[]string{"kind", "server"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *expiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *expiryCollector) Collect(ch chan<- prometheus.Metric) {
	for _, e := range c.source() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue,
			float64(e.NotAfter.Unix()), e.Kind, e.Server)
	}
}
