// Package chat implements the ChatGLM3 chat protocol on top of a token
// generator: prompt token ids exactly as the official build_chat_input builds
// them, stop tokens, the official process_response (metadata lines, tool
// calls parsed by a restricted Python-literal parser), UTF-8 clean streaming,
// and a Conversation that keeps history, trims it to the context and lets the
// generator reuse its KV cache across turns. It knows nothing of HTTP or
// terminals, and nothing of cgo: the model is reached through the small
// Tokenizer and Generator interfaces.
package chat

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/chatglm/chatglm/internal/atomicfile"
)

// Role is the role of one chat message.
type Role string

// The four ChatGLM3 roles.
const (
	RoleSystem      Role = "system"
	RoleUser        Role = "user"
	RoleAssistant   Role = "assistant"
	RoleObservation Role = "observation"
)

// Special token ids of ChatGLM3: the nine tokens after the SentencePiece
// vocabulary, and the SentencePiece end-of-sequence id.
const (
	TokenEOS         int32 = 2
	TokenMask        int32 = 64789 // [MASK]
	TokenGMask       int32 = 64790 // [gMASK]
	TokenSMask       int32 = 64791 // [sMASK]
	TokenSop         int32 = 64792 // sop
	TokenEop         int32 = 64793 // eop
	TokenSystem      int32 = 64794 // <|system|>
	TokenUser        int32 = 64795 // <|user|>
	TokenAssistant   int32 = 64796 // <|assistant|>
	TokenObservation int32 = 64797 // <|observation|>
)

var specialNames = [...]string{"[MASK]", "[gMASK]", "[sMASK]", "sop", "eop",
	"<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"}

// SpecialTokenName returns the literal name of one of the nine ChatGLM3
// special tokens (ids 64789..64797), as the official decoder shows it.
func SpecialTokenName(id int32) (string, bool) {
	if id < TokenMask || id > TokenObservation {
		return "", false
	}
	return specialNames[id-TokenMask], true
}

// StopTokens returns the ids that end a reply, as chat() and stream_chat()
// pass them to generate: </s>, <|user|> and <|observation|>.
func StopTokens() []int32 { return []int32{TokenEOS, TokenUser, TokenObservation} }

// IsStopToken reports whether id is one of StopTokens.
func IsStopToken(id int32) bool {
	return id == TokenEOS || id == TokenUser || id == TokenObservation
}

// RoleToken returns the special token that opens a message of role r.
func RoleToken(r Role) (int32, error) {
	switch r {
	case RoleSystem:
		return TokenSystem, nil
	case RoleUser:
		return TokenUser, nil
	case RoleAssistant:
		return TokenAssistant, nil
	case RoleObservation:
		return TokenObservation, nil
	}
	return 0, fmt.Errorf("unknown role %q (want system, user, assistant or observation)", string(r))
}

// Message is one entry of a ChatGLM3 conversation. Its JSON form,
// {role, content, metadata, tools}, is the history entry of the official
// code and the format of saved conversations.
type Message struct {
	Role    Role   `json:"role"`
	Content string `json:"content"`
	// Metadata is the text on the role line: a tool name on an assistant
	// tool call, "interpreter" for code, empty for ordinary messages.
	Metadata string `json:"metadata,omitempty"`
	// Tools is the raw JSON of the tools a system message offers. It is
	// kept as written (key order included) and serialised the way Python's
	// json.dumps(tools, indent=4, ensure_ascii=False) does.
	Tools json.RawMessage `json:"tools,omitempty"`
}

// Validate checks the role and, for a message with tools, that the tools are
// valid JSON.
func (m Message) Validate() error {
	if _, err := RoleToken(m.Role); err != nil {
		return err
	}
	if len(m.Tools) > 0 {
		if m.Role != RoleSystem {
			return fmt.Errorf("%s message has tools: only a system message may carry tools", m.Role)
		}
		if !json.Valid(m.Tools) {
			return errors.New("system message: tools is not valid JSON")
		}
	}
	return nil
}

// HasTools reports whether the conversation offers tools the way the
// official process_response checks it: the first message is a system
// message with a tools field.
func HasTools(msgs []Message) bool {
	return len(msgs) > 0 && msgs[0].Role == RoleSystem && len(msgs[0].Tools) > 0 &&
		!bytes.Equal(bytes.TrimSpace(msgs[0].Tools), []byte("null"))
}

// ReadMessages reads a JSON list of messages (the shape WriteMessages
// writes) and validates each.
func ReadMessages(r io.Reader) ([]Message, error) {
	dec := json.NewDecoder(r)
	var msgs []Message
	if err := dec.Decode(&msgs); err != nil {
		return nil, fmt.Errorf("read messages: want a JSON list of {role, content, metadata, tools}: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("read messages: extra data after the JSON list")
	}
	for i := range msgs {
		if err := msgs[i].Validate(); err != nil {
			return nil, fmt.Errorf("read messages: message %d: %w", i, err)
		}
	}
	return msgs, nil
}

// WriteMessages writes messages as an indented JSON list, without HTML
// escaping, so that ReadMessages gets them back unchanged.
func WriteMessages(w io.Writer, msgs []Message) error {
	if msgs == nil {
		msgs = []Message{}
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(msgs); err != nil {
		return fmt.Errorf("write messages: %w", err)
	}
	return nil
}

// LoadMessagesFile reads a conversation saved by SaveMessagesFile (or written
// by hand for `run --messages`).
func LoadMessagesFile(path string) ([]Message, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	msgs, err := ReadMessages(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return msgs, nil
}

// SaveMessagesFile writes messages to path atomically and durably (see
// atomicfile): a crash leaves the old file or the new one.
func SaveMessagesFile(path string, msgs []Message) error {
	var buf bytes.Buffer
	if err := WriteMessages(&buf, msgs); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("save conversation: %w", err)
	}
	return nil
}
