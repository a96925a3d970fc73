package server

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatglm/chatglm/gen"
)

func status(t *testing.T, url string, header ...string) int {
	t.Helper()
	resp := get(t, url, header...)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestLiveAndReady: /health/live is 200 whenever the process answers;
// /health/ready (and /health) only once the model is loaded and until the
// server drains or stops; none of them needs the API key.
func TestLiveAndReady(t *testing.T) {
	s, ts := testServer(t, nil, Options{APIKey: "k"})
	check := func(stage string, live, ready int) {
		t.Helper()
		if got := status(t, ts.URL+PathLive); got != live {
			t.Errorf("%s: %s %d, want %d", stage, PathLive, got, live)
		}
		for _, p := range []string{PathReady, PathHealth} {
			if got := status(t, ts.URL+p); got != ready {
				t.Errorf("%s: %s %d, want %d", stage, p, got, ready)
			}
		}
	}
	check("loading", 200, 503)
	s.SetBackend(newFake(1, 512))
	check("loaded", 200, 200)
	s.draining.Store(true)
	check("draining", 200, 503)
	// Model routes still work while draining.
	if got := status(t, ts.URL+"/v1/models", "Authorization", "Bearer k"); got != 200 {
		t.Errorf("/v1/models while draining: %d", got)
	}
	s.SetClosing()
	check("closing", 200, 503)
	var m bytes.Buffer
	s.writeMetrics(&m)
	if !strings.Contains(m.String(), "chatglm_ready 0\n") {
		t.Errorf("metrics while closing lack chatglm_ready 0:\n%s", m.String())
	}
	// Health checks need no key; everything else does.
	if got := status(t, ts.URL+"/health/other"); got != http.StatusUnauthorized {
		t.Errorf("/health/other without a key: %d", got)
	}
}

// TestDrainServesWhileNotReady: after the stop signal the server answers
// 503 on /health/ready but still serves new requests (on new connections
// too) for the drain period, then closes its listener and finishes.
func TestDrainServesWhileNotReady(t *testing.T) {
	fake := newFake(1, 512)
	s, url, stop, done := startServeOpts(t, fake, time.Minute, Options{Drain: 2 * time.Second})
	if got := status(t, url+PathReady); got != 200 {
		t.Fatalf("ready before the signal: %d", got)
	}
	stop()
	waitFor(t, func() bool { return s.draining.Load() })
	if got := status(t, url+PathReady); got != http.StatusServiceUnavailable {
		t.Errorf("ready while draining: %d", got)
	}
	if got := status(t, url+PathLive); got != 200 {
		t.Errorf("live while draining: %d", got)
	}
	// A fresh connection, as a balancer that has not noticed yet would open.
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Post(url+"/v1/chat/completions", "application/json", strings.NewReader(hello))
	if err != nil {
		t.Fatalf("request while draining: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("request while draining: %d", resp.StatusCode)
	}
	if s.closing.Load() {
		t.Fatal("closing before the drain period ended")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("tcp", strings.TrimPrefix(url, "http://")); err == nil {
		t.Error("the listener is still open after Serve returned")
	}
}

// TestDrainSkippedWhileLoading: a replica that never became ready has no
// traffic to drain and stops at once, whatever the drain period.
func TestDrainSkippedWhileLoading(t *testing.T) {
	_, _, stop, done := startServeOpts(t, nil, time.Minute, Options{Drain: time.Hour})
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve waited out the drain period with no model loaded")
	}
}

// cachingBackend reports a fixed number of cached prompt tokens for every
// generation, as the engine does when a prefix is reused.
type cachingBackend struct {
	*fakeBackend
	cached int
}

type cachingSeq struct {
	Sequence
	cached int
}

func (b cachingBackend) Acquire(ctx context.Context, prompt []int32) (Sequence, error) {
	seq, err := b.fakeBackend.Acquire(ctx, prompt)
	if err != nil {
		return nil, err
	}
	return cachingSeq{seq, b.cached}, nil
}

func (s cachingSeq) Generate(ctx context.Context, req gen.Request, onToken func(gen.Token) error) (gen.Result, error) {
	res, err := s.Sequence.Generate(ctx, req, onToken)
	res.CachedTokens = min(s.cached, res.PromptTokens)
	res.EvaluatedTokens = res.PromptTokens - res.CachedTokens
	return res, err
}

var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (-?[0-9.e+-]+|\+Inf|NaN)$`)

// parseMetrics checks the Prometheus text format line by line (every
// sample has a TYPE, histogram buckets are cumulative and end in +Inf =
// _count) and returns the samples by their full series name.
func parseMetrics(t *testing.T, text string) map[string]float64 {
	t.Helper()
	types := map[string]string{}
	samples := map[string]float64{}
	var lastBucket float64
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) >= 4 && f[0] == "#" && f[1] == "TYPE" {
			types[f[2]] = f[3]
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue
		}
		m := sampleLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("malformed metrics line %q", line)
		}
		name := m[1]
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		if types[name] == "" && types[base] == "" {
			t.Errorf("no TYPE for %q", line)
		}
		v, err := strconv.ParseFloat(m[4], 64)
		if err != nil {
			t.Fatalf("value of %q: %v", line, err)
		}
		series := line[:strings.LastIndexByte(line, ' ')]
		if _, dup := samples[series]; dup {
			t.Errorf("duplicate series %q", series)
		}
		samples[series] = v
		if strings.HasSuffix(name, "_bucket") {
			if strings.Contains(series, `le="0.005"`) {
				lastBucket = 0
			}
			if v < lastBucket {
				t.Errorf("bucket %q below the one before it (%g)", line, lastBucket)
			}
			lastBucket = v
			if strings.Contains(series, `le="+Inf"`) {
				count := strings.Replace(strings.Replace(series, "_bucket", "_count", 1), `,le="+Inf"`, "", 1)
				count = strings.Replace(count, `{le="+Inf"}`, "", 1)
				defer func(inf float64, count string) {
					if samples[count] != inf {
						t.Errorf("%s = %g, +Inf bucket %g", count, samples[count], inf)
					}
				}(v, count)
			}
		}
	}
	return samples
}

// TestMetricsHistogramsAndCacheReuse: request durations and time to first
// token are histograms, and the prompt tokens reused from the cache are
// counted apart from those evaluated.
func TestMetricsHistogramsAndCacheReuse(t *testing.T) {
	fake := newFake(2, 512)
	s, ts := testServer(t, nil, Options{})
	s.SetBackend(cachingBackend{fake, 3})
	for i := 0; i < 2; i++ {
		resp := post(t, ts.URL+"/v1/chat/completions", hello)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
	}
	var m bytes.Buffer
	s.writeMetrics(&m)
	got := parseMetrics(t, m.String())
	want := map[string]float64{
		`chatglm_time_to_first_token_seconds_count`:                                           2,
		`chatglm_time_to_first_token_seconds_bucket{le="+Inf"}`:                               2,
		`chatglm_http_request_duration_seconds_count{route="/v1/chat/completions"}`:           2,
		`chatglm_http_request_duration_seconds_bucket{route="/v1/chat/completions",le="600"}`: 2,
		`chatglm_prompt_tokens_cached_total`:                                                  6,
		`chatglm_ready`:                                                                       1,
		`chatglm_sequences_active`:                                                            0,
		`chatglm_queue_depth`:                                                                 0,
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	if got["chatglm_prompt_tokens_evaluated_total"] <= 0 {
		t.Errorf("no evaluated prompt tokens counted:\n%s", m.String())
	}
	for _, typ := range []string{"# TYPE chatglm_time_to_first_token_seconds histogram\n", "# TYPE chatglm_http_request_duration_seconds histogram\n"} {
		if !strings.Contains(m.String(), typ) {
			t.Errorf("metrics lack %q", typ)
		}
	}
}

func TestHistogramBuckets(t *testing.T) {
	h := newHistogram([]float64{1, 2})
	for _, v := range []float64{0.5, 1, 1.5, 3} {
		h.observe(v)
	}
	var b strings.Builder
	h.write(&b, "x", `a="b"`)
	want := "x_bucket{a=\"b\",le=\"1\"} 2\nx_bucket{a=\"b\",le=\"2\"} 3\nx_bucket{a=\"b\",le=\"+Inf\"} 4\nx_sum{a=\"b\"} 6\nx_count{a=\"b\"} 4\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

// TestCORSAllowsSessionHeader: a browser page on another origin may send
// the session header that load balancers hash.
func TestCORSAllowsSessionHeader(t *testing.T) {
	_, ts := testServer(t, newFake(1, 512), Options{CORSOrigins: []string{"https://app.example"}})
	req, _ := http.NewRequest(http.MethodOptions, ts.URL+"/v1/chat/completions", nil)
	req.Header.Set("Origin", "https://app.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "content-type, x-session-id")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), SessionHeader) {
		t.Errorf("preflight allows %q, not %s", resp.Header.Get("Access-Control-Allow-Headers"), SessionHeader)
	}
}
