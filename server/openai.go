package server

import (
	"encoding/json"
	"fmt"
	"strings"
)

// The OpenAI request and response bodies this server speaks. Pointer fields
// tell "absent" from a zero value; fields that take several JSON shapes
// (stop, content, tool_choice, prompt) are kept raw and parsed by hand so a
// wrong shape is a 400 that names the field.

// chatRequest is the body of POST /v1/chat/completions.
type chatRequest struct {
	Model             string            `json:"model"`
	Messages          []chatMessage     `json:"messages"`
	Stream            bool              `json:"stream"`
	StreamOptions     *streamOptions    `json:"stream_options"`
	Tools             []toolSpec        `json:"tools"`
	ToolChoice        json.RawMessage   `json:"tool_choice"`
	Functions         []json.RawMessage `json:"functions"` // deprecated form of tools
	ResponseFormat    *responseFormat   `json:"response_format"`
	Logprobs          *bool             `json:"logprobs"`
	ParallelToolCalls *bool             `json:"parallel_tool_calls"`
	User              string            `json:"user"`
	samplingFields
}

// completionRequest is the body of POST /v1/completions.
type completionRequest struct {
	Model         string          `json:"model"`
	Prompt        json.RawMessage `json:"prompt"`
	Stream        bool            `json:"stream"`
	StreamOptions *streamOptions  `json:"stream_options"`
	Echo          bool            `json:"echo"`
	Suffix        *string         `json:"suffix"`
	Logprobs      *int            `json:"logprobs"`
	BestOf        *int            `json:"best_of"`
	User          string          `json:"user"`
	samplingFields
}

// samplingFields are the generation parameters both endpoints take. TopK,
// MinP and RepeatPenalty are extensions (llama.cpp's server has them too).
type samplingFields struct {
	Temperature         *float64           `json:"temperature"`
	TopP                *float64           `json:"top_p"`
	N                   *int               `json:"n"`
	MaxTokens           *int               `json:"max_tokens"`
	MaxCompletionTokens *int               `json:"max_completion_tokens"`
	Stop                json.RawMessage    `json:"stop"`
	Seed                *int64             `json:"seed"`
	PresencePenalty     *float64           `json:"presence_penalty"`
	FrequencyPenalty    *float64           `json:"frequency_penalty"`
	LogitBias           map[string]float64 `json:"logit_bias"`
	TopK                *int               `json:"top_k"`
	MinP                *float64           `json:"min_p"`
	RepeatPenalty       *float64           `json:"repeat_penalty"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// includeUsage reports whether a stream ends with a usage chunk.
func (o *streamOptions) includeUsage() bool { return o != nil && o.IncludeUsage }

type responseFormat struct {
	Type string `json:"type"`
}

// chatMessage is one message of a chat request.
type chatMessage struct {
	Role         string          `json:"role"`
	Content      json.RawMessage `json:"content"`
	Name         string          `json:"name"`
	ToolCalls    []toolCall      `json:"tool_calls"`
	ToolCallID   string          `json:"tool_call_id"`
	FunctionCall *functionCall   `json:"function_call"`
}

// toolSpec is one entry of a request's tools.
type toolSpec struct {
	Type     string          `json:"type"`
	Function json.RawMessage `json:"function"`
}

// toolCall is a function call, in an assistant message or a reply.
type toolCall struct {
	Index    *int         `json:"index,omitempty"`
	ID       string       `json:"id"`
	Type     string       `json:"type"`
	Function functionCall `json:"function"`
}

type functionCall struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// contentPart is one element of an array content.
type contentPart struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// messageText returns the text of a message's content: a string, null, or
// an array of text parts.
func messageText(raw json.RawMessage, param string) (string, error) {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return "", nil
	}
	switch s[0] {
	case '"':
		var text string
		if err := json.Unmarshal(raw, &text); err != nil {
			return "", badRequest(param, "invalid string for '%s': %v", param, err)
		}
		return text, nil
	case '[':
		var parts []contentPart
		if err := json.Unmarshal(raw, &parts); err != nil {
			return "", badRequest(param, "invalid type for '%s': expected a string or an array of content parts", param)
		}
		var sb strings.Builder
		for i, p := range parts {
			if p.Type != "text" {
				return "", badRequest(fmt.Sprintf("%s.%d.type", param, i),
					"content part type %q is not supported by this model; only \"text\" is", p.Type)
			}
			sb.WriteString(p.Text)
		}
		return sb.String(), nil
	}
	return "", badRequest(param, "invalid type for '%s': expected a string or an array of content parts", param)
}

// stopStrings parses stop: a string, null, or an array of at most 4 strings.
func stopStrings(raw json.RawMessage) ([]string, error) {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return nil, nil
	}
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		if one == "" {
			return nil, nil
		}
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, badRequest("stop", "invalid type for 'stop': expected a string or an array of strings")
	}
	if len(many) > 4 {
		return nil, badRequest("stop", "'stop' takes at most 4 sequences, got %d", len(many))
	}
	out := many[:0]
	for _, m := range many {
		if m != "" {
			out = append(out, m)
		}
	}
	return out, nil
}

// usage is the token accounting of a reply.
type usage struct {
	PromptTokens        int                 `json:"prompt_tokens"`
	CompletionTokens    int                 `json:"completion_tokens"`
	TotalTokens         int                 `json:"total_tokens"`
	PromptTokensDetails *promptTokenDetails `json:"prompt_tokens_details,omitempty"`
}

type promptTokenDetails struct {
	CachedTokens int `json:"cached_tokens"`
}

// chatCompletion is a non-streamed chat reply.
type chatCompletion struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"`
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	SystemFingerprint string       `json:"system_fingerprint,omitempty"`
	Choices           []chatChoice `json:"choices"`
	Usage             *usage       `json:"usage,omitempty"`
}

type chatChoice struct {
	Index        int           `json:"index"`
	Message      *replyMessage `json:"message,omitempty"`
	Delta        *replyDelta   `json:"delta,omitempty"`
	Logprobs     *struct{}     `json:"logprobs"`
	FinishReason *string       `json:"finish_reason"`
}

// replyMessage is the assistant message of a reply, or a stream delta.
type replyMessage struct {
	Role      string     `json:"role,omitempty"`
	Content   *string    `json:"content"`
	ToolCalls []toolCall `json:"tool_calls,omitempty"`
}

// replyDelta is one chunk of a streamed reply; absent fields are left out.
type replyDelta struct {
	Role      string     `json:"role,omitempty"`
	Content   *string    `json:"content,omitempty"`
	ToolCalls []toolCall `json:"tool_calls,omitempty"`
}

// textCompletion is a /v1/completions reply (or one stream chunk of it).
type textCompletion struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"`
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	SystemFingerprint string       `json:"system_fingerprint,omitempty"`
	Choices           []textChoice `json:"choices"`
	Usage             *usage       `json:"usage,omitempty"`
}

type textChoice struct {
	Index        int       `json:"index"`
	Text         string    `json:"text"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

// modelList is the body of GET /v1/models.
type modelList struct {
	Object string      `json:"object"`
	Data   []modelInfo `json:"data"`
}

type modelInfo struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}
