package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func testutilToFloat64(c prometheus.Collector) float64 { return testutil.ToFloat64(c) }
