package enginebackend

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chatglm/chatglm/chat"
	"github.com/chatglm/chatglm/engine"
	"github.com/chatglm/chatglm/internal/fixture/testmodel"
	"github.com/chatglm/chatglm/server"
)

func TestMain(m *testing.M) { testmodel.Main(m) }

// tinyGGUF is a tiny random ChatGLM3 (the real tokenizer, a 4096-token
// context) converted to GGUF, made once per test binary.
func tinyGGUF(t *testing.T) string {
	spec := testmodel.Tiny
	spec.SeqLength = 4096
	return testmodel.GGUF(t, spec, "f16")
}

// serveTiny serves the tiny model with parallel sequences of ctxSize tokens.
func serveTiny(t *testing.T, parallel, ctxSize int, opts server.Options) (*engine.Engine, string) {
	t.Helper()
	return serveTinyOn(t, parallel, ctxSize, opts, nil)
}

// serveTinyOn is serveTiny on a listener wrapped by wrap (when not nil).
func serveTinyOn(t *testing.T, parallel, ctxSize int, opts server.Options, wrap func(net.Listener) net.Listener) (*engine.Engine, string) {
	t.Helper()
	path := tinyGGUF(t)
	e, err := engine.Open(context.Background(), engine.Options{ModelPath: path, Parallel: parallel, ContextSize: ctxSize, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(e, path)
	if err != nil {
		e.Close()
		t.Fatal(err)
	}
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	opts.Sampling = chat.DefaultSampling()
	s := server.New(opts)
	s.SetBackend(b)
	ts := httptest.NewUnstartedServer(s.Handler())
	if wrap != nil {
		ts.Listener = wrap(ts.Listener)
	}
	ts.Start()
	t.Cleanup(func() {
		ts.Close()
		e.Close()
	})
	return e, ts.URL
}

type reply struct {
	Choices []struct {
		Message struct {
			Content *string `json:"content"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage struct {
		PromptTokens        int `json:"prompt_tokens"`
		CompletionTokens    int `json:"completion_tokens"`
		PromptTokensDetails struct {
			CachedTokens int `json:"cached_tokens"`
		} `json:"prompt_tokens_details"`
	} `json:"usage"`
	Error *struct {
		Message string `json:"message"`
		Code    string `json:"code"`
	} `json:"error"`
}

func postJSON(t *testing.T, url, body string) (int, reply) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r reply
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("%d: %v: %s", resp.StatusCode, err, raw)
	}
	return resp.StatusCode, r
}

func TestChatOverEngine(t *testing.T) {
	e, url := serveTiny(t, 2, 512, server.Options{})
	body := `{"messages":[{"role":"user","content":"你好"}],"temperature":0,"max_tokens":16}`
	code, first := postJSON(t, url+"/v1/chat/completions", body)
	if code != http.StatusOK || len(first.Choices) != 1 || first.Choices[0].Message.Content == nil {
		t.Fatalf("%d %+v", code, first)
	}
	// The prompt is the official one: [gMASK] sop <|user|> ▁ \n ▁你 好 <|assistant|>.
	if first.Usage.PromptTokens != 8 || first.Usage.CompletionTokens < 1 || first.Usage.CompletionTokens > 16 {
		t.Fatalf("usage %+v", first.Usage)
	}
	// Greedy is deterministic, and the repeated prompt comes from the cache.
	_, second := postJSON(t, url+"/v1/chat/completions", body)
	if *second.Choices[0].Message.Content != *first.Choices[0].Message.Content {
		t.Fatalf("greedy replies differ: %q vs %q", *first.Choices[0].Message.Content, *second.Choices[0].Message.Content)
	}
	if second.Usage.PromptTokensDetails.CachedTokens != 7 {
		t.Errorf("cached tokens %d, want 7 (all but the last prompt token)", second.Usage.PromptTokensDetails.CachedTokens)
	}
	if s := e.Stats(); s.Requests != 2 || s.Active != 0 {
		t.Errorf("engine stats %+v", s)
	}
}

func TestPromptTooLongOverEngine(t *testing.T) {
	e, url := serveTiny(t, 1, 256, server.Options{})
	code, r := postJSON(t, url+"/v1/chat/completions", `{"messages":[{"role":"user","content":"`+strings.Repeat("hello world ", 200)+`"}]}`)
	limit := fmt.Sprintf("maximum context length is %d tokens", e.ContextSize())
	if code != http.StatusBadRequest || r.Error == nil || r.Error.Code != "context_length_exceeded" || !strings.Contains(r.Error.Message, limit) {
		t.Fatalf("%d %+v", code, r.Error)
	}
	// A context smaller than the batch size: the limit is the asked 64
	// tokens, and a prompt over it is a 400, not a failed decode.
	_, small := serveTiny(t, 1, 64, server.Options{})
	code, r = postJSON(t, small+"/v1/chat/completions", `{"messages":[{"role":"user","content":"`+strings.Repeat("hello world ", 40)+`"}]}`)
	if code != http.StatusBadRequest || r.Error == nil || r.Error.Code != "context_length_exceeded" || !strings.Contains(r.Error.Message, "maximum context length is 64 tokens") {
		t.Fatalf("context 64: %d %+v", code, r.Error)
	}
	code, r = postJSON(t, small+"/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":8}`)
	if code != http.StatusOK {
		t.Fatalf("context 64, short prompt: %d %+v", code, r.Error)
	}
}

// TestDisconnectFreesSlot: a streaming client that hangs up stops its
// generation at once (far short of max_tokens) and frees the only slot, so
// the next request is served.
func TestDisconnectFreesSlot(t *testing.T) {
	e, url := serveTiny(t, 1, 4096, server.Options{})
	// Uninterrupted, this greedy completion runs to max_tokens.
	const body = `{"prompt":"Once upon a time","max_tokens":400,"temperature":0`
	code, full := postJSON(t, url+"/v1/completions", body+`}`)
	if code != http.StatusOK || full.Choices[0].FinishReason != "length" || full.Usage.CompletionTokens != 400 {
		t.Fatalf("reference run: %d %+v", code, full)
	}
	before := e.Stats().GeneratedTokens
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/completions",
		strings.NewReader(body+`,"stream":true}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	rd := bufio.NewReader(resp.Body)
	for events := 0; events < 3; {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended early: %v", err)
		}
		if strings.HasPrefix(line, "data: ") {
			events++
		}
	}
	cancel()
	resp.Body.Close()
	deadline := time.Now().Add(20 * time.Second)
	for e.Stats().Active != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the generation still runs after the client left")
		}
		time.Sleep(5 * time.Millisecond)
	}
	n := e.Stats().GeneratedTokens - before
	t.Logf("the cancelled generation made %d of 400 tokens", n)
	if n >= 400 {
		t.Fatalf("the generation ran to max_tokens after the client left")
	}
	// The slot is free: with one slot, this request is served only if it is.
	waitCtx, stop := context.WithTimeout(context.Background(), 20*time.Second)
	defer stop()
	slot, err := e.AcquireFor(waitCtx, nil)
	if err != nil {
		t.Fatalf("the slot was not freed: %v", err)
	}
	slot.Release()
	code, r := postJSON(t, url+"/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":4}`)
	if code != http.StatusOK {
		t.Fatalf("next request: %d %+v", code, r.Error)
	}
}
