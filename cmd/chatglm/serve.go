package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/chatglm/chatglm/internal/config"
	"github.com/chatglm/chatglm/server"
	"github.com/chatglm/chatglm/server/enginebackend"
	"github.com/chatglm/chatglm/server/web"
)

func init() { register(newServeCmd) }

// Config keys of the serve command. The model, context, threads, GPU and
// sampling keys are the shared ones of modelflags.go; the sampling keys are
// the defaults for requests that do not set them.
const (
	srvModelName = "server.model_name"
	srvHost      = "server.host"
	srvPort      = "server.port"
	srvParallel  = "server.parallel"
	srvQueue     = "server.queue"
	srvAPIKey    = "server.api_key"
	srvTimeout   = "server.timeout"
	srvGrace     = "server.shutdown_timeout"
	srvDrain     = "server.drain"
	srvCORS      = "server.cors_origin"
	srvMaxBody   = "server.max_body"
	srvReadTO    = "server.read_timeout"
	srvWriteTO   = "server.write_timeout"
	srvWeb       = "server.web"
)

const serveLong = `Serve the model over an OpenAI-compatible HTTP API:

  POST /v1/chat/completions   chat (stream or not), tools as ChatGLM3 function calls
  POST /v1/completions        raw completion of [gMASK]sop + the prompt
  GET  /v1/models             the served model
  GET  /health/ready          200 once the model is loaded, 503 before and while draining or stopping
  GET  /health                the same as /health/ready
  GET  /health/live           200 while the process answers at all (loading, serving, draining)
  GET  /metrics               Prometheus: requests, tokens, queue depth, busy sequences, tokens/s,
                              time-to-first-token and duration histograms, prompt tokens cached
  GET  /                      the browser chat page (--web=false turns it off)

--parallel N sequences generate at once, batched into shared decode steps;
--queue more wait for a free sequence and any beyond get 429. A client that
disconnects stops its generation at once. SIGTERM or Ctrl-C first drains:
for --drain /health/ready answers 503 while everything is still served, so a
load balancer or Kubernetes takes the replica out of rotation; then it stops
accepting, lets requests in flight finish for --shutdown-timeout, cancels the
rest and exits 0. The server binds 127.0.0.1 unless --host says otherwise; with
--api-key every route but the health checks needs "Authorization: Bearer KEY".`

// newServeCmd builds `chatglm serve`.
func newServeCmd(cfg *config.Store) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve -m model.gguf [--host 127.0.0.1] [--port 8080] [--parallel 4] [--api-key K]",
		Short: "Serve the model over an OpenAI-compatible HTTP API",
		Long:  serveLong,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runServe(cmd, cfg)
		},
	}
	declareModelKeys(cfg, cmd)
	declareSamplingKeys(cfg, cmd)
	cfg.Declare(cmd.Flags(),
		config.Key{Name: srvModelName, Flag: "model-name", Default: "", Usage: "model id in /v1/models (default: the file name without .gguf)"},
		config.Key{Name: srvHost, Flag: "host", Default: "127.0.0.1", Usage: "address to listen on (0.0.0.0 exposes the server to the network)"},
		config.Key{Name: srvPort, Flag: "port", Default: 8080, Usage: "TCP port (0 = any free port)"},
		config.Key{Name: srvParallel, Flag: "parallel", Default: 4, Usage: "sequences generated at once, batched into shared decode steps (-np N, as llama.cpp's server, works too)"},
		config.Key{Name: srvQueue, Flag: "queue", Default: 64, Usage: "requests that may wait for a sequence; more get 429 (-1 = no limit)"},
		config.Key{Name: srvAPIKey, Flag: "api-key", Default: "", Usage: "require \"Authorization: Bearer KEY\" on every route but the health checks"},
		config.Key{Name: srvTimeout, Flag: "timeout", Default: 10 * time.Minute, Usage: "longest a request may take, queueing included (0 = no limit)"},
		config.Key{Name: srvGrace, Flag: "shutdown-timeout", Default: 30 * time.Second, Usage: "on SIGTERM, how long requests in flight may finish before they are cancelled"},
		config.Key{Name: srvDrain, Flag: "drain", Default: 5 * time.Second, Usage: "on SIGTERM, how long /health/ready answers 503 while requests are still served, before the listener closes (0 = close at once)"},
		config.Key{Name: srvCORS, Flag: "cors-origin", Default: []string{}, Usage: "origins browsers may call from (\"*\" = any); CORS is off when empty"},
		config.Key{Name: srvMaxBody, Flag: "max-body", Default: 4 << 20, Usage: "largest request body in bytes; larger get 413"},
		config.Key{Name: srvReadTO, Flag: "read-timeout", Default: server.DefaultReadTimeout, Usage: "longest a client may take to send a request's headers, and its body (plus 1s per 64 KiB); slower ones get 408 (0 = no limit)"},
		config.Key{Name: srvWriteTO, Flag: "write-timeout", Default: server.DefaultWriteTimeout, Usage: "longest a client may stop reading an answer before it is dropped and its generation cancelled (0 = no limit)"},
		config.Key{Name: srvWeb, Flag: "web", Default: true, Usage: "serve the browser chat page at / (--web=false turns it off)"},
	)
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		if strings.Contains(err.Error(), "shorthand flag: 'p'") {
			return fmt.Errorf("serve: -p is not a serve flag (it is run's prompt); give the parallel count as --parallel N or -np N")
		}
		return err
	})
	return cmd
}

// llamaServerArgs accepts llama.cpp server's spelling -np N (-np=N) for
// serve's --parallel: pflag would read -np as -n p. Other arguments are
// returned as they are.
func llamaServerArgs(args []string) []string {
	if !slices.Contains(args, "serve") {
		return args
	}
	out := make([]string, len(args))
	for i, a := range args {
		switch {
		case a == "-np":
			a = "--parallel"
		case strings.HasPrefix(a, "-np="):
			a = "--parallel=" + strings.TrimPrefix(a, "-np=")
		}
		out[i] = a
	}
	return out
}

func runServe(cmd *cobra.Command, cfg *config.Store) error {
	ctx := cmd.Context()
	stderr := cmd.ErrOrStderr()
	modelPath, err := resolveModel(cfg)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	parallel := cfg.Int(srvParallel)
	if parallel < 1 {
		return fmt.Errorf("serve: --parallel must be at least 1, got %d", parallel)
	}
	smp, maxTokens, err := samplingFromConfig(cfg)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	base := strings.TrimSuffix(filepath.Base(modelPath), filepath.Ext(modelPath))
	name := cfg.String(srvModelName)
	if name == "" {
		name = base
	}
	var ctxSize atomic.Int64 // known once the model is loaded
	var page *web.Page
	if cfg.Bool(srvWeb) {
		page, err = web.New(func() web.Settings {
			return web.Settings{Model: name, ContextSize: int(ctxSize.Load()),
				Temperature: shortFloat(smp.Temperature), TopP: shortFloat(smp.TopP), TopK: smp.TopK, MinP: shortFloat(smp.MinP),
				RepeatPenalty: shortFloat(smp.RepeatPenalty), MaxTokens: maxTokens, ToolSystemPrompt: server.ToolSystemPrompt}
		})
		if err != nil {
			return fmt.Errorf("serve: %w", err)
		}
	}
	srv := server.New(server.Options{
		ModelID:      name,
		Aliases:      []string{base, modelPath, cfg.String(keyModel)},
		APIKey:       cfg.String(srvAPIKey),
		CORSOrigins:  cfg.Strings(srvCORS),
		Queue:        cfg.Int(srvQueue),
		Timeout:      cfg.Duration(srvTimeout),
		MaxBodyBytes: int64(cfg.Int(srvMaxBody)),
		ReadTimeout:  noLimitIfZero(cfg.Duration(srvReadTO)),
		WriteTimeout: noLimitIfZero(cfg.Duration(srvWriteTO)),
		Sampling:     smp,
		MaxTokens:    maxTokens,
		Web:          page,
		Drain:        cfg.Duration(srvDrain),
	})

	addr := net.JoinHostPort(cfg.String(srvHost), strconv.Itoa(cfg.Int(srvPort)))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	fmt.Fprintf(stderr, "chatglm: listening on http://%s (model %s loading)\n", ln.Addr(), name)

	// Serve at once, so /health says 503 while the model loads.
	serveCtx, stopServing := context.WithCancel(ctx)
	defer stopServing()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(serveCtx, ln, cfg.Duration(srvGrace)) }()
	stop := func() {
		stopServing()
		<-served
	}

	lm, err := openModel(ctx, cfg, parallel, stderr, false)
	if err != nil {
		stop()
		if ctx.Err() != nil {
			return nil // stopped while loading
		}
		return fmt.Errorf("serve: %w", err)
	}
	defer lm.Close()
	b, err := enginebackend.New(lm.Engine, lm.Path)
	if err != nil {
		stop()
		return fmt.Errorf("serve: %w", err)
	}
	srv.SetBackend(b)
	slog.Info("model loaded", "model", name, "path", lm.Path, "load_time", lm.LoadTime.Round(time.Millisecond),
		"parallel", parallel, "ctx_per_sequence", lm.Engine.ContextSize())
	ctxSize.Store(int64(lm.Engine.ContextSize()))
	fmt.Fprintf(stderr, "chatglm: ready: %s, %d sequences of %d tokens\n", name, parallel, lm.Engine.ContextSize())
	if page != nil {
		fmt.Fprintf(stderr, "chatglm: chat page at %s\n", pageURL(ln.Addr()))
	}
	if err := <-served; err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	fmt.Fprintln(stderr, "chatglm: stopped")
	return nil
}

// pageURL is the chat page's address for a browser on this machine: a
// wildcard listen address is reached through the loopback interface.
func pageURL(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "http://" + addr.String() + "/"
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip.To4() == nil {
			host = "::1"
		}
	}
	return "http://" + net.JoinHostPort(host, port) + "/"
}

// shortFloat widens a float32 to the float64 with the same shortest decimal
// form, so 0.3 shows as 0.3 and not 0.30000001192092896.
func shortFloat(f float32) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(float64(f), 'g', -1, 32), 64)
	return v
}

// noLimitIfZero maps a flag's "0 = no limit" onto server.Options', where 0
// is the default and a negative duration no limit.
func noLimitIfZero(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
