package metrics

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// QueueStats reads the kernel's per-queue counters from
// /proc/net/netfilter/nfnetlink_queue at scrape time. The file is per network
// namespace: the daemon's own namespace is the one it reads.
//
// Columns: queue, portid, queue_total, copy_mode, copy_range, queue_dropped,
// queue_user_dropped, id_sequence, 1.
type QueueStats struct {
	Path  string
	Queue uint16

	dropped, userDropped, waiting *prometheus.Desc
}

// NewQueueStats returns a collector for queue's kernel counters.
func NewQueueStats(queue uint16) *QueueStats {
	l := prometheus.Labels{"queue": strconv.Itoa(int(queue))}
	return &QueueStats{
		Path:  "/proc/net/netfilter/nfnetlink_queue",
		Queue: queue,
		dropped: prometheus.NewDesc(NameQueueDropped,
			"Packets the kernel dropped because the queue was full (queue_dropped).", nil, l),
		userDropped: prometheus.NewDesc(NameQueueUserDropped,
			"Packets the kernel could not deliver to the daemon's socket, e.g. ENOBUFS (queue_user_dropped).", nil, l),
		waiting: prometheus.NewDesc(NameQueueWaiting,
			"Packets waiting in the kernel queue for a verdict.", nil, l),
	}
}

// Describe implements prometheus.Collector.
func (q *QueueStats) Describe(ch chan<- *prometheus.Desc) {
	ch <- q.dropped
	ch <- q.userDropped
	ch <- q.waiting
}

// Collect implements prometheus.Collector. A missing file or queue yields no
// samples rather than an error: the queue may not be bound yet.
func (q *QueueStats) Collect(ch chan<- prometheus.Metric) {
	st, err := ReadQueueStats(q.Path, q.Queue)
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(q.dropped, prometheus.CounterValue, float64(st.Dropped))
	ch <- prometheus.MustNewConstMetric(q.userDropped, prometheus.CounterValue, float64(st.UserDropped))
	ch <- prometheus.MustNewConstMetric(q.waiting, prometheus.GaugeValue, float64(st.Waiting))
}

// KernelQueueStats are one queue's kernel counters.
type KernelQueueStats struct {
	Waiting, Dropped, UserDropped uint64
}

// ReadQueueStats parses path for queue's counters.
func ReadQueueStats(path string, queue uint16) (KernelQueueStats, error) {
	f, err := os.Open(path)
	if err != nil {
		return KernelQueueStats{}, fmt.Errorf("failed to open queue statistics: %w", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		st, n, ok := parseQueueLine(s.Text())
		if ok && n == queue {
			return st, nil
		}
	}
	if err := s.Err(); err != nil {
		return KernelQueueStats{}, fmt.Errorf("failed to read queue statistics: %w", err)
	}
	return KernelQueueStats{}, fmt.Errorf("queue %d is not bound", queue)
}

func parseQueueLine(line string) (KernelQueueStats, uint16, bool) {
	f := strings.Fields(line)
	if len(f) < 7 {
		return KernelQueueStats{}, 0, false
	}
	var v [7]uint64
	for i := range 7 {
		n, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			return KernelQueueStats{}, 0, false
		}
		v[i] = n
	}
	if v[0] > 65535 {
		return KernelQueueStats{}, 0, false
	}
	return KernelQueueStats{Waiting: v[2], Dropped: v[5], UserDropped: v[6]}, uint16(v[0]), true
}
