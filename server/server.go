// Package server is chatglm's OpenAI-compatible HTTP API: chat completions
// (streamed as Server-Sent Events or not, with ChatGLM3 function calling
// mapped onto OpenAI tools), raw completions, the model list, a health check
// and Prometheus metrics. It speaks to the model through the small Backend
// interface (enginebackend adapts the engine to it), builds ChatGLM3 prompts
// with package chat, and bounds the work it accepts: as many requests
// generate at once as the backend has sequences, a bounded queue waits
// behind them, and anything beyond gets 429.
package server

import (
	"context"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/chatglm/chatglm/gen"
	"github.com/chatglm/chatglm/server/web"
)

// Options configure a Server.
type Options struct {
	// ModelID is the model's id in /v1/models; requests may name it or one
	// of Aliases (or no model at all). Default "chatglm3-6b".
	ModelID string
	Aliases []string
	// APIKey, when set, is required as "Authorization: Bearer KEY" on every
	// route but the health checks (/health, /health/live, /health/ready).
	APIKey string
	// CORSOrigins lists the origins browsers may call from ("*" for any);
	// empty turns CORS off.
	CORSOrigins []string
	// Queue is how many requests may wait for a sequence beyond the
	// backend's parallel ones; more get 429. Negative means no limit.
	Queue int
	// Timeout bounds one request, its wait for a sequence included
	// (0: no limit).
	Timeout time.Duration
	// MaxBodyBytes limits request bodies (default 4 MiB); larger get 413.
	MaxBodyBytes int64
	// ReadTimeout bounds the reading of a request's headers, and of its
	// body (plus a second per 64 KiB of Content-Length); a slower client
	// gets 408. 0 means DefaultReadTimeout, negative no limit.
	ReadTimeout time.Duration
	// WriteTimeout bounds each write of a response: a client that stops
	// reading for longer is dropped and its generation cancelled. 0 means
	// DefaultWriteTimeout, negative no limit.
	WriteTimeout time.Duration
	// Sampling are the defaults for parameters a request does not set;
	// Seed gen.RandomSeed gives every request without a seed a new one.
	Sampling gen.Sampling
	// MaxTokens caps replies whose request gives no max_tokens (0: the
	// rest of the context).
	MaxTokens int
	// Drain is how long Serve keeps serving after its context ends while
	// /health/ready answers 503, before it stops accepting connections
	// (0: stop at once). It gives a load balancer or Kubernetes time to
	// take the replica out of rotation.
	Drain time.Duration
	// Logger receives one line per request (default slog.Default()).
	Logger *slog.Logger
	// Web, when set, is the browser chat page served at / (package
	// server/web); its files need no API key.
	Web *web.Page
}

// Server is the HTTP API. Create it with New, serve Handler, and call
// SetBackend once the model is loaded; until then every model route and
// /health answer 503.
type Server struct {
	opts    Options
	log     *slog.Logger
	state   atomic.Pointer[ready]
	closing atomic.Bool
	// draining: /health/ready answers 503, requests are still served.
	draining atomic.Bool
	metrics  *metrics
	mux      *http.ServeMux
	started  time.Time
	readers  bodyReaders
	handlers handlerCount
	// cancelWait is how long Serve lets cancelled handlers send their
	// error events before it closes their connections.
	cancelWait time.Duration
}

// ready is the loaded backend and its admission tokens.
type ready struct {
	b     Backend
	admit chan struct{} // capacity Parallel+Queue; nil when unlimited
	// waiting counts admitted requests that have no sequence yet.
	waiting atomic.Int64
}

// New returns a server with no backend yet.
func New(opts Options) *Server {
	if opts.ModelID == "" {
		opts.ModelID = "chatglm3-6b"
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 4 << 20
	}
	if opts.ReadTimeout == 0 {
		opts.ReadTimeout = DefaultReadTimeout
	}
	if opts.WriteTimeout == 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{opts: opts, log: opts.Logger, metrics: newMetrics(), mux: http.NewServeMux(), started: time.Now(),
		cancelWait: 10 * time.Second}
	for _, prefix := range []string{"/v1", ""} {
		s.mux.HandleFunc(prefix+"/chat/completions", s.method(http.MethodPost, s.handleChat))
		s.mux.HandleFunc(prefix+"/completions", s.method(http.MethodPost, s.handleCompletion))
		s.mux.HandleFunc(prefix+"/models", s.method(http.MethodGet, s.handleModels))
		s.mux.HandleFunc(prefix+"/models/{id...}", s.method(http.MethodGet, s.handleModel))
	}
	s.mux.HandleFunc(PathHealth, s.method(http.MethodGet, s.handleReady))
	s.mux.HandleFunc(PathReady, s.method(http.MethodGet, s.handleReady))
	s.mux.HandleFunc(PathLive, s.method(http.MethodGet, s.handleLive))
	s.mux.HandleFunc("/metrics", s.method(http.MethodGet, s.handleMetrics))
	if opts.Web != nil {
		opts.Web.Register(s.mux)
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, newAPIError(http.StatusNotFound, typeNotFound, "unknown_url", "",
			"unknown request URL: %s %s", r.Method, r.URL.Path))
	})
	return s
}

// SetBackend makes the server ready: the model is loaded.
func (s *Server) SetBackend(b Backend) {
	st := &ready{b: b}
	if s.opts.Queue >= 0 {
		st.admit = make(chan struct{}, b.Parallel()+s.opts.Queue)
	}
	s.state.Store(st)
}

// SetClosing makes /health answer 503 and new model requests get 503, for a
// graceful shutdown; requests already running go on, but those still
// sending their bodies are cut off with 503.
func (s *Server) SetClosing() {
	s.closing.Store(true)
	s.cutReaders()
}

// Handler returns the HTTP handler with logging, the cross-site guard (see
// guard), CORS and authentication in front of the routes. Serve adds the
// Host check of a loopback listener.
func (s *Server) Handler() http.Handler { return s.handler(nil) }

// handler is Handler for a listener on local (nil: unknown).
func (s *Server) handler(local net.Addr) http.Handler {
	return s.handlers.track(s.logRequests(s.guard(local, s.cors(s.auth(s.mux)))))
}

func (s *Server) method(m string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != m && !(m == http.MethodGet && r.Method == http.MethodHead) {
			w.Header().Set("Allow", m)
			writeError(w, newAPIError(http.StatusMethodNotAllowed, typeInvalidRequest, "method_not_allowed", "",
				"%s %s is not allowed; use %s", r.Method, r.URL.Path, m))
			return
		}
		h(w, r)
	}
}

// auth checks the bearer key on every route but the health checks (and
// CORS preflights, which browsers send without credentials).
func (s *Server) auth(next http.Handler) http.Handler {
	if s.opts.APIKey == "" {
		return next
	}
	want := []byte(s.opts.APIKey)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isHealthPath(r.URL.Path) || r.Method == http.MethodOptions || s.opts.Web.Public(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		got := r.Header.Get("Authorization")
		if got == "" {
			writeError(w, newAPIError(http.StatusUnauthorized, typeAuthentication, "missing_api_key", "",
				"you didn't provide an API key; send it as the header \"Authorization: Bearer YOUR_KEY\""))
			return
		}
		token, ok := bearerToken(got)
		if !ok || subtle.ConstantTimeCompare([]byte(token), want) != 1 {
			writeError(w, newAPIError(http.StatusUnauthorized, typeAuthentication, "invalid_api_key", "",
				"incorrect API key provided"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// cors answers preflights and sets Access-Control-* headers for the
// configured origins; with none configured it adds nothing.
func (s *Server) cors(next http.Handler) http.Handler {
	if len(s.opts.CORSOrigins) == 0 {
		return next
	}
	any := slices.Contains(s.opts.CORSOrigins, "*")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		allowed := origin != "" && (any || slices.Contains(s.opts.CORSOrigins, origin))
		if allowed {
			h := w.Header()
			if any {
				h.Set("Access-Control-Allow-Origin", "*")
			} else {
				h.Set("Access-Control-Allow-Origin", origin)
				h.Add("Vary", "Origin")
			}
			h.Set("Access-Control-Expose-Headers", "X-Request-Id")
		}
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			if allowed {
				h := w.Header()
				h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
				h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, OpenAI-Organization, OpenAI-Project, X-Stainless-Lang, X-Stainless-Package-Version, X-Stainless-OS, X-Stainless-Arch, X-Stainless-Runtime, X-Stainless-Runtime-Version, X-Stainless-Retry-Count, X-Stainless-Timeout, "+SessionHeader)
				h.Set("Access-Control-Max-Age", "600")
			}
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// ready returns the loaded backend, or a 503 while the model loads or the
// server shuts down.
func (s *Server) ready() (*ready, error) {
	if s.closing.Load() {
		return nil, newAPIError(http.StatusServiceUnavailable, typeServer, "shutting_down", "", "the server is shutting down")
	}
	st := s.state.Load()
	if st == nil {
		return nil, newAPIError(http.StatusServiceUnavailable, typeServer, "model_loading", "", "the model is still loading; retry shortly")
	}
	return st, nil
}

// checkModel accepts the served model's id, one of its aliases, or none.
func (s *Server) checkModel(name string) error {
	if name == "" || name == s.opts.ModelID || slices.Contains(s.opts.Aliases, name) {
		return nil
	}
	return newAPIError(http.StatusNotFound, typeInvalidRequest, "model_not_found", "model",
		"the model '%s' does not exist; this server serves '%s'", name, s.opts.ModelID)
}

func (s *Server) modelInfo() modelInfo {
	return modelInfo{ID: s.opts.ModelID, Object: "model", Created: s.started.Unix(), OwnedBy: "chatglm"}
}

func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, modelList{Object: "list", Data: []modelInfo{s.modelInfo()}})
}

func (s *Server) handleModel(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if id == "" || s.checkModel(id) != nil {
		writeError(w, newAPIError(http.StatusNotFound, typeInvalidRequest, "model_not_found", "model",
			"the model '%s' does not exist; this server serves '%s'", id, s.opts.ModelID))
		return
	}
	writeJSON(w, http.StatusOK, s.modelInfo())
}

// reqInfo collects what the request log line reports about a request.
type reqInfo struct {
	id               string
	model            string
	stream           bool
	promptTokens     int
	cachedTokens     int
	completionTokens int
	finish           string
	errMsg           string
}

type reqInfoKey struct{}

func infoOf(ctx context.Context) *reqInfo {
	if ri, ok := ctx.Value(reqInfoKey{}).(*reqInfo); ok {
		return ri
	}
	return &reqInfo{}
}

// statusWriter records the status and size of a response, and gives each
// write writeTimeout (when > 0) to reach the client.
type statusWriter struct {
	http.ResponseWriter
	status       int
	bytes        int64
	writeTimeout time.Duration
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.writeTimeout > 0 {
		// The deadline also covers the flush that follows (SSE).
		http.NewResponseController(w.ResponseWriter).SetWriteDeadline(time.Now().Add(w.writeTimeout))
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach Flush and deadlines.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// logRequests logs one line per request (never prompt or reply text) and
// counts it for /metrics.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ri := &reqInfo{id: newID("req-")}
		w.Header().Set("X-Request-Id", ri.id)
		sw := &statusWriter{ResponseWriter: w, writeTimeout: s.opts.WriteTimeout}
		next.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), reqInfoKey{}, ri)))
		status := sw.status
		if status == 0 {
			status = http.StatusOK
			if r.Context().Err() != nil {
				status = 499 // the client went away before an answer
			}
		}
		dur := time.Since(start)
		s.metrics.request(routeLabel(r.URL.Path), status, dur)
		attrs := []slog.Attr{
			slog.String("id", ri.id), slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.Int("status", status), slog.Duration("duration", dur), slog.Int64("bytes", sw.bytes),
			slog.String("remote", r.RemoteAddr),
		}
		if ri.model != "" || ri.promptTokens > 0 {
			attrs = append(attrs, slog.String("model", ri.model), slog.Bool("stream", ri.stream),
				slog.Int("prompt_tokens", ri.promptTokens), slog.Int("cached_tokens", ri.cachedTokens),
				slog.Int("completion_tokens", ri.completionTokens), slog.String("finish", ri.finish))
		}
		if ri.errMsg != "" {
			attrs = append(attrs, slog.String("error", ri.errMsg))
		}
		level := slog.LevelInfo
		if status >= 500 && status != 503 {
			level = slog.LevelError
		}
		s.log.LogAttrs(context.Background(), level, "request", attrs...)
	})
}

// routeLabel maps a path onto a small set of metric labels.
func routeLabel(path string) string {
	p := strings.TrimPrefix(path, "/v1")
	switch {
	case isHealthPath(path), path == "/metrics":
		return path
	case p == "/chat/completions", p == "/completions", p == "/models":
		return "/v1" + p
	case strings.HasPrefix(p, "/models/"):
		return "/v1/models/{id}"
	}
	return "other"
}

func errorString(err error) string {
	if err == nil {
		return ""
	}
	return fmt.Sprint(err)
}
