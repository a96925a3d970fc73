package spm

import (
	"fmt"

	"github.com/chatglm/chatglm/gguf"
)

// LoadGGUF builds an encoder from the vocabulary stored in a GGUF file
// (tokenizer.ggml.tokens, .scores and .token_type). The chat protocol
// encodes text with it rather than with llama.cpp's tokenizer, which can
// merge plain text such as "]sop" into a control token (see Encoder).
func LoadGGUF(path string) (*Encoder, error) {
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
	vocab := make([]Piece, len(tokens))
	for i := range tokens {
		vocab[i] = Piece{Text: tokens[i], Score: scores[i], Type: Type(types[i])}
	}
	enc, err := NewEncoder(vocab)
	if err != nil {
		return nil, fmt.Errorf("load tokenizer: %s: %w", path, err)
	}
	return enc, nil
}
