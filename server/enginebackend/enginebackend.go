// Package enginebackend serves the engine through the server: an
// *engine.Engine (one model, N slots batched by its scheduler) with the
// SentencePiece encoder of the same GGUF file is a server.Backend, and its
// slots are the server's sequences as they are. It is a package of its own
// so that server stays free of cgo and runs its tests under the race
// detector.
package enginebackend

import (
	"context"
	"fmt"

	"github.com/chatglm/chatglm/engine"
	"github.com/chatglm/chatglm/server"
	"github.com/chatglm/chatglm/spm"
)

// Backend is an engine as a server.Backend: the engine's context size,
// parallel slots and statistics, and the encoder's Tokenize.
type Backend struct {
	*engine.Engine
	*spm.Encoder
}

// New serves e, tokenizing with the vocabulary of the GGUF file at
// ggufPath (the file e loaded).
func New(e *engine.Engine, ggufPath string) (*Backend, error) {
	enc, err := spm.LoadGGUF(ggufPath)
	if err != nil {
		return nil, fmt.Errorf("serve %s: %w", ggufPath, err)
	}
	return &Backend{Engine: e, Encoder: enc}, nil
}

// VocabSize is the model's vocabulary size; the server checks raw token
// prompts against it.
func (b *Backend) VocabSize() int { return b.Model().VocabSize() }

// Acquire implements server.Backend: the free slot whose cache shares the
// longest prefix with prompt.
func (b *Backend) Acquire(ctx context.Context, prompt []int32) (server.Sequence, error) {
	slot, err := b.AcquireFor(ctx, prompt)
	if err != nil {
		return nil, err
	}
	return slot, nil
}
