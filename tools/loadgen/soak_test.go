package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeServer speaks just enough of the chat API for the soak's clients: it
// refuses bad bodies (400), bodies over 4 MiB (413) and nesting deeper than
// 100 outside strings (400), and streams events of eventBytes bytes of
// content, each written within writeTimeout (0: no limit).
type fakeServer struct {
	events       int
	eventBytes   int
	writeTimeout time.Duration
}

func (f *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/health":
		return
	case "/v1/chat/completions", "/v1/completions":
	default:
		http.NotFound(w, r)
		return
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4<<20))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
		return
	case err != nil:
		http.Error(w, "read: "+err.Error(), http.StatusBadRequest)
		return
	case nesting(data) > 100:
		http.Error(w, "too deep", http.StatusBadRequest)
		return
	}
	var req struct {
		Messages []struct {
			Role string `json:"role"`
		} `json:"messages"`
		Prompt      json.RawMessage `json:"prompt"`
		MaxTokens   *int            `json:"max_tokens"`
		N           *int            `json:"n"`
		Temperature *float64        `json:"temperature"`
		Stream      bool            `json:"stream"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&req); err != nil || dec.Decode(&struct{}{}) != io.EOF {
		http.Error(w, "bad JSON", http.StatusBadRequest)
		return
	}
	valid := (req.MaxTokens == nil || *req.MaxTokens > 0) && (req.N == nil || *req.N == 1)
	if r.URL.Path == "/v1/completions" {
		var s string
		valid = valid && json.Unmarshal(req.Prompt, &s) == nil
	} else {
		valid = valid && len(req.Messages) > 0
		for _, m := range req.Messages {
			valid = valid && slices.Contains([]string{"system", "user", "assistant", "tool"}, m.Role)
		}
	}
	if !valid {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	if !req.Stream {
		io.WriteString(w, `{"choices":[{"message":{"content":"ok"}}],"usage":{"completion_tokens":1}}`)
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	content := strings.Repeat("x", f.eventBytes)
	send := func(s string) bool {
		if f.writeTimeout > 0 {
			rc.SetWriteDeadline(time.Now().Add(f.writeTimeout))
		}
		if _, err := io.WriteString(w, "data: "+s+"\n\n"); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	for range f.events {
		if !send(`{"choices":[{"delta":{"content":"` + content + `"}}]}`) {
			return
		}
	}
	if send(`{"choices":[],"usage":{"completion_tokens":` + strconv.Itoa(f.events) + `}}`) {
		send("[DONE]")
	}
}

// nesting is the deepest nesting of [ and { outside strings.
func nesting(data []byte) int {
	depth, deepest, inString, escaped := 0, 0, false, false
	for _, c := range data {
		switch {
		case escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case inString:
		case c == '[' || c == '{':
			depth++
			deepest = max(deepest, depth)
		case c == ']' || c == '}':
			depth--
		}
	}
	return deepest
}

// startFake serves f with the given read timeouts (0: none).
func startFake(t *testing.T, f *fakeServer, readHeader, read time.Duration) string {
	ts := httptest.NewUnstartedServer(f)
	ts.Config.ReadHeaderTimeout, ts.Config.ReadTimeout = readHeader, read
	ts.Start()
	t.Cleanup(ts.Close)
	return ts.URL
}

var testHostility = hostileConfig{
	Hold:           3 * time.Second,
	Pause:          50 * time.Millisecond,
	SlowInterval:   100 * time.Millisecond,
	SlowConns:      2,
	StallRequests:  4,
	StallMaxTokens: 16,
	BigBody:        8 << 20,
	AnswerTimeout:  10 * time.Second,
}

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var out []time.Duration
		for _, x := range v {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	for _, c := range []struct {
		lat  []time.Duration
		p    float64
		want float64
	}{
		{nil, 99, 0},
		{ms(7), 50, 7},
		{ms(7), 99, 7},
		{ms(1, 2, 3, 4), 50, 2},
		{ms(1, 2, 3, 4), 99, 4},
		{ms(hundred...), 99, 99},
		{ms(hundred...), 100, 100},
		{ms(hundred...), 1, 1},
	} {
		if got := percentile(c.lat, c.p); got != c.want {
			t.Errorf("percentile(%v, %v) = %v, want %v", c.lat, c.p, got, c.want)
		}
	}
}

func TestVmRSS(t *testing.T) {
	self, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	if kib, err := vmRSS(self); err != nil || kib <= 0 {
		t.Fatalf("vmRSS(/proc/self/status) = %d, %v", kib, err)
	}
	kib, err := vmRSS([]byte("Name:\tchatglm\nVmHWM:\t  99 kB\nVmRSS:\t  123456 kB\nRssAnon:\t 5 kB\n"))
	if err != nil || kib != 123456 {
		t.Fatalf("vmRSS = %d, %v; want 123456", kib, err)
	}
	for _, bad := range []string{"", "Name:\tx\n", "VmRSS:\t12 MB\n", "VmRSS:\t-5 kB\n", "VmRSS:\tlots kB\n", "VmRSS:\n"} {
		if kib, err := vmRSS([]byte(bad)); err == nil {
			t.Errorf("vmRSS(%q) = %d, want an error", bad, kib)
		}
	}
}

func TestProcState(t *testing.T) {
	for stat, want := range map[string]byte{
		"123 (chatglm) S 1 2 3":         'S',
		"7 (a) b) (c) R 1":              'R',
		"9 (with space) Z 0 0":          'Z',
		"1 ()) D 0":                     'D',
		"42 (chatglm\n) S 1":            'S',
		"42 (x) t 1 2 3 4 5 6 7 8 9 10": 't',
	} {
		got, err := procState([]byte(stat))
		if err != nil || got != want {
			t.Errorf("procState(%q) = %c, %v; want %c", stat, got, err, want)
		}
	}
	for _, bad := range []string{"", "123", "123 (x)", "123 (x)S", "("} {
		if got, err := procState([]byte(bad)); err == nil {
			t.Errorf("procState(%q) = %c, want an error", bad, got)
		}
	}
}

// TestProcAlive: a running process is alive; one that exited is not, both
// while it is a zombie (its parent has not waited) and once reaped.
func TestProcAlive(t *testing.T) {
	if ok, why := procAlive(os.Getpid()); !ok {
		t.Fatalf("this process is not alive: %s", why)
	}
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	zombie := false
	for range 500 {
		if ok, why := procAlive(pid); !ok {
			zombie = strings.Contains(why, "state Z")
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !zombie {
		t.Errorf("exited, unwaited process %d is not reported as a zombie", pid)
	}
	cmd.Wait()
	if ok, _ := procAlive(pid); ok {
		t.Errorf("reaped process %d reported alive", pid)
	}
}

// TestHostileKinds runs each hostile kind against a server with read and
// write timeouts and checks what the client says the server did.
func TestHostileKinds(t *testing.T) {
	url := startFake(t, &fakeServer{events: 16, eventBytes: 16 << 10, writeTimeout: time.Second}, time.Second, 2*time.Second)
	env, err := newHostileEnv(url, "", testHostility)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		kind     string
		attempts int
		want     func(attempt int) []string // acceptable outcomes
		held     bool                       // the server ends the connection
	}{
		{"malformed-json", len(malformedBodies), func(int) []string { return []string{"status 400"} }, false},
		{"nested-json", len(nestedBodies()), func(a int) []string {
			if a == len(nestedBodies())-1 { // nesting inside a string: valid JSON
				return []string{"status 200"}
			}
			return []string{"status 400"}
		}, false},
		// Depending on when the server's close overtakes the answer.
		{"oversized-body", 2, func(int) []string { return []string{"status 413", "reset by server"} }, false},
		// The server ends a slow connection; its close may overtake the answer.
		{"slow-body", 1, func(int) []string { return []string{"status 400", "closed by server", "reset by server"} }, true},
		{"slow-headers", 1, func(int) []string { return []string{"closed by server", "status 408", "reset by server"} }, true},
		{"stop-reading", 1, func(int) []string { return []string{"closed by server before its streams finished"} }, false},
		{"disconnect", 3, func(int) []string { return []string{"hung up mid-stream"} }, false},
	} {
		t.Run(c.kind, func(t *testing.T) {
			t.Parallel()
			for a := range c.attempts {
				outs := env.attack(context.Background(), c.kind, a)
				if len(outs) == 0 {
					t.Fatalf("attempt %d: no outcome", a)
				}
				for _, o := range outs {
					if !slices.Contains(c.want(a), o.what) {
						t.Errorf("attempt %d: outcome %q, want one of %q", a, o.what, c.want(a))
					}
					if c.held && o.held <= 0 {
						t.Errorf("attempt %d: the server ended a slow connection, but no hold time was recorded", a)
					}
				}
			}
		})
	}
}

// TestHostileWithoutTimeouts: a server with no read timeouts and no write
// deadline keeps slow senders to the hold limit, and a non-reading client's
// streams complete once it reads again.
func TestHostileWithoutTimeouts(t *testing.T) {
	url := startFake(t, &fakeServer{events: 16, eventBytes: 16 << 10}, 0, 0)
	cfg := testHostility
	cfg.Hold = time.Second
	env, err := newHostileEnv(url, "", cfg)
	if err != nil {
		t.Fatal(err)
	}
	for kind, want := range map[string]string{
		"slow-body":    "still open at the hold limit",
		"slow-headers": "still open at the hold limit",
		"stop-reading": "every stream finished (the kernel buffered them)",
	} {
		for _, o := range env.attack(context.Background(), kind, 0) {
			if o.what != want || o.held != 0 {
				t.Errorf("%s: outcome %q (held %v), want %q", kind, o.what, o.held, want)
			}
		}
	}
	// The soak's end closes a slow connection at once.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	for _, o := range env.attack(ctx, "slow-body", 0) {
		if o.what != "open when the soak ended" {
			t.Errorf("slow-body cancelled: outcome %q", o.what)
		}
	}
}

func TestNewHostileEnv(t *testing.T) {
	for _, bad := range []string{"https://127.0.0.1:1", "127.0.0.1:8080", "http://", "http://%zz"} {
		if _, err := newHostileEnv(bad, "", testHostility); err == nil {
			t.Errorf("newHostileEnv(%q) accepted", bad)
		}
	}
	e, err := newHostileEnv("http://localhost", "k", testHostility)
	if err != nil || e.addr != "localhost:80" || e.host != "localhost" {
		t.Fatalf("newHostileEnv = %+v, %v", e, err)
	}
	if h := string(e.header("/x", -1)); !strings.Contains(h, "Transfer-Encoding: chunked\r\n") || !strings.Contains(h, "Authorization: Bearer k\r\n") || !strings.HasSuffix(h, "\r\n\r\n") {
		t.Errorf("header = %q", h)
	}
	if _, err := parseKinds("slow-body, nope"); err == nil {
		t.Error("parseKinds accepted an unknown kind")
	}
	if k, err := parseKinds("slow-body, disconnect,"); err != nil || !slices.Equal(k, []string{"slow-body", "disconnect"}) {
		t.Errorf("parseKinds = %q, %v", k, err)
	}
}

// TestSoak runs a short soak, every hostile kind included, against the fake
// server, with this test's own process standing in for the server's RSS.
func TestSoak(t *testing.T) {
	url := startFake(t, &fakeServer{events: 8, eventBytes: 16}, time.Second, 2*time.Second)
	res, err := soak(context.Background(), soakConfig{
		URL: url, Clients: 3, MaxTokens: 8, Warmup: 300 * time.Millisecond, Duration: 2 * time.Second,
		PID: os.Getpid(), Hostile: len(hostileKinds), Hostility: testHostility,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests == 0 || res.Failures != 0 || res.Tokens != 8*res.Requests {
		t.Errorf("%d requests, %d failures (first: %s), %d tokens; want some, none, 8 each", res.Requests, res.Failures, res.FirstError, res.Tokens)
	}
	if res.P50Millis <= 0 || res.P99Millis < res.P50Millis || res.MaxMillis < res.P99Millis || res.TTFTP99Millis <= 0 {
		t.Errorf("latency p50 %v p99 %v max %v, TTFT p99 %v", res.P50Millis, res.P99Millis, res.MaxMillis, res.TTFTP99Millis)
	}
	if res.RSSWarmKiB <= 0 || res.RSSEndKiB <= 0 || res.RSSPeakKiB < res.RSSWarmKiB || !res.Alive {
		t.Errorf("RSS %d -> %d (peak %d) KiB, alive %t (%s)", res.RSSWarmKiB, res.RSSEndKiB, res.RSSPeakKiB, res.Alive, res.AliveNote)
	}
	if len(res.HostileKinds) != len(hostileKinds) {
		t.Fatalf("stats for %d hostile kinds, want %d", len(res.HostileKinds), len(hostileKinds))
	}
	for i, k := range res.HostileKinds {
		if k.Kind != hostileKinds[i].name || k.Clients != 1 || k.Connections == 0 {
			t.Errorf("hostile stats %+v", k)
		}
	}
	for _, o := range []string{"status 400", "hung up mid-stream"} {
		if !slices.ContainsFunc(res.HostileKinds, func(k kindStats) bool { return k.Outcomes[o] > 0 }) {
			t.Errorf("no hostile outcome %q in %+v", o, res.HostileKinds)
		}
	}
}

// TestSoakServerDies: a server that dies mid-run ends the run early, its
// requests count as failures and the result says it is not alive.
func TestSoakServerDies(t *testing.T) {
	url := startFake(t, &fakeServer{events: 4, eventBytes: 16}, time.Second, 2*time.Second)
	cmd := exec.Command("sleep", "1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	start := time.Now()
	res, err := soak(context.Background(), soakConfig{URL: url, Clients: 2, MaxTokens: 4, Duration: time.Minute, PID: cmd.Process.Pid, Hostility: testHostility})
	if err != nil {
		t.Fatal(err)
	}
	if res.Alive || res.DiedAfterSecs <= 0 || !strings.Contains(res.AliveNote, "exited") {
		t.Errorf("alive %t (%s), died after %v s", res.Alive, res.AliveNote, res.DiedAfterSecs)
	}
	if time.Since(start) > 50*time.Second {
		t.Errorf("the run did not end when the server died")
	}
}

func TestJudgeSoaks(t *testing.T) {
	base := soakResult{Label: "baseline", Requests: 100, P99Millis: 400, RSSWarmKiB: 1000, RSSEndKiB: 1000, Alive: true}
	hostile := soakResult{Label: "hostile", Requests: 90, Hostile: 7, P99Millis: 560, RSSWarmKiB: 1000, RSSEndKiB: 1090, RSSGrowth: 0.09, Alive: true}
	if v := judgeSoaks(base, hostile, "m"); !v.Pass || v.P99Ratio != 1.4 || len(v.Misses) != 0 {
		t.Fatalf("passing runs judged %+v", v)
	}
	for name, c := range map[string]struct {
		edit func(b, h *soakResult)
		miss string
	}{
		"failure":     {func(b, h *soakResult) { h.Failures, h.FirstError = 1, "status 500" }, "status 500"},
		"base fails":  {func(b, h *soakResult) { b.Failures = 2 }, "baseline failed"},
		"p99":         {func(b, h *soakResult) { h.P99Millis = 601 }, "1.50x"},
		"no p99":      {func(b, h *soakResult) { b.P99Millis = 0 }, "no p99"},
		"rss":         {func(b, h *soakResult) { h.RSSEndKiB, h.RSSGrowth = 1100, 0.1 }, "RSS grew 10.0%"},
		"rss missing": {func(b, h *soakResult) { h.RSSWarmKiB = 0 }, "RSS not measured"},
		"dead":        {func(b, h *soakResult) { h.Alive, h.AliveNote = false, "process 7 has exited (state Z)" }, "state Z"},
	} {
		b, h := base, hostile
		c.edit(&b, &h)
		v := judgeSoaks(b, h, "m")
		if v.Pass || !strings.Contains(strings.Join(v.Misses, "\n"), c.miss) {
			t.Errorf("%s: pass %t, misses %q; want a miss mentioning %q", name, v.Pass, v.Misses, c.miss)
		}
	}
}

func TestCompareSoaks(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, r soakResult) string {
		p := filepath.Join(dir, name)
		line, _ := json.Marshal(r)
		if err := os.WriteFile(p, append(line, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	base := write("base.json", soakResult{Label: "baseline", Requests: 10, P99Millis: 100, Alive: true})
	hostile := write("hostile.json", soakResult{Label: "hostile", Requests: 10, P99Millis: 120, RSSWarmKiB: 2048, RSSEndKiB: 2048, Alive: true,
		HostileKinds: []kindStats{{Kind: "slow-body", Clients: 1, Connections: 3, Outcomes: map[string]int{"status 408": 2, "closed by server": 1}, MaxHeldSeconds: 10}}})
	var out bytes.Buffer
	if err := compareSoaks(&out, base, hostile, "tiny"); err != nil {
		t.Fatalf("compareSoaks: %v\n%s", err, out.String())
	}
	text := out.String()
	for _, want := range []string{"PASS", "p99 1.20x", "status 408 x2, closed by server x1", "after 10.0 s at most", "2.0 MiB -> 2.0 MiB"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	var v soakVerdict
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &v); err != nil || v.Bench != "soak" || !v.Pass || len(v.Runs) != 2 {
		t.Errorf("last line %q: %+v, %v", lines[len(lines)-1], v, err)
	}
	if err := compareSoaks(io.Discard, base, filepath.Join(dir, "missing.json"), ""); err == nil {
		t.Error("compareSoaks accepted a missing file")
	}
	bad := write("bad.json", soakResult{Label: "hostile", Requests: 10, Failures: 3, P99Millis: 120, Alive: true})
	out.Reset()
	if err := compareSoaks(&out, base, bad, ""); err == nil || !strings.Contains(out.String(), "FAIL") {
		t.Errorf("failures passed: %v\n%s", err, out.String())
	}
}

func FuzzVmRSS(f *testing.F) {
	f.Add([]byte("VmRSS:\t  123456 kB\n"))
	f.Add([]byte("Name:\tx\nVmRSS:\t1 kB"))
	f.Fuzz(func(t *testing.T, status []byte) {
		if kib, err := vmRSS(status); err == nil && kib < 0 {
			t.Fatalf("negative RSS %d", kib)
		}
	})
}

func FuzzProcState(f *testing.F) {
	f.Add([]byte("123 (chatglm) S 1 2 3"))
	f.Add([]byte("7 (a) b) R"))
	f.Fuzz(func(t *testing.T, stat []byte) {
		if s, err := procState(stat); err == nil && !bytes.Contains(stat, []byte{')', ' ', s}) {
			t.Fatalf("state %q not after a ') '", s)
		}
	})
}

// TestRunSoakRefuses: settings that cannot run (a zero slow interval
// panicked in time.NewTicker) are refused before anything starts.
func TestRunSoakRefuses(t *testing.T) {
	ok := soakConfig{URL: "http://127.0.0.1:1", Clients: 1, Duration: time.Second, Hostility: testHostility}
	for name, edit := range map[string]func(c *soakConfig){
		"no clients":       func(c *soakConfig) { c.Clients = 0 },
		"negative hostile": func(c *soakConfig) { c.Hostile = -1 },
		"negative warm-up": func(c *soakConfig) { c.Warmup = -time.Second },
		"zero interval":    func(c *soakConfig) { c.Hostility.SlowInterval = 0 },
		"zero hold":        func(c *soakConfig) { c.Hostility.Hold = 0 },
		"negative pause":   func(c *soakConfig) { c.Hostility.Pause = -1 },
	} {
		c := ok
		edit(&c)
		if err := runSoak(c, ""); err == nil {
			t.Errorf("%s: runSoak accepted %+v", name, c)
		}
	}
}
