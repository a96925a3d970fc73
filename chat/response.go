package chat

import (
	"strings"

	"github.com/chatglm/chatglm/chat/python"
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
	Arguments python.Kwargs
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
		if strings.TrimFunc(meta, python.IsSpace) == "" {
			content = strings.TrimFunc(content, python.IsSpace)
			msgs = append(msgs, Message{Role: RoleAssistant, Metadata: meta, Content: content})
			resp = Response{Content: strings.ReplaceAll(content, TrainingTimePlaceholder, TrainingTimeText)}
			continue
		}
		msgs = append(msgs, Message{Role: RoleAssistant, Metadata: meta, Content: content})
		tc := &ToolCall{Name: strings.TrimFunc(meta, python.IsSpace), Content: content}
		if hasTools {
			tc.Arguments, tc.Err = python.ParseToolCall(StripCodeFence(content))
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
