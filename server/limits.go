package server

import (
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/chatglm/chatglm/chat"
	"github.com/chatglm/chatglm/chat/python"
)

// Limits on what one request may make the server do, beyond the body size
// (Options.MaxBodyBytes) and the context size.
const (
	// maxBodyDepth is how deeply a request body's JSON may nest, the body
	// object itself counting as 1. A tool's parameters schema starts at
	// level 5 (body, tools, tool, function, parameters); the chat
	// package's own limit (python.MaxDepth) on the tools list is looser.
	maxBodyDepth = 64
	// maxPieceBytes is the most text one token of ChatGLM3's vocabulary
	// stands for (16 spaces as "▁"s; TestMaxPieceBytes checks it against
	// the real tokenizer). A text longer than the context times this
	// cannot fit, so it is refused before it is tokenized.
	maxPieceBytes = 48
	// maxStopBytes bounds each stop sequence: holding text back for one
	// costs time in its length squared per token.
	maxStopBytes = 512
)

// checkDepth returns a 400 naming the field when a value of the JSON text
// data nests deeper than max. It scans bytes, without recursion; invalid
// JSON passes (the decoder reports it).
func checkDepth(data []byte, max int) error {
	type frame struct {
		obj              bool
		keyStart, keyEnd int // the current key's quoted text in data
		index            int
	}
	var stack []frame
	inString, isKey, expectKey := false, false, false
	start := 0
	for i := 0; i < len(data); i++ {
		c := data[i]
		if inString {
			switch c {
			case '\\':
				i++
			case '"':
				inString = false
				if isKey && len(stack) > 0 {
					stack[len(stack)-1].keyStart, stack[len(stack)-1].keyEnd = start, i+1
				}
			}
			continue
		}
		switch c {
		case '"':
			inString, isKey, expectKey, start = true, expectKey, false, i
		case '{', '[':
			if len(stack) >= max {
				var path []string
				more := ""
				for _, f := range stack {
					if len(path) == 12 {
						more = "..."
						break
					}
					if f.obj {
						key, err := strconv.Unquote(string(data[f.keyStart:f.keyEnd]))
						if err != nil || f.keyEnd == 0 {
							key = "?"
						}
						path = append(path, key)
					} else {
						path = append(path, "["+strconv.Itoa(f.index)+"]")
					}
				}
				param := strings.Join(path, ".") + more
				return newAPIError(http.StatusBadRequest, typeInvalidRequest, "too_deep", param,
					"'%s' nests values more than %d levels deep (counting the request body as 1)", param, max)
			}
			stack = append(stack, frame{obj: c == '{'})
			expectKey = c == '{'
		case '}', ']':
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
			expectKey = false
		case ',':
			if len(stack) > 0 {
				top := &stack[len(stack)-1]
				top.index++
				expectKey = top.obj
			}
		}
	}
	return nil
}

// limitTokenizer refuses, before any tokenizing, texts that together are
// longer than a context can hold (see maxPieceBytes).
type limitTokenizer struct {
	b       Backend
	left    int // bytes still allowed
	context int
	param   string
}

func newLimitTokenizer(b Backend, param string) *limitTokenizer {
	n := b.ContextSize()
	return &limitTokenizer{b: b, left: satMul(n, maxPieceBytes), context: n, param: param}
}

// Tokenize tokenizes text if it fits in what is left.
func (l *limitTokenizer) Tokenize(text string) ([]int32, error) {
	if len(text) > l.left {
		ae := newAPIError(http.StatusBadRequest, typeInvalidRequest, "context_length_exceeded", l.param,
			"this model's maximum context length is %d tokens, and the %s is too long for it (over %d bytes of text)",
			l.context, l.param, satMul(l.context, maxPieceBytes))
		return nil, ae
	}
	l.left -= len(text)
	return l.b.Tokenize(text)
}

// satAdd and satMul are a+b and a*b for non-negative ints, saturating at
// math.MaxInt instead of wrapping around.
func satAdd(a, b int) int {
	if a > math.MaxInt-b {
		return math.MaxInt
	}
	return a + b
}

func satMul(a, b int) int {
	if a != 0 && b > math.MaxInt/a {
		return math.MaxInt
	}
	return a * b
}

// float32Param converts a request's float parameter, refusing values that
// float32 cannot hold (they would become infinities).
func float32Param(name string, v float64) (float32, error) {
	f := float32(v)
	if math.IsInf(float64(f), 0) || math.IsNaN(v) {
		return 0, badRequest(name, "%s is out of range: %v", name, v)
	}
	return f, nil
}

var _ chat.Tokenizer = (*limitTokenizer)(nil)

// promptError explains a failure to build a chat prompt: a limit's
// *APIError as it is, tools nested too deeply as a 400 about the tools,
// anything else as a 400 about the messages.
func promptError(err error) error {
	var ae *APIError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, python.ErrTooDeep):
		return newAPIError(http.StatusBadRequest, typeInvalidRequest, "too_deep", "tools", "cannot build the prompt: %v", err)
	}
	return badRequest("messages", "cannot build the prompt: %v", err)
}
