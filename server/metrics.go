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
)

// metrics are the server's counters, written in the Prometheus text format
// by GET /metrics.
type metrics struct {
	mu       sync.Mutex
	requests map[[2]string]int64 // {route, status} -> count
	latency  map[string]*summary // route -> request durations

	generated       atomic.Int64 // tokens sent by the backend to requests
	promptEvaluated atomic.Int64
	rejected        atomic.Int64 // 429s
	genNanos        atomic.Int64 // wall time spent generating, summed over requests
	waitNanos       atomic.Int64 // time spent waiting for a sequence, summed

	rate rateWindow
}

// summary is a count and a sum (a Prometheus summary without quantiles).
type summary struct {
	count int64
	sum   float64
}

func newMetrics() *metrics {
	return &metrics{requests: map[[2]string]int64{}, latency: map[string]*summary{}}
}

func (m *metrics) request(route string, status int, d time.Duration) {
	m.mu.Lock()
	m.requests[[2]string{route, fmt.Sprint(status)}]++
	sm := m.latency[route]
	if sm == nil {
		sm = &summary{}
		m.latency[route] = sm
	}
	sm.count++
	sm.sum += d.Seconds()
	m.mu.Unlock()
}

// token counts one generated token.
func (m *metrics) token() {
	m.generated.Add(1)
	m.rate.add(time.Now(), 1)
}

// generation counts a finished generation's evaluated prompt and time.
func (m *metrics) generation(evaluated int, d time.Duration) {
	m.promptEvaluated.Add(int64(evaluated))
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
	metric("chatglm_http_request_duration_seconds", "summary", "Time to answer HTTP requests, by route.")
	for _, r := range routes {
		fmt.Fprintf(&b, "chatglm_http_request_duration_seconds_sum{route=%q} %g\n", r, m.latency[r].sum)
		fmt.Fprintf(&b, "chatglm_http_request_duration_seconds_count{route=%q} %d\n", r, m.latency[r].count)
	}
	m.mu.Unlock()

	ready := 0
	var parallel, waiting int64
	var bs BackendStats
	if st := s.state.Load(); st != nil {
		ready = 1
		parallel = int64(st.b.Parallel())
		waiting = st.waiting.Load()
		bs = st.b.Stats()
	}
	metric("chatglm_model_loaded", "gauge", "1 once the model is loaded.")
	fmt.Fprintf(&b, "chatglm_model_loaded %d\n", ready)
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
