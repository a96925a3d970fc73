package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatglm/chatglm/chat"
	"github.com/chatglm/chatglm/gen"
	"github.com/chatglm/chatglm/internal/fixture/shareddata"
	"github.com/chatglm/chatglm/spm"
)

// toolCallBody is a chat request whose history holds one assistant tool
// call with the given JSON arguments (as a JSON string).
func toolCallBody(args string) string {
	return `{"messages":[{"role":"user","content":"hi"},{"role":"assistant","tool_calls":[{"id":"c1","type":"function",` +
		`"function":{"name":"f","arguments":"` + args + `"}}]},{"role":"tool","content":"1"},{"role":"user","content":"ok"}]}`
}

// Issue 11 item 8: 2 MB of nested '[' in tool_calls[].function.arguments
// ended the process with "fatal error: stack overflow".
func TestDeepToolCallArgumentsAre400(t *testing.T) {
	_, ts := testServer(t, newFake(1, 512), Options{})
	resp := post(t, ts.URL+"/v1/chat/completions", toolCallBody(`{\"a\": `+strings.Repeat("[", 2<<20)+`}`))
	ae := wantError(t, resp, http.StatusBadRequest, "")
	if ae.Param == nil || *ae.Param != "messages.[1].tool_calls.[0].function.arguments" || !strings.Contains(ae.Message, "nested") {
		t.Errorf("param %v: %s", ae.Param, ae.Message)
	}
}

// Issue 11 item 9: 6 KB of nested [] in tools[].function.parameters grew
// memory to 10 GB while the indented tools JSON was built and tokenized.
func TestDeepToolParametersAre400(t *testing.T) {
	_, ts := testServer(t, newFake(1, 512), Options{})
	body := `{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","parameters":` +
		strings.Repeat("[", 3000) + strings.Repeat("]", 3000) + `}}]}`
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	resp := post(t, ts.URL+"/v1/chat/completions", body)
	ae := wantError(t, resp, http.StatusBadRequest, "too_deep")
	runtime.ReadMemStats(&after)
	if ae.Param == nil || !strings.HasPrefix(*ae.Param, "tools.[0].function.parameters.[0]") {
		t.Errorf("param %v: %s", ae.Param, ae.Message)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
		t.Errorf("the request allocated %d MB", alloc>>20)
	}
}

// serveWith runs Serve over fake with opts on a loopback port and returns the server, its address, the function
// that starts the shutdown and the channel of Serve's result.
func serveWith(t *testing.T, fake *fakeBackend, opts Options, grace time.Duration) (*Server, string, context.CancelFunc, chan error) {
	t.Helper()
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	opts.Sampling = chat.DefaultSampling()
	s := New(opts)
	s.SetBackend(fake)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln, grace) }()
	t.Cleanup(func() {
		stop()
		<-done
	})
	return s, addr, stop, done
}

// Issue 11 item 11: max_tokens 2^63-1 overflowed the context check and was
// accepted.
func TestHugeNumbersSaturate(t *testing.T) {
	fake := newFake(1, 512)
	_, ts := testServer(t, fake, Options{})
	for _, field := range []string{"max_tokens", "max_completion_tokens"} {
		resp := post(t, ts.URL+"/v1/chat/completions",
			`{"messages":[{"role":"user","content":"hi"}],"`+field+`":9223372036854775807}`)
		ae := wantError(t, resp, http.StatusBadRequest, "context_length_exceeded")
		if strings.Contains(ae.Message, "-") {
			t.Errorf("%s: %s", field, ae.Message)
		}
		resp = post(t, ts.URL+"/v1/completions", `{"prompt":"hi","`+field+`":9223372036854775807}`)
		wantError(t, resp, http.StatusBadRequest, "context_length_exceeded")
	}
	resp := post(t, ts.URL+"/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"top_k":9223372036854775807,"seed":-9223372036854775808}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("top_k 2^63-1: %d", resp.StatusCode)
	}
	resp.Body.Close()
	if req := <-fake.started; req.Sampling.TopK != math.MaxInt32 {
		t.Errorf("top_k %d, want it capped at %d", req.Sampling.TopK, math.MaxInt32)
	}
	for body, param := range map[string]string{
		`{"messages":[{"role":"user","content":"hi"}],"repeat_penalty":1e300}`:                    "repeat_penalty",
		`{"messages":[{"role":"user","content":"hi"}],"n":9223372036854775807}`:                   "n",
		`{"messages":[{"role":"user","content":"hi"}],"max_tokens":1e100}`:                        "max_tokens",
		`{"messages":[{"role":"user","content":"hi"}],"seed":1e30}`:                               "seed",
		`{"messages":[{"role":"user","content":"hi"}],"stop":"` + strings.Repeat("x", 513) + `"}`: "stop",
		`{"prompt":[1, 99999999999]}`:                                                             "prompt",
	} {
		url := ts.URL + "/v1/chat/completions"
		if strings.HasPrefix(body, `{"prompt"`) {
			url = ts.URL + "/v1/completions"
		}
		ae := wantError(t, post(t, url, body), http.StatusBadRequest, "")
		if ae.Param == nil || *ae.Param != param {
			t.Errorf("%.60s: param %v, want %s (%s)", body, ae.Param, param, ae.Message)
		}
	}
}

// Issue 11 item 9: a prompt that cannot fit the context is refused before
// it is tokenized (and before the indented tools JSON is tokenized).
func TestOversizedPromptNotTokenized(t *testing.T) {
	fake := newFake(1, 64)
	_, ts := testServer(t, fake, Options{})
	long := strings.Repeat("x", 64*maxPieceBytes+1)
	wantError(t, post(t, ts.URL+"/v1/completions", `{"prompt":"`+long+`"}`), http.StatusBadRequest, "context_length_exceeded")
	ae := wantError(t, post(t, ts.URL+"/v1/chat/completions", `{"messages":[{"role":"user","content":"`+long+`"}]}`),
		http.StatusBadRequest, "context_length_exceeded")
	if ae.Param == nil || *ae.Param != "messages" {
		t.Errorf("param %v", ae.Param)
	}
	if n := fake.tokenized.Load(); n > 64*maxPieceBytes {
		t.Errorf("%d bytes were tokenized", n)
	}
}

// TestMaxPieceBytes checks maxPieceBytes against the real tokenizer: no
// piece stands for more text.
func TestMaxPieceBytes(t *testing.T) {
	pieces, err := spm.Load(filepath.Join(shareddata.ChatGLM3(t), "tokenizer.model"))
	if err != nil {
		t.Fatal(err)
	}
	longest := ""
	for _, p := range pieces {
		if text := strings.ReplaceAll(p.Text, "▁", " "); len(text) > len(longest) {
			longest = text
		}
	}
	if len(longest) > maxPieceBytes {
		t.Errorf("piece %q is %d bytes, more than maxPieceBytes %d", longest, len(longest), maxPieceBytes)
	}
}

// Issue 11 item 9: building the prompt counts against the queue limit; a
// flood of requests cannot all build prompts at once.
func TestPromptBuildingIsAdmitted(t *testing.T) {
	fake := newFake(1, 512)
	fake.blockTokenize = make(chan struct{})
	_, ts := testServer(t, fake, Options{Queue: 0})
	unblock := sync.OnceFunc(func() { close(fake.blockTokenize) })
	t.Cleanup(unblock) // before the server's Close, when the test fails
	first := make(chan int, 1)
	go func() {
		resp, err := http.Post(ts.URL+"/v1/chat/completions", "application/json",
			strings.NewReader(`{"messages":[{"role":"user","content":"BLOCK"}]}`))
		if err != nil {
			first <- -1
			return
		}
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	waitFor(t, func() bool { return fake.tokenized.Load() > 0 })
	wantError(t, post(t, ts.URL+"/v1/chat/completions", hello), http.StatusTooManyRequests, "queue_full")
	unblock()
	if code := <-first; code != http.StatusOK {
		t.Errorf("first request: %d", code)
	}
}

// Issue 11 item 12: cross-site requests and DNS rebinding.
func TestOriginAndHostGuard(t *testing.T) {
	fake := newFake(2, 512)
	_, addr, _, _ := serveWith(t, fake, Options{CORSOrigins: []string{"https://ok.example"}}, time.Second)
	url := "http://" + addr + "/v1/chat/completions"
	for _, c := range []struct {
		header []string
		status int
	}{
		{nil, http.StatusOK},
		{[]string{"Origin", "http://" + addr}, http.StatusOK},
		{[]string{"Origin", "https://ok.example"}, http.StatusOK},
		{[]string{"Origin", "https://evil.example"}, http.StatusForbidden},
		{[]string{"Origin", "null"}, http.StatusForbidden},
		{[]string{"Origin", "http://" + addr + ".evil.example"}, http.StatusForbidden},
		{[]string{"Content-Type", "text/plain", "Origin", "http://evil.example:8080"}, http.StatusForbidden},
		{[]string{"Host", "evil.example"}, http.StatusForbidden},
		{[]string{"Host", "evil.example:" + strings.Split(addr, ":")[1]}, http.StatusForbidden},
		{[]string{"Host", "localhost:" + strings.Split(addr, ":")[1]}, http.StatusOK},
		{[]string{"Host", "app.localhost"}, http.StatusOK},
		{[]string{"Host", "[::1]:80"}, http.StatusOK},
	} {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(hello))
		for i := 0; i+1 < len(c.header); i += 2 {
			if c.header[i] == "Host" {
				req.Host = c.header[i+1]
			} else {
				req.Header.Set(c.header[i], c.header[i+1])
			}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != c.status {
			t.Errorf("%v: %d, want %d", c.header, resp.StatusCode, c.status)
		}
		if c.status == http.StatusForbidden {
			wantError(t, resp, http.StatusForbidden, "")
		} else {
			resp.Body.Close()
		}
	}
	// "*" allows every origin.
	_, ts := testServer(t, fake, Options{CORSOrigins: []string{"*"}})
	resp := post(t, ts.URL+"/v1/chat/completions", hello, "Origin", "https://any.example")
	if resp.StatusCode != http.StatusOK {
		t.Errorf("cors *: %d", resp.StatusCode)
	}
	resp.Body.Close()
}

func TestHostCheckOnlyOnLoopback(t *testing.T) {
	if !loopbackHost("127.0.0.1:8080") || !loopbackHost("LOCALHOST") || !loopbackHost("") || loopbackHost("10.0.0.1:8080") {
		t.Error("loopbackHost")
	}
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Skip("no wildcard listener:", err) // not a finding: the loopback case is tested above
	}
	ln.Close()
	if isLoopbackAddr(ln.Addr()) || !isLoopbackAddr(&net.TCPAddr{IP: net.IPv6loopback}) {
		t.Error("isLoopbackAddr")
	}
}

// Issue 11 item 12: the Bearer scheme is case-insensitive (RFC 7235).
func TestBearerSchemeCaseInsensitive(t *testing.T) {
	_, ts := testServer(t, newFake(1, 512), Options{APIKey: "k3y"})
	for auth, status := range map[string]int{
		"Bearer k3y": 200, "bearer k3y": 200, "BEARER  k3y": 200, "Basic k3y": 401, "Bearer k3": 401, "Bearerk3y": 401, "k3y": 401,
	} {
		resp := post(t, ts.URL+"/v1/chat/completions", hello, "Authorization", auth)
		if resp.StatusCode != status {
			t.Errorf("%q: %d, want %d", auth, resp.StatusCode, status)
		}
		resp.Body.Close()
	}
}

// slowBody starts a request to addr whose body arrives one byte every
// 50 ms, and returns the channel of the response's status line.
func slowBody(t *testing.T, addr string) chan string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", addr, len(hello))
	status := make(chan string, 1)
	go func() {
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			line = "error: " + err.Error()
		}
		status <- line
	}()
	go func() {
		for i := 0; i < len(hello); i++ {
			if _, err := c.Write([]byte{hello[i]}); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return status
}

// Issue 11 item 10: a body sent one byte at a time is cut off after the
// read timeout, with 408.
func TestSlowBodyTimesOut(t *testing.T) {
	_, addr, _, _ := serveWith(t, newFake(1, 512), Options{ReadTimeout: 300 * time.Millisecond}, time.Second)
	select {
	case line := <-slowBody(t, addr):
		if !strings.Contains(line, " 408 ") {
			t.Errorf("slow body: %q, want 408", line)
		}
	case <-time.After(time.Duration(len(hello)) * 50 * time.Millisecond):
		t.Fatal("the slow body was read to its end")
	}
	// Headers that never end: the connection is closed.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\n", addr)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		t.Errorf("slow headers: the connection stayed open: %v", err)
	}
}

// Issue 11 item 10: a slow body sender does not hold up a graceful
// shutdown: its read is cut off with 503 when the shutdown starts.
func TestSlowBodyDoesNotDelayShutdown(t *testing.T) {
	_, addr, stop, done := serveWith(t, newFake(1, 512), Options{ReadTimeout: 10 * time.Minute}, 10*time.Minute)
	status := slowBody(t, addr)
	time.Sleep(200 * time.Millisecond) // the body is being read
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Duration(len(hello)) * 50 * time.Millisecond):
		t.Fatal("Serve waited for the slow body")
	}
	done <- nil // for the cleanup
	if line := <-status; !strings.Contains(line, " 503 ") {
		t.Errorf("slow body at shutdown: %q, want 503", line)
	}
}

// stalledStream starts a streamed request on a connection that is never
// read (with a small receive buffer; the reply is far larger than the
// kernel's send buffer).
func stalledStream(t *testing.T, addr, body string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).SetReadBuffer(4 << 10)
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", addr, len(body), body)
}

// Issue 11 item 13: a client that stops reading is dropped after the write
// timeout, and its generation is cancelled so that its sequence is freed.
func TestStalledReaderIsDropped(t *testing.T) {
	fake := newFake(1, 1<<20)
	long := strings.Repeat("长", 200000)
	fake.reply = func(req gen.Request) []gen.Token { return fake.toks("\n", long) }
	_, addr, _, _ := serveWith(t, fake, Options{WriteTimeout: 200 * time.Millisecond}, time.Second)
	stalledStream(t, addr, `{"messages":[{"role":"user","content":"hi"}],"stream":true}`)
	<-fake.started
	waitFor(t, func() bool { return fake.released.Load() == 1 })
	if g := fake.generated.Load(); g >= int64(len(long)/3) {
		t.Errorf("the whole reply (%d tokens) was generated for a client that stopped reading", g)
	}
	// The sequence serves the next client.
	fake.reply = nil
	resp, err := http.Post("http://"+addr+"/v1/chat/completions", "application/json", strings.NewReader(hello))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("next request: %d", resp.StatusCode)
	}
}

// Issue 11 item 17: Serve returns only once every handler has returned,
// even one whose backend is slow to notice the cancellation, so that the
// caller may close the backend.
func TestServeWaitsForHandlers(t *testing.T) {
	fake := newFake(1, 512)
	fake.stubborn = make(chan struct{})
	s, addr, stop, done := serveWith(t, fake, Options{}, 50*time.Millisecond)
	s.cancelWait = 50 * time.Millisecond
	go func() {
		resp, err := http.Post("http://"+addr+"/v1/chat/completions", "application/json", strings.NewReader(hello))
		if err == nil {
			resp.Body.Close()
		}
	}()
	<-fake.started
	stop()
	select {
	case err := <-done:
		t.Fatalf("Serve returned (%v) while a handler was still running", err)
	case <-time.After(time.Second):
	}
	close(fake.stubborn)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done <- nil
	if fake.released.Load() != 1 {
		t.Errorf("released %d", fake.released.Load())
	}
}

func TestCheckDepth(t *testing.T) {
	for body, want := range map[string]string{
		`{"a": 1}`: "",
		`{"s": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\""}`: "",
		`{"k\"[": [` + strings.Repeat("[", 62) + strings.Repeat("]", 62) + `]}`:                   "",
		`{"k\"[": [` + strings.Repeat("[", 63) + strings.Repeat("]", 63) + `]}`:                   `k"[.[0].[0].[0].[0].[0].[0].[0].[0].[0].[0].[0]...`,
		`{"a": 1, "b": [0, 1, {"c": ` + strings.Repeat("[", 70):                                   `b.[2].c.[0].[0].[0].[0].[0].[0].[0].[0].[0]...`,
		strings.Repeat("[", 65): `[0].[0].[0].[0].[0].[0].[0].[0].[0].[0].[0].[0]...`,
	} {
		err := checkDepth([]byte(body), maxBodyDepth)
		if want == "" {
			if err != nil {
				t.Errorf("%.40s: %v", body, err)
			}
			continue
		}
		ae, ok := err.(*APIError)
		if !ok || ae.Param == nil || *ae.Param != want || ae.Status != http.StatusBadRequest {
			t.Errorf("%.40s: %v, want param %s", body, err, want)
		}
	}
}
