package main

// The hostile clients of the soak mode. Each speaks HTTP/1.1 over its own
// TCP connections, so it can do what a well-behaved client library never
// does: send bodies that lie, trickle bytes, pipeline requests it never
// reads the answers to, hang up mid-stream. Every attempt ends in outcomes
// (one per connection) that say what the server did, so the soak reports
// the server's behaviour as it is, not as hoped.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/chatglm/chatglm/internal/measure/soakresult"
)

// hostileConfig tunes the hostile clients.
type hostileConfig struct {
	Hold           time.Duration // longest a slow or non-reading client keeps one connection
	Pause          time.Duration // between a client's attempts
	SlowInterval   time.Duration // a slow sender's time between bytes
	SlowConns      int           // connections a slow sender opens per attempt
	StallRequests  int           // requests a non-reading client pipelines on one connection
	StallMaxTokens int           // their max_tokens, and the disconnecting client's
	BigBody        int64         // bytes of an oversized body
	AnswerTimeout  time.Duration // longest wait for an answer to a complete request
}

// defaultHostility is the soak's hostile mix. A non-reading client's
// pipelined answers (8 x 512 tokens, about 800 KB of events) outgrow what
// the kernel buffers for its small window (smallWindow: about 130 KB), so
// the server's writes to it do block.
var defaultHostility = hostileConfig{
	Hold:           2 * time.Minute,
	Pause:          500 * time.Millisecond,
	SlowInterval:   time.Second,
	SlowConns:      4,
	StallRequests:  8,
	StallMaxTokens: 512,
	BigBody:        64 << 20,
	AnswerTimeout:  time.Minute,
}

// hostileKind is one way of misbehaving.
type hostileKind struct {
	name, what string
	attack     func(e *hostileEnv, ctx context.Context, attempt int) []outcome
}

// hostileKinds are the soak's hostile clients, in the order clients are
// given them.
var hostileKinds = []hostileKind{
	{"malformed-json", "syntax and type errors, wrong roles, huge numbers, an empty body", (*hostileEnv).malformed},
	{"nested-json", "nesting 10^6 deep at the top level, 10^5 in a message, 3000 in tools[].function.parameters, 10^6 in tool_calls arguments", (*hostileEnv).nested},
	{"oversized-body", "a 64 MiB body, with Content-Length and chunked", (*hostileEnv).oversized},
	{"slow-body", "complete headers, then the body one byte per -slow-interval, 4 connections", (*hostileEnv).slowBody},
	{"slow-headers", "the headers one byte per -slow-interval, never finished, 4 connections", (*hostileEnv).slowHeaders},
	{"stop-reading", "8 pipelined streaming requests on a small receive window, the first event read, then no reading for -hostile-hold", (*hostileEnv).stopReading},
	{"disconnect", "a streaming request hung up on after 1 to 8 events", (*hostileEnv).disconnect},
}

// kindNames lists the hostile kinds.
func kindNames() []string {
	var out []string
	for _, k := range hostileKinds {
		out = append(out, k.name)
	}
	return out
}

// parseKinds parses a comma-separated list of hostile kinds.
func parseKinds(v string) ([]string, error) {
	var out []string
	for _, name := range strings.Split(v, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if !slices.Contains(kindNames(), name) {
			return nil, fmt.Errorf("unknown hostile kind %q (known: %s)", name, strings.Join(kindNames(), ", "))
		}
		out = append(out, name)
	}
	if len(out) == 0 {
		return nil, errors.New("no hostile kinds")
	}
	return out, nil
}

// outcome is what became of one hostile connection.
type outcome struct {
	what string
	// held is how long the server kept a slow connection open before it
	// answered or closed it (zero when the server did not end it).
	held time.Duration
}

// hostileEnv is what the hostile clients know of the server.
type hostileEnv struct {
	addr string // host:port to dial
	host string // Host header
	key  string
	cfg  hostileConfig
}

func newHostileEnv(rawURL, key string, cfg hostileConfig) (*hostileEnv, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("-url %q: %w", rawURL, err)
	}
	if u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("-url %q: the soak speaks plain http to a host:port", rawURL)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	return &hostileEnv{addr: addr, host: u.Host, key: key, cfg: cfg}, nil
}

// attack runs one attempt of the named kind.
func (e *hostileEnv) attack(ctx context.Context, kind string, attempt int) []outcome {
	for _, k := range hostileKinds {
		if k.name == kind {
			return k.attack(e, ctx, attempt)
		}
	}
	return []outcome{{what: "unknown kind " + kind}}
}

// dial connects to the server, with a small receive window when small is
// set; the connection is closed when ctx ends, so no read or write outlives
// the soak. The returned func closes it.
func (e *hostileEnv) dial(ctx context.Context, small bool) (net.Conn, func(), error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	if small {
		d.Control = smallWindow
	}
	c, err := d.DialContext(ctx, "tcp", e.addr)
	if err != nil {
		return nil, nil, err
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	return c, func() { stop(); c.Close() }, nil
}

// header is the head of a POST to path; a negative length means chunked.
func (e *hostileEnv) header(path string, length int64) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: loadgen-soak\r\nContent-Type: application/json\r\n", path, e.host)
	if length < 0 {
		b.WriteString("Transfer-Encoding: chunked\r\n")
	} else {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", length)
	}
	if e.key != "" {
		fmt.Fprintf(&b, "Authorization: Bearer %s\r\n", e.key)
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// classify names a connection's error as an outcome.
func classify(ctx context.Context, err error) string {
	var ne net.Error
	var op *net.OpError
	switch {
	case ctx.Err() != nil:
		return "open when the soak ended"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "closed by server"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset by server"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.As(err, &ne) && ne.Timeout():
		return "no answer in time"
	case errors.As(err, &op):
		return "error: " + op.Err.Error()
	}
	return "error: " + err.Error()
}

// readAnswer reads the status of the server's answer on br (timeout 0: no
// deadline but the connection's) and discards up to 1 MiB of its body.
func readAnswer(ctx context.Context, conn net.Conn, br *bufio.Reader, timeout time.Duration) string {
	if timeout > 0 {
		conn.SetReadDeadline(time.Now().Add(timeout))
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return classify(ctx, err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	return fmt.Sprintf("status %d", resp.StatusCode)
}

// exchange sends one request (body streamed by a second goroutine, so a
// server that answers before the body is in is heard) and reads the answer.
func (e *hostileEnv) exchange(ctx context.Context, path string, length int64, body io.Reader) outcome {
	conn, done, err := e.dial(ctx, false)
	if err != nil {
		return outcome{what: classify(ctx, err)}
	}
	defer done()
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		if _, err := conn.Write(e.header(path, length)); err != nil {
			return
		}
		if length >= 0 {
			io.Copy(conn, body)
			return
		}
		cw := httputil.NewChunkedWriter(conn)
		if _, err := io.Copy(cw, body); err == nil && cw.Close() == nil {
			io.WriteString(conn, "\r\n")
		}
	}()
	what := readAnswer(ctx, conn, bufio.NewReader(conn), e.cfg.AnswerTimeout)
	done() // ends a write the server no longer reads
	<-wrote
	return outcome{what: what}
}

// malformedBodies are request bodies a server must refuse (path, body).
var malformedBodies = [][2]string{
	{"/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}`},
	{"/v1/chat/completions", `not json`},
	{"/v1/chat/completions", `{"messages":"hi"}`},
	{"/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":"many"}`},
	{"/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}]} {"trailing":true}`},
	{"/v1/chat/completions", `{"messages":[{"role":"wizard","content":"hi"}]}`},
	{"/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"temperature":1e999}`},
	{"/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":-1}`},
	{"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"\x00\xff\xfe\"}]"},
	{"/v1/chat/completions", ``},
	{"/v1/completions", `{"prompt":[[1,2],[3,{"x":1}]]}`},
	{"/v1/completions", `{"prompt":"hi","max_tokens":9223372036854775807,"n":-3}`},
}

func (e *hostileEnv) malformed(ctx context.Context, attempt int) []outcome {
	m := malformedBodies[attempt%len(malformedBodies)]
	return []outcome{e.exchange(ctx, m[0], int64(len(m[1])), strings.NewReader(m[1]))}
}

// nestedBodies are deeply nested requests, made once.
var nestedBodies = sync.OnceValue(func() [][]byte {
	nest := func(open, leaf, close string, depth int) string {
		return strings.Repeat(open, depth) + leaf + strings.Repeat(close, depth)
	}
	return [][]byte{
		[]byte(`{"messages":` + nest("[", "", "]", 1<<20) + `}`),
		[]byte(`{"messages":[{"role":"user","content":` + nest(`{"a":`, "1", "}", 100000) + `}],"max_tokens":1}`),
		// issue 11 item 9: 6 KB of nesting in a tool's parameters.
		[]byte(`{"messages":[{"role":"user","content":"hi"}],"max_tokens":1,"tools":[{"type":"function","function":{"name":"f","description":"d","parameters":{"type":"object","properties":{"x":{"type":"array","default":` +
			nest("[", "", "]", 3000) + `}}}}}]}`),
		// issue 11 item 8: 2 MB of nesting in a tool call's arguments.
		[]byte(`{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"` +
			nest("[", "", "]", 1<<20) + `"}}]},{"role":"tool","tool_call_id":"c1","content":"ok"}],"max_tokens":1}`),
	}
})

func (e *hostileEnv) nested(ctx context.Context, attempt int) []outcome {
	bodies := nestedBodies()
	b := bodies[attempt%len(bodies)]
	return []outcome{e.exchange(ctx, "/v1/chat/completions", int64(len(b)), bytes.NewReader(b))}
}

// repeatByte is an endless reader of one byte.
type repeatByte byte

func (r repeatByte) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

// oversized sends a chat request whose message is cfg.BigBody bytes, with
// Content-Length on even attempts and chunked (no length) on odd ones.
func (e *hostileEnv) oversized(ctx context.Context, attempt int) []outcome {
	head, tail := `{"messages":[{"role":"user","content":"`, `"}],"max_tokens":1}`
	n := max(0, e.cfg.BigBody-int64(len(head)+len(tail)))
	body := io.MultiReader(strings.NewReader(head), io.LimitReader(repeatByte('a'), n), strings.NewReader(tail))
	length := int64(len(head)+len(tail)) + n
	if attempt%2 == 1 {
		length = -1
	}
	return []outcome{e.exchange(ctx, "/v1/chat/completions", length, body)}
}

// slowly opens cfg.SlowConns connections that each send prefix, then
// trickle one byte per cfg.SlowInterval, until the server answers or closes
// the connection, cfg.Hold passes or the soak ends.
func (e *hostileEnv) slowly(ctx context.Context, prefix, trickle []byte) []outcome {
	out := make([]outcome, e.cfg.SlowConns)
	var wg sync.WaitGroup
	for i := range out {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = e.slowConn(ctx, prefix, trickle)
		}()
	}
	wg.Wait()
	return out
}

func (e *hostileEnv) slowConn(ctx context.Context, prefix, trickle []byte) outcome {
	conn, done, err := e.dial(ctx, false)
	if err != nil {
		return outcome{what: classify(ctx, err)}
	}
	defer done()
	t0 := time.Now()
	answer := make(chan string, 1)
	go func() { answer <- readAnswer(ctx, conn, bufio.NewReader(conn), 0) }()
	conn.Write(prefix) // a failure shows in the answer
	hold := time.NewTimer(e.cfg.Hold)
	defer hold.Stop()
	tick := time.NewTicker(e.cfg.SlowInterval)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case what := <-answer:
			if ctx.Err() != nil {
				return outcome{what: what}
			}
			return outcome{what: what, held: time.Since(t0)}
		case <-ctx.Done():
			return outcome{what: "open when the soak ended"}
		case <-hold.C:
			return outcome{what: "still open at the hold limit"}
		case <-tick.C:
			if i < len(trickle) {
				conn.Write(trickle[i : i+1])
			}
		}
	}
}

func (e *hostileEnv) slowBody(ctx context.Context, attempt int) []outcome {
	body := []byte(`{"messages":[{"role":"user","content":"` + strings.Repeat("a", 4096) + `"}],"max_tokens":1}`)
	return e.slowly(ctx, e.header("/v1/chat/completions", int64(len(body))), body)
}

func (e *hostileEnv) slowHeaders(ctx context.Context, attempt int) []outcome {
	prefix := fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\n", e.host)
	lines := int(e.cfg.Hold/e.cfg.SlowInterval)/32 + 1
	trickle := strings.Repeat("X-Slow: "+strings.Repeat("a", 22)+"\r\n", lines)
	return e.slowly(ctx, []byte(prefix), []byte(trickle))
}

// streamRequest writes the i-th well-behaved streaming request.
func (e *hostileEnv) streamRequest(w io.Writer, i int) {
	body := chatBody(i, e.cfg.StallMaxTokens, true)
	w.Write(e.header("/v1/chat/completions", int64(len(body))))
	w.Write(body)
}

// firstEvents reads the answer's head and n event lines (fewer if the
// stream ends first: done is then true).
func firstEvents(conn net.Conn, br *bufio.Reader, n int, timeout time.Duration) (resp *http.Response, body *bufio.Reader, done bool, err error) {
	conn.SetReadDeadline(time.Now().Add(timeout))
	defer conn.SetReadDeadline(time.Time{})
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		return nil, nil, false, err
	}
	if resp.StatusCode != http.StatusOK {
		return resp, nil, false, nil
	}
	body = bufio.NewReader(resp.Body)
	for seen := 0; seen < n; {
		line, err := body.ReadString('\n')
		if err != nil {
			return resp, body, false, err
		}
		if strings.HasPrefix(line, "data: [DONE]") {
			return resp, body, true, nil
		}
		if strings.HasPrefix(line, "data: ") {
			seen++
		}
	}
	return resp, body, false, nil
}

// openStreams dials, sends n well-behaved streaming requests (the first-th
// onwards) in one write, and reads the first answer's head and up to events
// event lines. A non-empty what is the outcome of a failure; ended says the
// first stream ended within those lines; done closes the connection.
func (e *hostileEnv) openStreams(ctx context.Context, small bool, first, n, events int) (conn net.Conn, br *bufio.Reader, done func(), ended bool, what string) {
	conn, done, err := e.dial(ctx, small)
	if err != nil {
		return nil, nil, func() {}, false, classify(ctx, err)
	}
	var reqs bytes.Buffer
	for j := range n {
		e.streamRequest(&reqs, first+j)
	}
	if _, err := conn.Write(reqs.Bytes()); err != nil {
		return conn, nil, done, false, classify(ctx, err)
	}
	br = bufio.NewReader(conn)
	resp, _, ended, err := firstEvents(conn, br, events, e.cfg.AnswerTimeout)
	switch {
	case err != nil:
		what = classify(ctx, err)
	case resp.StatusCode != http.StatusOK:
		what = fmt.Sprintf("status %d", resp.StatusCode)
	}
	return conn, br, done, ended, what
}

// stopReading pipelines cfg.StallRequests streaming requests on one
// connection with a small receive window, reads the first event and then nothing for cfg.Hold; then it
// drains what is left to learn whether the server dropped the connection
// meanwhile.
func (e *hostileEnv) stopReading(ctx context.Context, attempt int) []outcome {
	n := e.cfg.StallRequests
	conn, br, done, _, what := e.openStreams(ctx, true, attempt*n, n, 1)
	defer done()
	if what != "" {
		return []outcome{{what: what}}
	}
	sleepCtx(ctx, e.cfg.Hold)
	if ctx.Err() != nil {
		return []outcome{{what: "open when the soak ended"}}
	}
	// Drain: a dropped connection ends soon, a live one keeps streaming.
	deadline := time.Now().Add(10 * time.Second)
	conn.SetReadDeadline(deadline)
	dones := 0
	for {
		line, err := br.ReadSlice('\n')
		if bytes.Contains(line, []byte("data: [DONE]")) {
			dones++
		}
		switch {
		case dones >= e.cfg.StallRequests:
			return []outcome{{what: "every stream finished (the kernel buffered them)"}}
		case err == nil || errors.Is(err, bufio.ErrBufferFull):
			continue
		case time.Now().After(deadline) && ctx.Err() == nil:
			return []outcome{{what: "still streaming to it after the hold"}}
		}
		what := classify(ctx, err)
		if what == "closed by server" || what == "reset by server" {
			what = "closed by server before its streams finished"
		}
		return []outcome{{what: what}}
	}
}

// disconnect sends a streaming request and hangs up after a few events.
func (e *hostileEnv) disconnect(ctx context.Context, attempt int) []outcome {
	_, _, done, ended, what := e.openStreams(ctx, false, attempt, 1, 1+attempt%8)
	defer done()
	switch {
	case what != "":
		return []outcome{{what: what}}
	case ended:
		return []outcome{{what: "stream ended before the hang-up"}}
	}
	return []outcome{{what: "hung up mid-stream"}}
}

// kindStats is what one hostile kind met in a soak run (see soakresult.KindStats).
type kindStats = soakresult.KindStats

// kindSummary is k as one line of text.
func kindSummary(k kindStats) string {
	var parts []string
	for _, o := range sortedOutcomes(k.Outcomes) {
		parts = append(parts, fmt.Sprintf("%s x%d", o, k.Outcomes[o]))
	}
	s := fmt.Sprintf("%d connections (%d clients): %s", k.Connections, k.Clients, strings.Join(parts, ", "))
	if k.MaxHeldSeconds > 0 {
		s += fmt.Sprintf("; the server ended a slow connection after %.1f s at most", k.MaxHeldSeconds)
	}
	return s
}

// sortedOutcomes lists outcome names, most frequent first.
func sortedOutcomes(m map[string]int) []string {
	names := make([]string, 0, len(m))
	for o := range m {
		names = append(names, o)
	}
	sort.Slice(names, func(i, j int) bool {
		if m[names[i]] != m[names[j]] {
			return m[names[i]] > m[names[j]]
		}
		return names[i] < names[j]
	})
	return names
}

// hostileStats gathers outcomes per kind.
type hostileStats struct {
	mu     sync.Mutex
	byKind map[string]*kindStats
	order  []string
}

// newHostileStats makes the stats of n hostile clients spread over kinds.
func newHostileStats(kinds []string, n int) *hostileStats {
	s := &hostileStats{byKind: map[string]*kindStats{}}
	for i := range n {
		k := kinds[i%len(kinds)]
		if s.byKind[k] == nil {
			s.byKind[k] = &kindStats{Kind: k, Outcomes: map[string]int{}}
			s.order = append(s.order, k)
		}
		s.byKind[k].Clients++
	}
	return s
}

func (s *hostileStats) add(kind string, outs []outcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.byKind[kind]
	for _, o := range outs {
		k.Connections++
		k.Outcomes[o.what]++
		k.MaxHeldSeconds = max(k.MaxHeldSeconds, round(o.held.Seconds(), 1))
	}
}

func (s *hostileStats) list() []kindStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []kindStats
	for _, k := range s.order {
		out = append(out, *s.byKind[k])
	}
	return out
}
