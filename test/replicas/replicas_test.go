// Package replicas tests chatglm past one machine: three `chatglm serve`
// replicas of a tiny random ChatGLM3 model behind a real HAProxy (Debian's
// haproxy; .ci/run installs it) that health-checks /health/ready and routes
// by the X-Session-Id header with consistent hashing, as docs/scaling.md and
// deploy/ describe. Everything listens on 127.0.0.1 only. Without haproxy
// the tests skip, except in CI (CI=true), where that is a failure.
package replicas

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chatglm/chatglm/internal/fixture/testbin"
	"github.com/chatglm/chatglm/internal/fixture/testmodel"
	"github.com/chatglm/chatglm/server"
)

func TestMain(m *testing.M) { testmodel.Main(m) }

// SessionHeader is the header a client sends to keep a conversation on one
// replica (docs/scaling.md).
const SessionHeader = server.SessionHeader

// Health-check timing of the HAProxy config: a replica is out after fall
// failed checks inter apart.
const (
	checkInter = 200 * time.Millisecond
	checkFall  = 2
	drain      = 3 * time.Second
)

func haproxyPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("haproxy")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("haproxy is not installed (CI=true: .ci/run must install it)")
		}
		t.Skip("haproxy is not installed (apt-get install haproxy; .ci/run installs it)")
	}
	return p
}

// tinyModel is a tiny random ChatGLM3 with the real tokenizer and room for a
// ten-turn conversation.
func tinyModel(t *testing.T) string {
	spec := testmodel.Tiny
	spec.SeqLength = 2048
	return testmodel.GGUF(t, spec, "f16")
}

// proc is a running child process with its output collected.
type proc struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
	err  error // valid once done is closed
}

func (p *proc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// start runs name with args; onLine sees each output line. The process is
// killed when the test ends.
func start(t *testing.T, name string, onLine func(string), bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(bin, args...), done: make(chan struct{})}
	r, w := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			if onLine != nil {
				onLine(sc.Text())
			}
		}
	}()
	go func() {
		p.err = p.cmd.Wait()
		w.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.log())
		}
	})
	return p
}

// wait waits at most d for the process to exit and returns its error.
func (p *proc) wait(d time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		return fmt.Errorf("%s still running after %v", p.name, d)
	}
}

// replica is one `chatglm serve`.
type replica struct {
	*proc
	addr string // 127.0.0.1:port
}

func (r *replica) url() string { return "http://" + r.addr }

func startReplica(t *testing.T, name, model string) *replica {
	t.Helper()
	addr := make(chan string, 1)
	p := start(t, name, func(line string) {
		if _, rest, ok := strings.Cut(line, "chatglm: listening on http://"); ok {
			addr <- strings.Fields(rest)[0]
		}
	}, testbin.Path(t), "serve", "-m", model, "--host", "127.0.0.1", "--port", "0", "--parallel", "2",
		"--threads", "1", "--ctx-size", "2048", "--drain", drain.String(), "--shutdown-timeout", "30s",
		"--temperature", "0", "--log-level", "info")
	select {
	case a := <-addr:
		return &replica{proc: p, addr: a}
	case <-p.done:
		t.Fatalf("%s exited: %v\n%s", name, p.err, p.log())
	case <-time.After(2 * time.Minute):
		t.Fatalf("%s printed no address:\n%s", name, p.log())
	}
	return nil
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// cluster is three replicas behind HAProxy.
type cluster struct {
	replicas []*replica
	front    string // the balancer's URL
	stats    string // its CSV stats URL
	haproxy  *proc
}

// haproxyConfig is the balancer config the tests and docs/scaling.md use:
// consistent hashing on the session header (round robin for requests
// without it), health checks on /health/ready, requests whose replica
// refused the connection or closed it before answering retried on another
// one (a generation has no side effects; a stream that has begun is never
// retried), and the replica's name in X-Served-By.
func haproxyConfig(front, stats int, servers []*replica) string {
	var b strings.Builder
	fmt.Fprintf(&b, `global
    maxconn 512
defaults
    mode http
    timeout connect 1s
    timeout client 2m
    timeout server 2m
    retries 3
    retry-on conn-failure empty-response
    option redispatch
frontend chat
    bind 127.0.0.1:%d
    default_backend chatglm
backend chatglm
    balance hdr(%s)
    hash-type consistent
    option httpchk GET /health/ready
    http-check expect status 200
    default-server inter %dms fall %d rise 1
    http-after-response set-header X-Served-By %%s
`, front, SessionHeader, checkInter.Milliseconds(), checkFall)
	for _, r := range servers {
		fmt.Fprintf(&b, "    server %s %s check\n", r.name, r.addr)
	}
	fmt.Fprintf(&b, `listen stats
    bind 127.0.0.1:%d
    stats enable
    stats uri /stats
`, stats)
	return b.String()
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	hp := haproxyPath(t)
	model := tinyModel(t)
	c := &cluster{}
	for i := range 3 {
		c.replicas = append(c.replicas, startReplica(t, fmt.Sprintf("r%d", i), model))
	}
	// HAProxy counts a server up until its checks fail, so it starts once
	// every model is loaded (Kubernetes adds a pod to a Service only when
	// its readiness probe passes).
	for _, r := range c.replicas {
		waitReady(t, r)
	}
	front, stats := freePort(t), freePort(t)
	cfg := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(haproxyConfig(front, stats, c.replicas)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(hp, "-c", "-f", cfg).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	c.haproxy = start(t, "haproxy", nil, hp, "-db", "-f", cfg)
	c.front = fmt.Sprintf("http://127.0.0.1:%d", front)
	c.stats = fmt.Sprintf("http://127.0.0.1:%d/stats;csv", stats)
	// Ready when the balancer sees every replica up.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st, err := c.serverStatus()
		up := 0
		for _, s := range st {
			if s == "UP" {
				up++
			}
		}
		if err == nil && up == 3 {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas not all UP in HAProxy after 2m: %v %v", st, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func waitReady(t *testing.T, r *replica) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := http.Get(r.url() + "/health/ready")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after 2m: %v", r.name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// serverStatus returns HAProxy's view of each replica: "UP", "DOWN", ...
func (c *cluster) serverStatus() (map[string]string, error) {
	rows, err := c.serverStats()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for name, row := range rows {
		out[name] = strings.Fields(row["status"] + " ")[0]
	}
	return out, nil
}

// waitDown waits until HAProxy marks the replica down, at most until
// since+limit, and returns how long after since that was (0: not in time).
func (c *cluster) waitDown(name string, since time.Time, limit time.Duration) time.Duration {
	for time.Since(since) < limit {
		if st, err := c.serverStatus(); err == nil && strings.HasPrefix(st[name], "DOWN") {
			return time.Since(since)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return 0
}

// serverStats returns HAProxy's CSV statistics of each replica, by column
// name (status, wretr: retried connections, wredis: redispatches, ...).
func (c *cluster) serverStats() (map[string]map[string]string, error) {
	resp, err := http.Get(c.stats)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	rows, err := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(body, []byte("# ")))).ReadAll()
	if err != nil || len(rows) < 1 {
		return nil, fmt.Errorf("stats CSV: %v", err)
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	out := map[string]map[string]string{}
	for _, row := range rows[1:] {
		if len(row) == len(rows[0]) && row[col["pxname"]] == "chatglm" && row[col["svname"]] != "BACKEND" {
			m := map[string]string{}
			for name, i := range col {
				m[name] = row[i]
			}
			out[row[col["svname"]]] = m
		}
	}
	return out, nil
}

type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// answer is what a chat completion through the balancer returned.
type answer struct {
	servedBy string
	headers  time.Time // when the 200 response headers arrived
	reply    string
	prompt   int // usage.prompt_tokens
	cached   int // usage.prompt_tokens_details.cached_tokens
}

// chat sends one non-streamed chat completion to url.
func chat(client *http.Client, url, session string, msgs []message, maxTokens int) (answer, error) {
	return complete(client, url, session, msgs, maxTokens, false)
}

// complete sends one chat completion to url, streamed or not; a stream
// must end with [DONE].
func complete(client *http.Client, url, session string, msgs []message, maxTokens int, stream bool) (answer, error) {
	body, _ := json.Marshal(map[string]any{"messages": msgs, "max_tokens": maxTokens, "temperature": 0, "stream": stream})
	req, err := http.NewRequest(http.MethodPost, url+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	if session != "" {
		req.Header.Set(SessionHeader, session)
	}
	resp, err := client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	a := answer{servedBy: resp.Header.Get("X-Served-By")}
	if resp.StatusCode == http.StatusOK {
		a.headers = time.Now()
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return a, fmt.Errorf("reading the answer from %s: %w", a.servedBy, err)
	}
	if resp.StatusCode != http.StatusOK {
		return a, fmt.Errorf("status %d from %q: %.200s", resp.StatusCode, a.servedBy, data)
	}
	if stream {
		if !bytes.HasSuffix(bytes.TrimSpace(data), []byte("data: [DONE]")) {
			return a, fmt.Errorf("stream from %s ended without [DONE]: %.200s", a.servedBy, data)
		}
		return a, nil
	}
	var r struct {
		Choices []struct {
			Message message `json:"message"`
		} `json:"choices"`
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
			Details      struct {
				CachedTokens int `json:"cached_tokens"`
			} `json:"prompt_tokens_details"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(data, &r); err != nil || len(r.Choices) != 1 {
		return a, fmt.Errorf("answer from %s: %v: %.200s", a.servedBy, err, data)
	}
	a.reply, a.prompt, a.cached = r.Choices[0].Message.Content, r.Usage.PromptTokens, r.Usage.Details.CachedTokens
	return a, nil
}

// scrape reads a replica's unlabelled metrics.
func scrape(t *testing.T, r *replica) map[string]float64 {
	t.Helper()
	resp, err := http.Get(r.url() + "/metrics")
	if err != nil {
		t.Fatalf("metrics of %s: %v", r.name, err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && !strings.HasPrefix(f[0], "#") && !strings.Contains(f[0], "{") {
			v, err := strconv.ParseFloat(f[1], 64)
			if err == nil {
				out[f[0]] = v
			}
		}
	}
	return out
}

// conversation runs turns of a chat through the balancer with the given
// session id ("" sends none) and returns each turn's answer and the prompt
// tokens its replica's metrics counted as reused from the cache.
func (c *cluster) conversation(t *testing.T, session string, turns int) (answers []answer, cachedByMetrics []int) {
	t.Helper()
	byName := map[string]*replica{}
	for _, r := range c.replicas {
		byName[r.name] = r
	}
	var msgs []message
	for i := range turns {
		msgs = append(msgs, message{"user", fmt.Sprintf("Turn %d of conversation %q: tell me more about the weather in Paris in spring.", i+1, session)})
		before := map[string]map[string]float64{}
		for _, r := range c.replicas {
			before[r.name] = scrape(t, r)
		}
		a, err := chat(http.DefaultClient, c.front, session, msgs, 12)
		if err != nil {
			t.Fatalf("session %q turn %d: %v", session, i+1, err)
		}
		r := byName[a.servedBy]
		if r == nil {
			t.Fatalf("session %q turn %d: served by %q, not a replica", session, i+1, a.servedBy)
		}
		after := scrape(t, r)
		answers = append(answers, a)
		cachedByMetrics = append(cachedByMetrics, int(after["chatglm_prompt_tokens_cached_total"]-before[r.name]["chatglm_prompt_tokens_cached_total"]))
		msgs = append(msgs, message{"assistant", a.reply})
	}
	return answers, cachedByMetrics
}

// TestSessionAffinity: every turn of a conversation with a session header
// lands on one replica, and from the second turn on that replica's metrics
// count the earlier turns' prompt as reused from its cache; sessions spread
// over the replicas; without the header (round robin) turns wander and
// reuse less.
func TestSessionAffinity(t *testing.T) {
	c := startCluster(t)
	const turns = 4
	used := map[string]bool{}
	affinityCached := 0
	for i := range 6 {
		session := fmt.Sprintf("session-%d", i)
		answers, cached := c.conversation(t, session, turns)
		for k, a := range answers {
			if a.servedBy != answers[0].servedBy {
				t.Errorf("%s: turn %d on %s, turn 1 on %s", session, k+1, a.servedBy, answers[0].servedBy)
			}
			if cached[k] != a.cached {
				t.Errorf("%s turn %d: metrics count %d cached tokens, the answer's usage %d", session, k+1, cached[k], a.cached)
			}
			if k > 0 && cached[k] < answers[k-1].prompt {
				t.Errorf("%s turn %d: %d prompt tokens from the cache, want at least the previous turn's prompt (%d)",
					session, k+1, cached[k], answers[k-1].prompt)
			}
			if k > 0 {
				affinityCached += cached[k]
			}
		}
		used[answers[0].servedBy] = true
		t.Logf("%s on %s: cached tokens per turn %v", session, answers[0].servedBy, cached)
	}
	if len(used) < 2 {
		t.Errorf("6 sessions all hashed onto %v", used)
	}
	// The same conversation without the header, once per session count.
	answers, cached := c.conversation(t, "", turns)
	wander := map[string]bool{}
	rrCached := 0
	for k, a := range answers {
		wander[a.servedBy] = true
		if k > 0 {
			rrCached += cached[k]
		}
	}
	t.Logf("round robin: replicas %v, cached tokens per turn %v; with affinity: %d cached tokens per conversation", wander, cached, affinityCached/6)
	if len(wander) < 2 {
		t.Errorf("without a session header every turn went to %v", wander)
	}
	if rrCached*6 >= affinityCached {
		t.Errorf("round robin reused %d cached tokens, affinity %d per conversation", rrCached, affinityCached/6)
	}
}

// outcome is one request of a load run.
type outcome struct {
	start, end time.Time
	stream     bool
	answer
	err error
}

// load sends chat completions from n clients through the balancer, each
// with a fresh session id, until stop is closed; odd clients stream.
func (c *cluster) load(n, maxTokens int, stop <-chan struct{}) <-chan []outcome {
	res := make(chan []outcome, 1)
	go func() {
		var mu sync.Mutex
		var all []outcome
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				client := &http.Client{Timeout: 2 * time.Minute}
				for j := 0; ; j++ {
					select {
					case <-stop:
						return
					default:
					}
					o := outcome{start: time.Now(), stream: i%2 == 1}
					o.answer, o.err = complete(client, c.front, fmt.Sprintf("load-%d-%d", i, j),
						[]message{{"user", fmt.Sprintf("request %d of client %d", j, i)}}, maxTokens, o.stream)
					o.end = time.Now()
					mu.Lock()
					all = append(all, o)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		res <- all
	}()
	return res
}

// waitServed waits until every replica has answered some of the load.
func waitServed(t *testing.T, c *cluster, min float64) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ok := true
		for _, r := range c.replicas {
			if scrape(t, r)["chatglm_generated_tokens_total"] < min {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the load did not reach every replica in 2m")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRollingRestartLosesNothing: SIGTERM one replica under load; it drains
// (not ready, still serving), HAProxy takes it out, it finishes what it has
// and exits 0, and no request fails.
func TestRollingRestartLosesNothing(t *testing.T) {
	c := startCluster(t)
	stop := make(chan struct{})
	results := c.load(4, 16, stop)
	waitServed(t, c, 50)
	victim := c.replicas[1]
	sigterm := time.Now()
	if err := victim.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The balancer sees the drain on /health/ready before the listener
	// closes.
	down := c.waitDown(victim.name, sigterm, drain)
	if down == 0 {
		t.Errorf("HAProxy did not mark %s down within the %v drain period", victim.name, drain)
	}
	if err := victim.wait(time.Minute); err != nil {
		t.Errorf("%s after SIGTERM: %v", victim.name, err)
	}
	exited := time.Now()
	time.Sleep(time.Second) // more load on the two left
	close(stop)
	all := <-results
	failed, after := 0, 0
	for _, o := range all {
		if o.err != nil {
			failed++
			t.Errorf("request %v after SIGTERM failed: %v", o.start.Sub(sigterm).Round(time.Millisecond), o.err)
		}
		if o.start.After(exited) {
			after++
		}
	}
	t.Logf("%d requests, %d failed; %s marked down %v after SIGTERM, exited %v after it; %d requests after it exited",
		len(all), failed, victim.name, down.Round(time.Millisecond), exited.Sub(sigterm).Round(time.Millisecond), after)
	if after == 0 {
		t.Error("no requests were sent after the replica exited")
	}
	// Clean, not rescued: HAProxy never had to retry or redispatch a
	// request (it does so when a replica refuses or drops a connection).
	st, err := c.serverStats()
	if err != nil {
		t.Fatal(err)
	}
	for name, row := range st {
		if row["wretr"] != "0" || row["wredis"] != "0" {
			t.Errorf("HAProxy retried %s connections and redispatched %s requests on %s", row["wretr"], row["wredis"], name)
		}
	}
	if !strings.Contains(victim.log(), "draining") || !strings.Contains(victim.log(), "chatglm: stopped") {
		t.Errorf("%s log shows no drain and clean stop", victim.name)
	}
}

// TestKilledReplicaRoutedAround: kill -9 one replica under load; HAProxy
// routes around it (refused connections and requests it dropped before
// answering are retried on another replica, and the failed health checks
// take it out within the check schedule), and the only failed requests are
// streams it had begun to answer before it died.
func TestKilledReplicaRoutedAround(t *testing.T) {
	c := startCluster(t)
	stop := make(chan struct{})
	results := c.load(4, 48, stop)
	waitServed(t, c, 100)
	victim := c.replicas[2]
	if err := victim.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	victim.wait(time.Minute)
	down := c.waitDown(victim.name, killed, time.Minute)
	if down == 0 {
		t.Fatalf("HAProxy did not mark the killed %s down in a minute", victim.name)
	}
	// Bounded by the check schedule: fall checks inter apart, plus one
	// interval of phase and a margin for a loaded machine.
	if limit := time.Duration(checkFall+1)*checkInter + 3*time.Second; down > limit {
		t.Errorf("marked down %v after the kill, beyond the check schedule (%v)", down, limit)
	}
	time.Sleep(time.Second)
	close(stop)
	all := <-results
	failed, afterOK, inFlight := 0, 0, 0
	for _, o := range all {
		if o.start.Before(killed) && o.end.After(killed) {
			inFlight++
		}
		if o.err == nil {
			if o.start.After(killed) {
				afterOK++
			}
			continue
		}
		failed++
		// A stream whose 200 headers came from the victim: a dead process
		// answers nothing, so it had begun before the kill (one that had
		// not would have been retried on another replica).
		begun := o.stream && o.servedBy == victim.name && !o.headers.IsZero() && o.start.Before(killed)
		if !begun {
			t.Errorf("a request that %s had not begun to answer failed (stream %v, started %v from the kill, served by %q): %v",
				victim.name, o.stream, o.start.Sub(killed).Round(time.Millisecond), o.servedBy, o.err)
		}
	}
	t.Logf("%d requests, %d in flight at the kill, %d failed (streams begun on %s); marked down %v after the kill; %d succeeded after it",
		len(all), inFlight, failed, victim.name, down.Round(time.Millisecond), afterOK)
	if afterOK == 0 {
		t.Error("no request succeeded after the kill")
	}
}
