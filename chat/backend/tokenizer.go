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
	arr := func(key string) ([]any, error) {
		kv, ok := f.KV(key)
		if !ok {
			return nil, fmt.Errorf("load tokenizer: %s: no %s", path, key)
		}
		a, ok := kv.Value.(*gguf.Array)
		if !ok {
			return nil, fmt.Errorf("load tokenizer: %s: %s is not an array", path, key)
		}
		return a.Values, nil
	}
	if m := f.String("tokenizer.ggml.model"); m != "llama" {
		return nil, fmt.Errorf("load tokenizer: %s: tokenizer.ggml.model is %q, want a SentencePiece (llama) vocabulary", path, m)
	}
	tokens, err := arr("tokenizer.ggml.tokens")
	if err != nil {
		return nil, err
	}
	scores, err := arr("tokenizer.ggml.scores")
	if err != nil {
		return nil, err
	}
	types, err := arr("tokenizer.ggml.token_type")
	if err != nil {
		return nil, err
	}
	if len(scores) != len(tokens) || len(types) != len(tokens) {
		return nil, fmt.Errorf("load tokenizer: %s: %d tokens, %d scores, %d types", path, len(tokens), len(scores), len(types))
	}
	vocab := make([]chat.VocabPiece, len(tokens))
	for i := range tokens {
		text, ok1 := tokens[i].(string)
		score, ok2 := scores[i].(float32)
		typ, ok3 := gguf.AsUint(types[i])
		if !ok1 || !ok2 || !ok3 {
			return nil, fmt.Errorf("load tokenizer: %s: token %d has unexpected value types", path, i)
		}
		vocab[i] = chat.VocabPiece{Text: text, Score: score, Type: int(typ)}
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
