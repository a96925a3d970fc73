package main

// The soak mode (scripts/bench-soak.sh, a benchmark, not a test): for a fixed
// time after a warm-up, well-behaved clients stream chat completions from a
// running server while hostile clients (hostile.go) attack it, and the
// server's resident memory is sampled from /proc. A run without hostile
// clients is the baseline; -soak-compare holds the two runs against the soak
// targets: no failed well-behaved request, their p99 latency within 1.5x of
// the baseline's, the server alive at the end and its RSS grown by less than
// 10% between the end of the warm-up and the end of the run.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/chatglm/chatglm/internal/measure/soakresult"
)

// The soak targets (issue 11).
const (
	soakTargetP99Ratio  = 1.5  // well-behaved p99 with hostile clients / without
	soakTargetRSSGrowth = 0.10 // RSS growth from the end of the warm-up to the end
)

// soakGrace is how long well-behaved requests still running when the soak
// ends may take to finish before they are counted as failures.
const soakGrace = 2 * time.Minute

// soakConfig sizes one soak run.
type soakConfig struct {
	URL, Key  string
	Clients   int           // well-behaved streaming clients
	MaxTokens int           // max_tokens of their requests
	Warmup    time.Duration // load before the measurement (the same mix, not measured)
	Duration  time.Duration // the measurement
	PID       int           // the server's process, for RSS and liveness (0: not sampled)
	Hostile   int           // hostile clients; hostile client i is of kind Kinds[i%len(Kinds)]
	Kinds     []string      // hostile kinds (default: all)
	Hostility hostileConfig
}

// soakCLI is the soak mode's share of the command line.
type soakCLI struct {
	cfg     soakConfig
	compare bool
}

// soakFlags declares the soak mode's flags on the default flag set.
func soakFlags() *soakCLI {
	s := &soakCLI{cfg: soakConfig{Hostility: defaultHostility}}
	flag.DurationVar(&s.cfg.Duration, "soak", 0, "soak mode: stream chat completions for this long after -soak-warmup and print one JSON line")
	flag.DurationVar(&s.cfg.Warmup, "soak-warmup", 30*time.Second, "with -soak, load before the measurement (not measured)")
	flag.IntVar(&s.cfg.PID, "pid", 0, "with -soak, the server's process id: its RSS is sampled from /proc/PID/status")
	flag.IntVar(&s.cfg.Hostile, "hostile", 0, "with -soak, hostile clients beside the well-behaved ones (0 = baseline run)")
	flag.Func("hostile-kinds", "with -soak, comma-separated hostile kinds (default all: "+strings.Join(kindNames(), ",")+")", func(v string) error {
		kinds, err := parseKinds(v)
		s.cfg.Kinds = kinds
		return err
	})
	flag.DurationVar(&s.cfg.Hostility.Hold, "hostile-hold", s.cfg.Hostility.Hold, "with -soak, longest a slow or non-reading hostile client keeps one connection")
	flag.DurationVar(&s.cfg.Hostility.Pause, "hostile-pause", s.cfg.Hostility.Pause, "with -soak, pause between a hostile client's attempts")
	flag.DurationVar(&s.cfg.Hostility.SlowInterval, "slow-interval", s.cfg.Hostility.SlowInterval, "with -soak, a slow sender's time between bytes")
	flag.BoolVar(&s.compare, "soak-compare", false, "compare two soak results (baseline, then with hostile clients) against the soak targets")
	return s
}

// soakResult is one soak run (see soakresult.Run).
type soakResult = soakresult.Run

var (
	errServerDied = errors.New("the server process died")
	errSoakOver   = errors.New("still running when the soak's grace period ended")
)

// runSoak runs one soak and prints its result as one JSON line.
func runSoak(cfg soakConfig, label string) error {
	switch h := cfg.Hostility; {
	case cfg.Clients < 1:
		return errors.New("-clients must be at least 1")
	case cfg.Hostile < 0 || cfg.Warmup < 0 || h.Pause < 0:
		return errors.New("-hostile, -soak-warmup and -hostile-pause must not be negative")
	case h.Hold <= 0 || h.SlowInterval <= 0:
		return errors.New("-hostile-hold and -slow-interval must be positive")
	}
	res, err := soak(context.Background(), cfg)
	if err != nil {
		return err
	}
	res.Label = label
	line, _ := json.Marshal(res)
	fmt.Println(string(line))
	return nil
}

// soak runs the well-behaved clients, and the hostile ones, against
// cfg.URL for cfg.Warmup + cfg.Duration.
func soak(parent context.Context, cfg soakConfig) (soakResult, error) {
	res := soakResult{Clients: cfg.Clients, Hostile: cfg.Hostile, WarmupSeconds: cfg.Warmup.Seconds(), Seconds: cfg.Duration.Seconds()}
	if len(cfg.Kinds) == 0 {
		cfg.Kinds = kindNames()
	}
	env, err := newHostileEnv(cfg.URL, cfg.Key, cfg.Hostility)
	if err != nil {
		return res, err
	}
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	hc := &http.Client{Timeout: 10 * time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Clients}}
	defer hc.CloseIdleConnections()

	start := time.Now()
	measureFrom := start.Add(cfg.Warmup)
	measureTo := measureFrom.Add(cfg.Duration)

	// The server's memory, every second; a dead server ends the run.
	sampler := &rssSampler{pid: cfg.PID}
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		sampler.run(ctx, func() {
			res.DiedAfterSecs = round(time.Since(start).Seconds(), 1)
			cancel(errServerDied)
		})
	}()

	// Well-behaved clients.
	var (
		mu         sync.Mutex
		lat, ttfts []time.Duration
		good       sync.WaitGroup
	)
	record := func(t0 time.Time, d, ttft time.Duration, tokens int, err error) {
		if t0.Before(measureFrom) {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		res.Requests++
		if err != nil {
			res.Failures++
			if res.FirstError == "" {
				res.FirstError = err.Error()
			}
			res.LastError = err.Error()
			return
		}
		res.Tokens += tokens
		lat = append(lat, d)
		ttfts = append(ttfts, ttft)
	}
	for c := range cfg.Clients {
		good.Add(1)
		go func() {
			defer good.Done()
			for i := c; ctx.Err() == nil && time.Now().Before(measureTo); i += cfg.Clients {
				t0 := time.Now()
				tokens, ttft, err := streamChat(ctx, hc, cfg.URL, cfg.Key, i, cfg.MaxTokens)
				if err != nil && ctx.Err() != nil {
					err = fmt.Errorf("%w (%v)", context.Cause(ctx), err)
				}
				record(t0, time.Since(t0), ttft, tokens, err)
				if err != nil {
					sleepCtx(ctx, 200*time.Millisecond) // a failing server is not hammered
				}
			}
		}()
	}

	// Hostile clients, stopped when the measurement ends.
	hctx, hcancel := context.WithDeadline(ctx, measureTo)
	defer hcancel()
	stats := newHostileStats(cfg.Kinds, cfg.Hostile)
	var hostile sync.WaitGroup
	for h := range cfg.Hostile {
		kind := cfg.Kinds[h%len(cfg.Kinds)]
		hostile.Add(1)
		go func() {
			defer hostile.Done()
			for attempt := h / len(cfg.Kinds); hctx.Err() == nil; attempt += cfg.Hostile {
				stats.add(kind, env.attack(hctx, kind, attempt))
				sleepCtx(hctx, cfg.Hostility.Pause)
			}
		}()
	}

	if sleepUntil(ctx, measureFrom) {
		res.RSSWarmKiB = sampler.sample()
	}
	if sleepUntil(ctx, measureTo) {
		res.RSSEndKiB = sampler.sample()
	}
	hcancel()
	hostile.Wait()
	// Requests still running finish, or fail after the grace period.
	overrun := time.AfterFunc(soakGrace, func() { cancel(errSoakOver) })
	good.Wait()
	overrun.Stop()

	res.Alive, res.AliveNote = alive(hc, cfg.URL, cfg.Key, cfg.PID)
	cancel(nil)
	<-samplerDone // after which res.DiedAfterSecs is the sampler's no more
	if res.DiedAfterSecs > 0 {
		res.AliveNote += fmt.Sprintf(", found %.0f s into the run (warm-up %.0f s)", res.DiedAfterSecs, cfg.Warmup.Seconds())
	}
	res.RSSPeakKiB = sampler.peakKiB()
	if res.RSSWarmKiB > 0 && res.RSSEndKiB > 0 {
		res.RSSGrowth = round(float64(res.RSSEndKiB)/float64(res.RSSWarmKiB)-1, 4)
	}
	res.HostileKinds = stats.list()
	if measured := time.Since(measureFrom).Seconds(); measured > 0 {
		res.TokensPerSec = round(float64(res.Tokens)/measured, 1)
	}
	slices.Sort(lat)
	slices.Sort(ttfts)
	res.P50Millis, res.P99Millis = round(percentile(lat, 50), 1), round(percentile(lat, 99), 1)
	res.TTFTP50Millis, res.TTFTP99Millis = round(percentile(ttfts, 50), 1), round(percentile(ttfts, 99), 1)
	if len(lat) > 0 {
		res.MaxMillis = round(float64(lat[len(lat)-1])/1e6, 1)
	}
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		res.LoadAvg = strings.Fields(string(data))[0]
	}
	return res, nil
}

// streamChat sends the i-th well-behaved request with "stream": true and
// reads its events to [DONE]: the generated tokens (from the usage event, or
// the deltas counted) and the time to the first content delta. An error
// event, a malformed event or a stream without [DONE] is an error.
func streamChat(ctx context.Context, hc *http.Client, url, key string, i, maxTokens int) (tokens int, ttft time.Duration, err error) {
	req, err := chatRequest(ctx, url, key, i, maxTokens, true)
	if err != nil {
		return 0, 0, err
	}
	t0 := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return 0, 0, fmt.Errorf("status %d: %s", resp.StatusCode, bytes.TrimSpace(data))
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	deltas, usage := 0, -1
	for sc.Scan() {
		data, ok := bytes.CutPrefix(sc.Bytes(), []byte("data: "))
		if !ok {
			continue
		}
		if string(data) == "[DONE]" {
			if usage >= 0 {
				return usage, ttft, nil
			}
			return deltas, ttft, nil
		}
		var ev struct {
			Error *struct {
				Message string `json:"message"`
			} `json:"error"`
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
			Usage *struct {
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal(data, &ev); err != nil {
			return 0, 0, fmt.Errorf("bad event %.120q: %w", data, err)
		}
		if ev.Error != nil {
			return 0, 0, fmt.Errorf("error event: %s", ev.Error.Message)
		}
		for _, c := range ev.Choices {
			if c.Delta.Content != "" {
				if deltas == 0 {
					ttft = time.Since(t0)
				}
				deltas++
			}
		}
		if ev.Usage != nil {
			usage = ev.Usage.CompletionTokens
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, fmt.Errorf("read stream: %w", err)
	}
	return 0, 0, errors.New("stream ended without [DONE]")
}

// alive reports whether the server process is still running (not a zombie)
// and answers /health with 200.
func alive(hc *http.Client, url, key string, pid int) (bool, string) {
	if pid > 0 {
		if ok, why := procAlive(pid); !ok {
			return false, why
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/health", nil)
	if err != nil {
		return false, err.Error()
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false, "/health: " + err.Error()
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Sprintf("/health: status %d", resp.StatusCode)
	}
	return true, ""
}

// procAlive reports whether process pid exists and is not a zombie, from
// /proc/PID/stat.
func procAlive(pid int) (bool, string) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false, fmt.Sprintf("process %d is gone", pid)
	}
	state, err := procState(data)
	if err != nil {
		return false, fmt.Sprintf("/proc/%d/stat: %v", pid, err)
	}
	if state == 'Z' || state == 'X' {
		return false, fmt.Sprintf("process %d has exited (state %c)", pid, state)
	}
	return true, ""
}

// procState returns the state letter of a /proc/PID/stat line: the field
// after the command name, which is in parentheses and may itself hold
// spaces and parentheses.
func procState(stat []byte) (byte, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) || stat[i+1] != ' ' {
		return 0, errors.New("no state field")
	}
	return stat[i+2], nil
}

// vmRSS returns the VmRSS of a /proc/PID/status text, in KiB.
func vmRSS(status []byte) (int64, error) {
	for _, line := range strings.Split(string(status), "\n") {
		v, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("VmRSS line %q: want \"<n> kB\"", line)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("VmRSS line %q: bad number", line)
		}
		return n, nil
	}
	return 0, errors.New("no VmRSS line")
}

// rssSampler reads a process's VmRSS every second and keeps the peak.
type rssSampler struct {
	pid  int
	mu   sync.Mutex
	peak int64
}

// sample reads VmRSS now (0 when it cannot, or without a pid).
func (s *rssSampler) sample() int64 {
	if s.pid <= 0 {
		return 0
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(s.pid) + "/status")
	if err != nil {
		return 0
	}
	kib, err := vmRSS(data)
	if err != nil {
		return 0
	}
	s.mu.Lock()
	s.peak = max(s.peak, kib)
	s.mu.Unlock()
	return kib
}

func (s *rssSampler) peakKiB() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}

// run samples every second until ctx ends, calling died once if the process
// is found gone.
func (s *rssSampler) run(ctx context.Context, died func()) {
	if s.pid <= 0 {
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		s.sample()
		if ok, _ := procAlive(s.pid); !ok {
			died()
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// sleepUntil sleeps until t; false if ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	sleepCtx(ctx, time.Until(t))
	return ctx.Err() == nil
}

// soakVerdict compares a baseline soak with a hostile one (see soakresult.Verdict).
type soakVerdict = soakresult.Verdict

// judgeSoaks holds a baseline run and a run with hostile clients against
// the soak targets.
func judgeSoaks(base, hostile soakResult, model string) soakVerdict {
	v := soakVerdict{Bench: "soak", Model: model, Failures: base.Failures + hostile.Failures,
		TargetP99Ratio: soakTargetP99Ratio, TargetRSSGrowth: soakTargetRSSGrowth,
		RSSGrowth: hostile.RSSGrowth, Alive: base.Alive && hostile.Alive, Runs: []soakResult{base, hostile}}
	ratio := 0.0
	if base.P99Millis > 0 {
		ratio = hostile.P99Millis / base.P99Millis
		v.P99Ratio = round(ratio, 2)
	}
	if hostile.Failures > 0 {
		v.Misses = append(v.Misses, fmt.Sprintf("%d of %d well-behaved requests failed beside the hostile clients (first: %s)", hostile.Failures, hostile.Requests, hostile.FirstError))
	}
	if base.Failures > 0 {
		v.Misses = append(v.Misses, fmt.Sprintf("%d of %d requests of the baseline failed (first: %s)", base.Failures, base.Requests, base.FirstError))
	}
	switch {
	case base.P99Millis <= 0 || hostile.P99Millis <= 0:
		v.Misses = append(v.Misses, "no p99 latency to compare (no successful request in a run)")
	case ratio > soakTargetP99Ratio:
		v.Misses = append(v.Misses, fmt.Sprintf("p99 latency %.0f ms beside the hostile clients is %.2fx the baseline's %.0f ms (target <= %.1fx)",
			hostile.P99Millis, v.P99Ratio, base.P99Millis, soakTargetP99Ratio))
	}
	switch {
	case hostile.RSSWarmKiB <= 0 || hostile.RSSEndKiB <= 0:
		v.Misses = append(v.Misses, "RSS not measured in the hostile run (no -pid, or the server died)")
	case hostile.RSSGrowth >= soakTargetRSSGrowth:
		v.Misses = append(v.Misses, fmt.Sprintf("RSS grew %.1f%% (%d -> %d KiB; target < %.0f%%)",
			100*hostile.RSSGrowth, hostile.RSSWarmKiB, hostile.RSSEndKiB, 100*soakTargetRSSGrowth))
	}
	for _, r := range v.Runs {
		if !r.Alive {
			v.Misses = append(v.Misses, fmt.Sprintf("server not alive at the end of the %s run: %s", r.Label, r.AliveNote))
		}
	}
	v.Pass = len(v.Misses) == 0
	return v
}

// compareSoaks prints the verdict on two soak result files as text and as
// one JSON line; it fails when a target is missed.
func compareSoaks(w io.Writer, basePath, hostilePath, model string) error {
	base, err := readResult[soakResult](basePath)
	if err != nil {
		return err
	}
	hostile, err := readResult[soakResult](hostilePath)
	if err != nil {
		return err
	}
	v := judgeSoaks(base, hostile, model)
	for _, r := range v.Runs {
		fmt.Fprintf(w, "%-8s %d streaming clients + %d hostile, %.0fs after %.0fs warm-up: %d requests, %d failures; latency p50 %.0f ms, p99 %.0f ms, max %.0f ms; TTFT p99 %.0f ms; %.1f tokens/s; RSS %s -> %s (%+.1f%%, peak %s); alive %t; load average %s\n",
			r.Label, r.Clients, r.Hostile, r.Seconds, r.WarmupSeconds, r.Requests, r.Failures, r.P50Millis, r.P99Millis, r.MaxMillis,
			r.TTFTP99Millis, r.TokensPerSec, mib(r.RSSWarmKiB), mib(r.RSSEndKiB), 100*r.RSSGrowth, mib(r.RSSPeakKiB), r.Alive, r.LoadAvg)
		for _, k := range r.HostileKinds {
			fmt.Fprintf(w, "  %-15s %s\n", k.Kind, kindSummary(k))
		}
	}
	verdict := "PASS"
	if !v.Pass {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "soak: %d failures (target 0), p99 %.2fx the baseline (target <= %.1fx), RSS growth %.1f%% (target < %.0f%%), alive %t: %s\n",
		v.Failures, v.P99Ratio, soakTargetP99Ratio, 100*v.RSSGrowth, 100*soakTargetRSSGrowth, v.Alive, verdict)
	for _, m := range v.Misses {
		fmt.Fprintln(w, "  miss:", m)
	}
	line, _ := json.Marshal(v)
	fmt.Fprintln(w, string(line))
	if !v.Pass {
		return fmt.Errorf("soak missed %d target(s)", len(v.Misses))
	}
	return nil
}

// mib formats KiB as MiB ("-" when not measured).
func mib(kib int64) string {
	if kib <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f MiB", float64(kib)/1024)
}
