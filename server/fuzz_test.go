package server

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/chatglm/chatglm/chat"
)

// FuzzRequestDecoding sends arbitrary bodies to the chat and text
// completion handlers: no panic, every answer a known status with an
// OpenAI-shaped body, and bounded work: never more text tokenized than the
// context can hold (see maxPieceBytes).
func FuzzRequestDecoding(f *testing.F) {
	for _, seed := range []string{
		hello,
		`{"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"stream":true,"stream_options":{"include_usage":true}}`,
		`{"messages":[{"role":"system","content":null},{"role":"user","content":"天气"}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}],"tool_choice":{"type":"function","function":{"name":"get_weather"}}}`,
		toolCallBody(`{\"city\": [1, {\"a\": null}], \"class\": 1e3}`),
		`{"messages":[{"role":"assistant","function_call":{"name":"f","arguments":"{}"}},{"role":"function","content":"x"}],"functions":[{"name":"f"}]}`,
		`{"messages":[null],"tools":[null],"stop":[null, "a"],"max_tokens":null,"n":null}`,
		`{"messages":[{"role":"user","content":"hi"}],"max_tokens":9223372036854775807,"top_k":-1,"seed":1e30}`,
		`{"prompt":"hello","max_tokens":3,"stop":["\n"]}`,
		`{"prompt":[1,2,3]}`,
		`{"prompt":["x"],"stream":true}`,
		`[` + strings.Repeat("[", 100),
	} {
		f.Add(seed)
	}
	fake := newFake(2, 256)
	s := New(Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Sampling: chat.DefaultSampling(), MaxBodyBytes: 64 << 10})
	s.SetBackend(fake)
	h := s.Handler()
	f.Fuzz(func(t *testing.T, body string) {
		for _, path := range []string{"/v1/chat/completions", "/v1/completions"} {
			before := fake.tokenized.Load()
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, strings.NewReader(body)))
			switch rec.Code {
			case http.StatusOK, http.StatusBadRequest, http.StatusNotFound, http.StatusRequestEntityTooLarge:
			default:
				t.Fatalf("%s: status %d: %s", path, rec.Code, rec.Body)
			}
			if rec.Code != http.StatusOK && !strings.Contains(rec.Body.String(), `"error":{`) {
				t.Fatalf("%s: %d without an error object: %s", path, rec.Code, rec.Body)
			}
			// Two encodes per message (metadata and content) may each add
			// a little; the text itself is bounded by the context.
			if n := fake.tokenized.Load() - before; n > int64(256*maxPieceBytes) {
				t.Fatalf("%s: %d bytes tokenized for one request", path, n)
			}
		}
	})
}
