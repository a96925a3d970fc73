// Package backend connects the chat package to the engine: Generator makes
// an engine.Slot a chat.Generator, and Model pairs the engine's context size
// with the chat package's SentencePiece encoder loaded from the GGUF file. It is a separate package so that chat itself
// stays free of cgo and testable with the race detector.
package backend

import (
	"context"
	"fmt"

	"github.com/chatglm/chatglm/chat"
	"github.com/chatglm/chatglm/engine"
)

// Generator generates on one engine slot (one KV sequence). The slot keeps
// what its KV cache holds between calls, so a conversation that sends its
// whole history every turn has only the new tokens evaluated.
type Generator struct {
	Slot *engine.Slot
}

// Generate implements chat.Generator.
func (g Generator) Generate(ctx context.Context, req chat.Request, onToken func(chat.Token) error) (chat.Result, error) {
	s := req.Sampling
	res, err := g.Slot.Generate(ctx, engine.Request{
		Prompt:    req.Prompt,
		MaxTokens: req.MaxTokens,
		Stop:      req.Stop,
		Sampling: engine.Sampling{
			Temperature: s.Temperature, TopK: s.TopK, TopP: s.TopP, MinP: s.MinP,
			RepeatPenalty: s.RepeatPenalty, PresencePenalty: s.PresencePenalty,
			FrequencyPenalty: s.FrequencyPenalty, RepeatLastN: s.RepeatLastN, Seed: s.Seed,
		},
	}, func(t engine.Token) error {
		return onToken(chat.Token{ID: t.ID, Piece: t.Piece})
	})
	return chat.Result{
		Tokens: res.Tokens, Finish: res.Finish, StopToken: res.StopToken,
		PromptTokens: res.PromptTokens, CachedTokens: res.CachedTokens, EvaluatedTokens: res.EvaluatedTokens,
		PromptTime: res.PromptTime, GenTime: res.GenTime,
	}, err
}

// NewConversation acquires a slot of e and starts a conversation on it
// that encodes text with model (see NewModel). Call the returned release
// function when the conversation ends.
func NewConversation(ctx context.Context, e *engine.Engine, model chat.Model, opts chat.Options) (*chat.Conversation, func(), error) {
	slot, err := e.Acquire(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("acquire a sequence: %w", err)
	}
	return chat.NewConversation(model, Generator{Slot: slot}, opts), slot.Release, nil
}
