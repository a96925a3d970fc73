package chat

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"unicode"
)

// TrainingTimePlaceholder is replaced by TrainingTimeText in the reply text
// that is returned (not in the history), as the official process_response
// does.
const (
	TrainingTimePlaceholder = "[[训练时间]]"
	TrainingTimeText        = "2023年"
)

// ToolCall is a reply segment whose metadata line is not blank: a function
// call (when the conversation offers tools) or code for an interpreter.
type ToolCall struct {
	// Name is the trimmed metadata line: the tool name, or "interpreter".
	Name string
	// Content is the segment's raw content, e.g. the fenced
	// ```python\ntool_call(...)\n``` block.
	Content string
	// Arguments are the parsed keyword arguments of tool_call(...) when
	// the conversation offers tools and the code parsed.
	Arguments Kwargs
	// Err says why the arguments could not be parsed (tools offered only).
	Err error
}

// Response is the result of ProcessResponse.
type Response struct {
	// Content is the reply text of the last segment, trimmed, with
	// [[训练时间]] replaced; empty when the last segment is a tool call.
	Content string
	// ToolCall is set when the last segment is a tool or interpreter call.
	ToolCall *ToolCall
}

// ProcessResponse parses a model's decoded output (special tokens shown by
// name, stop token excluded) as the official process_response does: the
// text is split on "<|assistant|>"; in each segment the text before the first
// newline is the metadata and the rest the content. A blank metadata is an
// ordinary reply: its content is trimmed. Otherwise the segment is a tool
// call: with tools offered (hasTools, see HasTools) the code between the
// first and last line is parsed by ParseToolCall. Every segment becomes one
// assistant message for the history; only the last segment is returned.
func ProcessResponse(output string, hasTools bool) (Response, []Message) {
	var resp Response
	var msgs []Message
	for _, seg := range strings.Split(output, "<|assistant|>") {
		meta, content, found := strings.Cut(seg, "\n")
		if !found {
			meta, content = "", seg
		}
		if strings.TrimFunc(meta, pyIsSpace) == "" {
			content = strings.TrimFunc(content, pyIsSpace)
			msgs = append(msgs, Message{Role: RoleAssistant, Metadata: meta, Content: content})
			resp = Response{Content: strings.ReplaceAll(content, TrainingTimePlaceholder, TrainingTimeText)}
			continue
		}
		msgs = append(msgs, Message{Role: RoleAssistant, Metadata: meta, Content: content})
		tc := &ToolCall{Name: strings.TrimFunc(meta, pyIsSpace), Content: content}
		if hasTools {
			tc.Arguments, tc.Err = ParseToolCall(StripCodeFence(content))
		}
		resp = Response{ToolCall: tc}
	}
	return resp, msgs
}

// StripCodeFence drops the first and the last line of s, as the official
// code does to take the code out of a ```python ... ``` block.
func StripCodeFence(s string) string {
	lines := strings.Split(s, "\n")
	if len(lines) <= 2 {
		return ""
	}
	return strings.Join(lines[1:len(lines)-1], "\n")
}

// PythonJSON returns the arguments as Python's json.dumps(kwargs,
// ensure_ascii=False) writes them (the official API server's
// function_call.arguments): ", " and ": " separators, key order kept,
// tuples as arrays, non-string dict keys converted as Python converts them.
// Non-finite floats are written as Python writes them (NaN, Infinity), which
// strict JSON parsers reject.
func (k Kwargs) PythonJSON() (string, error) {
	var sb strings.Builder
	sb.WriteByte('{')
	for i, a := range k {
		if i > 0 {
			sb.WriteString(", ")
		}
		writePyString(&sb, a.Name)
		sb.WriteString(": ")
		if err := writePyValueJSON(&sb, a.Value); err != nil {
			return "", fmt.Errorf("argument %s: %w", a.Name, err)
		}
	}
	sb.WriteByte('}')
	return sb.String(), nil
}

// MarshalJSON writes the arguments as a JSON object in source order. Unlike
// PythonJSON it fails on NaN and infinite floats, which JSON cannot hold.
func (k Kwargs) MarshalJSON() ([]byte, error) {
	if err := checkFinite(k); err != nil {
		return nil, err
	}
	s, err := k.PythonJSON()
	return []byte(s), err
}

func checkFinite(v any) error {
	switch v := v.(type) {
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("%v cannot be written as JSON", v)
		}
	case Kwargs:
		for _, a := range v {
			if err := checkFinite(a.Value); err != nil {
				return err
			}
		}
	case []any:
		for _, e := range v {
			if err := checkFinite(e); err != nil {
				return err
			}
		}
	case Tuple:
		return checkFinite([]any(v))
	case *Dict:
		if err := checkFinite(v.Keys); err != nil {
			return err
		}
		return checkFinite(v.Values)
	}
	return nil
}

func writePyValueJSON(sb *strings.Builder, v any) error {
	switch v := v.(type) {
	case nil:
		sb.WriteString("null")
	case bool:
		sb.WriteString(strconv.FormatBool(v))
	case string:
		writePyString(sb, v)
	case int64:
		sb.WriteString(strconv.FormatInt(v, 10))
	case *big.Int:
		sb.WriteString(v.String())
	case float64:
		sb.WriteString(PythonFloatRepr(v))
	case []any:
		return writePyArrayJSON(sb, v)
	case Tuple:
		return writePyArrayJSON(sb, v)
	case *Dict:
		sb.WriteByte('{')
		for i := range v.Keys {
			if i > 0 {
				sb.WriteString(", ")
			}
			key, err := pyJSONKey(v.Keys[i])
			if err != nil {
				return err
			}
			writePyString(sb, key)
			sb.WriteString(": ")
			if err := writePyValueJSON(sb, v.Values[i]); err != nil {
				return err
			}
		}
		sb.WriteByte('}')
	default:
		return fmt.Errorf("unsupported value type %T", v)
	}
	return nil
}

func writePyArrayJSON(sb *strings.Builder, items []any) error {
	sb.WriteByte('[')
	for i, e := range items {
		if i > 0 {
			sb.WriteString(", ")
		}
		if err := writePyValueJSON(sb, e); err != nil {
			return err
		}
	}
	sb.WriteByte(']')
	return nil
}

// pyJSONKey converts a dict key as Python's json module does.
func pyJSONKey(k any) (string, error) {
	switch k := k.(type) {
	case string:
		return k, nil
	case nil:
		return "null", nil
	case bool:
		return strconv.FormatBool(k), nil
	case int64:
		return strconv.FormatInt(k, 10), nil
	case *big.Int:
		return k.String(), nil
	case float64:
		return PythonFloatRepr(k), nil
	}
	return "", errors.New("keys must be str, int, float, bool or None, not tuple")
}

// pyIsSpace is Python's str.isspace for one character: Unicode White_Space
// plus the separators U+001C..U+001F.
func pyIsSpace(r rune) bool { return unicode.IsSpace(r) || (r >= 0x1c && r <= 0x1f) }
