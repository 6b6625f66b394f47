package serve

import (
	"cmp"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/llamacu/llamacu/engine"
)

// The metrics are written by hand in Prometheus' text exposition format (version 0.0.4): a
// handful of counters, gauges and two histograms need ~150 lines, where
// github.com/prometheus/client_golang would add a dozen modules to the binary for the same output.
//
//	llamacu_requests_total{endpoint,code}          counter   HTTP requests by endpoint and status
//	llamacu_request_duration_seconds{endpoint}     histogram whole request, streamed ones included
//	llamacu_prompt_tokens_total                    counter   prompt tokens of accepted requests
//	llamacu_generation_tokens_total                counter   tokens generated
//	llamacu_request_finish_total{reason}           counter   stop, length, cancelled, error
//	llamacu_time_to_first_token_seconds            histogram from submission to the first token
//	llamacu_inter_token_latency_seconds            histogram between consecutive tokens
//	llamacu_queue_depth                            gauge     requests waiting for admission
//	llamacu_running_sequences                      gauge     sequences in the running batch
//	llamacu_kv_blocks_in_use / _idle / _total      gauge     paged KV-cache blocks (idle: cached, held by none)
//	llamacu_prompt_cached_tokens_total             counter   prompt tokens read from the prefix cache
//	llamacu_preemptions_total                      counter   sequences preempted for KV blocks
//	llamacu_draft_tokens_total, _accepted_tokens_total counter   speculative proposals, and those generated
//	llamacu_ready                                  gauge     1 once the model is loaded
type metrics struct {
	mu       sync.Mutex
	requests map[[2]string]int64 // {endpoint, code}
	finish   map[string]int64
	duration map[string]*histogram

	promptTokens, genTokens atomic.Int64
	ttft, itl               *histogram
}

var (
	latencyBuckets  = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}
	tokenBuckets    = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}
	durationBuckets = []float64{0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}
)

func newMetrics() *metrics {
	return &metrics{
		requests: map[[2]string]int64{},
		finish:   map[string]int64{},
		duration: map[string]*histogram{},
		ttft:     newHistogram(latencyBuckets),
		itl:      newHistogram(tokenBuckets),
	}
}

func (m *metrics) request(endpoint string, code int, d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests[[2]string{endpoint, strconv.Itoa(code)}]++
	h := m.duration[endpoint]
	if h == nil {
		h = newHistogram(durationBuckets)
		m.duration[endpoint] = h
	}
	h.observe(d.Seconds())
}

func (m *metrics) finished(reason string, generated int) {
	m.genTokens.Add(int64(generated))
	m.mu.Lock()
	m.finish[reason]++
	m.mu.Unlock()
}

// write renders every metric; st is nil while the model loads.
func (m *metrics) write(w io.Writer, st *engine.SchedulerStats) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	m.mu.Lock()
	p("# HELP llamacu_requests_total HTTP requests by endpoint and status code.\n# TYPE llamacu_requests_total counter\n")
	keys := make([][2]string, 0, len(m.requests))
	for k := range m.requests {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [2]string) int {
		if c := cmp.Compare(a[0], b[0]); c != 0 {
			return c
		}
		return cmp.Compare(a[1], b[1])
	})
	for _, k := range keys {
		p("llamacu_requests_total{endpoint=%q,code=%q} %d\n", k[0], k[1], m.requests[k])
	}
	p("# HELP llamacu_request_duration_seconds Time to answer a request, streams included.\n# TYPE llamacu_request_duration_seconds histogram\n")
	eps := make([]string, 0, len(m.duration))
	for e := range m.duration {
		eps = append(eps, e)
	}
	slices.Sort(eps)
	for _, e := range eps {
		m.duration[e].write(w, "llamacu_request_duration_seconds", fmt.Sprintf("endpoint=%q", e))
	}
	p("# HELP llamacu_request_finish_total Generation requests by finish reason.\n# TYPE llamacu_request_finish_total counter\n")
	for _, r := range []string{engine.FinishStop, engine.FinishLength, engine.FinishCancelled, engine.FinishError} {
		p("llamacu_request_finish_total{reason=%q} %d\n", r, m.finish[r])
	}
	m.mu.Unlock()

	p("# HELP llamacu_prompt_tokens_total Prompt tokens of accepted requests.\n# TYPE llamacu_prompt_tokens_total counter\nllamacu_prompt_tokens_total %d\n", m.promptTokens.Load())
	p("# HELP llamacu_generation_tokens_total Generated tokens.\n# TYPE llamacu_generation_tokens_total counter\nllamacu_generation_tokens_total %d\n", m.genTokens.Load())
	p("# HELP llamacu_time_to_first_token_seconds Time from submission to the first generated token.\n# TYPE llamacu_time_to_first_token_seconds histogram\n")
	m.ttft.write(w, "llamacu_time_to_first_token_seconds", "")
	p("# HELP llamacu_inter_token_latency_seconds Time between consecutive tokens of a sequence.\n# TYPE llamacu_inter_token_latency_seconds histogram\n")
	m.itl.write(w, "llamacu_inter_token_latency_seconds", "")

	var s engine.SchedulerStats
	ready := 0
	if st != nil {
		s, ready = *st, 1
	}
	gauge := func(name, help string, v int) {
		p("# HELP %s %s\n# TYPE %s gauge\n%s %d\n", name, help, name, name, v)
	}
	gauge("llamacu_ready", "1 once the model is loaded and the server accepts requests.", ready)
	gauge("llamacu_queue_depth", "Requests waiting for admission to the running batch.", s.Queued)
	gauge("llamacu_running_sequences", "Sequences in the running batch.", s.Running)
	gauge("llamacu_max_sequences", "Capacity of the running batch.", s.MaxSeqs)
	gauge("llamacu_kv_blocks_in_use", "Paged KV-cache blocks held by sequences.", s.KVBlocksInUse)
	gauge("llamacu_kv_blocks_idle", "Prefix-cache blocks no sequence holds (evicted when memory is needed).", s.KVBlocksIdle)
	gauge("llamacu_kv_blocks_total", "Paged KV-cache blocks in the pool.", s.KVBlocksTotal)
	p("# HELP llamacu_preemptions_total Sequences preempted for KV blocks (prefilled again when readmitted).\n# TYPE llamacu_preemptions_total counter\nllamacu_preemptions_total %d\n", s.Preemptions)
	p("# HELP llamacu_draft_tokens_total Tokens proposed by prompt lookup (serve --draft).\n# TYPE llamacu_draft_tokens_total counter\nllamacu_draft_tokens_total %d\n", s.DraftTokens)
	p("# HELP llamacu_draft_accepted_tokens_total Proposed tokens the model generated.\n# TYPE llamacu_draft_accepted_tokens_total counter\nllamacu_draft_accepted_tokens_total %d\n", s.DraftAccepted)
	p("# HELP llamacu_prompt_cached_tokens_total Prompt tokens read from the prefix cache instead of prefilled.\n# TYPE llamacu_prompt_cached_tokens_total counter\nllamacu_prompt_cached_tokens_total %d\n", s.CachedTokens)
}

// histogram is a Prometheus histogram with fixed upper bounds.
type histogram struct {
	mu     sync.Mutex
	bounds []float64
	counts []uint64 // (len(bounds)+1): the last is +Inf
	sum    float64
	n      uint64
}

func newHistogram(bounds []float64) *histogram {
	return &histogram{bounds: bounds, counts: make([]uint64, len(bounds)+1)}
}

func (h *histogram) observe(v float64) {
	if math.IsNaN(v) {
		return
	}
	i, _ := slices.BinarySearch(h.bounds, v) // first bound ≥ v: le is inclusive
	h.mu.Lock()
	h.counts[i]++
	h.sum += v
	h.n++
	h.mu.Unlock()
}

// write renders the cumulative buckets, _sum and _count; labels ("k=\"v\"") may be empty.
func (h *histogram) write(w io.Writer, name, labels string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	sep := ""
	if labels != "" {
		sep = ","
	}
	var cum uint64
	for i, b := range h.bounds {
		cum += h.counts[i]
		fmt.Fprintf(w, "%s_bucket{%s%sle=\"%s\"} %d\n", name, labels, sep, strconv.FormatFloat(b, 'g', -1, 64), cum)
	}
	cum += h.counts[len(h.bounds)]
	fmt.Fprintf(w, "%s_bucket{%s%sle=\"+Inf\"} %d\n", name, labels, sep, cum)
	if labels != "" {
		labels = "{" + labels + "}"
	}
	fmt.Fprintf(w, "%s_sum%s %s\n%s_count%s %d\n", name, labels, strconv.FormatFloat(h.sum, 'g', -1, 64), name, labels, h.n)
}
