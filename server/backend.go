package server

import (
	"context"

	"github.com/chatglm/chatglm/gen"
)

// Backend is the loaded model as the server sees it: a tokenizer, the size of
// one sequence's context, and a pool of sequences (engine slots) that
// generate concurrently. enginebackend serves an *engine.Engine through it;
// tests use a scripted fake.
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
	// Stats returns the backend's running totals (/metrics).
	Stats() gen.Stats
}

// Sequence is one acquired KV sequence (an *engine.Slot): a generator that
// goes back to the pool on Release, keeping its cache for later prefix
// reuse.
type Sequence interface {
	gen.Generator
	Release()
}
