// Package web is the browser chat page that `chatglm serve` shows at /: an
// HTML page, a script and a style sheet, embedded in the binary and served
// gzip-compressed under content-hashed names, with a strict
// Content-Security-Policy. The page talks to the server's own
// /v1/chat/completions; its defaults come from GET /web/settings.
//
// Nothing is fetched from outside the origin: the Markdown renderer is the
// page's own and builds DOM nodes, never HTML from strings.
package web

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
)

//go:embed assets
var assetFS embed.FS

// CSP is the Content-Security-Policy of every response of the page: scripts,
// styles and images from the origin only, no inline code, no frames, and
// fetches to the origin only.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; " +
	"form-action 'none'; frame-ancestors 'none'"

// MaxAssetBytes bounds the embedded assets' total size, uncompressed; a test
// keeps the page under it.
const MaxAssetBytes = 300 << 10

// Settings are the server's defaults that the page shows and starts from.
type Settings struct {
	Model       string  `json:"model"`
	ContextSize int     `json:"context_size"` // tokens per sequence; 0 while the model loads
	Temperature float64 `json:"temperature"`
	TopP        float64 `json:"top_p"`
	TopK        int     `json:"top_k"`
	MinP        float64 `json:"min_p"`
	// RepeatPenalty is 1 when off.
	RepeatPenalty float64 `json:"repeat_penalty"`
	// MaxTokens caps a reply; 0 is the rest of the context.
	MaxTokens int `json:"max_tokens"`
	// ToolSystemPrompt is the system text the server adds when a
	// conversation offers tools without a system message; the page writes
	// it into exported conversations so they replay the same prompt.
	ToolSystemPrompt string `json:"tool_system_prompt"`
}

// Page serves the chat page. Its zero value is not usable; create it with New.
type Page struct {
	settings func() Settings
	files    map[string]*asset // by URL path
}

// asset is one file, ready to serve.
type asset struct {
	body, gz    []byte
	contentType string
	etag        string
	immutable   bool // served under a content-hashed name
}

// New returns the page; settings is called for every GET /web/settings
// (nil serves zero Settings).
func New(settings func() Settings) (*Page, error) {
	if settings == nil {
		settings = func() Settings { return Settings{} }
	}
	p := &Page{settings: settings, files: map[string]*asset{}}
	raw := map[string][]byte{}
	err := fs.WalkDir(assetFS, "assets", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := assetFS.ReadFile(name)
		raw[strings.TrimPrefix(name, "assets/")] = b
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("web: read the embedded assets: %w", err)
	}
	index, ok := raw["index.html"]
	if !ok {
		return nil, fmt.Errorf("web: index.html is not embedded")
	}
	delete(raw, "index.html")
	// Every other asset gets a content-hashed URL, which index.html names.
	for name, b := range raw {
		sum := sha256.Sum256(b)
		ext := path.Ext(name)
		hashed := "/assets/" + strings.TrimSuffix(name, ext) + "." + hex.EncodeToString(sum[:6]) + ext
		index = bytes.ReplaceAll(index, []byte(`"/assets/`+name+`"`), []byte(`"`+hashed+`"`))
		a, err := newAsset(name, b)
		if err != nil {
			return nil, err
		}
		a.immutable = true
		p.files[hashed] = a
	}
	a, err := newAsset("index.html", index)
	if err != nil {
		return nil, err
	}
	p.files["/"] = a
	return p, nil
}

func newAsset(name string, b []byte) (*asset, error) {
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if _, err := zw.Write(b); err != nil {
		return nil, fmt.Errorf("web: compress %s: %w", name, err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("web: compress %s: %w", name, err)
	}
	ct := mime.TypeByExtension(path.Ext(name))
	if ct == "" {
		ct = "application/octet-stream"
	}
	sum := sha256.Sum256(b)
	return &asset{body: b, gz: gz.Bytes(), contentType: ct, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}, nil
}

// Register adds the page's routes to mux: GET / (the page), GET /assets/...
// (its files) and GET /web/settings (the defaults, as JSON).
func (p *Page) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", p.serveAsset)
	mux.HandleFunc("GET /assets/", p.serveAsset)
	mux.HandleFunc("GET /web/settings", p.serveSettings)
}

// Public reports whether path is one of the page's files, which a browser
// loads without the API key (they hold nothing private). /web/settings is
// not public. A nil Page has no public paths.
func (p *Page) Public(path string) bool {
	if p == nil {
		return false
	}
	_, ok := p.files[path]
	return ok
}

// Size returns the embedded assets' total size, uncompressed.
func (p *Page) Size() int {
	n := 0
	for _, a := range p.files {
		n += len(a.body)
	}
	return n
}

func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
}

func (p *Page) serveAsset(w http.ResponseWriter, r *http.Request) {
	a, ok := p.files[r.URL.Path]
	h := w.Header()
	securityHeaders(h)
	if !ok {
		http.Error(w, "no such file: "+r.URL.Path, http.StatusNotFound)
		return
	}
	if a.immutable {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		h.Set("Cache-Control", "no-cache")
	}
	h.Set("ETag", a.etag)
	h.Set("Vary", "Accept-Encoding")
	h.Set("Content-Type", a.contentType)
	if inm := r.Header.Get("If-None-Match"); inm != "" && strings.Contains(inm, a.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	body := a.body
	if acceptsGzip(r.Header.Get("Accept-Encoding")) {
		h.Set("Content-Encoding", "gzip")
		body = a.gz
	}
	h.Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

// acceptsGzip reports whether an Accept-Encoding header allows gzip.
func acceptsGzip(header string) bool {
	for _, part := range strings.Split(header, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(name), "gzip") || strings.TrimSpace(name) == "*" {
			q := strings.ReplaceAll(strings.TrimSpace(params), " ", "")
			return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
		}
	}
	return false
}

func (p *Page) serveSettings(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	securityHeaders(h)
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(p.settings())
}
