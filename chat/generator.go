package chat

import (
	"context"
	"time"
)

// Sampling holds the sampling parameters of one generation. Temperature 0
// means greedy decoding.
type Sampling struct {
	Temperature      float32
	TopK             int // 0: no top-k
	TopP             float32
	MinP             float32
	RepeatPenalty    float32 // 1: off
	PresencePenalty  float32
	FrequencyPenalty float32
	RepeatLastN      int
	Seed             uint32
}

// DefaultSampling is ChatGLM3's chat() default: temperature 0.8, top_p 0.8,
// plus what HF transformers adds to a config without generation_config.json:
// top_k 50 and no repetition penalty.
func DefaultSampling() Sampling {
	return Sampling{Temperature: 0.8, TopP: 0.8, TopK: 50, RepeatPenalty: 1, RepeatLastN: 64}
}

// Request is one generation call on a KV sequence.
type Request struct {
	// Prompt is the whole prompt. The generator evaluates only the part
	// after the longest prefix its KV cache already holds.
	Prompt    []int32
	MaxTokens int
	Stop      []int32
	Sampling  Sampling
}

// Token is one generated token and its raw bytes (a space for ▁; possibly a
// partial UTF-8 character for byte-fallback pieces).
type Token struct {
	ID    int32
	Piece []byte
}

// Result describes a finished generation.
type Result struct {
	Tokens          []int32 // generated ids, without the stop token
	Finish          string  // "stop", "length" or "cancelled"
	StopToken       int32   // the stop id that ended it, when Finish is "stop"
	PromptTokens    int     // len(Request.Prompt)
	CachedTokens    int     // prompt tokens reused from the KV cache
	EvaluatedTokens int     // prompt tokens evaluated by this call
	PromptTime      time.Duration
	GenTime         time.Duration
}

// Finish reasons of a Result.
const (
	FinishStop      = "stop"
	FinishLength    = "length"
	FinishCancelled = "cancelled"
)

// Generator generates on one KV sequence (an engine slot). It calls onToken
// for each generated token (a stop token may be passed too; callers ignore
// it); an error from onToken ends the generation with that error.
type Generator interface {
	Generate(ctx context.Context, req Request, onToken func(Token) error) (Result, error)
}

// Model is what a conversation needs from the loaded model besides a
// generator: its tokenizer and the number of tokens one sequence holds.
type Model interface {
	Tokenizer
	ContextSize() int
}
