package gguf

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
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
// (all of them when maxArray < 0).
func (f *File) Describe(maxArray int) Info {
	in := Info{File: f.Name, Size: f.Size, Version: f.Version, Alignment: f.Alignment, DataOffset: f.DataOffset}
	for _, kv := range f.KVs {
		ikv := InfoKV{Key: kv.Key, Type: kv.Type.String(), Value: plain(kv.Value, maxArray)}
		if a, ok := kv.Value.(*Array); ok {
			ikv.Type = "arr[" + a.Elem.String() + "]"
			ikv.Len = len(a.Values)
		}
		in.Metadata = append(in.Metadata, ikv)
	}
	for _, t := range f.Tensors {
		in.Tensors = append(in.Tensors, InfoTensor{Name: t.Name, Type: t.Type.String(), Shape: t.Dims, Bytes: t.Size, Offset: t.Offset})
		in.Params += t.Elements()
		in.TensorData += t.Size
	}
	return in
}

// plain turns arrays into (possibly truncated) Go slices for printing.
func plain(v any, maxArray int) any {
	a, ok := v.(*Array)
	if !ok {
		return v
	}
	n := len(a.Values)
	if maxArray >= 0 && n > maxArray {
		n = maxArray
	}
	out := make([]any, n)
	for i := range out {
		out[i] = plain(a.Values[i], maxArray)
	}
	return out
}

// WriteText prints the summary as a metadata list and a tensor table.
func (in Info) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "file:     %s\n", in.File)
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
		fmt.Fprintf(tw, "%s\t%s\t%s\n", kv.Key, kv.Type, val)
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
		fmt.Fprintf(tw, "%d\t%s\t%s\t[%s]\t%d\n", i, t.Name, t.Type, strings.Join(dims, ", "), t.Bytes)
	}
	return tw.Flush()
}

func formatValue(v any) string {
	switch x := v.(type) {
	case string:
		s := fmt.Sprintf("%q", x)
		if len(s) > 120 {
			s = s[:117] + "...\""
		}
		return s
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = formatValue(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	return fmt.Sprint(v)
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
