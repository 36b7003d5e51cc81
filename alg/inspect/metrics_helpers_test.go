package inspect

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func testutilCount(e *Engine, reason string) float64 {
	return testutil.ToFloat64(e.m.Refusals.WithLabelValues(reason))
}

func counterValue(c prometheus.Counter) float64 { return testutil.ToFloat64(c) }
