package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/ftpsalg/ftpsalg/alg/certs"
	"github.com/ftpsalg/ftpsalg/metrics"
)

// MetricsDumpEnv names a file TestMetricsRegistry writes the full scrape
// to, for `make metrics-lint` (promtool check metrics).
const MetricsDumpEnv = "FTPSALG_METRICS_DUMP"

// daemonRegistry builds a registry the way daemon() does, with every
// optional collector (mitm certificates, NAT ports, the kernel queue read
// from a fixture) and a sample in every vector, so that a scrape shows
// every metric the daemon can export.
func daemonRegistry(t *testing.T) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, buildInfo())
	qs := metrics.NewQueueStats(4040)
	qs.Path = filepath.Join(t.TempDir(), "nfnetlink_queue")
	if err := os.WriteFile(qs.Path, []byte(" 4040  1234     0 2 65531     5     7      100  1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	reg.MustRegister(qs)
	reg.MustRegister(certs.NewExpiryCollector(func() []certs.CertExpiry {
		return []certs.CertExpiry{{Kind: certs.KindCA, NotAfter: time.Unix(2e9, 0)}}
	}))
	reg.MustRegister(metrics.NewNATReserved(func() int { return 3 }))
	reg.MustRegister(metrics.NewBansActive(func() int { return 1 }))
	touchVectors(t, m)
	return reg
}

var variableLabelsRE = regexp.MustCompile(`variableLabels: \{([^}]*)\}`)

// touchVectors creates one child in every labelled vector of m.
func touchVectors(t *testing.T, m *metrics.Metrics) {
	v := reflect.ValueOf(m).Elem()
	for i := range v.NumField() {
		c, ok := v.Field(i).Interface().(prometheus.Collector)
		if !ok {
			continue
		}
		ch := make(chan *prometheus.Desc, 1)
		c.Describe(ch)
		d := (<-ch).String()
		var lvs []string
		if mm := variableLabelsRE.FindStringSubmatch(d); mm != nil && mm[1] != "" {
			lvs = make([]string, len(strings.Split(mm[1], ",")))
			for j := range lvs {
				lvs[j] = "x"
			}
		}
		switch x := c.(type) {
		case *prometheus.CounterVec:
			x.WithLabelValues(lvs...)
		case *prometheus.GaugeVec:
			x.WithLabelValues(lvs...)
		case *prometheus.HistogramVec:
			x.WithLabelValues(lvs...)
		case prometheus.Metric:
		default:
			t.Fatalf("field %s: unhandled collector %T", v.Type().Field(i).Name, c)
		}
	}
}

// TestMetricsRegistry: every metric the daemon registers is lint-clean
// (the rules promtool check metrics applies) and listed in
// docs/metrics.md; with FTPSALG_METRICS_DUMP the scrape is written out.
func TestMetricsRegistry(t *testing.T) {
	t.Parallel()
	reg := daemonRegistry(t)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var scrape bytes.Buffer
	var names []string
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&scrape, mf); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(mf.GetName(), "ftpsalg_") {
			names = append(names, mf.GetName())
		}
	}
	if path := os.Getenv(MetricsDumpEnv); path != "" {
		if err := os.WriteFile(path, scrape.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "ftpsalg_") {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
	documented := documentedMetrics(t)
	for _, n := range names {
		if !slices.Contains(documented, n) {
			t.Errorf("%s is registered but not listed in docs/metrics.md", n)
		}
	}
	for _, n := range documented {
		if !slices.Contains(names, n) {
			t.Errorf("docs/metrics.md lists %s, which the daemon does not register", n)
		}
	}
	if len(names) < 40 {
		t.Errorf("only %d ftpsalg metrics gathered: %v", len(names), names)
	}
}

var docMetricRE = regexp.MustCompile("^\\| `(ftpsalg_[a-z0-9_]+)`")

// documentedMetrics are the metric names in the first column of
// docs/metrics.md's tables.
func documentedMetrics(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for l := range strings.Lines(string(b)) {
		if m := docMetricRE.FindStringSubmatch(l); m != nil {
			out = append(out, m[1])
		}
	}
	return out
}
