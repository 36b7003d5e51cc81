package main

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

var metricNameRE = regexp.MustCompile(`\bftpsalg_[a-z0-9_]+`)

// exportedMetric strips the series suffixes of a histogram's samples.
func exportedMetric(documented []string, name string) bool {
	if slices.Contains(documented, name) {
		return true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suf); ok && slices.Contains(documented, base) {
			return true
		}
	}
	return false
}

// TestGrafanaDashboard: every panel of contrib/grafana/ftpsalg.json queries
// ftpsalg metrics, and only ones docs/metrics.md lists (TestMetricsRegistry
// keeps that list equal to what the daemon registers).
func TestGrafanaDashboard(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../contrib/grafana/ftpsalg.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
		Templating struct {
			List []struct {
				Definition string
			}
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	documented := documentedMetrics(t)
	if len(dash.Panels) < 10 {
		t.Fatalf("%d panels", len(dash.Panels))
	}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			names := metricNameRE.FindAllString(tg.Expr, -1)
			if len(names) == 0 {
				t.Errorf("panel %q: %q queries no ftpsalg metric", p.Title, tg.Expr)
			}
			for _, n := range names {
				if !exportedMetric(documented, n) {
					t.Errorf("panel %q: %s is not a metric the daemon exports", p.Title, n)
				}
			}
		}
	}
	for _, v := range dash.Templating.List {
		for _, n := range metricNameRE.FindAllString(v.Definition, -1) {
			if !exportedMetric(documented, n) {
				t.Errorf("variable %q: %s is not a metric the daemon exports", v.Definition, n)
			}
		}
	}
}

// TestAlertRules: every alert expression uses exported metrics (and
// Prometheus's own up).
func TestAlertRules(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../contrib/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert, Expr string
			}
		}
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatal(err)
	}
	documented := documentedMetrics(t)
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			names := metricNameRE.FindAllString(r.Expr, -1)
			if len(names) == 0 && !strings.HasPrefix(r.Expr, "up{") {
				t.Errorf("alert %s: %q uses no ftpsalg metric", r.Alert, r.Expr)
			}
			for _, m := range names {
				if !exportedMetric(documented, m) {
					t.Errorf("alert %s: %s is not a metric the daemon exports", r.Alert, m)
				}
			}
		}
	}
	if n < 5 {
		t.Errorf("%d alert rules", n)
	}
}
