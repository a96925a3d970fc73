package chat

import (
	"fmt"

	"github.com/chatglm/chatglm/chat/python"
)

// Tokenizer turns text into SentencePiece ids the way one call of the
// ChatGLM3 SentencePiece encoder does: with the dummy-prefix space and with
// special-token parsing off, so that "<|user|>" typed by a user stays plain
// text.
type Tokenizer interface {
	Tokenize(text string) ([]int32, error)
}

// MessageText returns the text that is encoded as a message's content: the
// content itself, or for a system message with tools the content, a newline
// and the tools as Python's json.dumps(tools, indent=4, ensure_ascii=False).
func MessageText(m Message) (string, error) {
	if m.Role != RoleSystem || len(m.Tools) == 0 {
		return m.Content, nil
	}
	tools, err := python.JSONIndent(m.Tools)
	if err != nil {
		return "", err
	}
	return m.Content + "\n" + tools, nil
}

// EncodeMessage returns the ids of one message exactly as the official
// build_single_message builds them: the role token, then one SentencePiece
// encode of metadata+"\n", then a separate encode of the content (each encode
// adds its own dummy-prefix space).
func EncodeMessage(tok Tokenizer, m Message) ([]int32, error) {
	role, err := RoleToken(m.Role)
	if err != nil {
		return nil, err
	}
	text, err := MessageText(m)
	if err != nil {
		return nil, fmt.Errorf("%s message: %w", m.Role, err)
	}
	meta, err := tok.Tokenize(m.Metadata + "\n")
	if err != nil {
		return nil, fmt.Errorf("tokenize %s metadata: %w", m.Role, err)
	}
	content, err := tok.Tokenize(text)
	if err != nil {
		return nil, fmt.Errorf("tokenize %s content: %w", m.Role, err)
	}
	ids := make([]int32, 0, 1+len(meta)+len(content))
	ids = append(ids, role)
	ids = append(ids, meta...)
	return append(ids, content...), nil
}

// PromptPrefix is what every ChatGLM3 chat prompt starts with: [gMASK] sop.
func PromptPrefix() []int32 { return []int32{TokenGMask, TokenSop} }

// BuildPrompt returns the prompt ids for a conversation whose last message is
// the new query (a user message, or an observation returning a tool result):
// [gMASK] sop, every message encoded by EncodeMessage, then <|assistant|>, as
// the official build_chat_input does.
func BuildPrompt(tok Tokenizer, msgs []Message) ([]int32, error) {
	ids := PromptPrefix()
	for i, m := range msgs {
		enc, err := EncodeMessage(tok, m)
		if err != nil {
			return nil, fmt.Errorf("message %d: %w", i, err)
		}
		ids = append(ids, enc...)
	}
	return append(ids, TokenAssistant), nil
}
