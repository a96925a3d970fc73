package web_test

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/chatglm/chatglm/chat"
	"github.com/chatglm/chatglm/gen"
	"github.com/chatglm/chatglm/server"
	"github.com/chatglm/chatglm/server/web"
)

func testSettings() web.Settings {
	return web.Settings{Model: "tiny", ContextSize: 4096, Temperature: 0.7, TopP: 0.8, TopK: 50, RepeatPenalty: 1,
		ToolSystemPrompt: server.ToolSystemPrompt}
}

func newPage(t testing.TB) *web.Page {
	t.Helper()
	p, err := web.New(testSettings)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAssetsSize keeps the embedded page under its budget.
func TestAssetsSize(t *testing.T) {
	p := newPage(t)
	if n := p.Size(); n > web.MaxAssetBytes || n < 10000 {
		t.Fatalf("the page's assets are %d bytes; want 10 KB .. %d", n, web.MaxAssetBytes)
	} else {
		t.Logf("assets: %d bytes uncompressed", n)
	}
}

func get(t *testing.T, url string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultTransport.RoundTrip(req) // no transparent gunzip
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// TestServeHeaders checks what the server sends: the page and its hashed
// assets, gzip when asked, ETags and 304, immutable caching for hashed
// names, the security headers, the key needed for the settings but not for
// the files, and the JSON API's 404 for anything else.
func TestServeHeaders(t *testing.T) {
	srv := server.New(server.Options{APIKey: "k", Web: newPage(t), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	srv.SetBackend(newFakeBackend(1, 4096))
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()

	resp, body := get(t, ts.URL+"/", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /: %d %s", resp.StatusCode, body)
	}
	checkSecurityHeaders(t, resp.Header)
	if cc := resp.Header.Get("Cache-Control"); cc != "no-cache" {
		t.Errorf("GET /: Cache-Control %q, want no-cache", cc)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("GET /: Content-Type %q", ct)
	}
	html := string(body)
	refs := regexp.MustCompile(`"(/assets/[^"]+)"`).FindAllStringSubmatch(html, -1)
	if len(refs) != 3 {
		t.Fatalf("index.html names %d assets, want 3 (icon, css, js): %v", len(refs), refs)
	}
	for _, r := range refs {
		if !regexp.MustCompile(`\.[0-9a-f]{12}\.(js|css|svg)$`).MatchString(r[1]) {
			t.Errorf("%s is not a content-hashed name", r[1])
		}
		resp, gz := get(t, ts.URL+r[1], map[string]string{"Accept-Encoding": "br, gzip;q=0.8"})
		if resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != "gzip" {
			t.Fatalf("GET %s with gzip: %d, Content-Encoding %q", r[1], resp.StatusCode, resp.Header.Get("Content-Encoding"))
		}
		checkSecurityHeaders(t, resp.Header)
		if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, "immutable") {
			t.Errorf("GET %s: Cache-Control %q, want immutable", r[1], cc)
		}
		zr, err := gzip.NewReader(strings.NewReader(string(gz)))
		if err != nil {
			t.Fatal(err)
		}
		plain, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		resp2, raw := get(t, ts.URL+r[1], nil)
		if resp2.Header.Get("Content-Encoding") != "" || string(raw) != string(plain) {
			t.Errorf("GET %s without gzip: Content-Encoding %q, body differs from the gunzipped one", r[1], resp2.Header.Get("Content-Encoding"))
		}
		if len(gz) >= len(raw) && len(raw) > 1000 {
			t.Errorf("%s: gzip %d bytes is not smaller than %d", r[1], len(gz), len(raw))
		}
		resp3, _ := get(t, ts.URL+r[1], map[string]string{"If-None-Match": resp.Header.Get("ETag")})
		if resp3.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s with its ETag: %d, want 304", r[1], resp3.StatusCode)
		}
	}
	// gzip;q=0 refuses gzip.
	if resp, _ := get(t, ts.URL+"/", map[string]string{"Accept-Encoding": "gzip;q=0"}); resp.Header.Get("Content-Encoding") != "" {
		t.Errorf("gzip;q=0 got Content-Encoding %q", resp.Header.Get("Content-Encoding"))
	}
	// The settings need the key; unknown paths stay the API's JSON 404.
	if resp, _ := get(t, ts.URL+"/web/settings", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /web/settings without the key: %d, want 401", resp.StatusCode)
	}
	resp, body = get(t, ts.URL+"/web/settings", map[string]string{"Authorization": "Bearer k"})
	var s web.Settings
	if err := json.Unmarshal(body, &s); err != nil || resp.StatusCode != 200 || s != testSettings() {
		t.Errorf("GET /web/settings: %d %s (%v)", resp.StatusCode, body, err)
	}
	for _, path := range []string{"/assets/app.js", "/assets/nope.0123456789ab.js", "/index.html", "/v1/nope"} {
		resp, body := get(t, ts.URL+path, map[string]string{"Authorization": "Bearer k"})
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, resp.StatusCode)
		}
		if path == "/v1/nope" && !strings.Contains(string(body), `"error"`) {
			t.Errorf("GET %s: not the API's JSON error: %s", path, body)
		}
	}
	// Without a page, / is the API's 404.
	bare := server.New(server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ts2 := httptest.NewServer(bare.Handler())
	defer ts2.Close()
	if resp, _ := get(t, ts2.URL+"/", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET / without the page: %d, want 404", resp.StatusCode)
	}
}

func checkSecurityHeaders(t *testing.T, h http.Header) {
	t.Helper()
	csp := h.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
		t.Errorf("Content-Security-Policy allows unsafe code: %q", csp)
	}
	if h.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("X-Content-Type-Options %q", h.Get("X-Content-Type-Options"))
	}
}

// FuzzServe sends arbitrary paths and Accept-Encoding headers to the page's
// routes: they answer 200, 304 or 404 and never panic.
func FuzzServe(f *testing.F) {
	p := newPage(f)
	mux := http.NewServeMux()
	p.Register(mux)
	for _, s := range [][2]string{{"/", "gzip"}, {"/assets/app.js", "gzip;q=0"}, {"/assets/../", "*"}, {"/web/settings", ""}, {"//", "GZIP ; q=0.5,br"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, path, enc string) {
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \r\n\t?#%") || !utf8.ValidString(path) {
			return
		}
		// A path net/http would not parse (control characters) never
		// reaches a handler.
		req, err := http.NewRequest(http.MethodGet, "http://x"+path, nil)
		if err != nil {
			return
		}
		req.Header.Set("Accept-Encoding", enc)
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, req)
		switch w.Code {
		case 200, 304, 404, 301, 307, 308, 405:
		default:
			t.Fatalf("GET %q: %d", path, w.Code)
		}
		if w.Code == 200 && w.Header().Get("Content-Encoding") == "gzip" && !strings.Contains(strings.ToLower(enc), "gzip") && !strings.Contains(enc, "*") {
			t.Fatalf("gzip sent to Accept-Encoding %q", enc)
		}
	})
}

// fakeBackend is a scripted server.Backend: one token per rune, and replies
// chosen by the test, sent one token per delay.
type fakeBackend struct {
	ctxSize, parallel int
	free              chan *fakeSeq
	mu                sync.Mutex
	ids               map[string]int32
	pieces            map[int32]string

	reply     atomic.Pointer[func(prompt string) string]
	delay     atomic.Int64 // nanoseconds between tokens
	active    atomic.Int64
	cancelled atomic.Int64
	prompts   chan string // every prompt, as text with special tokens as <|id|>
}

func newFakeBackend(parallel, ctxSize int) *fakeBackend {
	f := &fakeBackend{ctxSize: ctxSize, parallel: parallel, free: make(chan *fakeSeq, parallel),
		ids: map[string]int32{}, pieces: map[int32]string{}, prompts: make(chan string, 100)}
	for range parallel {
		f.free <- &fakeSeq{f}
	}
	f.setReply(func(string) string { return "Hello!" })
	return f
}

func (f *fakeBackend) setReply(fn func(prompt string) string) { f.reply.Store(&fn) }

func (f *fakeBackend) id(piece string) int32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if id, ok := f.ids[piece]; ok {
		return id
	}
	id := int32(1000 + len(f.ids))
	f.ids[piece], f.pieces[id] = id, piece
	return id
}

func (f *fakeBackend) Tokenize(text string) ([]int32, error) {
	ids := []int32{f.id(" ")}
	for _, r := range text {
		ids = append(ids, f.id(string(r)))
	}
	return ids, nil
}

func (f *fakeBackend) ContextSize() int { return f.ctxSize }
func (f *fakeBackend) Parallel() int    { return f.parallel }
func (f *fakeBackend) Stats() gen.Stats {
	return gen.Stats{Active: f.active.Load()}
}

func (f *fakeBackend) Acquire(ctx context.Context, prompt []int32) (server.Sequence, error) {
	select {
	case s := <-f.free:
		return s, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (f *fakeBackend) text(ids []int32) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var sb strings.Builder
	for _, id := range ids {
		if p, ok := f.pieces[id]; ok {
			sb.WriteString(p)
		} else {
			sb.WriteString("<|" + map[int32]string{chat.TokenSystem: "system", chat.TokenUser: "user",
				chat.TokenAssistant: "assistant", chat.TokenObservation: "observation"}[id] + "|>")
		}
	}
	return sb.String()
}

type fakeSeq struct{ f *fakeBackend }

func (s *fakeSeq) Release() { s.f.free <- s }

func (s *fakeSeq) Generate(ctx context.Context, req gen.Request, onToken func(gen.Token) error) (gen.Result, error) {
	f := s.f
	f.active.Add(1)
	defer f.active.Add(-1)
	prompt := f.text(req.Prompt)
	select {
	case f.prompts <- prompt:
	default:
	}
	res := gen.Result{PromptTokens: len(req.Prompt), EvaluatedTokens: len(req.Prompt), StopToken: -1}
	reply := (*f.reply.Load())(prompt)
	if !strings.Contains(reply, "\n") || !strings.HasPrefix(reply, "get_") {
		reply = "\n" + reply // the empty metadata line of a plain reply
	}
	for _, r := range reply {
		if d := time.Duration(f.delay.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			f.cancelled.Add(1)
			res.Finish = gen.FinishCancelled
			return res, ctx.Err()
		}
		t := gen.Token{ID: f.id(string(r)), Piece: []byte(string(r))}
		res.Tokens = append(res.Tokens, t.ID)
		if err := onToken(t); err != nil {
			if err == gen.ErrStop {
				res.Finish = gen.FinishStop
				return res, nil
			}
			return res, err
		}
		if req.MaxTokens > 0 && len(res.Tokens) >= req.MaxTokens {
			res.Finish = gen.FinishLength
			return res, nil
		}
	}
	res.Finish, res.StopToken = gen.FinishStop, chat.TokenUser
	return res, nil
}
