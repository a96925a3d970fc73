package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/chatglm/chatglm/chat"
	"github.com/chatglm/chatglm/engine"
	"github.com/chatglm/chatglm/internal/config"
	"github.com/chatglm/chatglm/server"
	"github.com/chatglm/chatglm/server/enginebackend"
)

func init() { register(newServeCmd) }

// Config keys of the serve command.
const (
	srvModel     = "server.model"
	srvModelName = "server.model-name"
	srvHost      = "server.host"
	srvPort      = "server.port"
	srvParallel  = "server.parallel"
	srvQueue     = "server.queue"
	srvAPIKey    = "server.api-key"
	srvTimeout   = "server.timeout"
	srvGrace     = "server.shutdown-timeout"
	srvCORS      = "server.cors-origin"
	srvMaxBody   = "server.max-body"
	srvCtxSize   = "server.ctx-size"
	srvBatch     = "server.batch-size"
	srvThreads   = "server.threads"
	srvGPULayers = "server.gpu-layers"
	srvTemp      = "server.temperature"
	srvTopP      = "server.top-p"
	srvTopK      = "server.top-k"
	srvMaxTokens = "server.max-tokens"
)

const serveLong = `Serve the model over an OpenAI-compatible HTTP API:

  POST /v1/chat/completions   chat (stream or not), tools as ChatGLM3 function calls
  POST /v1/completions        raw completion of [gMASK]sop + the prompt
  GET  /v1/models             the served model
  GET  /health                200 once the model is loaded, 503 before and while stopping
  GET  /metrics               Prometheus counters: requests, tokens, queue depth, tokens/s

--parallel N sequences generate at once, batched into shared decode steps;
--queue more wait for a free sequence and any beyond get 429. A client that
disconnects stops its generation at once. SIGTERM or Ctrl-C stops accepting,
lets requests in flight finish for --shutdown-timeout, cancels the rest and
exits 0. The server binds 127.0.0.1 unless --host says otherwise; with
--api-key every route but /health needs "Authorization: Bearer KEY".`

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
	cfg.Declare(cmd.Flags(),
		config.Key{Name: srvModel, Flag: "model", Short: "m", Default: "", Usage: "GGUF model file"},
		config.Key{Name: srvModelName, Flag: "model-name", Default: "", Usage: "model id in /v1/models (default: the file name without .gguf)"},
		config.Key{Name: srvHost, Flag: "host", Default: "127.0.0.1", Usage: "address to listen on (0.0.0.0 exposes the server to the network)"},
		config.Key{Name: srvPort, Flag: "port", Default: 8080, Usage: "TCP port (0 = any free port)"},
		config.Key{Name: srvParallel, Flag: "parallel", Short: "p", Default: 4, Usage: "sequences generated at once"},
		config.Key{Name: srvQueue, Flag: "queue", Default: 64, Usage: "requests that may wait for a sequence; more get 429 (-1 = no limit)"},
		config.Key{Name: srvAPIKey, Flag: "api-key", Default: "", Usage: "require \"Authorization: Bearer KEY\" on every route but /health"},
		config.Key{Name: srvTimeout, Flag: "timeout", Default: 10 * time.Minute, Usage: "longest a request may take, queueing included (0 = no limit)"},
		config.Key{Name: srvGrace, Flag: "shutdown-timeout", Default: 30 * time.Second, Usage: "on SIGTERM, how long requests in flight may finish before they are cancelled"},
		config.Key{Name: srvCORS, Flag: "cors-origin", Default: []string{}, Usage: "origins browsers may call from (\"*\" = any); CORS is off when empty"},
		config.Key{Name: srvMaxBody, Flag: "max-body", Default: 4 << 20, Usage: "largest request body in bytes; larger get 413"},
		config.Key{Name: srvCtxSize, Flag: "ctx-size", Short: "c", Default: 0, Usage: "context tokens per sequence (0 = the model's training context)"},
		config.Key{Name: srvBatch, Flag: "batch-size", Short: "b", Default: 512, Usage: "most tokens per decode step"},
		config.Key{Name: srvThreads, Flag: "threads", Short: "t", Default: 0, Usage: "CPU threads (0 = all cores)"},
		config.Key{Name: srvGPULayers, Flag: "gpu-layers", Default: -1, Usage: "layers to offload to a GPU (-1 = all, when a GPU backend is loaded)"},
		config.Key{Name: srvTemp, Flag: "temperature", Default: 0.8, Usage: "default temperature for requests that set none (0 = greedy)"},
		config.Key{Name: srvTopP, Flag: "top-p", Default: 0.8, Usage: "default top_p for requests that set none"},
		config.Key{Name: srvTopK, Flag: "top-k", Default: 50, Usage: "default top_k for requests that set none (0 = off)"},
		config.Key{Name: srvMaxTokens, Flag: "max-tokens", Default: 0, Usage: "default reply cap for requests without max_tokens (0 = the rest of the context)"},
	)
	return cmd
}

func runServe(cmd *cobra.Command, cfg *config.Store) error {
	ctx := cmd.Context()
	modelPath := cfg.String(srvModel)
	if modelPath == "" {
		return errors.New("serve: --model (-m) is required")
	}
	parallel := cfg.Int(srvParallel)
	if parallel < 1 {
		return fmt.Errorf("serve: --parallel must be at least 1, got %d", parallel)
	}
	name := cfg.String(srvModelName)
	base := strings.TrimSuffix(filepath.Base(modelPath), filepath.Ext(modelPath))
	if name == "" {
		name = base
	}
	smp := chat.DefaultSampling()
	smp.Temperature = float32(cfg.Float(srvTemp))
	smp.TopP = float32(cfg.Float(srvTopP))
	smp.TopK = cfg.Int(srvTopK)
	srv := server.New(server.Options{
		ModelID:      name,
		Aliases:      []string{base, modelPath},
		APIKey:       cfg.String(srvAPIKey),
		CORSOrigins:  cfg.Strings(srvCORS),
		Queue:        cfg.Int(srvQueue),
		Timeout:      cfg.Duration(srvTimeout),
		MaxBodyBytes: int64(cfg.Int(srvMaxBody)),
		Sampling:     smp,
		MaxTokens:    cfg.Int(srvMaxTokens),
	})

	addr := net.JoinHostPort(cfg.String(srvHost), strconv.Itoa(cfg.Int(srvPort)))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "chatglm: listening on http://%s (model %s loading)\n", ln.Addr(), name)

	serveCtx, stopServing := context.WithCancel(ctx)
	defer stopServing()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(serveCtx, ln, cfg.Duration(srvGrace)) }()

	start := time.Now()
	e, err := engine.Open(ctx, engine.Options{
		ModelPath:   modelPath,
		ContextSize: cfg.Int(srvCtxSize),
		Parallel:    parallel,
		BatchSize:   cfg.Int(srvBatch),
		Threads:     cfg.Int(srvThreads),
		GPULayers:   cfg.Int(srvGPULayers),
	})
	if err != nil {
		stopServing()
		<-served
		if ctx.Err() != nil {
			return nil // stopped while loading
		}
		return fmt.Errorf("serve: %w", err)
	}
	defer e.Close()
	b, err := enginebackend.New(e, modelPath)
	if err != nil {
		stopServing()
		<-served
		return err
	}
	srv.SetBackend(b)
	slog.Info("model loaded", "model", name, "path", modelPath, "load_time", time.Since(start).Round(time.Millisecond),
		"parallel", parallel, "ctx_per_sequence", e.ContextSize())
	fmt.Fprintf(cmd.ErrOrStderr(), "chatglm: ready: %s, %d sequences of %d tokens\n", name, parallel, e.ContextSize())
	if err := <-served; err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	fmt.Fprintln(cmd.ErrOrStderr(), "chatglm: stopped")
	return nil
}
