package server

import (
	"fmt"
	"net/http"

	"github.com/chatglm/chatglm/chat"
)

func (s *Server) handleChat(w http.ResponseWriter, r *http.Request) {
	ri := infoOf(r.Context())
	var req chatRequest
	if err := s.decode(w, r, &req); err != nil {
		s.fail(w, ri, err)
		return
	}
	s.serveGeneration(w, r, ri, req.Model, req.Stream, req.StreamOptions.includeUsage(),
		func(st *ready) (*genSpec, error) { return s.chatSpec(st, &req) }, chatEndpoint)
}

// chatEndpoint writes chat completions: chat.completion objects, streamed
// as chat.completion.chunk deltas.
var chatEndpoint = endpoint{
	idPrefix: "chatcmpl-",
	reply: func(m replyMeta, res genResult) (any, error) {
		msg := &replyMessage{Role: "assistant"}
		if res.toolCall != nil {
			call, err := openAIToolCall(res.toolCall)
			if err != nil {
				return nil, err
			}
			msg.ToolCalls = []toolCall{call}
			if res.text != "" {
				msg.Content = &res.text
			}
		} else {
			msg.Content = &res.text
		}
		return chatCompletion{
			ID: m.id, Object: "chat.completion", Created: m.created, Model: m.model,
			Choices: []chatChoice{{Index: 0, Message: msg, FinishReason: &res.finish}},
			Usage:   res.usage(),
		}, nil
	},
	stream: func(m replyMeta) streamFormat {
		chunk := func(delta *replyDelta, finish *string) chatCompletion {
			return chatCompletion{ID: m.id, Object: "chat.completion.chunk", Created: m.created, Model: m.model,
				Choices: []chatChoice{{Index: 0, Delta: delta, FinishReason: finish}}}
		}
		empty := ""
		return streamFormat{
			start: func() any { return chunk(&replyDelta{Role: "assistant", Content: &empty}, nil) },
			text:  func(text string) any { return chunk(&replyDelta{Content: &text}, nil) },
			finish: func(res genResult) ([]any, error) {
				var events []any
				if res.toolCall != nil {
					call, err := openAIToolCall(res.toolCall)
					if err != nil {
						return nil, err
					}
					zero := 0
					call.Index = &zero
					events = append(events, chunk(&replyDelta{ToolCalls: []toolCall{call}}, nil))
				}
				return append(events, chunk(&replyDelta{}, &res.finish)), nil
			},
			usage: func(res genResult) any {
				return chatCompletion{ID: m.id, Object: "chat.completion.chunk", Created: m.created, Model: m.model,
					Choices: []chatChoice{}, Usage: res.usage()}
			},
		}
	},
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
