package backend

import (
	"github.com/chatglm/chatglm/engine"
	"github.com/chatglm/chatglm/spm"
)

// Model is a chat.Model made of the chat package's tokenizer and the
// engine's context size.
type Model struct {
	*spm.Encoder
	Engine *engine.Engine
}

// ContextSize implements chat.Model.
func (m Model) ContextSize() int { return m.Engine.ContextSize() }

// NewModel pairs an engine with the tokenizer of the GGUF file it loaded.
func NewModel(e *engine.Engine, ggufPath string) (Model, error) {
	enc, err := spm.LoadGGUF(ggufPath)
	if err != nil {
		return Model{}, err
	}
	return Model{Encoder: enc, Engine: e}, nil
}
