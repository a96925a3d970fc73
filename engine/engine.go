// Package engine runs one model for many sequences at once. It owns the
// llama.cpp context: a single scheduler goroutine packs the prompt chunks
// and next tokens of every active sequence into shared decode steps
// (continuous batching), samples each sequence with its own sampler and
// streams tokens back to the caller.
//
// A Slot is one KV sequence. It remembers the tokens its KV cache holds, so
// a request whose prompt starts with them evaluates only the rest: a chat
// turn costs its new tokens, not the whole history.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatglm/chatglm/binding"
	"github.com/chatglm/chatglm/gen"
)

// Options configure an engine.
type Options struct {
	ModelPath   string
	GPULayers   int // layers to offload; negative = all
	ContextSize int // tokens per sequence (0 = the model's training context)
	Parallel    int // sequences served at once (default 1)
	BatchSize   int // most tokens per decode step (default 512)
	UBatchSize  int // physical micro-batch (default 512)
	Threads     int // CPU threads (default: all cores)
	FlashAttn   binding.FlashAttn
	CacheTypeK  string // KV cache types, e.g. "f16" (default), "q8_0"
	CacheTypeV  string
	Mmap        Mmap          // how the weights are brought into memory (default MmapAuto)
	HugePages   bool          // binding.SetHugePages for this engine's buffers
	Perf        bool          // collect llama.cpp's performance counters
	Progress    func(float32) // model load progress
}

// Engine serves one model to several slots.
type Engine struct {
	model   *binding.Model
	lctx    *binding.Context
	opts    Options
	ctxSize int // per sequence

	slotMu sync.Mutex
	free   []*Slot
	wake   chan struct{} // signalled when a slot is released

	jobs     chan *job
	decode   func(*binding.Batch) error // one decode step; tests inject faults
	quit     chan struct{}
	loopDone chan struct{}
	closed   atomic.Bool

	mapped  bool   // the weights are mapped from the file (else read)
	mmapWhy string // why, for -v output

	stats   gen.Stats
	statMu  sync.Mutex
	waiting atomic.Int64
}

// Open loads the model and creates the context and slots.
func Open(ctx context.Context, o Options) (*Engine, error) {
	e, err := load(ctx, o)
	if err != nil {
		return nil, err
	}
	go e.loop()
	return e, nil
}

// load makes an engine whose scheduler is not started yet.
func load(ctx context.Context, o Options) (*Engine, error) {
	if o.Parallel <= 0 {
		o.Parallel = 1
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 512
	}
	if o.UBatchSize <= 0 {
		o.UBatchSize = min(512, o.BatchSize)
	}
	if o.HugePages {
		binding.SetHugePages(true)
	}
	mapped, why, err := ResolveMmap(o.Mmap, o.ModelPath, o.GPULayers, binding.HasGPU())
	if err != nil {
		return nil, err
	}
	m, err := binding.LoadModel(ctx, o.ModelPath, binding.ModelParams{GPULayers: o.GPULayers, NoMmap: !mapped, Progress: o.Progress})
	if err != nil {
		return nil, err
	}
	perSeq := o.ContextSize
	if perSeq <= 0 {
		perSeq = m.ContextLength()
	}
	lctx, err := m.NewContext(binding.ContextParams{
		NCtx:      perSeq * o.Parallel,
		NBatch:    o.BatchSize,
		NUBatch:   o.UBatchSize,
		NSeqMax:   o.Parallel,
		Threads:   o.Threads,
		FlashAttn: o.FlashAttn,
		TypeK:     o.CacheTypeK,
		TypeV:     o.CacheTypeV,
		Perf:      o.Perf,
		// One KV buffer for all slots: with a buffer per slot, llama.cpp
		// splits a batch into micro-batches of consecutive sequence ids
		// only, so the next tokens of slots such as 2, 0, 3 ran as separate
		// graph evaluations and batching gained nothing. Each slot stays
		// within perSeq tokens (ctxSize below).
		KVUnified: o.Parallel > 1,
	})
	if err != nil {
		m.Close()
		return nil, err
	}
	e := &Engine{
		model:    m,
		lctx:     lctx,
		opts:     o,
		ctxSize:  min(perSeq, lctx.SeqSize()),
		wake:     make(chan struct{}, 1),
		jobs:     make(chan *job),
		quit:     make(chan struct{}),
		loopDone: make(chan struct{}),
		mapped:   mapped,
		mmapWhy:  why,
	}
	for i := 0; i < o.Parallel; i++ {
		e.free = append(e.free, &Slot{e: e, id: i})
	}
	slog.Info("engine ready", "slots", o.Parallel, "tokens_per_slot", e.ctxSize, "kv_buffer_tokens", lctx.Size(), "kv_shared", o.Parallel > 1)
	e.decode = func(b *binding.Batch) error { return lctx.Decode(context.Background(), b) }
	return e, nil
}

// Close stops the scheduler and frees the context and model. Requests in
// flight end as cancelled. Calling Close again is a no-op.
func (e *Engine) Close() error {
	if e.closed.Swap(true) {
		return nil
	}
	close(e.quit)
	<-e.loopDone
	err := e.lctx.Close()
	if err2 := e.model.Close(); err == nil {
		err = err2
	}
	return err
}

// Model is the loaded model (for metadata and tokenization).
func (e *Engine) Model() *binding.Model { return e.model }

// Context is the llama.cpp context; only for counters such as Perf.
func (e *Engine) Context() *binding.Context { return e.lctx }

// ContextSize is the number of tokens one sequence may hold.
func (e *Engine) ContextSize() int { return e.ctxSize }

// Parallel is the number of slots.
func (e *Engine) Parallel() int { return e.opts.Parallel }

// Mapped reports whether the weights are mapped from the file (else read
// into memory) and why (see Mmap).
func (e *Engine) Mapped() (bool, string) { return e.mapped, e.mmapWhy }

// Stats returns the running totals.
func (e *Engine) Stats() gen.Stats {
	e.statMu.Lock()
	s := e.stats
	e.statMu.Unlock()
	s.Waiting = e.waiting.Load()
	return s
}

func (e *Engine) addStats(f func(*gen.Stats)) {
	e.statMu.Lock()
	f(&e.stats)
	e.statMu.Unlock()
}

// ErrClosed is returned after Close.
var ErrClosed = errors.New("engine: closed")

// Acquire waits for a free slot. Release it when done.
func (e *Engine) Acquire(ctx context.Context) (*Slot, error) { return e.AcquireFor(ctx, nil) }

// AcquireFor waits for a free slot, preferring the one whose KV cache shares
// the longest prefix with prompt.
func (e *Engine) AcquireFor(ctx context.Context, prompt []int32) (*Slot, error) {
	e.waiting.Add(1)
	defer e.waiting.Add(-1)
	for {
		if s := e.TryAcquireFor(prompt); s != nil {
			return s, nil
		}
		select {
		case <-e.wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-e.quit:
			return nil, ErrClosed
		}
	}
}

// TryAcquireFor returns a free slot (best prefix match first) or nil.
func (e *Engine) TryAcquireFor(prompt []int32) *Slot {
	e.slotMu.Lock()
	defer e.slotMu.Unlock()
	if len(e.free) == 0 || e.closed.Load() {
		return nil
	}
	best, bestLen := 0, -1
	for i, s := range e.free {
		if n := commonPrefix(s.cached, prompt); n > bestLen {
			best, bestLen = i, n
		}
	}
	s := e.free[best]
	e.free = append(e.free[:best], e.free[best+1:]...)
	s.inUse = true
	// Let another waiter look too, if slots remain.
	if len(e.free) > 0 {
		e.signal()
	}
	return s
}

func (e *Engine) signal() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func commonPrefix(a, b []int32) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// Slot is one sequence in the KV cache, held by one caller at a time.
type Slot struct {
	e      *Engine
	id     int
	cached []int32 // tokens whose KV is in the cache, positions 0..len-1
	inUse  bool
	busy   atomic.Bool
}

// ID is the slot's sequence id.
func (s *Slot) ID() int { return s.id }

// Cached returns a copy of the tokens the slot's KV cache holds.
func (s *Slot) Cached() []int32 {
	s.e.slotMu.Lock()
	defer s.e.slotMu.Unlock()
	return append([]int32(nil), s.cached...)
}

// Release gives the slot back; its cache stays for later reuse.
func (s *Slot) Release() {
	s.e.slotMu.Lock()
	if !s.inUse {
		s.e.slotMu.Unlock()
		return
	}
	s.inUse = false
	s.e.free = append(s.e.free, s)
	s.e.slotMu.Unlock()
	s.e.signal()
}

// outbox carries a job's tokens and its end from the scheduler to the
// Generate call without ever blocking the scheduler: tokens queue up (no
// more than the context holds) and the caller takes all that are there
// each time it wakes, so a caller that reads slowly, or not at all for a
// while, delays no other job.
type outbox struct {
	mu    sync.Mutex
	toks  []gen.Token
	done  *gen.Result // the end of a finished generation
	err   error       // or the error that ended it
	ended bool
	ready chan struct{} // holds a signal while something is waiting
}

func newOutbox() *outbox { return &outbox{ready: make(chan struct{}, 1)} }

func (o *outbox) signal() {
	select {
	case o.ready <- struct{}{}:
	default:
	}
}

// push queues a token.
func (o *outbox) push(t gen.Token) {
	o.mu.Lock()
	o.toks = append(o.toks, t)
	o.mu.Unlock()
	o.signal()
}

// end records how the job ended; later calls are ignored.
func (o *outbox) end(res *gen.Result, err error) {
	o.mu.Lock()
	if !o.ended {
		o.done, o.err, o.ended = res, err, true
	}
	o.mu.Unlock()
	o.signal()
}

// take waits for news and returns the queued tokens and, once the job has
// ended, ended = true with its result or error.
func (o *outbox) take() (toks []gen.Token, ended bool, res *gen.Result, err error) {
	<-o.ready
	o.mu.Lock()
	defer o.mu.Unlock()
	toks, o.toks = o.toks, nil
	return toks, o.ended, o.done, o.err
}

// Generate continues req.Prompt in this slot and calls onToken for every
// generated token, from the caller's goroutine. onToken may return gen.ErrStop
// to end the reply normally, or another error to abort it.
func (s *Slot) Generate(ctx context.Context, req gen.Request, onToken func(gen.Token) error) (gen.Result, error) {
	if s.e.closed.Load() {
		return gen.Result{}, ErrClosed
	}
	if !s.busy.CompareAndSwap(false, true) {
		return gen.Result{}, fmt.Errorf("engine: slot %d is already generating", s.id)
	}
	defer s.busy.Store(false)
	if len(req.Prompt) == 0 {
		return gen.Result{}, fmt.Errorf("engine: empty prompt")
	}
	if len(req.Prompt) >= s.e.ctxSize {
		return gen.Result{}, &gen.PromptTooLongError{PromptTokens: len(req.Prompt), MaxTokens: req.MaxTokens, Limit: s.e.ctxSize}
	}
	for i, t := range req.Prompt {
		if !s.e.model.ValidToken(t) {
			return gen.Result{}, fmt.Errorf("engine: prompt token %d at %d out of range [0, %d)", t, i, s.e.model.VocabSize())
		}
	}
	smp, err := binding.NewSampler(req.Sampling)
	if err != nil {
		return gen.Result{}, err
	}
	jctx, cancel := context.WithCancel(ctx)
	defer cancel()
	j := &job{ctx: jctx, cancel: cancel, slot: s, req: req, out: newOutbox(), sampler: smp, row: -1,
		stop: map[int32]bool{}, started: time.Now()}
	for _, t := range req.Stop {
		j.stop[t] = true
	}
	j.res.StopToken = -1
	j.res.PromptTokens = len(req.Prompt)
	select {
	case s.e.jobs <- j:
	case <-s.e.quit:
		smp.Close()
		return gen.Result{}, ErrClosed
	}
	// The scheduler owns the sampler from here and closes it.
	var cbErr error
	for {
		toks, ended, done, err := j.out.take()
		for _, t := range toks {
			if cbErr != nil {
				break
			}
			if err := onToken(t); err != nil {
				cbErr = err
				cancel()
			}
		}
		if !ended {
			continue
		}
		if err != nil {
			return gen.Result{}, err
		}
		res := *done
		if errors.Is(cbErr, gen.ErrStop) {
			res.Finish = gen.FinishStop
			return res, nil
		}
		if cbErr != nil {
			return res, cbErr
		}
		if res.Finish == gen.FinishCancelled && ctx.Err() != nil {
			return res, ctx.Err()
		}
		return res, nil
	}
}
