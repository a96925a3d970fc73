// Package backend connects the chat package to the engine: a conversation
// generates on an engine slot (a gen.Generator), and Model pairs the
// engine's context size with the SentencePiece encoder of the GGUF file the
// engine loaded. It is a separate package so that chat itself stays free of
// cgo and testable with the race detector.
package backend

import (
	"context"
	"fmt"

	"github.com/chatglm/chatglm/chat"
	"github.com/chatglm/chatglm/engine"
)

// NewConversation acquires a slot of e and starts a conversation on it
// that encodes text with model (see NewModel). Call the returned release
// function when the conversation ends.
func NewConversation(ctx context.Context, e *engine.Engine, model chat.Model, opts chat.Options) (*chat.Conversation, func(), error) {
	slot, err := e.Acquire(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("acquire a sequence: %w", err)
	}
	return chat.NewConversation(model, slot, opts), slot.Release, nil
}
