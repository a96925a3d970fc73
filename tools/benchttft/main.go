// Command benchttft measures multi-turn time to first token (TTFT): it
// holds one ChatGLM3 conversation of N turns through the engine and the chat
// package, as `chatglm chat` does, and times each turn from Send to the
// first generated token. Because the slot's KV cache keeps the history,
// turn N should cost about what turn 1 costs (its new tokens), not the whole
// history; the ratio TTFT(turn N) / TTFT(turn 1) shows it.
//
//	go run ./tools/benchttft -m model.gguf [-turns 10] [-words 40] [-reply 16] [-threads 0]
//
// It prints one line per turn on stderr and one JSON object on stdout.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/chatglm/chatglm/binding"
	"github.com/chatglm/chatglm/chat"
	"github.com/chatglm/chatglm/chat/backend"
	"github.com/chatglm/chatglm/engine"
	"github.com/chatglm/chatglm/gen"
)

// Turn is the measurement of one turn.
type Turn struct {
	Turn            int     `json:"turn"`
	TTFTms          float64 `json:"ttft_ms"`
	PromptMS        float64 `json:"prompt_ms"` // the engine's prompt evaluation time
	PromptTokens    int     `json:"prompt_tokens"`
	CachedTokens    int     `json:"cached_tokens"`
	EvaluatedTokens int     `json:"evaluated_tokens"`
	ReplyTokens     int     `json:"reply_tokens"`
}

// Report is the program's JSON output.
type Report struct {
	Model      string  `json:"model"`
	Threads    int     `json:"threads"`
	Turns      []Turn  `json:"turns"`
	FirstMS    float64 `json:"ttft_first_ms"`
	LastMS     float64 `json:"ttft_last_ms"`
	Ratio      float64 `json:"ttft_ratio"` // last / first
	LoadSecond float64 `json:"load_s"`
}

// timedGen wraps a gen.Generator and notes when the first token arrives.
type timedGen struct {
	inner gen.Generator
	first time.Time
}

func (g *timedGen) Generate(ctx context.Context, req gen.Request, onToken func(gen.Token) error) (gen.Result, error) {
	g.first = time.Time{}
	return g.inner.Generate(ctx, req, func(t gen.Token) error {
		if g.first.IsZero() {
			g.first = time.Now()
		}
		return onToken(t)
	})
}

// words is the vocabulary of the synthetic user messages.
var words = strings.Fields(`the model reads every message of the conversation and answers the last one
please explain how a transformer uses attention over the previous tokens and why caching keys
and values makes the next turn cheap when the history stays the same between requests`)

// message makes the i-th user message of about n words.
func message(i, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Question %d:", i)
	for k := 0; k < n; k++ {
		b.WriteByte(' ')
		b.WriteString(words[(i*7+k)%len(words)])
	}
	b.WriteString("?")
	return b.String()
}

func main() {
	model := flag.String("m", "", "GGUF model")
	turns := flag.Int("turns", 10, "turns in the conversation")
	nWords := flag.Int("words", 40, "words per user message")
	reply := flag.Int("reply", 16, "tokens per reply (greedy)")
	threads := flag.Int("threads", 0, "CPU threads (0 = all cores)")
	ctxSize := flag.Int("ctx", 4096, "context size")
	flag.Parse()
	if *model == "" || *turns < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchttft -m model.gguf [-turns N>=2] [-words W] [-reply R] [-threads T]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	rep, err := run(ctx, *model, *turns, *nWords, *reply, *threads, *ctxSize)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchttft:", err)
		os.Exit(1)
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(rep); err != nil {
		fmt.Fprintln(os.Stderr, "benchttft:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, path string, turns, nWords, reply, threads, ctxSize int) (*Report, error) {
	if threads <= 0 {
		threads = binding.DefaultThreads()
	}
	t0 := time.Now()
	e, err := engine.Open(ctx, engine.Options{ModelPath: path, ContextSize: ctxSize, Parallel: 1, Threads: threads, GPULayers: -1})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer e.Close()
	load := time.Since(t0)
	m, err := backend.NewModel(e, path)
	if err != nil {
		return nil, err
	}
	slot, err := e.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer slot.Release()
	timed := &timedGen{inner: slot}
	sampling := chat.DefaultSampling()
	sampling.Temperature = 0 // greedy: the same run every time
	conv := chat.NewConversation(m, timed, chat.Options{Sampling: sampling, MaxTokens: reply})

	rep := &Report{Model: path, Threads: threads, LoadSecond: load.Seconds()}
	for i := 1; i <= turns; i++ {
		start := time.Now()
		turn, err := conv.Send(ctx, chat.Message{Role: chat.RoleUser, Content: message(i, nWords)}, nil)
		if err != nil {
			return nil, fmt.Errorf("turn %d: %w", i, err)
		}
		if timed.first.IsZero() {
			return nil, fmt.Errorf("turn %d: no token generated", i)
		}
		r := turn.Result
		t := Turn{
			Turn: i, TTFTms: float64(timed.first.Sub(start).Microseconds()) / 1000,
			PromptMS:     float64(r.PromptTime.Microseconds()) / 1000,
			PromptTokens: r.PromptTokens, CachedTokens: r.CachedTokens, EvaluatedTokens: r.EvaluatedTokens,
			ReplyTokens: len(r.Tokens),
		}
		rep.Turns = append(rep.Turns, t)
		fmt.Fprintf(os.Stderr, "benchttft: turn %2d: ttft %8.1f ms (prompt eval %8.1f ms), prompt %5d tokens (%d cached, %d evaluated), reply %d tokens\n",
			i, t.TTFTms, t.PromptMS, t.PromptTokens, t.CachedTokens, t.EvaluatedTokens, t.ReplyTokens)
	}
	rep.FirstMS = rep.Turns[0].TTFTms
	rep.LastMS = rep.Turns[len(rep.Turns)-1].TTFTms
	if rep.FirstMS > 0 {
		rep.Ratio = rep.LastMS / rep.FirstMS
	}
	return rep, nil
}
