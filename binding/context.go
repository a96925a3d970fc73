package binding

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// FlashAttn selects when flash attention is used.
type FlashAttn int

// Flash attention modes, as llama.cpp's --flash-attn.
const (
	FlashAttnAuto FlashAttn = iota // llama.cpp decides (the default)
	FlashAttnOff
	FlashAttnOn
)

// ParseFlashAttn reads "auto", "on" or "off".
func ParseFlashAttn(s string) (FlashAttn, error) {
	switch strings.ToLower(s) {
	case "", "auto":
		return FlashAttnAuto, nil
	case "on", "true", "1", "enabled":
		return FlashAttnOn, nil
	case "off", "false", "0", "disabled":
		return FlashAttnOff, nil
	}
	return 0, fmt.Errorf("flash attention %q: want on, off or auto", s)
}

// cacheTypes are the KV cache types llama.cpp accepts (its -ctk/-ctv names).
var cacheTypes = map[string]C.enum_ggml_type{
	"f32":    C.GGML_TYPE_F32,
	"f16":    C.GGML_TYPE_F16,
	"bf16":   C.GGML_TYPE_BF16,
	"q8_0":   C.GGML_TYPE_Q8_0,
	"q4_0":   C.GGML_TYPE_Q4_0,
	"q4_1":   C.GGML_TYPE_Q4_1,
	"iq4_nl": C.GGML_TYPE_IQ4_NL,
	"q5_0":   C.GGML_TYPE_Q5_0,
	"q5_1":   C.GGML_TYPE_Q5_1,
}

// CheckCacheType returns an error unless s names a KV cache type ("" = f16).
func CheckCacheType(s string) error {
	if _, ok := cacheTypes[strings.ToLower(s)]; !ok && s != "" {
		return fmt.Errorf("cache type %q: want one of f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1", s)
	}
	return nil
}

// ContextParams controls a new context. Zero values take llama.cpp's
// defaults, except NCtx, where 0 means the model's training context.
type ContextParams struct {
	NCtx         int       // total KV cells shared by all sequences (0 = model's context length)
	NBatch       int       // most tokens one Decode call may carry (default 2048)
	NUBatch      int       // physical micro-batch (default 512)
	NSeqMax      int       // number of parallel sequences (default 1)
	Threads      int       // threads for generation (default: all cores)
	ThreadsBatch int       // threads for prompt processing (default: Threads)
	FlashAttn    FlashAttn // flash attention mode
	TypeK        string    // K cache type (default f16)
	TypeV        string    // V cache type (default f16)
	Perf         bool      // collect performance counters (see Perf)
	KVUnified    bool      // one KV buffer shared by all sequences
}

// Context holds the KV memory and compute state for decoding with a model.
// Its methods serialise on a mutex, so concurrent calls are safe but do
// not overlap. After Close every method that can fail returns ErrClosed;
// the sizes fixed at creation stay readable.
type Context struct {
	mu    sync.Mutex
	c     *C.struct_llama_context
	abort *C.chatglm_abort
	errs  *errSink // llama.cpp's errors for calls on this context
	model *Model
	leak  runtime.Cleanup

	// Fixed at creation.
	nBatch, nVocab, nSeq, nCtx, nCtxSeq int
}

// NewContext creates a context for the model.
func (m *Model) NewContext(p ContextParams) (*Context, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.c == nil {
		return nil, fmt.Errorf("new context: %w", ErrClosed)
	}
	cp := C.llama_context_default_params()
	if p.NCtx < 0 || p.NBatch < 0 || p.NUBatch < 0 || p.NSeqMax < 0 {
		return nil, fmt.Errorf("new context: negative size in %+v", p)
	}
	cp.n_ctx = C.uint32_t(p.NCtx)
	if p.NBatch > 0 {
		cp.n_batch = C.uint32_t(p.NBatch)
	}
	if p.NUBatch > 0 {
		cp.n_ubatch = C.uint32_t(p.NUBatch)
	}
	if p.NSeqMax > 0 {
		if p.NSeqMax > int(C.llama_max_parallel_sequences()) {
			return nil, fmt.Errorf("new context: %d sequences exceeds llama.cpp's limit of %d", p.NSeqMax, int(C.llama_max_parallel_sequences()))
		}
		cp.n_seq_max = C.uint32_t(p.NSeqMax)
	}
	threads := p.Threads
	if threads <= 0 {
		threads = DefaultThreads()
	}
	cp.n_threads = C.int32_t(threads)
	cp.n_threads_batch = C.int32_t(threads)
	if p.ThreadsBatch > 0 {
		cp.n_threads_batch = C.int32_t(p.ThreadsBatch)
	}
	switch p.FlashAttn {
	case FlashAttnOn:
		cp.flash_attn_type = C.LLAMA_FLASH_ATTN_TYPE_ENABLED
	case FlashAttnOff:
		cp.flash_attn_type = C.LLAMA_FLASH_ATTN_TYPE_DISABLED
	default:
		cp.flash_attn_type = C.LLAMA_FLASH_ATTN_TYPE_AUTO
	}
	for _, kv := range []struct {
		name string
		dst  *C.enum_ggml_type
	}{{p.TypeK, &cp.type_k}, {p.TypeV, &cp.type_v}} {
		if kv.name == "" {
			continue
		}
		if err := CheckCacheType(kv.name); err != nil {
			return nil, fmt.Errorf("new context: %w", err)
		}
		*kv.dst = cacheTypes[strings.ToLower(kv.name)]
	}
	if p.TypeV != "" && !strings.EqualFold(p.TypeV, "f16") && !strings.EqualFold(p.TypeV, "f32") && !strings.EqualFold(p.TypeV, "bf16") && p.FlashAttn == FlashAttnOff {
		return nil, fmt.Errorf("new context: a quantized V cache (%s) needs flash attention", p.TypeV)
	}
	cp.no_perf = C.bool(!p.Perf)
	cp.kv_unified = C.bool(p.KVUnified)

	// With one KV buffer shared by several sequences, llama.cpp counts the
	// whole buffer as every sequence's context and warns of a possible
	// training-context overflow; the caller bounds each sequence to
	// NCtx/NSeqMax (engine slots do), so the warning is not true here.
	if p.KVUnified && p.NSeqMax > 1 && p.NCtx/p.NSeqMax <= m.ctxTrain {
		sharedKVContexts.Add(1)
		defer sharedKVContexts.Add(-1)
	}
	abort := C.chatglm_abort_new()
	errs := newErrSink()
	var c *C.struct_llama_context
	logged := errs.capture(func() { c = C.chatglm_init_context(m.c, cp, abort) })
	if c == nil {
		C.chatglm_abort_free(abort)
		errs.free()
		return nil, llamaError(fmt.Sprintf("new context for %s", m.path), logged)
	}
	m.contexts++
	ctx := &Context{
		c:       c,
		abort:   abort,
		errs:    errs,
		model:   m,
		nBatch:  int(C.llama_n_batch(c)),
		nVocab:  m.nVocab,
		nSeq:    int(C.llama_n_seq_max(c)),
		nCtx:    int(C.llama_n_ctx(c)),
		nCtxSeq: int(C.llama_n_ctx_seq(c)),
	}
	ctx.leak = runtime.AddCleanup(ctx, warnLeak, "context of "+m.path)
	return ctx, nil
}

// DefaultThreads is the thread count used when none is given: the number of
// CPU cores available to the process, as llama.cpp's tools choose.
func DefaultThreads() int { return cpuCount() }

// Close frees the context. Calling Close again is a no-op.
func (c *Context) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.c == nil {
		return nil
	}
	C.llama_free(c.c)
	C.chatglm_abort_free(c.abort)
	c.errs.free()
	c.c, c.abort = nil, nil
	c.leak.Stop()
	c.model.mu.Lock()
	c.model.contexts--
	c.model.mu.Unlock()
	return nil
}

// Model is the model the context was made from.
func (c *Context) Model() *Model { return c.model }

// Size is the number of KV cells in the context (all sequences together).
func (c *Context) Size() int { return c.nCtx }

// SeqSize is the number of KV cells one sequence may use.
func (c *Context) SeqSize() int { return c.nCtxSeq }

// BatchSize is the most tokens one Decode call may carry.
func (c *Context) BatchSize() int { return c.nBatch }

// MaxSeqs is the number of sequences the context holds.
func (c *Context) MaxSeqs() int { return c.nSeq }

// SetThreads changes the generation and batch thread counts.
func (c *Context) SetThreads(gen, batch int) error {
	if gen <= 0 || batch <= 0 || gen > maxThreads || batch > maxThreads {
		return fmt.Errorf("set threads: %d and %d, want 1 to %d", gen, batch, maxThreads)
	}
	return c.use(func(lc *C.struct_llama_context) error {
		C.llama_set_n_threads(lc, C.int32_t(gen), C.int32_t(batch))
		return nil
	})
}

// maxThreads bounds thread counts (ggml's GGML_MAX_N_THREADS).
const maxThreads = 512

// use runs f with the C context under the context's lock, or returns
// ErrClosed.
func (c *Context) use(f func(lc *C.struct_llama_context) error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.c == nil {
		return ErrClosed
	}
	return f(c.c)
}

// checkSeq returns an error unless seq is a sequence id of the context
// (or -1, every sequence, where anySeq allows it).
func (c *Context) checkSeq(what string, seq int, anySeq bool) error {
	if (seq == -1 && anySeq) || (seq >= 0 && seq < c.nSeq) {
		return nil
	}
	return fmt.Errorf("%s: sequence %d out of range [0, %d)", what, seq, c.nSeq)
}

// Decode errors.
var (
	// ErrNoKVSlot means the KV memory has no room for the batch: the
	// sequence is longer than the context allows.
	ErrNoKVSlot = errors.New("decode: no room in the KV cache (context full)")
	// ErrAborted means the decode was cancelled.
	ErrAborted = errors.New("decode: aborted")
)

// Decode evaluates the batch. Rows marked for logits can be read with
// Logits afterwards. Cancelling ctx aborts a decode in progress (CPU);
// llama.cpp then keeps the micro-batches it had already finished.
func (c *Context) Decode(ctx context.Context, b *Batch) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.c == nil {
		return ErrClosed
	}
	if b.closed() {
		return fmt.Errorf("decode: batch: %w", ErrClosed)
	}
	n := b.Len()
	if n == 0 {
		return fmt.Errorf("decode: empty batch")
	}
	if n > c.nBatch {
		return fmt.Errorf("decode: batch of %d tokens exceeds the context's batch size %d", n, c.nBatch)
	}
	if err := b.check(c.nVocab, c.nSeq); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	rc, logged := c.decodeAbortable(ctx, b)
	switch {
	case rc == 0:
		return nil
	case rc == 1:
		return ErrNoKVSlot
	case rc == 2:
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%w: %w", ErrAborted, err)
		}
		return ErrAborted
	default:
		return llamaError(fmt.Sprintf("decode: llama_decode returned %d", int(rc)), logged)
	}
}

// decodeAbortable runs llama_decode with cancelling ctx raising the
// context's abort flag (see abortOn).
func (c *Context) decodeAbortable(ctx context.Context, b *Batch) (C.int32_t, string) {
	flag := c.abort
	release := abortOn(ctx, func() { C.chatglm_abort_set(flag, 1) }, func() { C.chatglm_abort_set(flag, 0) })
	defer release()
	var rc C.int32_t
	logged := c.errs.capture(func() { rc = C.llama_decode(c.c, b.c) })
	return rc, logged
}

// abortOn calls raise when ctx is cancelled, until release is called.
// release calls lower; if raise has started by then, release first waits
// for it to finish, so a raise never lands after lower (where it would
// abort the next decode).
func abortOn(ctx context.Context, raise, lower func()) (release func()) {
	raised := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(raised)
		raise()
	})
	return func() {
		if !stop() {
			<-raised
		}
		lower()
	}
}

// Logits returns a copy of the logits of batch row i of the last Decode
// (the row must have been marked for logits); i = -1 is the last such row.
func (c *Context) Logits(i int) ([]float32, error) {
	out := make([]float32, c.nVocab)
	if err := c.LogitsInto(i, out); err != nil {
		return nil, err
	}
	return out, nil
}

// LogitsInto copies the logits of batch row i into dst (len >= vocab size).
func (c *Context) LogitsInto(i int, dst []float32) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.c == nil {
		return ErrClosed
	}
	if len(dst) < c.nVocab {
		return fmt.Errorf("logits: destination holds %d values, need %d", len(dst), c.nVocab)
	}
	if i < -1 || i >= c.nBatch {
		return fmt.Errorf("logits: batch row %d out of range [-1, %d)", i, c.nBatch)
	}
	var p *C.float
	logged := c.errs.capture(func() { p = C.llama_get_logits_ith(c.c, C.int32_t(i)) })
	if p == nil {
		return llamaError(fmt.Sprintf("logits: no logits for batch row %d", i), logged)
	}
	copy(dst, unsafe.Slice((*float32)(unsafe.Pointer(p)), c.nVocab))
	return nil
}

// ErrPartialRemove means the context's memory cannot remove part of a
// sequence (recurrent models); remove the whole sequence instead.
var ErrPartialRemove = errors.New("binding: the memory cannot remove part of a sequence")

// ClearMemory empties every sequence; with data the buffers are zeroed too.
func (c *Context) ClearMemory(data bool) error {
	return c.use(func(lc *C.struct_llama_context) error {
		C.llama_memory_clear(C.llama_get_memory(lc), C.bool(data))
		return nil
	})
}

// SeqRemove removes positions [p0, p1) of seq (p1 < 0: to the end; seq < 0:
// every sequence). It returns ErrPartialRemove if the memory cannot remove
// a part.
func (c *Context) SeqRemove(seq, p0, p1 int) error {
	if seq < 0 {
		seq = -1
	}
	if err := c.checkSeq("remove", seq, true); err != nil {
		return err
	}
	return c.use(func(lc *C.struct_llama_context) error {
		if !bool(C.llama_memory_seq_rm(C.llama_get_memory(lc), C.llama_seq_id(seq), cPos(p0), cPos(p1))) {
			return fmt.Errorf("remove positions [%d, %d) of sequence %d: %w", p0, p1, seq, ErrPartialRemove)
		}
		return nil
	})
}

// cPos converts a position bound; negative values mean "open" to llama.cpp
// and larger ones than it holds are clamped.
func cPos(p int) C.llama_pos {
	if p < 0 {
		return -1
	}
	return C.llama_pos(min(p, math.MaxInt32))
}

// SeqCopy makes dst share the cells of src in positions [p0, p1).
func (c *Context) SeqCopy(src, dst, p0, p1 int) error {
	if err := c.checkSeq("copy", src, false); err != nil {
		return err
	}
	if err := c.checkSeq("copy", dst, false); err != nil {
		return err
	}
	return c.use(func(lc *C.struct_llama_context) error {
		C.llama_memory_seq_cp(C.llama_get_memory(lc), C.llama_seq_id(src), C.llama_seq_id(dst), cPos(p0), cPos(p1))
		return nil
	})
}

// SeqKeep removes every sequence but seq. Without KVUnified (and with
// several sequences) each sequence has its own cells and only seq's are
// affected.
func (c *Context) SeqKeep(seq int) error {
	if err := c.checkSeq("keep", seq, false); err != nil {
		return err
	}
	return c.use(func(lc *C.struct_llama_context) error {
		C.llama_memory_seq_keep(C.llama_get_memory(lc), C.llama_seq_id(seq))
		return nil
	})
}

// SeqShift adds delta to the positions [p0, p1) of seq (RoPE is re-applied).
func (c *Context) SeqShift(seq, p0, p1, delta int) error {
	if err := c.checkSeq("shift", seq, false); err != nil {
		return err
	}
	if delta < math.MinInt32 || delta > math.MaxInt32 {
		return fmt.Errorf("shift sequence %d: delta %d out of range", seq, delta)
	}
	return c.use(func(lc *C.struct_llama_context) error {
		mem := C.llama_get_memory(lc)
		if !bool(C.llama_memory_can_shift(mem)) {
			return fmt.Errorf("shift sequence %d: this memory cannot shift positions", seq)
		}
		C.llama_memory_seq_add(mem, C.llama_seq_id(seq), cPos(p0), cPos(p1), C.llama_pos(delta))
		return nil
	})
}

// SeqPosMax is the largest position held for seq, or -1 if it is empty.
func (c *Context) SeqPosMax(seq int) (int, error) {
	return c.seqPos("largest position", seq, func(mem C.llama_memory_t) C.llama_pos {
		return C.llama_memory_seq_pos_max(mem, C.llama_seq_id(seq))
	})
}

// SeqPosMin is the smallest position held for seq, or -1 if it is empty.
func (c *Context) SeqPosMin(seq int) (int, error) {
	return c.seqPos("smallest position", seq, func(mem C.llama_memory_t) C.llama_pos {
		return C.llama_memory_seq_pos_min(mem, C.llama_seq_id(seq))
	})
}

func (c *Context) seqPos(what string, seq int, get func(C.llama_memory_t) C.llama_pos) (int, error) {
	if err := c.checkSeq(what, seq, false); err != nil {
		return 0, err
	}
	pos := -1
	err := c.use(func(lc *C.struct_llama_context) error {
		pos = int(get(C.llama_get_memory(lc)))
		return nil
	})
	return pos, err
}

// SeqState returns a copy of the KV state of one sequence.
func (c *Context) SeqState(seq int) ([]byte, error) {
	if err := c.checkSeq("sequence state", seq, false); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.c == nil {
		return nil, ErrClosed
	}
	n := C.llama_state_seq_get_size(c.c, C.llama_seq_id(seq))
	if n == 0 {
		return nil, fmt.Errorf("sequence %d state: empty", seq)
	}
	buf := C.malloc(n)
	defer C.free(buf)
	var got C.size_t
	logged := c.errs.capture(func() { got = C.llama_state_seq_get_data(c.c, (*C.uint8_t)(buf), n, C.llama_seq_id(seq)) })
	if got == 0 {
		return nil, llamaError(fmt.Sprintf("sequence %d state: copy failed", seq), logged)
	}
	return C.GoBytes(buf, C.int(got)), nil
}

// SetSeqState restores a state made by SeqState into sequence seq,
// replacing what it held.
func (c *Context) SetSeqState(seq int, state []byte) error {
	if err := c.checkSeq("restore", seq, false); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.c == nil {
		return ErrClosed
	}
	if len(state) == 0 {
		return fmt.Errorf("restore sequence %d: empty state", seq)
	}
	cbuf := C.CBytes(state)
	defer C.free(cbuf)
	var rc C.size_t
	logged := c.errs.capture(func() {
		rc = C.llama_state_seq_set_data(c.c, (*C.uint8_t)(cbuf), C.size_t(len(state)), C.llama_seq_id(seq))
	})
	if rc == 0 {
		return llamaError(fmt.Sprintf("restore sequence %d: state rejected (made by another model or context settings?)", seq), logged)
	}
	return nil
}

// SaveSeqState writes a sequence's state and its tokens to a file.
func (c *Context) SaveSeqState(path string, seq int, tokens []int32) error {
	if err := c.checkSeq("save sequence state", seq, false); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.c == nil {
		return ErrClosed
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var tp *C.llama_token
	if len(tokens) > 0 {
		tp = (*C.llama_token)(unsafe.Pointer(&tokens[0]))
	}
	var rc C.size_t
	logged := c.errs.capture(func() { rc = C.llama_state_seq_save_file(c.c, cpath, C.llama_seq_id(seq), tp, C.size_t(len(tokens))) })
	if rc == 0 {
		return llamaError(fmt.Sprintf("save sequence %d state to %s", seq, path), logged)
	}
	return nil
}

// LoadSeqState reads a file written by SaveSeqState into sequence seq and
// returns the tokens stored with it.
func (c *Context) LoadSeqState(path string, seq int) ([]int32, error) {
	if err := c.checkSeq("load sequence state", seq, false); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.c == nil {
		return nil, ErrClosed
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("load sequence state: %w", err)
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	toks := make([]int32, c.nCtx+1)
	var n, rc C.size_t
	logged := c.errs.capture(func() {
		rc = C.llama_state_seq_load_file(c.c, cpath, C.llama_seq_id(seq), (*C.llama_token)(unsafe.Pointer(&toks[0])), C.size_t(len(toks)), &n)
	})
	if rc == 0 {
		return nil, llamaError(fmt.Sprintf("load sequence %d state from %s", seq, path), logged)
	}
	return toks[:n], nil
}

// PerfData are llama.cpp's performance counters for a context (collected
// only with ContextParams.Perf).
type PerfData struct {
	Load         time.Duration // model load time
	PromptEval   time.Duration // time spent evaluating prompt tokens
	Eval         time.Duration // time spent generating tokens one by one
	PromptTokens int           // prompt tokens evaluated
	EvalTokens   int           // tokens generated
}

// Perf returns the performance counters.
func (c *Context) Perf() (PerfData, error) {
	var p PerfData
	err := c.use(func(lc *C.struct_llama_context) error {
		d := C.llama_perf_context(lc)
		ms := func(v C.double) time.Duration { return time.Duration(float64(v) * float64(time.Millisecond)) }
		p = PerfData{Load: ms(d.t_load_ms), PromptEval: ms(d.t_p_eval_ms), Eval: ms(d.t_eval_ms), PromptTokens: int(d.n_p_eval), EvalTokens: int(d.n_eval)}
		return nil
	})
	return p, err
}

// ResetPerf zeroes the performance counters.
func (c *Context) ResetPerf() error {
	return c.use(func(lc *C.struct_llama_context) error {
		C.llama_perf_context_reset(lc)
		return nil
	})
}
