package backend

import (
	"fmt"

	"github.com/chatglm/chatglm/chat"
	"github.com/chatglm/chatglm/engine"
	"github.com/chatglm/chatglm/gguf"
)

// LoadTokenizer builds the chat package's SentencePiece encoder from the
// vocabulary stored in a GGUF file (tokenizer.ggml.tokens, .scores and
// .token_type). The chat protocol encodes text with it rather than with
// llama.cpp's tokenizer, which can merge plain text such as "]sop" into a
// control token (see chat.SPM).
func LoadTokenizer(path string) (*chat.SPM, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load tokenizer: %w", err)
	}
	if m := f.String("tokenizer.ggml.model"); m != "llama" {
		return nil, fmt.Errorf("load tokenizer: %s: tokenizer.ggml.model is %q, want a SentencePiece (llama) vocabulary", path, m)
	}
	tokens, err := gguf.ArrayOf[string](f, "tokenizer.ggml.tokens")
	if err != nil {
		return nil, fmt.Errorf("load tokenizer: %w", err)
	}
	scores, err := gguf.ArrayOf[float32](f, "tokenizer.ggml.scores")
	if err != nil {
		return nil, fmt.Errorf("load tokenizer: %w", err)
	}
	types, err := gguf.ArrayOf[int32](f, "tokenizer.ggml.token_type")
	if err != nil {
		return nil, fmt.Errorf("load tokenizer: %w", err)
	}
	if len(scores) != len(tokens) || len(types) != len(tokens) {
		return nil, fmt.Errorf("load tokenizer: %s: %d tokens, %d scores, %d types", path, len(tokens), len(scores), len(types))
	}
	vocab := make([]chat.VocabPiece, len(tokens))
	for i := range tokens {
		vocab[i] = chat.VocabPiece{Text: tokens[i], Score: scores[i], Type: int(types[i])}
	}
	spm, err := chat.NewSPM(vocab)
	if err != nil {
		return nil, fmt.Errorf("load tokenizer: %s: %w", path, err)
	}
	return spm, nil
}

// Model is a chat.Model made of the chat package's tokenizer and the
// engine's context size.
type Model struct {
	*chat.SPM
	Engine *engine.Engine
}

// ContextSize implements chat.Model.
func (m Model) ContextSize() int { return m.Engine.ContextSize() }

// NewModel pairs an engine with the tokenizer of the GGUF file it loaded.
func NewModel(e *engine.Engine, ggufPath string) (Model, error) {
	spm, err := LoadTokenizer(ggufPath)
	if err != nil {
		return Model{}, err
	}
	return Model{SPM: spm, Engine: e}, nil
}
