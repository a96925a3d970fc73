package server

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatglm/chatglm/gen"
)

// metrics are the server's counters, written in the Prometheus text format
// by GET /metrics.
type metrics struct {
	mu       sync.Mutex
	requests map[[2]string]int64   // {route, status} -> count
	latency  map[string]*histogram // route -> request durations
	ttft     *histogram            // time to first token of generations

	generated       atomic.Int64 // tokens sent by the backend to requests
	promptEvaluated atomic.Int64
	promptCached    atomic.Int64 // prompt tokens reused from a sequence's KV cache
	rejected        atomic.Int64 // 429s
	genNanos        atomic.Int64 // wall time spent generating, summed over requests
	waitNanos       atomic.Int64 // time spent waiting for a sequence, summed

	rate rateWindow
}

// Histogram bucket bounds in seconds: request durations run from a
// health check's microseconds to a long generation's minutes; the time to
// first token from a cached prefix's milliseconds to a long prompt queued
// behind others.
var (
	durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}
	ttftBuckets     = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60}
)

// histogram is a Prometheus histogram: counts per upper bound, a sum and a
// count. Its owner's mutex guards it.
type histogram struct {
	bounds []float64
	counts []int64 // counts[i]: observations <= bounds[i] and > bounds[i-1]; the last one is +Inf
	sum    float64
	count  int64
}

func newHistogram(bounds []float64) *histogram {
	return &histogram{bounds: bounds, counts: make([]int64, len(bounds)+1)}
}

func (h *histogram) observe(v float64) {
	i := sort.SearchFloat64s(h.bounds, v) // first bound >= v
	h.counts[i]++
	h.sum += v
	h.count++
}

// write writes the histogram's series; labels is "" or `name="value",...`.
func (h *histogram) write(b *strings.Builder, name, labels string) {
	sep := ""
	if labels != "" {
		sep = ","
	}
	var cum int64
	for i, le := range h.bounds {
		cum += h.counts[i]
		fmt.Fprintf(b, "%s_bucket{%s%sle=\"%g\"} %d\n", name, labels, sep, le, cum)
	}
	fmt.Fprintf(b, "%s_bucket{%s%sle=\"+Inf\"} %d\n", name, labels, sep, h.count)
	if labels != "" {
		labels = "{" + labels + "}"
	}
	fmt.Fprintf(b, "%s_sum%s %g\n%s_count%s %d\n", name, labels, h.sum, name, labels, h.count)
}

func newMetrics() *metrics {
	return &metrics{requests: map[[2]string]int64{}, latency: map[string]*histogram{}, ttft: newHistogram(ttftBuckets)}
}

func (m *metrics) request(route string, status int, d time.Duration) {
	m.mu.Lock()
	m.requests[[2]string{route, fmt.Sprint(status)}]++
	h := m.latency[route]
	if h == nil {
		h = newHistogram(durationBuckets)
		m.latency[route] = h
	}
	h.observe(d.Seconds())
	m.mu.Unlock()
}

// firstToken records a generation's time to first token, counted from the
// moment the request was admitted (its wait for a sequence included).
func (m *metrics) firstToken(d time.Duration) {
	m.mu.Lock()
	m.ttft.observe(d.Seconds())
	m.mu.Unlock()
}

// token counts one generated token.
func (m *metrics) token() {
	m.generated.Add(1)
	m.rate.add(time.Now(), 1)
}

// generation counts a finished generation's prompt tokens (evaluated, and
// reused from the sequence's cache) and its time.
func (m *metrics) generation(evaluated, cached int, d time.Duration) {
	m.promptEvaluated.Add(int64(evaluated))
	m.promptCached.Add(int64(cached))
	m.genNanos.Add(int64(d))
}

func (m *metrics) queueWait(d time.Duration) { m.waitNanos.Add(int64(d)) }

// rateWindow keeps generated-token counts per second for the last minute,
// to report a recent tokens/s figure.
type rateWindow struct {
	mu     sync.Mutex
	counts [60]int64
	secs   [60]int64
}

const rateSpan = 10 // seconds averaged for the tokens/s gauge

func (w *rateWindow) add(now time.Time, n int) {
	sec := now.Unix()
	w.mu.Lock()
	i := sec % int64(len(w.counts))
	if w.secs[i] != sec {
		w.secs[i], w.counts[i] = sec, 0
	}
	w.counts[i] += int64(n)
	w.mu.Unlock()
}

// perSecond averages the tokens of the last rateSpan whole seconds.
func (w *rateWindow) perSecond(now time.Time) float64 {
	sec := now.Unix()
	var total int64
	w.mu.Lock()
	for s := sec - rateSpan; s < sec; s++ {
		i := s % int64(len(w.counts))
		if w.secs[i] == s {
			total += w.counts[i]
		}
	}
	w.mu.Unlock()
	return float64(total) / rateSpan
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	s.writeMetrics(w)
}

func (s *Server) writeMetrics(w io.Writer) {
	m := s.metrics
	var b strings.Builder
	metric := func(name, typ, help string) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	}
	m.mu.Lock()
	keys := make([][2]string, 0, len(m.requests))
	for k := range m.requests {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i][0]+" "+keys[i][1] < keys[j][0]+" "+keys[j][1] })
	metric("chatglm_http_requests_total", "counter", "HTTP requests answered, by route and status.")
	for _, k := range keys {
		fmt.Fprintf(&b, "chatglm_http_requests_total{route=%q,status=%q} %d\n", k[0], k[1], m.requests[k])
	}
	routes := make([]string, 0, len(m.latency))
	for r := range m.latency {
		routes = append(routes, r)
	}
	sort.Strings(routes)
	metric("chatglm_http_request_duration_seconds", "histogram", "Time to answer HTTP requests (to the end of the body), by route.")
	for _, r := range routes {
		m.latency[r].write(&b, "chatglm_http_request_duration_seconds", fmt.Sprintf("route=%q", r))
	}
	metric("chatglm_time_to_first_token_seconds", "histogram", "Time from admitting a generation request to its first token (queueing and prompt evaluation).")
	m.ttft.write(&b, "chatglm_time_to_first_token_seconds", "")
	m.mu.Unlock()

	loaded := 0
	var parallel, waiting int64
	var bs gen.Stats
	if st := s.state.Load(); st != nil {
		loaded = 1
		parallel = int64(st.b.Parallel())
		waiting = st.waiting.Load()
		bs = st.b.Stats()
	}
	metric("chatglm_model_loaded", "gauge", "1 once the model is loaded.")
	fmt.Fprintf(&b, "chatglm_model_loaded %d\n", loaded)
	ready := 0
	if ok, _ := s.readiness(); ok {
		ready = 1
	}
	metric("chatglm_ready", "gauge", "1 while /health/ready answers 200 (model loaded, not draining or stopping).")
	fmt.Fprintf(&b, "chatglm_ready %d\n", ready)
	metric("chatglm_sequences", "gauge", "Sequences that generate at once (--parallel).")
	fmt.Fprintf(&b, "chatglm_sequences %d\n", parallel)
	metric("chatglm_sequences_active", "gauge", "Sequences generating now.")
	fmt.Fprintf(&b, "chatglm_sequences_active %d\n", bs.Active)
	metric("chatglm_queue_depth", "gauge", "Requests waiting for a free sequence.")
	fmt.Fprintf(&b, "chatglm_queue_depth %d\n", waiting)
	metric("chatglm_requests_rejected_total", "counter", "Requests refused with 429 because the queue was full.")
	fmt.Fprintf(&b, "chatglm_requests_rejected_total %d\n", m.rejected.Load())
	metric("chatglm_generated_tokens_total", "counter", "Tokens generated for requests.")
	fmt.Fprintf(&b, "chatglm_generated_tokens_total %d\n", m.generated.Load())
	metric("chatglm_prompt_tokens_evaluated_total", "counter", "Prompt tokens evaluated (not reused from a cached prefix).")
	fmt.Fprintf(&b, "chatglm_prompt_tokens_evaluated_total %d\n", m.promptEvaluated.Load())
	metric("chatglm_prompt_tokens_cached_total", "counter", "Prompt tokens reused from a sequence's KV cache (a shared prefix: an earlier turn of the conversation) instead of evaluated.")
	fmt.Fprintf(&b, "chatglm_prompt_tokens_cached_total %d\n", m.promptCached.Load())
	metric("chatglm_generation_tokens_per_second", "gauge", fmt.Sprintf("Generated tokens per second, all sequences together, over the last %d seconds.", rateSpan))
	fmt.Fprintf(&b, "chatglm_generation_tokens_per_second %g\n", m.rate.perSecond(time.Now()))
	metric("chatglm_generation_seconds_total", "counter", "Time spent generating, summed over requests.")
	fmt.Fprintf(&b, "chatglm_generation_seconds_total %g\n", time.Duration(m.genNanos.Load()).Seconds())
	metric("chatglm_queue_wait_seconds_total", "counter", "Time requests spent waiting for a sequence, summed.")
	fmt.Fprintf(&b, "chatglm_queue_wait_seconds_total %g\n", time.Duration(m.waitNanos.Load()).Seconds())
	metric("chatglm_decode_steps_total", "counter", "Batched decode steps run by the engine.")
	fmt.Fprintf(&b, "chatglm_decode_steps_total %d\n", bs.DecodeSteps)
	metric("chatglm_uptime_seconds", "gauge", "Seconds since the server started.")
	fmt.Fprintf(&b, "chatglm_uptime_seconds %g\n", time.Since(s.started).Seconds())
	io.WriteString(w, b.String())
}
