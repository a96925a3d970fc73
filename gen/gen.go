// Package gen holds the types of one text generation, shared by every layer
// that asks for or serves one: the engine (which runs it on a KV sequence),
// the chat layer (which builds ChatGLM3 prompts and reads replies) and the
// server (which maps OpenAI requests). It has no cgo and no behaviour beyond
// the types' own methods, so that chat and server test with the race
// detector and no layer copies these types field by field.
package gen

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"
)

// Sampling holds the sampling settings of one generation. Temperature 0
// means greedy decoding.
type Sampling struct {
	Temperature      float32
	TopK             int     // keep the k most likely tokens (0 = off)
	TopP             float32 // nucleus sampling (1 or 0 = off)
	MinP             float32 // drop tokens below MinP x the top probability (0 = off)
	RepeatPenalty    float32 // divide logits of recent tokens (1 or 0 = off)
	PresencePenalty  float32 // subtract once if present (0 = off)
	FrequencyPenalty float32 // subtract per occurrence (0 = off)
	RepeatLastN      int     // how many recent tokens the penalties see (0 = 64, -1 = none)
	Seed             uint32  // random seed; RandomSeed picks a new one
}

// RandomSeed in Sampling.Seed asks for a fresh random seed.
const RandomSeed = math.MaxUint32

// Request asks a sequence to continue a token sequence.
type Request struct {
	// Prompt is the whole sequence the model should have seen; the part
	// the sequence's KV cache already holds is not evaluated again.
	Prompt []int32
	// MaxTokens bounds the reply (0 = until the context is full).
	MaxTokens int
	// Stop lists token ids that end the reply; they are not emitted.
	Stop     []int32
	Sampling Sampling
}

// Token is one generated token and its raw bytes (a space for ▁; possibly
// part of a UTF-8 character for byte-fallback pieces).
type Token struct {
	ID    int32
	Piece []byte
}

// Finish reasons of a Result.
const (
	FinishStop      = "stop"      // a stop token, or the callback returned ErrStop
	FinishLength    = "length"    // MaxTokens or the context limit
	FinishCancelled = "cancelled" // the context was cancelled
)

// ErrStop, returned by a token callback, ends a generation normally
// (Finish "stop", nil error).
var ErrStop = errors.New("stop generation")

// Result describes a finished generation.
type Result struct {
	Tokens          []int32 // generated tokens, without the stop token
	Finish          string  // FinishStop, FinishLength or FinishCancelled
	StopToken       int32   // the stop token, when one ended the reply (else -1)
	PromptTokens    int     // len(Request.Prompt)
	CachedTokens    int     // prompt tokens reused from the KV cache
	EvaluatedTokens int     // prompt tokens evaluated for this request
	PromptTime      time.Duration
	GenTime         time.Duration
}

// Generator generates on one KV sequence. Generate continues req.Prompt and
// calls onToken for each generated token (never for the stop token that ends
// the reply); onToken returning ErrStop ends the reply normally, another
// error aborts it and is returned. Cancelling ctx stops the generation at
// once; Generate then returns ctx's error. *engine.Slot is one.
type Generator interface {
	Generate(ctx context.Context, req Request, onToken func(Token) error) (Result, error)
}

// PromptTooLongError reports a prompt (plus the room asked for the reply)
// that does not fit a sequence's context.
type PromptTooLongError struct {
	PromptTokens int // tokens in the prompt
	MaxTokens    int // tokens asked for the reply (0: not given)
	Limit        int // the context size
}

func (e *PromptTooLongError) Error() string {
	if e.MaxTokens > 0 {
		requested := e.PromptTokens + e.MaxTokens
		if requested < e.PromptTokens { // a client's huge max_tokens
			requested = math.MaxInt
		}
		return fmt.Sprintf("this model's maximum context length is %d tokens, however you requested %d tokens (%d in the prompt, %d for the completion); reduce the prompt or max_tokens",
			e.Limit, requested, e.PromptTokens, e.MaxTokens)
	}
	return fmt.Sprintf("this model's maximum context length is %d tokens, however the prompt has %d tokens; reduce the length of the prompt",
		e.Limit, e.PromptTokens)
}

// Stats are the running totals of an engine, for monitoring.
type Stats struct {
	Requests              int64
	EvaluatedPromptTokens int64 // prompt tokens evaluated (not reused from a cache)
	GeneratedTokens       int64
	Active                int64 // sequences generating now
	Waiting               int64 // callers waiting for a sequence
	DecodeSteps           int64 // batched decode calls
}
