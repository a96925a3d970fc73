package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/chatglm/chatglm/chat"
)

// Backend is the loaded model as the server sees it: a tokenizer, the size of
// one sequence's context, and a pool of sequences (engine slots) that
// generate concurrently. enginebackend adapts *engine.Engine to it; tests use
// a scripted fake.
type Backend interface {
	// Tokenize encodes text as one SentencePiece call does: with the
	// dummy-prefix space and without parsing special tokens.
	Tokenize(text string) ([]int32, error)
	// ContextSize is the number of tokens one sequence can hold.
	ContextSize() int
	// Parallel is the number of sequences that generate at once.
	Parallel() int
	// Acquire waits for a free sequence, preferring the one whose cache
	// shares the longest prefix with prompt. It returns ctx's error when
	// ctx ends first. The caller must Release the sequence.
	Acquire(ctx context.Context, prompt []int32) (Sequence, error)
	// Stats returns the backend's running totals.
	Stats() BackendStats
}

// Sequence is one acquired KV sequence.
type Sequence interface {
	// Generate continues req.Prompt and calls onToken for each generated
	// token (never for the stop token that ends the reply). onToken
	// returning ErrStop ends the reply normally (Finish "stop", nil error);
	// another error aborts it and is returned. Cancelling ctx stops the
	// generation at once; Generate then returns ctx's error.
	Generate(ctx context.Context, req chat.Request, onToken func(chat.Token) error) (chat.Result, error)
	// Release returns the sequence to the pool, keeping its cache for
	// later prefix reuse.
	Release()
}

// BackendStats are the backend's counters, exported by /metrics.
type BackendStats struct {
	EvaluatedPromptTokens int64 // prompt tokens evaluated (not reused from a cache)
	GeneratedTokens       int64
	DecodeSteps           int64 // batched decode calls
	Active                int64 // sequences generating now
}

// ErrStop, returned by an onToken callback, ends a generation normally.
var ErrStop = errors.New("server: stop generation")

// RandomSeed in chat.Sampling.Seed asks the backend for a fresh random seed.
const RandomSeed = ^uint32(0)

// PromptTooLongError reports a prompt (plus the room asked for the reply)
// that does not fit a sequence's context.
type PromptTooLongError struct {
	PromptTokens int // tokens in the prompt
	MaxTokens    int // tokens asked for the reply (0: not given)
	Limit        int // the context size
}

func (e *PromptTooLongError) Error() string {
	if e.MaxTokens > 0 {
		return fmt.Sprintf("this model's maximum context length is %d tokens, however you requested %d tokens (%d in the prompt, %d for the completion); reduce the prompt or max_tokens",
			e.Limit, satAdd(e.PromptTokens, e.MaxTokens), e.PromptTokens, e.MaxTokens)
	}
	return fmt.Sprintf("this model's maximum context length is %d tokens, however the prompt has %d tokens; reduce the length of the prompt",
		e.Limit, e.PromptTokens)
}
