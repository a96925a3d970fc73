package chat

import (
	"strings"
	"unicode/utf8"

	"github.com/chatglm/chatglm/chat/python"
)

// UTF8Assembler joins byte chunks (token pieces, which may end inside a
// multi-byte character when SentencePiece falls back to bytes) into text
// that never contains a broken character: an incomplete character at the end
// of a chunk is held until the bytes that complete it arrive. Bytes that can
// never form a valid character become U+FFFD, one per byte.
type UTF8Assembler struct {
	pending []byte
}

// Write adds p and returns the text that is now complete.
func (a *UTF8Assembler) Write(p []byte) string {
	buf := append(a.pending, p...)
	cut := len(buf)
	// An incomplete character is at most 3 bytes long and starts at a
	// non-continuation byte.
	for i := len(buf) - 1; i >= 0 && i >= len(buf)-3; i-- {
		if utf8.RuneStart(buf[i]) {
			if !utf8.FullRune(buf[i:]) {
				cut = i
			}
			break
		}
	}
	out := toValidUTF8(buf[:cut])
	a.pending = append([]byte(nil), buf[cut:]...)
	return out
}

// Flush returns what is still held, an incomplete character, as U+FFFD
// replacement characters, and resets the assembler.
func (a *UTF8Assembler) Flush() string {
	out := toValidUTF8(a.pending)
	a.pending = nil
	return out
}

// Pending reports whether an incomplete character is held.
func (a *UTF8Assembler) Pending() bool { return len(a.pending) > 0 }

func toValidUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r == utf8.RuneError && n == 1 {
			sb.WriteRune(utf8.RuneError)
		} else {
			sb.Write(b[:n])
		}
		b = b[n:]
	}
	return sb.String()
}

// Detokenizer turns generated tokens into the text the official decoder
// produces: special tokens by name, SentencePiece runs between them joined
// with the first piece's leading space removed, ids 0..2 dropped, and
// characters split over byte-fallback pieces joined before they are shown.
type Detokenizer struct {
	asm      UTF8Assembler
	runStart bool
	text     strings.Builder
}

// NewDetokenizer returns a Detokenizer at the start of a reply.
func NewDetokenizer() *Detokenizer { return &Detokenizer{runStart: true} }

// Add adds one token with its piece (the raw bytes of the token, a space for
// SentencePiece's ▁) and returns the text completed by it.
func (d *Detokenizer) Add(id int32, piece []byte) string {
	var out string
	switch name, special := SpecialTokenName(id); {
	case special:
		out = d.asm.Flush() + name
		d.runStart = true
	case id >= 0 && id <= TokenEOS:
		return ""
	default:
		if d.runStart && len(piece) > 0 {
			if piece[0] == ' ' {
				piece = piece[1:]
			}
			d.runStart = false
		}
		out = d.asm.Write(piece)
	}
	d.text.WriteString(out)
	return out
}

// Flush returns any held incomplete character (as U+FFFD) at the end of a
// reply.
func (d *Detokenizer) Flush() string {
	out := d.asm.Flush()
	d.text.WriteString(out)
	return out
}

// Text returns everything decoded so far.
func (d *Detokenizer) Text() string { return d.text.String() }

// DisplayFilter turns the decoded output, as it streams, into the text a
// user should see, consistent with what ProcessResponse returns at the end:
// each segment's metadata line is hidden, ordinary content is shown trimmed
// (leading whitespace dropped, trailing whitespace held back until more text
// follows), [[训练时间]] becomes 2023年, and tool-call segments are not shown
// (the caller shows the parsed ToolCall). Successive shown segments are
// separated by a newline. A first line longer than 64 bytes without a
// newline is shown as content as it streams (the model always starts a
// reply with a metadata line, so this only matters for broken output).
type DisplayFilter struct {
	pending string
	state   int
	started bool // this segment's content has shown text
	shown   bool // any segment has shown text
}

const (
	dfMeta = iota
	dfContent
	dfTool
)

const assistantMarker = "<|assistant|>"

// maxMetadataLen is how long a first line may grow, without its newline,
// before the display takes it for content rather than a metadata line.
const maxMetadataLen = 64

// Write adds decoded text and returns what can be shown now.
func (f *DisplayFilter) Write(s string) string {
	f.pending += s
	return f.drain(false)
}

// Close returns what is left to show at the end of the reply.
func (f *DisplayFilter) Close() string { return f.drain(true) }

func (f *DisplayFilter) drain(final bool) string {
	var out strings.Builder
	for {
		if i := strings.Index(f.pending, assistantMarker); i >= 0 {
			rest := f.pending[i+len(assistantMarker):]
			f.pending = f.pending[:i]
			out.WriteString(f.endSegment())
			f.pending = rest
			continue
		}
		if f.state == dfMeta {
			meta, content, found := strings.Cut(f.pending, "\n")
			switch {
			case found:
				f.pending = content
				f.state = dfTool
				if strings.TrimFunc(meta, python.IsSpace) == "" {
					f.state = dfContent
				}
			case len(f.pending) > maxMetadataLen:
				// Too long for a tool name: a reply without the
				// metadata line. Show it rather than hold it all.
				f.state = dfContent
			}
		}
		break
	}
	if final {
		out.WriteString(f.endSegment())
		return out.String()
	}
	switch f.state {
	case dfTool:
		// Keep only what could be the start of an <|assistant|> marker.
		f.pending = f.pending[len(f.pending)-heldMarkerPrefix(f.pending, assistantMarker):]
	case dfContent:
		out.WriteString(f.emit(false))
	}
	return out.String()
}

// endSegment finishes the current segment and starts the next.
func (f *DisplayFilter) endSegment() string {
	var out string
	switch f.state {
	case dfMeta:
		meta, content, found := strings.Cut(f.pending, "\n")
		switch {
		case !found: // no newline at all: the whole segment is content
			out = f.emit(true)
		case strings.TrimFunc(meta, python.IsSpace) == "":
			f.pending = content
			out = f.emit(true)
		}
	case dfContent:
		out = f.emit(true)
	}
	f.pending, f.state, f.started = "", dfMeta, false
	return out
}

// emit returns the part of the pending content that can be shown.
func (f *DisplayFilter) emit(final bool) string {
	text := f.pending
	if !f.started {
		text = strings.TrimLeftFunc(text, python.IsSpace)
	}
	cut := len(text)
	if final {
		text = strings.TrimRightFunc(text, python.IsSpace)
		cut = len(text)
	} else {
		cut = min(len(text)-heldMarkerPrefix(text, assistantMarker),
			len(text)-heldMarkerPrefix(text, TrainingTimePlaceholder))
		cut = len(strings.TrimRightFunc(text[:cut], python.IsSpace))
	}
	show := strings.ReplaceAll(text[:cut], TrainingTimePlaceholder, TrainingTimeText)
	f.pending = text[cut:]
	if show == "" {
		return ""
	}
	if !f.started && f.shown {
		show = "\n" + show
	}
	f.started, f.shown = true, true
	return show
}

// heldMarkerPrefix returns the length of the longest suffix of s that is a
// proper prefix of marker.
func heldMarkerPrefix(s, marker string) int {
	for n := min(len(s), len(marker)-1); n > 0; n-- {
		if strings.HasSuffix(s, marker[:n]) {
			return n
		}
	}
	return 0
}
