// Package enginebackend serves the engine through the server: it adapts an
// *engine.Engine (one model, N slots batched by its scheduler) to
// server.Backend, encoding text with the chat package's SentencePiece
// tokenizer from the same GGUF file. It is a package of its own so that
// server stays free of cgo and runs its tests under the race detector.
package enginebackend

import (
	"context"
	"errors"
	"fmt"

	"github.com/chatglm/chatglm/chat"
	chatbackend "github.com/chatglm/chatglm/chat/backend"
	"github.com/chatglm/chatglm/engine"
	"github.com/chatglm/chatglm/server"
	"github.com/chatglm/chatglm/spm"
)

// Backend is an engine as a server.Backend.
type Backend struct {
	e   *engine.Engine
	tok chat.Tokenizer
}

// New adapts e, tokenizing with the vocabulary of the GGUF file at
// ggufPath (the file e loaded).
func New(e *engine.Engine, ggufPath string) (*Backend, error) {
	tok, err := spm.LoadGGUF(ggufPath)
	if err != nil {
		return nil, fmt.Errorf("serve %s: %w", ggufPath, err)
	}
	return &Backend{e: e, tok: tok}, nil
}

// Engine returns the adapted engine.
func (b *Backend) Engine() *engine.Engine { return b.e }

// Tokenize implements server.Backend.
func (b *Backend) Tokenize(text string) ([]int32, error) { return b.tok.Tokenize(text) }

// ContextSize implements server.Backend.
func (b *Backend) ContextSize() int { return b.e.ContextSize() }

// Parallel implements server.Backend.
func (b *Backend) Parallel() int { return b.e.Parallel() }

// VocabSize is the model's vocabulary size; the server checks raw token
// prompts against it.
func (b *Backend) VocabSize() int { return b.e.Model().VocabSize() }

// Acquire implements server.Backend: the free slot whose cache shares the
// longest prefix with prompt.
func (b *Backend) Acquire(ctx context.Context, prompt []int32) (server.Sequence, error) {
	slot, err := b.e.AcquireFor(ctx, prompt)
	if err != nil {
		return nil, err
	}
	return sequence{slot}, nil
}

// Stats implements server.Backend.
func (b *Backend) Stats() server.BackendStats {
	s := b.e.Stats()
	return server.BackendStats{EvaluatedPromptTokens: s.PromptTokens, GeneratedTokens: s.GeneratedTokens,
		DecodeSteps: s.DecodeSteps, Active: s.Active}
}

// sequence is an acquired engine slot.
type sequence struct {
	slot *engine.Slot
}

func (s sequence) Release() { s.slot.Release() }

func (s sequence) Generate(ctx context.Context, req chat.Request, onToken func(chat.Token) error) (chat.Result, error) {
	res, err := chatbackend.Generator{Slot: s.slot}.Generate(ctx, req, func(t chat.Token) error {
		if err := onToken(t); err != nil {
			if errors.Is(err, server.ErrStop) {
				return engine.ErrStop
			}
			return err
		}
		return nil
	})
	var tl *engine.PromptTooLongError
	if errors.As(err, &tl) {
		return res, &server.PromptTooLongError{PromptTokens: tl.Tokens, Limit: tl.Limit}
	}
	return res, err
}
