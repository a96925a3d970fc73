// Command loadgen is the load generator behind scripts/bench-server.sh (it is
// a benchmark tool, not a test). It has three modes:
//
//	loadgen -make-model out.gguf [-hidden 64 -layers 2]
//	    writes a random ChatGLM3 checkpoint with the real tokenizer
//	    (internal/fixture/testmodel) and converts it to GGUF, for a benchmark that
//	    needs no downloaded weights.
//	loadgen -url http://127.0.0.1:8080 -clients 8 -requests 200 -label p4
//	    sends chat completions from concurrent clients and prints one JSON
//	    line: requests, failures, generated tokens, aggregate tokens/s and
//	    p50/p99 latency.
//	loadgen -compare base.json batched.json -model NAME
//	    reads two such lines (parallel 1, then parallel N) and prints the
//	    comparison as text and as one JSON line.
//	loadgen -soak 5m -url URL -pid PID -clients 8 [-hostile 7] -label L
//	    runs well-behaved streaming clients, and hostile ones with -hostile
//	    (soak.go, hostile.go), against a running server for a fixed time
//	    after a warm-up, samples the server's RSS from /proc/PID/status, and
//	    prints one JSON line (scripts/bench-soak.sh).
//	loadgen -soak-compare baseline.json hostile.json -model NAME
//	    reads a soak run without and one with hostile clients and prints the
//	    verdict against the soak targets as text and as one JSON line.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatglm/chatglm/convert"
	"github.com/chatglm/chatglm/internal/fixture/shareddata"
	"github.com/chatglm/chatglm/internal/fixture/testmodel"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func run() error {
	makeModel := flag.String("make-model", "", "write a random ChatGLM3 GGUF here and exit")
	hidden := flag.Int("hidden", 64, "hidden size of -make-model's model")
	layers := flag.Int("layers", 2, "layers of -make-model's model")
	url := flag.String("url", "http://127.0.0.1:8080", "server base URL")
	key := flag.String("key", "", "API key")
	clients := flag.Int("clients", 8, "concurrent clients")
	requests := flag.Int("requests", 200, "requests in all")
	warmup := flag.Int("warmup", 0, "requests sent (one per client) before measuring (default: clients)")
	maxTokens := flag.Int("max-tokens", 32, "max_tokens of each request")
	label := flag.String("label", "", "label of the result line")
	compare := flag.Bool("compare", false, "compare two result files (base, then batched)")
	modelName := flag.String("model", "", "model description for the output of -compare and -soak-compare")
	strict := flag.Bool("strict", false, "with -compare, also fail when the ratio is below 2x (failed requests always fail)")
	soak := soakFlags()
	flag.Parse()
	switch {
	case *makeModel != "":
		return writeModel(*makeModel, *hidden, *layers)
	case soak.compare:
		if flag.NArg() != 2 {
			return errors.New("-soak-compare wants two result files: the baseline run, then the run with hostile clients")
		}
		return compareSoaks(os.Stdout, flag.Arg(0), flag.Arg(1), *modelName)
	case soak.cfg.Duration > 0:
		soak.cfg.URL, soak.cfg.Key, soak.cfg.Clients, soak.cfg.MaxTokens = *url, *key, *clients, *maxTokens
		return runSoak(soak.cfg, *label)
	case *compare:
		if flag.NArg() != 2 {
			return errors.New("-compare wants two result files: the parallel-1 run, then the parallel-N run")
		}
		return compareRuns(flag.Arg(0), flag.Arg(1), *modelName, *strict)
	}
	if *clients < 1 || *requests < 1 {
		return errors.New("-clients and -requests must be at least 1")
	}
	if *warmup == 0 {
		*warmup = *clients
	}
	res, err := load(*url, *key, *clients, *requests, *warmup, *maxTokens)
	if err != nil {
		return err
	}
	res.Label = *label
	line, _ := json.Marshal(res)
	fmt.Println(string(line))
	return nil
}

// writeModel makes a random checkpoint (real tokenizer from the shared test
// data) and converts it to f16 GGUF at out.
func writeModel(out string, hidden, layers int) error {
	tok := filepath.Join(shareddata.Dir(), "chatglm3-6b")
	if _, err := os.Stat(filepath.Join(tok, "tokenizer.model")); err != nil {
		return fmt.Errorf("tokenizer files: %w (set %s or run `make testdata`)", err, shareddata.Env)
	}
	dir, err := os.MkdirTemp("", "loadgen-model-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	spec := testmodel.Tiny
	spec.Hidden, spec.Layers, spec.Heads, spec.FFN = hidden, layers, max(4, hidden/64*2), hidden*3/2
	spec.SeqLength = 2048
	if err := testmodel.WriteDir(dir, spec, tok); err != nil {
		return fmt.Errorf("write checkpoint: %w", err)
	}
	if _, err := convert.Convert(context.Background(), convert.Options{Input: dir, Output: out, Type: "f16"}); err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	return nil
}

// result is one load run.
type result struct {
	Label           string  `json:"label,omitempty"`
	Clients         int     `json:"clients"`
	Requests        int     `json:"requests"`
	Failures        int     `json:"failures"`
	FirstError      string  `json:"first_error,omitempty"`
	GeneratedTokens int     `json:"generated_tokens"`
	PromptTokens    int     `json:"prompt_tokens"`
	WallSeconds     float64 `json:"wall_s"`
	TokensPerSecond float64 `json:"tokens_per_s"`
	P50Millis       float64 `json:"p50_ms"`
	P99Millis       float64 `json:"p99_ms"`
	MaxMillis       float64 `json:"max_ms"`
	// DecodeSteps is how many batched decode steps the engine ran during
	// the measurement (from /metrics); TokensPerStep is generated tokens
	// per step, the mean number of sequences batched into a step.
	DecodeSteps   int64   `json:"decode_steps"`
	TokensPerStep float64 `json:"tokens_per_step"`
	// LoadAvg is the machine's 1-minute load average at the end (other
	// work on a shared machine skews the figures).
	LoadAvg string `json:"loadavg_1m,omitempty"`
}

// prompts vary the requests a little, as different users would.
var prompts = []string{
	"你好", "Tell me a story about a robot.", "晚上睡不着应该怎么办", "What is the capital of France?",
	"Write a haiku about autumn.", "解释一下量子计算", "List three prime numbers.", "How do I make tea?",
}

// chatBody is the body of the i-th well-behaved chat completion request.
func chatBody(i, maxTokens int, stream bool) []byte {
	req := map[string]any{
		"messages":   []map[string]string{{"role": "user", "content": prompts[i%len(prompts)]}},
		"max_tokens": maxTokens,
	}
	if stream {
		req["stream"] = true
		req["stream_options"] = map[string]bool{"include_usage": true}
	}
	body, _ := json.Marshal(req)
	return body
}

// chatRequest is the i-th well-behaved chat completion request to url.
func chatRequest(ctx context.Context, url, key string, i, maxTokens int, stream bool) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions", bytes.NewReader(chatBody(i, maxTokens, stream)))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	return req, nil
}

// load sends requests chat completions from clients goroutines.
func load(url, key string, clients, requests, warmup, maxTokens int) (result, error) {
	hc := &http.Client{Timeout: 10 * time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	send := func(i int) (prompt, completion int, err error) {
		req, err := chatRequest(context.Background(), url, key, i, maxTokens, false)
		if err != nil {
			return 0, 0, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, 0, err
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		if err != nil {
			return 0, 0, err
		}
		if resp.StatusCode != http.StatusOK {
			return 0, 0, fmt.Errorf("status %d: %s", resp.StatusCode, bytes.TrimSpace(data))
		}
		var r struct {
			Choices []struct {
				FinishReason string `json:"finish_reason"`
			} `json:"choices"`
			Usage struct {
				PromptTokens     int `json:"prompt_tokens"`
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal(data, &r); err != nil || len(r.Choices) != 1 {
			return 0, 0, fmt.Errorf("bad reply: %.200s", data)
		}
		return r.Usage.PromptTokens, r.Usage.CompletionTokens, nil
	}

	// Warm up: one request per client, not measured.
	var wg sync.WaitGroup
	for i := 0; i < warmup; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); send(i) }()
	}
	wg.Wait()

	res := result{Clients: clients, Requests: requests}
	steps0 := metric(hc, url, key, "chatglm_decode_steps_total")
	var next atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	start := time.Now()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= requests {
					return
				}
				t0 := time.Now()
				p, n, err := send(i)
				d := time.Since(t0)
				mu.Lock()
				if err != nil {
					res.Failures++
					if res.FirstError == "" {
						res.FirstError = err.Error()
					}
				} else {
					res.PromptTokens += p
					res.GeneratedTokens += n
					lat = append(lat, d)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	if steps0 >= 0 {
		res.DecodeSteps = metric(hc, url, key, "chatglm_decode_steps_total") - steps0
		if res.DecodeSteps > 0 {
			res.TokensPerStep = round(float64(res.GeneratedTokens)/float64(res.DecodeSteps), 2)
		}
	}
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		res.LoadAvg = strings.Fields(string(data))[0]
	}
	res.WallSeconds = round(wall.Seconds(), 3)
	res.TokensPerSecond = round(float64(res.GeneratedTokens)/wall.Seconds(), 1)
	slices.Sort(lat)
	res.P50Millis = round(percentile(lat, 50), 1)
	res.P99Millis = round(percentile(lat, 99), 1)
	if len(lat) > 0 {
		res.MaxMillis = round(float64(lat[len(lat)-1])/1e6, 1)
	}
	return res, nil
}

// metric reads one integer counter from the server's /metrics (-1 when it
// cannot).
func metric(hc *http.Client, url, key, name string) int64 {
	req, err := http.NewRequest(http.MethodGet, url+"/metrics", nil)
	if err != nil {
		return -1
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return -1
}

// percentile is the nearest-rank percentile of sorted durations, in ms.
func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return float64(sorted[max(0, min(rank, len(sorted)-1))]) / 1e6
}

func round(v float64, digits int) float64 {
	f := math.Pow(10, float64(digits))
	return math.Round(v*f) / f
}

// readResult reads a result line (of type result or soakResult) from path.
func readResult[T any](path string) (T, error) {
	var r T
	data, err := os.ReadFile(path)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(bytes.TrimSpace(data), &r); err != nil {
		return r, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// compareRuns prints the parallel-N vs parallel-1 comparison.
func compareRuns(basePath, batchedPath, model string, strict bool) error {
	base, err := readResult[result](basePath)
	if err != nil {
		return err
	}
	batched, err := readResult[result](batchedPath)
	if err != nil {
		return err
	}
	ratio := 0.0
	if base.TokensPerSecond > 0 {
		ratio = round(batched.TokensPerSecond/base.TokensPerSecond, 2)
	}
	for _, r := range []result{batched, base} {
		fmt.Printf("%-12s %3d requests, %d clients: %d failures, %d tokens in %.1fs = %.1f tokens/s (%.2f tokens per decode step); latency p50 %.0f ms, p99 %.0f ms; load average %s\n",
			r.Label, r.Requests, r.Clients, r.Failures, r.GeneratedTokens, r.WallSeconds, r.TokensPerSecond, r.TokensPerStep, r.P50Millis, r.P99Millis, r.LoadAvg)
	}
	failures := base.Failures + batched.Failures
	verdict := "PASS"
	if ratio < 2 || failures > 0 {
		verdict = "FAIL"
	}
	fmt.Printf("%s vs %s: %.2fx aggregate tokens/s (target >= 2x), %d failures: %s\n",
		batched.Label, base.Label, ratio, failures, verdict)
	line, _ := json.Marshal(map[string]any{
		"bench": "server", "model": model, "ratio": ratio, "target_ratio": 2, "pass": verdict == "PASS",
		"failures": failures,
		"runs":     []result{batched, base},
	})
	fmt.Println(string(line))
	switch {
	case failures > 0:
		return fmt.Errorf("%d requests failed", failures)
	case ratio < 2 && strict:
		return fmt.Errorf("the ratio %.2fx is below the 2x target", ratio)
	}
	return nil
}
