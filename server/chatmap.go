package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/chatglm/chatglm/chat"
	"github.com/chatglm/chatglm/chat/python"
)

// The mapping between OpenAI's chat shapes and ChatGLM3's: request messages
// and tools onto chat.Messages, and a parsed ChatGLM3 function call back
// onto an OpenAI tool call.

// ToolSystemPrompt is the system message content the server adds, as the
// official ChatGLM3 API demo does, when a request offers tools but has no
// system message of its own to carry them.
const ToolSystemPrompt = "Answer the following questions as best as you can. You have access to the following tools:"

// chatPrompt is a chat request mapped onto ChatGLM3.
type chatPrompt struct {
	msgs     []chat.Message
	hasTools bool
	forced   string // the tool the reply must call ("" for none)
}

// mapChat maps OpenAI messages and tools onto ChatGLM3 messages:
// system/developer -> system; user -> user; assistant -> assistant, with each
// tool call as an assistant message whose metadata is the tool name and whose
// content is the fenced tool_call(...) block; tool/function -> observation.
// The tools' function objects become the tools list of the first system
// message (one is added when the conversation has none).
func mapChat(req *chatRequest) (*chatPrompt, error) {
	if len(req.Messages) == 0 {
		return nil, badRequest("messages", "'messages' must be a non-empty array")
	}
	p := &chatPrompt{}
	tools, names, err := toolsJSON(req)
	if err != nil {
		return nil, err
	}
	choice, err := parseToolChoice(req.ToolChoice, names)
	if err != nil {
		return nil, err
	}
	for i, m := range req.Messages {
		param := fmt.Sprintf("messages.[%d]", i)
		text, err := messageText(m.Content, param+".content")
		if err != nil {
			return nil, err
		}
		switch m.Role {
		case "system", "developer":
			p.msgs = append(p.msgs, chat.Message{Role: chat.RoleSystem, Content: text})
		case "user":
			p.msgs = append(p.msgs, chat.Message{Role: chat.RoleUser, Content: text})
		case "assistant":
			calls := m.ToolCalls
			if m.FunctionCall != nil {
				calls = append(calls, toolCall{Type: "function", Function: *m.FunctionCall})
			}
			if text != "" || len(calls) == 0 {
				p.msgs = append(p.msgs, chat.Message{Role: chat.RoleAssistant, Content: text})
			}
			for j, c := range calls {
				cparam := fmt.Sprintf("%s.tool_calls.[%d].function", param, j)
				if c.Function.Name == "" {
					return nil, badRequest(cparam+".name", "a tool call needs a function name")
				}
				code, err := python.FormatToolCall(c.Function.Arguments)
				if err != nil {
					return nil, badRequest(cparam+".arguments", "invalid function arguments: %v", err)
				}
				p.msgs = append(p.msgs, chat.Message{Role: chat.RoleAssistant, Metadata: c.Function.Name,
					Content: "```python\n" + code + "\n```"})
			}
		case "tool", "function":
			p.msgs = append(p.msgs, chat.Message{Role: chat.RoleObservation, Content: text})
		case "":
			return nil, badRequest(param+".role", "every message needs a role")
		default:
			return nil, badRequest(param+".role", "unknown role %q: use system, user, assistant or tool", m.Role)
		}
	}
	if tools != nil && choice != "none" {
		if p.msgs[0].Role != chat.RoleSystem {
			p.msgs = append([]chat.Message{{Role: chat.RoleSystem, Content: ToolSystemPrompt}}, p.msgs...)
		}
		p.msgs[0].Tools = tools
		p.hasTools = true
		switch {
		case choice == "required" && len(names) == 1:
			p.forced = names[0]
		case choice != "auto" && choice != "required":
			p.forced = choice
		}
	}
	return p, nil
}

// toolsJSON returns the JSON list of the requests' function objects, key
// order kept, and their names.
func toolsJSON(req *chatRequest) (json.RawMessage, []string, error) {
	var fns []json.RawMessage
	for i, t := range req.Tools {
		if t.Type != "function" {
			return nil, nil, badRequest(fmt.Sprintf("tools.[%d].type", i), "tool type %q is not supported; only \"function\" is", t.Type)
		}
		fns = append(fns, t.Function)
	}
	fns = append(fns, req.Functions...)
	if len(fns) == 0 {
		return nil, nil, nil
	}
	var names []string
	var buf bytes.Buffer
	buf.WriteByte('[')
	for i, f := range fns {
		var head struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal(f, &head); err != nil || head.Name == "" {
			return nil, nil, badRequest(fmt.Sprintf("tools.[%d].function", i), "each tool needs a function object with a name")
		}
		names = append(names, head.Name)
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(f)
	}
	buf.WriteByte(']')
	return buf.Bytes(), names, nil
}

// parseToolChoice returns "none", "auto", "required" or the name of the tool
// the reply must call.
func parseToolChoice(raw json.RawMessage, names []string) (string, error) {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return "auto", nil
	}
	var mode string
	if err := json.Unmarshal(raw, &mode); err == nil {
		switch mode {
		case "none", "auto", "required":
			return mode, nil
		}
		return "", badRequest("tool_choice", "tool_choice %q is not one of none, auto, required", mode)
	}
	var named struct {
		Type     string `json:"type"`
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	if err := json.Unmarshal(raw, &named); err != nil || named.Function.Name == "" {
		return "", badRequest("tool_choice", "invalid tool_choice: expected \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}")
	}
	for _, n := range names {
		if n == named.Function.Name {
			return n, nil
		}
	}
	return "", badRequest("tool_choice", "tool_choice names the function %q, which is not in tools", named.Function.Name)
}

// openAIToolCall converts a parsed ChatGLM3 function call.
func openAIToolCall(tc *chat.ToolCall) (toolCall, error) {
	args, err := tc.Arguments.MarshalJSON()
	if err != nil {
		// NaN or infinities: keep Python's spelling rather than fail.
		s, err2 := tc.Arguments.PythonJSON()
		if err2 != nil {
			return toolCall{}, fmt.Errorf("encode the arguments of %s: %w", tc.Name, err)
		}
		return toolCall{ID: newID("call_"), Type: "function", Function: functionCall{Name: tc.Name, Arguments: s}}, nil
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, args); err != nil {
		return toolCall{}, fmt.Errorf("encode the arguments of %s: %w", tc.Name, err)
	}
	return toolCall{ID: newID("call_"), Type: "function", Function: functionCall{Name: tc.Name, Arguments: compact.String()}}, nil
}
