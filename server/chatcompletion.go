package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/chatglm/chatglm/chat"
)

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
				code, err := chat.FormatToolCall(c.Function.Arguments)
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

func (s *Server) handleChat(w http.ResponseWriter, r *http.Request) {
	ri := infoOf(r.Context())
	var req chatRequest
	if err := s.decode(w, r, &req); err != nil {
		s.fail(w, ri, err)
		return
	}
	st, spec, release, ok := s.prepare(w, ri, req.Model, req.Stream, func(st *ready) (*genSpec, error) { return s.chatSpec(st, &req) })
	if !ok {
		return
	}
	defer release()
	ctx, cancel := s.requestContext(r)
	defer cancel()
	id := newID("chatcmpl-")
	created := time.Now().Unix()
	model := s.opts.ModelID
	if req.Stream {
		s.streamChat(ctx, w, ri, st, spec, id, created, model, req.StreamOptions != nil && req.StreamOptions.IncludeUsage)
		return
	}
	res, err := s.generate(ctx, st, spec, func() error { return nil }, func(string) error { return nil })
	s.account(ri, res)
	if err != nil {
		s.fail(w, ri, err)
		return
	}
	msg := &replyMessage{Role: "assistant"}
	if res.toolCall != nil {
		call, err := openAIToolCall(res.toolCall)
		if err != nil {
			s.fail(w, ri, err)
			return
		}
		msg.ToolCalls = []toolCall{call}
		if res.text != "" {
			msg.Content = &res.text
		}
	} else {
		msg.Content = &res.text
	}
	writeJSON(w, http.StatusOK, chatCompletion{
		ID: id, Object: "chat.completion", Created: created, Model: model,
		Choices: []chatChoice{{Index: 0, Message: msg, FinishReason: &res.finish}},
		Usage:   res.usage(),
	})
}

// chatSpec validates a chat request and builds its prompt.
func (s *Server) chatSpec(st *ready, req *chatRequest) (*genSpec, error) {
	smp, maxTokens, stops, err := s.samplingParams(&req.samplingFields)
	if err != nil {
		return nil, err
	}
	if req.Logprobs != nil && *req.Logprobs {
		return nil, badRequest("logprobs", "logprobs are not supported by this server")
	}
	if req.ResponseFormat != nil && req.ResponseFormat.Type != "" && req.ResponseFormat.Type != "text" {
		return nil, badRequest("response_format", "response_format %q is not supported; only \"text\" is", req.ResponseFormat.Type)
	}
	cp, err := mapChat(req)
	if err != nil {
		return nil, err
	}
	prompt, err := chat.BuildPrompt(newLimitTokenizer(st.b, "messages"), cp.msgs)
	if err != nil {
		return nil, promptError(err)
	}
	var forcedFirst int32
	if cp.forced != "" {
		ids, err := st.b.Tokenize(cp.forced + "\n")
		if err != nil {
			return nil, fmt.Errorf("tokenize the tool name: %w", err)
		}
		prompt = append(prompt, ids...)
		if len(ids) > 0 {
			forcedFirst = ids[0]
		}
	}
	maxTokens, err = s.fit(st, prompt, maxTokens)
	if err != nil {
		return nil, err
	}
	forcedText := ""
	if cp.forced != "" {
		forcedText = cp.forced + "\n"
	}
	return &genSpec{
		prompt: prompt, maxTokens: maxTokens, stopIDs: chat.StopTokens(), sampling: smp, stops: stops,
		out: newChatOutput(cp.hasTools, forcedText, forcedFirst),
	}, nil
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

func (r genResult) usage() *usage {
	return &usage{PromptTokens: r.prompt, CompletionTokens: r.tokens, TotalTokens: r.prompt + r.tokens,
		PromptTokensDetails: &promptTokenDetails{CachedTokens: r.cached}}
}

// account notes a finished generation in the request's log line.
func (s *Server) account(ri *reqInfo, res genResult) {
	ri.cachedTokens, ri.completionTokens, ri.finish = res.cached, res.tokens, res.finish
}

// fail sends err, unless the client is gone, and notes it for the log.
func (s *Server) fail(w http.ResponseWriter, ri *reqInfo, err error) {
	ri.errMsg = errorString(err)
	if err == context.Canceled {
		return
	}
	writeError(w, err)
}

func (s *Server) streamChat(ctx context.Context, w http.ResponseWriter, ri *reqInfo, st *ready, spec *genSpec, id string, created int64, model string, includeUsage bool) {
	sse := newSSE(w)
	chunk := func(delta *replyDelta, finish *string) chatCompletion {
		return chatCompletion{ID: id, Object: "chat.completion.chunk", Created: created, Model: model,
			Choices: []chatChoice{{Index: 0, Delta: delta, FinishReason: finish}}}
	}
	empty := ""
	res, err := s.generate(ctx, st, spec,
		func() error { return sse.send(chunk(&replyDelta{Role: "assistant", Content: &empty}, nil)) },
		func(text string) error { return sse.send(chunk(&replyDelta{Content: &text}, nil)) })
	s.account(ri, res)
	if err != nil {
		ri.errMsg = errorString(err)
		if !sse.started {
			s.fail(w, ri, err)
			return
		}
		if err != context.Canceled {
			sse.send(errorBody{Error: asAPIError(err)})
		}
		return
	}
	if res.toolCall != nil {
		call, err := openAIToolCall(res.toolCall)
		if err != nil {
			ri.errMsg = errorString(err)
			sse.send(errorBody{Error: asAPIError(err)})
			return
		}
		zero := 0
		call.Index = &zero
		if sse.send(chunk(&replyDelta{ToolCalls: []toolCall{call}}, nil)) != nil {
			return
		}
	}
	if sse.send(chunk(&replyDelta{}, &res.finish)) != nil {
		return
	}
	if includeUsage {
		c := chatCompletion{ID: id, Object: "chat.completion.chunk", Created: created, Model: model,
			Choices: []chatChoice{}, Usage: res.usage()}
		if sse.send(c) != nil {
			return
		}
	}
	sse.done()
}

// sse writes Server-Sent Events, one JSON object per data line, flushing
// each; the headers go out with the first event.
type sse struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	started bool
}

func newSSE(w http.ResponseWriter) *sse { return &sse{w: w, rc: http.NewResponseController(w)} }

func (s *sse) start() {
	if s.started {
		return
	}
	s.started = true
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no")
	s.w.WriteHeader(http.StatusOK)
	s.rc.Flush()
}

func (s *sse) write(data []byte) error {
	s.start()
	if _, err := s.w.Write(data); err != nil {
		return fmt.Errorf("write event: %w", err)
	}
	if err := s.rc.Flush(); err != nil {
		return fmt.Errorf("flush event: %w", err)
	}
	return nil
}

func (s *sse) send(v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	return s.write([]byte("data: " + string(data) + "\n\n"))
}

func (s *sse) done() error { return s.write([]byte("data: [DONE]\n\n")) }
