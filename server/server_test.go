package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatglm/chatglm/chat"
	"github.com/chatglm/chatglm/chat/python"
	"github.com/chatglm/chatglm/gen"
)

// testServer starts a server over fake with opts (and a discarded log).
func testServer(t *testing.T, fake *fakeBackend, opts Options) (*Server, *httptest.Server) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Sampling == (gen.Sampling{}) {
		opts.Sampling = chat.DefaultSampling()
	}
	s := New(opts)
	if fake != nil {
		s.SetBackend(fake)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return s, ts
}

func post(t *testing.T, url, body string, header ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func get(t *testing.T, url string, header ...string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// decodeBody reads a JSON response into v and closes it.
func decodeBody(t *testing.T, resp *http.Response, v any) {
	t.Helper()
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("response %d is not JSON: %v\n%s", resp.StatusCode, err, body)
	}
}

// wantError checks an error response's status, shape and code.
func wantError(t *testing.T, resp *http.Response, status int, code string) *APIError {
	t.Helper()
	if resp.StatusCode != status {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var raw map[string]map[string]any
	decodeBody(t, resp, &raw)
	e, ok := raw["error"]
	if !ok {
		t.Fatalf("no error object: %v", raw)
	}
	for _, k := range []string{"message", "type", "param", "code"} {
		if _, ok := e[k]; !ok {
			t.Errorf("error lacks %q: %v", k, e)
		}
	}
	ae := &APIError{Status: status}
	ae.Message, _ = e["message"].(string)
	ae.Type, _ = e["type"].(string)
	if c, ok := e["code"].(string); ok {
		ae.Code = &c
	}
	if p, ok := e["param"].(string); ok {
		ae.Param = &p
	}
	if code != "" && (ae.Code == nil || *ae.Code != code) {
		t.Errorf("code %v, want %q (%s)", e["code"], code, ae.Message)
	}
	if ae.Message == "" || ae.Type == "" {
		t.Errorf("empty message or type: %v", e)
	}
	return ae
}

const hello = `{"model":"chatglm3-6b","messages":[{"role":"user","content":"你好"}]}`

func TestHealthBeforeAndAfterLoad(t *testing.T) {
	s, ts := testServer(t, nil, Options{})
	resp := get(t, ts.URL+"/health")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("health before load: %d", resp.StatusCode)
	}
	resp.Body.Close()
	wantError(t, post(t, ts.URL+"/v1/chat/completions", hello), http.StatusServiceUnavailable, "model_loading")
	s.SetBackend(newFake(1, 512))
	resp = get(t, ts.URL+"/health")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("health after load: %d", resp.StatusCode)
	}
	resp.Body.Close()
	s.SetClosing()
	resp = get(t, ts.URL+"/health")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("health while closing: %d", resp.StatusCode)
	}
	resp.Body.Close()
	wantError(t, post(t, ts.URL+"/v1/chat/completions", hello), http.StatusServiceUnavailable, "shutting_down")
}

func TestModels(t *testing.T) {
	_, ts := testServer(t, newFake(1, 512), Options{ModelID: "chatglm3-6b", Aliases: []string{"THUDM/chatglm3-6b"}})
	var list modelList
	decodeBody(t, get(t, ts.URL+"/v1/models"), &list)
	if list.Object != "list" || len(list.Data) != 1 || list.Data[0].ID != "chatglm3-6b" || list.Data[0].Object != "model" {
		t.Fatalf("models: %+v", list)
	}
	var one modelInfo
	decodeBody(t, get(t, ts.URL+"/v1/models/THUDM/chatglm3-6b"), &one)
	if one.ID != "chatglm3-6b" {
		t.Fatalf("model by alias: %+v", one)
	}
	wantError(t, get(t, ts.URL+"/v1/models/gpt-4"), http.StatusNotFound, "model_not_found")
	wantError(t, post(t, ts.URL+"/v1/chat/completions", `{"model":"gpt-4","messages":[{"role":"user","content":"hi"}]}`),
		http.StatusNotFound, "model_not_found")
	wantError(t, post(t, ts.URL+"/v1/completions", `{"model":"gpt-4","prompt":"hi"}`), http.StatusNotFound, "model_not_found")
	// An alias and an empty model are accepted.
	for _, m := range []string{`"THUDM/chatglm3-6b"`, `""`} {
		resp := post(t, ts.URL+"/v1/chat/completions", `{"model":`+m+`,"messages":[{"role":"user","content":"hi"}]}`)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("model %s: status %d", m, resp.StatusCode)
		}
		resp.Body.Close()
	}
}

func TestChatNonStream(t *testing.T) {
	fake := newFake(1, 512)
	_, ts := testServer(t, fake, Options{})
	var got chatCompletion
	resp := post(t, ts.URL+"/v1/chat/completions",
		`{"model":"chatglm3-6b","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"你好"}],"temperature":0,"seed":7}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	decodeBody(t, resp, &got)
	if got.Object != "chat.completion" || !strings.HasPrefix(got.ID, "chatcmpl-") || got.Model != "chatglm3-6b" || len(got.Choices) != 1 {
		t.Fatalf("reply: %+v", got)
	}
	c := got.Choices[0]
	if c.Message == nil || c.Message.Role != "assistant" || c.Message.Content == nil || *c.Message.Content != "Hello!" {
		t.Fatalf("message: %+v", c.Message)
	}
	if c.FinishReason == nil || *c.FinishReason != "stop" {
		t.Fatalf("finish: %v", c.FinishReason)
	}
	req := <-fake.started
	want, _ := chat.BuildPrompt(fake, []chat.Message{{Role: chat.RoleSystem, Content: "Be brief."}, {Role: chat.RoleUser, Content: "你好"}})
	if !slices.Equal(req.Prompt, want) {
		t.Fatalf("prompt %v, want %v", req.Prompt, want)
	}
	if !slices.Equal(req.Stop, chat.StopTokens()) {
		t.Errorf("stop ids %v", req.Stop)
	}
	if req.Sampling.Temperature != 0 || req.Sampling.Seed != 7 || req.Sampling.TopP != 0.8 {
		t.Errorf("sampling %+v", req.Sampling)
	}
	if got.Usage == nil || got.Usage.PromptTokens != len(want) || got.Usage.CompletionTokens != 7 || got.Usage.TotalTokens != len(want)+7 {
		t.Errorf("usage %+v (prompt %d)", got.Usage, len(want))
	}
	if req.MaxTokens != 512-len(want) {
		t.Errorf("max tokens %d, want the rest of the context %d", req.MaxTokens, 512-len(want))
	}
}

// sseEvents reads a stream's data lines until [DONE] (which it reports).
func sseEvents(t *testing.T, resp *http.Response) (events []json.RawMessage, done bool) {
	t.Helper()
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("not a data line: %q", line)
		}
		if data == "[DONE]" {
			return events, true
		}
		events = append(events, json.RawMessage(data))
	}
	return events, false
}

// chatStream collects a streamed chat reply.
func chatStream(t *testing.T, resp *http.Response) (content string, calls []toolCall, finish string, u *usage) {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	events, done := sseEvents(t, resp)
	if !done {
		t.Fatal("stream ended without [DONE]")
	}
	for i, ev := range events {
		var c chatCompletion
		if err := json.Unmarshal(ev, &c); err != nil {
			t.Fatal(err)
		}
		if c.Object != "chat.completion.chunk" {
			t.Fatalf("event %d: object %q", i, c.Object)
		}
		if c.Usage != nil {
			u = c.Usage
			continue
		}
		d := c.Choices[0].Delta
		if i == 0 && d.Role != "assistant" {
			t.Errorf("first chunk has no role: %s", ev)
		}
		if d.Content != nil {
			content += *d.Content
		}
		calls = append(calls, d.ToolCalls...)
		if f := c.Choices[0].FinishReason; f != nil {
			finish = *f
			if !strings.Contains(string(ev), `"delta":{}`) {
				t.Errorf("the finish chunk has a non-empty delta: %s", ev)
			}
		}
	}
	return content, calls, finish, u
}

func TestChatStream(t *testing.T) {
	fake := newFake(1, 512)
	fake.reply = func(gen.Request) []gen.Token {
		// A Chinese character split over byte pieces must arrive whole.
		b := []byte("好")
		return fake.toks(" ", "\n", " 你", gen.Token{ID: 300, Piece: b[:1]}, gen.Token{ID: 301, Piece: b[1:]}, "!")
	}
	_, ts := testServer(t, fake, Options{})
	content, calls, finish, u := chatStream(t, post(t, ts.URL+"/v1/chat/completions",
		`{"messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}`))
	if content != "你好!" || len(calls) != 0 || finish != "stop" {
		t.Fatalf("content %q calls %v finish %q", content, calls, finish)
	}
	if u == nil || u.CompletionTokens != 7 {
		t.Fatalf("usage %+v", u)
	}
}

func TestChatMaxTokensFinishLength(t *testing.T) {
	fake := newFake(1, 512)
	_, ts := testServer(t, fake, Options{})
	var got chatCompletion
	decodeBody(t, post(t, ts.URL+"/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":4}`), &got)
	if f := got.Choices[0].FinishReason; f == nil || *f != "length" {
		t.Fatalf("finish %v", f)
	}
	if c := *got.Choices[0].Message.Content; c != "Hel" {
		t.Fatalf("content %q", c)
	}
	if got.Usage.CompletionTokens != 4 {
		t.Fatalf("usage %+v", got.Usage)
	}
}

func TestChatStopStrings(t *testing.T) {
	fake := newFake(1, 512)
	fake.reply = func(gen.Request) []gen.Token { return fake.toks("\n", "one, two, three, four") }
	_, ts := testServer(t, fake, Options{})
	var got chatCompletion
	decodeBody(t, post(t, ts.URL+"/v1/chat/completions",
		`{"messages":[{"role":"user","content":"count"}],"stop":["three","zzz"]}`), &got)
	if c := *got.Choices[0].Message.Content; c != "one, two, " || *got.Choices[0].FinishReason != "stop" {
		t.Fatalf("content %q finish %s", c, *got.Choices[0].FinishReason)
	}
	// The generation ended at the stop sequence, not at the end of the script.
	if got.Usage.CompletionTokens >= len(fake.toks("\n", "one, two, three, four")) {
		t.Errorf("generation went on after the stop sequence: %d tokens", got.Usage.CompletionTokens)
	}
	content, _, finish, _ := chatStream(t, post(t, ts.URL+"/v1/chat/completions",
		`{"messages":[{"role":"user","content":"count"}],"stop":"two,","stream":true}`))
	if content != "one, " || finish != "stop" {
		t.Fatalf("stream content %q finish %q", content, finish)
	}
}

const weatherTools = `[{"type":"function","function":{"name":"get_weather","description":"Weather of a city","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]`

func TestChatToolCall(t *testing.T) {
	fake := newFake(1, 512)
	fake.reply = func(gen.Request) []gen.Token {
		return fake.toks("get_weather\n```python\ntool_call(city=\"北京\", days=3)\n```")
	}
	_, ts := testServer(t, fake, Options{})
	body := `{"messages":[{"role":"user","content":"北京天气"}],"tools":` + weatherTools + `}`
	var got chatCompletion
	decodeBody(t, post(t, ts.URL+"/v1/chat/completions", body), &got)
	if len(got.Choices) != 1 {
		t.Fatalf("reply %+v", got)
	}
	c := got.Choices[0]
	if *c.FinishReason != "tool_calls" || len(c.Message.ToolCalls) != 1 || c.Message.Content != nil {
		t.Fatalf("reply %+v", c.Message)
	}
	call := c.Message.ToolCalls[0]
	if call.Type != "function" || !strings.HasPrefix(call.ID, "call_") || call.Function.Name != "get_weather" ||
		call.Function.Arguments != `{"city":"北京","days":3}` {
		t.Fatalf("tool call %+v", call)
	}
	// The tools went into a system message, as the official demo does.
	req := <-fake.started
	want, _ := chat.BuildPrompt(fake, []chat.Message{
		{Role: chat.RoleSystem, Content: ToolSystemPrompt, Tools: json.RawMessage(`[{"name":"get_weather","description":"Weather of a city","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}]`)},
		{Role: chat.RoleUser, Content: "北京天气"}})
	if !slices.Equal(req.Prompt, want) {
		t.Fatal("prompt differs from the ChatGLM3 tools prompt")
	}

	content, calls, finish, _ := chatStream(t, post(t, ts.URL+"/v1/chat/completions",
		`{"stream":true,"messages":[{"role":"user","content":"北京天气"}],"tools":`+weatherTools+`}`))
	if content != "" || finish != "tool_calls" || len(calls) != 1 || calls[0].Function.Name != "get_weather" ||
		calls[0].Index == nil || *calls[0].Index != 0 || calls[0].Function.Arguments != `{"city":"北京","days":3}` {
		t.Fatalf("stream: content %q finish %q calls %+v", content, finish, calls)
	}

	// Without tools the same reply is text, not a call.
	got = chatCompletion{}
	decodeBody(t, post(t, ts.URL+"/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}]}`), &got)
	if *got.Choices[0].FinishReason != "stop" || got.Choices[0].Message.ToolCalls != nil ||
		!strings.HasPrefix(*got.Choices[0].Message.Content, "get_weather\n```python") {
		t.Fatalf("no tools: %+v", got.Choices[0].Message)
	}
}

func TestChatToolChoice(t *testing.T) {
	fake := newFake(1, 512)
	fake.reply = func(gen.Request) []gen.Token { return fake.toks("```python\ntool_call(city='x')\n```") }
	_, ts := testServer(t, fake, Options{})
	var got chatCompletion
	decodeBody(t, post(t, ts.URL+"/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"tools":`+weatherTools+
		`,"tool_choice":{"type":"function","function":{"name":"get_weather"}}}`), &got)
	if *got.Choices[0].FinishReason != "tool_calls" || got.Choices[0].Message.ToolCalls[0].Function.Arguments != `{"city":"x"}` {
		t.Fatalf("forced call: %+v", got.Choices[0].Message)
	}
	req := <-fake.started
	name, _ := fake.Tokenize("get_weather\n")
	if !slices.Equal(req.Prompt[len(req.Prompt)-len(name):], name) || req.Prompt[len(req.Prompt)-len(name)-1] != chat.TokenAssistant {
		t.Fatal("the forced tool name does not follow <|assistant|>")
	}
	// tool_choice none leaves the tools out of the prompt.
	got = chatCompletion{}
	decodeBody(t, post(t, ts.URL+"/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"tools":`+weatherTools+`,"tool_choice":"none"}`), &got)
	req = <-fake.started
	plain, _ := chat.BuildPrompt(fake, []chat.Message{{Role: chat.RoleUser, Content: "hi"}})
	if !slices.Equal(req.Prompt, plain) {
		t.Fatal("tool_choice none: tools are in the prompt")
	}
	wantError(t, post(t, ts.URL+"/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"tools":`+weatherTools+
		`,"tool_choice":{"type":"function","function":{"name":"nope"}}}`), http.StatusBadRequest, "")
}

func TestMapChatToolHistory(t *testing.T) {
	body := `{"messages":[
		{"role":"system","content":"You are helpful."},
		{"role":"user","content":"Weather in Paris?"},
		{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Paris\", \"opts\": {\"unit\": \"c\", \"alerts\": [true, null]}, \"a-b\": 1.5}"}}]},
		{"role":"tool","tool_call_id":"call_1","content":"{\"temp\": 21}"},
		{"role":"user","content":[{"type":"text","text":"Thanks"},{"type":"text","text":"!"}]}],
		"tools":` + weatherTools + `}`
	var req chatRequest
	if err := json.Unmarshal([]byte(body), &req); err != nil {
		t.Fatal(err)
	}
	cp, err := mapChat(&req)
	if err != nil {
		t.Fatal(err)
	}
	want := []chat.Message{
		{Role: chat.RoleSystem, Content: "You are helpful.", Tools: json.RawMessage(`[{"name":"get_weather","description":"Weather of a city","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}]`)},
		{Role: chat.RoleUser, Content: "Weather in Paris?"},
		{Role: chat.RoleAssistant, Metadata: "get_weather", Content: "```python\ntool_call(city=\"Paris\", opts={\"unit\": \"c\", \"alerts\": [True, None]}, **{\"a-b\": 1.5})\n```"},
		{Role: chat.RoleObservation, Content: `{"temp": 21}`},
		{Role: chat.RoleUser, Content: "Thanks!"},
	}
	if len(cp.msgs) != len(want) || !cp.hasTools || cp.forced != "" {
		t.Fatalf("got %+v", cp)
	}
	for i := range want {
		g, w := cp.msgs[i], want[i]
		if g.Role != w.Role || g.Content != w.Content || g.Metadata != w.Metadata || string(g.Tools) != string(w.Tools) {
			t.Errorf("message %d:\n got %+v\nwant %+v", i, g, w)
		}
	}
	// The call written into the history parses back with chat's parser.
	args, err := python.ParseToolCall("tool_call(city=\"Paris\", opts={\"unit\": \"c\", \"alerts\": [True, None]})")
	if err != nil || len(args) != 2 {
		t.Fatalf("parse back: %v %v", args, err)
	}
}

func TestCompletions(t *testing.T) {
	fake := newFake(1, 512)
	fake.reply = func(gen.Request) []gen.Token {
		return fake.toks(" world", gen.Token{ID: chat.TokenUser}, " again")
	}
	_, ts := testServer(t, fake, Options{})
	var got textCompletion
	decodeBody(t, post(t, ts.URL+"/v1/completions", `{"model":"chatglm3-6b","prompt":"Hello","max_tokens":20}`), &got)
	if got.Object != "text_completion" || got.Choices[0].Text != " world<|user|> again" || *got.Choices[0].FinishReason != "stop" {
		t.Fatalf("reply %+v", got)
	}
	req := <-fake.started
	ids, _ := fake.Tokenize("Hello")
	if !slices.Equal(req.Prompt, append(chat.PromptPrefix(), ids...)) || !slices.Equal(req.Stop, []int32{chat.TokenEOS}) {
		t.Fatalf("prompt %v stop %v", req.Prompt, req.Stop)
	}
	// Token ids, a one-string array, and streaming.
	decodeBody(t, post(t, ts.URL+"/v1/completions", `{"prompt":[64790,64792,1000]}`), &got)
	if req = <-fake.started; !slices.Equal(req.Prompt, []int32{64790, 64792, 1000}) {
		t.Fatalf("token prompt %v", req.Prompt)
	}
	decodeBody(t, post(t, ts.URL+"/v1/completions", `{"prompt":["Hello"]}`), &got)
	<-fake.started
	resp := post(t, ts.URL+"/v1/completions", `{"prompt":"Hello","stream":true,"stop":"again","stream_options":{"include_usage":true}}`)
	events, done := sseEvents(t, resp)
	var text, finish string
	var u *usage
	for _, ev := range events {
		var c textCompletion
		json.Unmarshal(ev, &c)
		if c.Usage != nil {
			u = c.Usage
		}
		for _, ch := range c.Choices {
			text += ch.Text
			if ch.FinishReason != nil {
				finish = *ch.FinishReason
			}
		}
	}
	if !done || text != " world<|user|> " || finish != "stop" || u == nil {
		t.Fatalf("stream: done %v text %q finish %q usage %v", done, text, finish, u)
	}
}

func TestRequestErrors(t *testing.T) {
	fake := newFake(1, 64)
	_, ts := testServer(t, fake, Options{MaxBodyBytes: 2048})
	chatURL := ts.URL + "/v1/chat/completions"
	for _, tc := range []struct {
		name, url, body string
		status          int
		code, param     string
	}{
		{"malformed JSON", chatURL, `{"messages": [`, 400, "invalid_json", ""},
		{"not an object", chatURL, `[1,2]`, 400, "invalid_json", ""},
		{"empty body", chatURL, ``, 400, "invalid_json", ""},
		{"trailing data", chatURL, `{} {}`, 400, "invalid_json", ""},
		{"wrong type temperature", chatURL, `{"messages":[{"role":"user","content":"hi"}],"temperature":"hot"}`, 400, "invalid_type", "temperature"},
		{"wrong type messages", chatURL, `{"messages":"hi"}`, 400, "invalid_type", "messages"},
		{"wrong type stream", chatURL, `{"messages":[{"role":"user","content":"hi"}],"stream":"yes"}`, 400, "invalid_type", "stream"},
		{"wrong type content", chatURL, `{"messages":[{"role":"user","content":42}]}`, 400, "", "messages.[0].content"},
		{"wrong type stop", chatURL, `{"messages":[{"role":"user","content":"hi"}],"stop":5}`, 400, "", "stop"},
		{"temperature range", chatURL, `{"messages":[{"role":"user","content":"hi"}],"temperature":3}`, 400, "", "temperature"},
		{"n=2", chatURL, `{"messages":[{"role":"user","content":"hi"}],"n":2}`, 400, "", "n"},
		{"max_tokens 0", chatURL, `{"messages":[{"role":"user","content":"hi"}],"max_tokens":0}`, 400, "", "max_tokens"},
		{"no messages", chatURL, `{"messages":[]}`, 400, "", "messages"},
		{"bad role", chatURL, `{"messages":[{"role":"wizard","content":"hi"}]}`, 400, "", "messages.[0].role"},
		{"image part", chatURL, `{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}`, 400, "", "messages.[0].content.0.type"},
		{"bad tool args", chatURL, `{"messages":[{"role":"assistant","tool_calls":[{"id":"1","type":"function","function":{"name":"f","arguments":"[1]"}}]}]}`, 400, "", "messages.[0].tool_calls.[0].function.arguments"},
		{"prompt too long", chatURL, `{"messages":[{"role":"user","content":"` + strings.Repeat("x", 100) + `"}]}`, 400, "context_length_exceeded", "messages"},
		{"prompt + max_tokens too long", chatURL, `{"messages":[{"role":"user","content":"hi"}],"max_tokens":60}`, 400, "context_length_exceeded", "messages"},
		{"completion too long", ts.URL + "/v1/completions", `{"prompt":"` + strings.Repeat("x", 100) + `"}`, 400, "context_length_exceeded", "prompt"},
		{"completion no prompt", ts.URL + "/v1/completions", `{"max_tokens":3}`, 400, "", "prompt"},
		{"completion bad token", ts.URL + "/v1/completions", `{"prompt":[-1]}`, 400, "", "prompt"},
		{"body too large", chatURL, `{"messages":[{"role":"user","content":"` + strings.Repeat("x", 4096) + `"}]}`, 413, "request_too_large", ""},
		{"unknown route", ts.URL + "/v1/embeddings", `{}`, 404, "unknown_url", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ae := wantError(t, post(t, tc.url, tc.body), tc.status, tc.code)
			if tc.param != "" && (ae.Param == nil || *ae.Param != tc.param) {
				t.Errorf("param %v, want %q (%s)", ae.Param, tc.param, ae.Message)
			}
			if tc.code == "context_length_exceeded" && !strings.Contains(ae.Message, "64 tokens") {
				t.Errorf("message lacks the counts: %s", ae.Message)
			}
		})
	}
	ae := wantError(t, post(t, chatURL, `{"messages":[{"role":"user","content":"`+strings.Repeat("x", 100)+`"}]}`), 400, "context_length_exceeded")
	// [gMASK] sop <|user|> sp("\n") (2) sp(content) (101) <|assistant|> = 107 tokens.
	if !strings.Contains(ae.Message, "107 tokens") {
		t.Errorf("message lacks the prompt's count: %s", ae.Message)
	}
	resp := get(t, chatURL)
	wantError(t, resp, http.StatusMethodNotAllowed, "method_not_allowed")
	if fake.released.Load() != 0 {
		t.Errorf("a rejected request took a sequence")
	}
}

func TestAPIKey(t *testing.T) {
	_, ts := testServer(t, newFake(1, 512), Options{APIKey: "sekret"})
	wantError(t, post(t, ts.URL+"/v1/chat/completions", hello), http.StatusUnauthorized, "missing_api_key")
	wantError(t, post(t, ts.URL+"/v1/chat/completions", hello, "Authorization", "Bearer wrong"), http.StatusUnauthorized, "invalid_api_key")
	wantError(t, get(t, ts.URL+"/v1/models", "Authorization", "sekret"), http.StatusUnauthorized, "invalid_api_key")
	wantError(t, get(t, ts.URL+"/metrics"), http.StatusUnauthorized, "missing_api_key")
	resp := post(t, ts.URL+"/v1/chat/completions", hello, "Authorization", "Bearer sekret")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("right key: %d", resp.StatusCode)
	}
	resp.Body.Close()
	resp = get(t, ts.URL+"/health")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("health needs no key: %d", resp.StatusCode)
	}
	resp.Body.Close()
}

func TestCORS(t *testing.T) {
	_, off := testServer(t, newFake(1, 512), Options{})
	resp := get(t, off.URL+"/v1/models", "Origin", "https://example.com")
	resp.Body.Close()
	if h := resp.Header.Get("Access-Control-Allow-Origin"); h != "" {
		t.Fatalf("CORS is on by default: %q", h)
	}
	_, on := testServer(t, newFake(1, 512), Options{CORSOrigins: []string{"https://app.example"}, APIKey: "k"})
	req, _ := http.NewRequest(http.MethodOptions, on.URL+"/v1/chat/completions", nil)
	req.Header.Set("Origin", "https://app.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
	resp = get(t, on.URL+"/v1/models", "Origin", "https://evil.example", "Authorization", "Bearer k")
	resp.Body.Close()
	if h := resp.Header.Get("Access-Control-Allow-Origin"); h != "" {
		t.Fatalf("unlisted origin allowed: %q", h)
	}
}

func TestQueueFull(t *testing.T) {
	fake := newFake(1, 512)
	fake.hold = make(chan struct{})
	s, ts := testServer(t, fake, Options{Queue: 1})
	results := make(chan int, 2)
	for i := 0; i < 2; i++ {
		go func() {
			resp := post(t, ts.URL+"/v1/chat/completions", hello)
			resp.Body.Close()
			results <- resp.StatusCode
		}()
	}
	// One generates, one waits in the queue.
	<-fake.started
	waitFor(t, func() bool { return s.state.Load().waiting.Load() == 1 })
	wantError(t, post(t, ts.URL+"/v1/chat/completions", hello), http.StatusTooManyRequests, "queue_full")
	var metrics bytes.Buffer
	s.writeMetrics(&metrics)
	for _, want := range []string{"chatglm_queue_depth 1\n", "chatglm_sequences_active 1\n", "chatglm_requests_rejected_total 1\n"} {
		if !strings.Contains(metrics.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, metrics.String())
		}
	}
	close(fake.hold)
	for i := 0; i < 2; i++ {
		if code := <-results; code != http.StatusOK {
			t.Errorf("queued request: %d", code)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestDisconnectFreesSequence: a client that goes away mid-stream cancels
// its generation and frees the only sequence for the next request.
func TestDisconnectFreesSequence(t *testing.T) {
	fake := newFake(1, 512)
	fake.hold = make(chan struct{}) // generations never finish by themselves
	_, ts := testServer(t, fake, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+"/v1/chat/completions",
		strings.NewReader(`{"messages":[{"role":"user","content":"hi"}],"stream":true}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	// Read the first event, then hang up.
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "data: ") {
		t.Fatalf("first event: %q %v", line, err)
	}
	cancel()
	resp.Body.Close()
	waitFor(t, func() bool { return fake.cancelled.Load() == 1 && fake.released.Load() == 1 })
	// The sequence is free: a second request gets it (and is cancelled by
	// its own deadline, since the fake holds it).
	fake.hold = nil
	resp = post(t, ts.URL+"/v1/chat/completions", hello)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("second request: %d", resp.StatusCode)
	}
	resp.Body.Close()
}

func TestTimeout(t *testing.T) {
	fake := newFake(1, 512)
	fake.hold = make(chan struct{})
	defer close(fake.hold)
	_, ts := testServer(t, fake, Options{Timeout: 200 * time.Millisecond})
	wantError(t, post(t, ts.URL+"/v1/chat/completions", hello), http.StatusGatewayTimeout, "timeout")
	waitFor(t, func() bool { return fake.released.Load() == 1 })
	// Streaming: the timeout arrives as an error event after the headers.
	resp := post(t, ts.URL+"/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"stream":true}`)
	events, done := sseEvents(t, resp)
	if done || len(events) == 0 || !strings.Contains(string(events[len(events)-1]), `"code":"timeout"`) {
		t.Fatalf("stream timeout: done %v events %s", done, events)
	}
}

func TestMetricsAndLog(t *testing.T) {
	var logBuf syncBuffer
	fake := newFake(2, 512)
	_, ts := testServer(t, fake, Options{Logger: slog.New(slog.NewTextHandler(&logBuf, nil))})
	resp := post(t, ts.URL+"/v1/chat/completions", `{"messages":[{"role":"user","content":"secret prompt text"}]}`)
	resp.Body.Close()
	resp = get(t, ts.URL+"/metrics")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("metrics Content-Type %q", ct)
	}
	for _, want := range []string{
		`chatglm_http_requests_total{route="/v1/chat/completions",status="200"} 1`,
		"chatglm_generated_tokens_total 7\n", "chatglm_queue_depth 0\n", "chatglm_sequences 2\n",
		"# TYPE chatglm_generation_tokens_per_second gauge\n", "chatglm_model_loaded 1\n",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	log := logBuf.String()
	if strings.Contains(log, "secret") || strings.Contains(log, "Hello") {
		t.Errorf("the log holds prompt or reply text:\n%s", log)
	}
	if n := strings.Count(log, "msg=request"); n != 2 {
		t.Errorf("%d log lines for 2 requests:\n%s", n, log)
	}
	if !strings.Contains(log, "path=/v1/chat/completions status=200") || !strings.Contains(log, "completion_tokens=7") {
		t.Errorf("log line lacks fields:\n%s", log)
	}
}

func TestStopMatcher(t *testing.T) {
	for _, tc := range []struct {
		stops  []string
		chunks []string
		want   string
		hit    bool
	}{
		{nil, []string{"ab", "cd"}, "abcd", false},
		{[]string{"STOP"}, []string{"abc ST", "O", "P more"}, "abc ", true},
		{[]string{"STOP"}, []string{"abc ST", "OX"}, "abc STOX", false},
		{[]string{"STOP"}, []string{"abc ST"}, "abc ST", false},
		{[]string{"xyz", "b"}, []string{"axyb"}, "axy", true},
		{[]string{"世界"}, []string{"你好世", "界!"}, "你好", true},
	} {
		m := stopMatcher{stops: tc.stops}
		var got string
		hit := false
		for _, c := range tc.chunks {
			out, h := m.write(c)
			got += out
			if h {
				hit = true
				break
			}
		}
		got += m.flush()
		if got != tc.want || hit != tc.hit {
			t.Errorf("%v %q: got %q hit %v, want %q %v", tc.stops, tc.chunks, got, hit, tc.want, tc.hit)
		}
	}
}
