package gguf

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/chatglm/chatglm/internal/safetext"
)

// Info is a printable summary of a GGUF file, as `chatglm info` shows it.
type Info struct {
	File       string       `json:"file"`
	Size       int64        `json:"size"`
	Version    uint32       `json:"version"`
	Alignment  uint64       `json:"alignment"`
	DataOffset uint64       `json:"data_offset"`
	Metadata   []InfoKV     `json:"metadata"`
	Tensors    []InfoTensor `json:"tensors"`
	Params     uint64       `json:"params"`
	TensorData uint64       `json:"tensor_bytes"`
}

// InfoKV is one metadata pair; arrays longer than the summary limit keep
// only their first elements, with Len giving the full length.
type InfoKV struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Len   int    `json:"len,omitempty"` // array length
	Value any    `json:"value"`
}

// InfoTensor is one row of the tensor table.
type InfoTensor struct {
	Name   string   `json:"name"`
	Type   string   `json:"type"`
	Shape  []uint64 `json:"shape"` // ggml order (ne0 first)
	Bytes  uint64   `json:"bytes"`
	Offset uint64   `json:"offset"`
}

// Describe summarises the file; arrays keep at most maxArray elements
// (all of them when maxArray < 0). Strings are kept as the file has them:
// WriteText and WriteJSON make them safe to print.
func (f *File) Describe(maxArray int) Info {
	in := Info{File: f.Name, Size: f.Size, Version: f.Version, Alignment: f.Alignment, DataOffset: f.DataOffset}
	for _, kv := range f.KVs {
		ikv := InfoKV{Key: kv.Key, Type: kv.Type.String(), Value: plain(kv.Value, maxArray)}
		if a, ok := kv.Value.(*Array); ok {
			ikv.Type = "arr[" + a.Elem.String() + "]"
			ikv.Len = a.Len()
		}
		in.Metadata = append(in.Metadata, ikv)
	}
	for _, t := range f.Tensors {
		in.Tensors = append(in.Tensors, InfoTensor{Name: t.Name, Type: t.Type.String(), Shape: t.Dims, Bytes: t.Size, Offset: t.Offset})
		in.Params = addSat(in.Params, t.Elements())
		in.TensorData = addSat(in.TensorData, t.Size)
	}
	return in
}

// addSat adds without wrapping around: a file may describe tensors whose
// element counts add up past 2^64.
func addSat(a, b uint64) uint64 {
	if s := a + b; s >= a {
		return s
	}
	return math.MaxUint64
}

// plain turns arrays into (possibly truncated) Go slices for printing.
func plain(v any, maxArray int) any {
	a, ok := v.(*Array)
	if !ok {
		return v
	}
	n := a.Len()
	if maxArray >= 0 && n > maxArray {
		n = maxArray
	}
	out := make([]any, n)
	for i := range out {
		out[i] = plain(a.Index(i), maxArray)
	}
	return out
}

// WriteText prints the summary as a metadata list and a tensor table.
// Keys, tensor names and string values that hold control characters,
// bidirectional overrides or invalid UTF-8 are printed Go-quoted, so a
// file cannot send escape sequences to the terminal.
func (in Info) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "file:     %s\n", safetext.Quote(in.File))
	fmt.Fprintf(w, "size:     %d bytes (%s)\n", in.Size, humanBytes(uint64(in.Size)))
	fmt.Fprintf(w, "version:  GGUF v%d, alignment %d, data at %d\n", in.Version, in.Alignment, in.DataOffset)
	fmt.Fprintf(w, "tensors:  %d, %d parameters, %s of tensor data\n\n", len(in.Tensors), in.Params, humanBytes(in.TensorData))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tTYPE\tVALUE")
	for _, kv := range in.Metadata {
		val := formatValue(kv.Value)
		if kv.Len > 0 {
			if items, ok := kv.Value.([]any); ok && len(items) < kv.Len {
				val = strings.TrimSuffix(val, "]") + fmt.Sprintf(", ... (%d total)]", kv.Len)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", safetext.Quote(kv.Key), kv.Type, val)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tNAME\tTYPE\tSHAPE\tBYTES")
	for i, t := range in.Tensors {
		dims := make([]string, len(t.Shape))
		for j, d := range t.Shape {
			dims[j] = fmt.Sprint(d)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t[%s]\t%d\n", i, safetext.Quote(t.Name), t.Type, strings.Join(dims, ", "), t.Bytes)
	}
	return tw.Flush()
}

// maxShownString is how many bytes of a string value WriteText shows.
const maxShownString = 120

func formatValue(v any) string {
	switch x := v.(type) {
	case string:
		if len(x) > maxShownString {
			// Cut on a rune boundary, then quote, so no escape is split.
			cut := maxShownString
			for cut > 0 && !utf8.RuneStart(x[cut]) {
				cut--
			}
			return strconv.Quote(x[:cut]) + "..."
		}
		return strconv.Quote(x)
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = formatValue(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	return fmt.Sprint(v)
}

// WriteJSON prints the summary as indented JSON. JSON has no NaN or
// infinity, so float values that are not finite are written as the strings
// "NaN", "+Inf" and "-Inf". Besides what encoding/json escapes (C0
// controls, <, >, &, U+2028, U+2029), DEL, the C1 controls and the
// bidirectional formatting characters are written as \u escapes, so the
// output is safe on a terminal and decodes to the file's exact strings
// (invalid UTF-8 becomes U+FFFD, as encoding/json does).
func (in Info) WriteJSON(w io.Writer) error {
	out := in
	out.Metadata = make([]InfoKV, len(in.Metadata))
	for i, kv := range in.Metadata {
		kv.Value = jsonSafe(kv.Value)
		out.Metadata[i] = kv
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return fmt.Errorf("gguf info %s: %w", safetext.Quote(in.File), err)
	}
	b = append(escapeJSONControls(b), '\n')
	_, err = w.Write(b)
	return err
}

// jsonSafe replaces non-finite floats (in arrays too) by their names.
func jsonSafe(v any) any {
	switch x := v.(type) {
	case float32:
		return jsonSafe(float64(x))
	case float64:
		switch {
		case math.IsNaN(x):
			return "NaN"
		case math.IsInf(x, 1):
			return "+Inf"
		case math.IsInf(x, -1):
			return "-Inf"
		}
		return v
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = jsonSafe(e)
		}
		return out
	}
	return v
}

// escapeJSONControls rewrites, in encoding/json output, the characters it
// leaves raw that a terminal may act on: DEL, C1 controls and bidi
// formatting characters. They only occur inside strings, where \u escapes
// are valid.
func escapeJSONControls(b []byte) []byte {
	var out []byte
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == 0x7f || (r >= 0x80 && r < 0xa0) || isBidi(r) {
			if out == nil {
				out = append(make([]byte, 0, len(b)+16), b[:i]...)
			}
			out = fmt.Appendf(out, `\u%04x`, r)
		} else if out != nil {
			out = append(out, b[i:i+n]...)
		}
		i += n
	}
	if out == nil {
		return b
	}
	return out
}

// isBidi reports whether r is a Unicode bidirectional formatting character.
func isBidi(r rune) bool {
	return r == 0x061c || r == 0x200e || r == 0x200f || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069)
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.2f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
