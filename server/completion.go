package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/chatglm/chatglm/chat"
	"github.com/chatglm/chatglm/gen"
)

func (s *Server) handleCompletion(w http.ResponseWriter, r *http.Request) {
	ri := infoOf(r.Context())
	var req completionRequest
	if err := s.decode(w, r, &req); err != nil {
		s.fail(w, ri, err)
		return
	}
	s.serveGeneration(w, r, ri, req.Model, req.Stream, req.StreamOptions.includeUsage(),
		func(st *ready) (*genSpec, error) { return s.completionSpec(st, &req) }, completionEndpoint)
}

// completionEndpoint writes text completions: text_completion objects, the
// streamed ones one piece of text each.
var completionEndpoint = endpoint{
	idPrefix: "cmpl-",
	reply: func(m replyMeta, res genResult) (any, error) {
		return textCompletion{
			ID: m.id, Object: "text_completion", Created: m.created, Model: m.model,
			Choices: []textChoice{{Index: 0, Text: res.text, FinishReason: &res.finish}},
			Usage:   res.usage(),
		}, nil
	},
	stream: func(m replyMeta) streamFormat {
		chunk := func(text string, finish *string) textCompletion {
			return textCompletion{ID: m.id, Object: "text_completion", Created: m.created, Model: m.model,
				Choices: []textChoice{{Index: 0, Text: text, FinishReason: finish}}}
		}
		return streamFormat{
			text:   func(text string) any { return chunk(text, nil) },
			finish: func(res genResult) ([]any, error) { return []any{chunk("", &res.finish)}, nil },
			usage: func(res genResult) any {
				return textCompletion{ID: m.id, Object: "text_completion", Created: m.created, Model: m.model,
					Choices: []textChoice{}, Usage: res.usage()}
			},
		}
	},
}

// completionSpec validates a raw completion request. The prompt is
// [gMASK] sop followed by the text's SentencePiece encoding (or token ids
// given as an array of integers, used as they are); generation stops at
// </s> only.
func (s *Server) completionSpec(st *ready, req *completionRequest) (*genSpec, error) {
	smp, maxTokens, stops, err := s.samplingParams(&req.samplingFields)
	if err != nil {
		return nil, err
	}
	switch {
	case req.Echo:
		return nil, badRequest("echo", "echo is not supported by this server")
	case req.Suffix != nil && *req.Suffix != "":
		return nil, badRequest("suffix", "suffix is not supported by this model")
	case req.Logprobs != nil:
		return nil, badRequest("logprobs", "logprobs are not supported by this server")
	case req.BestOf != nil && *req.BestOf != 1:
		return nil, badRequest("best_of", "best_of=%d is not supported; only 1 is", *req.BestOf)
	}
	prompt, err := completionPrompt(st.b, req.Prompt)
	if err != nil {
		return nil, err
	}
	maxTokens, err = s.fit(st, prompt, maxTokens)
	if err != nil {
		if tl, ok := err.(*gen.PromptTooLongError); ok {
			ae := asAPIError(tl)
			ae.Param = strPtr("prompt")
			return nil, ae
		}
		return nil, err
	}
	return &genSpec{prompt: prompt, maxTokens: maxTokens, stopIDs: []int32{chat.TokenEOS}, sampling: smp, stops: stops,
		out: &rawOutput{}}, nil
}

// completionPrompt parses prompt: a string, an array holding one string, or
// an array of token ids.
func completionPrompt(b Backend, raw json.RawMessage) ([]int32, error) {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return nil, badRequest("prompt", "'prompt' is required")
	}
	var text string
	if err := json.Unmarshal(raw, &text); err != nil {
		var texts []string
		var ids []int32
		switch {
		case json.Unmarshal(raw, &texts) == nil:
			if len(texts) != 1 {
				return nil, badRequest("prompt", "'prompt' as an array of strings must hold exactly one prompt, got %d", len(texts))
			}
			text = texts[0]
		case json.Unmarshal(raw, &ids) == nil:
			if len(ids) == 0 {
				return nil, badRequest("prompt", "'prompt' is an empty array of tokens")
			}
			n := -1
			if v, ok := b.(interface{ VocabSize() int }); ok {
				n = v.VocabSize()
			}
			for i, id := range ids {
				if id < 0 || (n >= 0 && int(id) >= n) {
					return nil, badRequest("prompt", "token %d at position %d is not in the vocabulary", id, i)
				}
			}
			return ids, nil
		default:
			return nil, badRequest("prompt", "invalid type for 'prompt': expected a string, an array of one string or an array of token ids")
		}
	}
	ids, err := newLimitTokenizer(b, "prompt").Tokenize(text)
	if err != nil {
		if ae, ok := err.(*APIError); ok {
			return nil, ae
		}
		return nil, fmt.Errorf("tokenize the prompt: %w", err)
	}
	return append(chat.PromptPrefix(), ids...), nil
}
