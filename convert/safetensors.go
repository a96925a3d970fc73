package convert

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sort"

	"github.com/chatglm/chatglm/internal/safetext"
)

// maxSafetensorsHeader bounds the JSON header of a safetensors file
// (the reference implementation uses 100 MB).
const maxSafetensorsHeader = 100 << 20

// dtypeSize is the element size of the dtypes the converter reads; other
// safetensors dtypes are recognised so that errors can name them.
var dtypeSize = map[string]int{
	"F16": 2, "BF16": 2, "F32": 4,
	"F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
	"U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1,
}

// STEntry is one tensor described by a safetensors header.
type STEntry struct {
	Name  string
	DType string
	Shape []int64
	Begin int64 // offsets relative to the start of the data (after the header)
	End   int64
}

// ParseSafetensorsHeader decodes and checks a safetensors JSON header for a
// file whose data section holds dataLen bytes. It checks dtypes, that
// offsets lie inside the data, that each tensor's byte length matches its
// shape, and that tensors do not overlap. Entries are sorted by offset.
func ParseSafetensorsHeader(hdr []byte, dataLen int64) ([]STEntry, map[string]string, error) {
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(hdr))
	if err := dec.Decode(&raw); err != nil {
		return nil, nil, fmt.Errorf("header JSON: %w", err)
	}
	var meta map[string]string
	entries := make([]STEntry, 0, len(raw))
	for name, msg := range raw {
		q := safetext.Quote(name)
		if name == "__metadata__" {
			if err := json.Unmarshal(msg, &meta); err != nil {
				return nil, nil, fmt.Errorf("__metadata__: %w", err)
			}
			continue
		}
		var e struct {
			DType   string  `json:"dtype"`
			Shape   []int64 `json:"shape"`
			Offsets []int64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(msg, &e); err != nil {
			return nil, nil, fmt.Errorf("tensor %s: %w", q, err)
		}
		if len(e.Offsets) != 2 {
			return nil, nil, fmt.Errorf("tensor %s: data_offsets has %d values, want 2", q, len(e.Offsets))
		}
		n, err := numel(e.Shape)
		if err != nil {
			return nil, nil, fmt.Errorf("tensor %s: %w", q, err)
		}
		want, err := tensorBytes(n, e.DType)
		if err != nil {
			return nil, nil, fmt.Errorf("tensor %s: %w", q, err)
		}
		b, en := e.Offsets[0], e.Offsets[1]
		if b < 0 || en < b || en > dataLen {
			return nil, nil, fmt.Errorf("tensor %s: data_offsets [%d, %d] out of range (data is %d bytes: truncated file?)", q, b, en, dataLen)
		}
		if en-b != want {
			return nil, nil, fmt.Errorf("tensor %s: %d bytes for shape %v of %s (want %d)", q, en-b, e.Shape, e.DType, want)
		}
		entries = append(entries, STEntry{Name: name, DType: e.DType, Shape: e.Shape, Begin: b, End: en})
	}
	sort.Slice(entries, func(i, j int) bool {
		if entries[i].Begin != entries[j].Begin {
			return entries[i].Begin < entries[j].Begin
		}
		return entries[i].Name < entries[j].Name
	})
	for i := 1; i < len(entries); i++ {
		if entries[i].Begin < entries[i-1].End {
			return nil, nil, fmt.Errorf("tensors %s and %s overlap", safetext.Quote(entries[i-1].Name), safetext.Quote(entries[i].Name))
		}
	}
	return entries, meta, nil
}

// maxDims bounds the dimensions of a checkpoint tensor (GGUF has at most 4).
const maxDims = 8

// numel multiplies out a shape, refusing negative dims, more than maxDims
// dimensions and overflow.
func numel(shape []int64) (int64, error) {
	if len(shape) > maxDims {
		return 0, fmt.Errorf("shape has %d dimensions (at most %d)", len(shape), maxDims)
	}
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension in shape %v", shape)
		}
		var ok bool
		if n, ok = mulInt64(n, d); !ok {
			return 0, fmt.Errorf("shape %v overflows", shape)
		}
	}
	return n, nil
}

// mulInt64 returns a×b for non-negative a and b, and false when it
// overflows int64 (or an operand is negative).
func mulInt64(a, b int64) (int64, bool) {
	if a < 0 || b < 0 {
		return 0, false
	}
	if a != 0 && b > math.MaxInt64/a {
		return 0, false
	}
	return a * b, true
}

// addInt64 returns a+b for non-negative a and b, and false when it
// overflows int64 (or an operand is negative).
func addInt64(a, b int64) (int64, bool) {
	if a < 0 || b < 0 || a > math.MaxInt64-b {
		return 0, false
	}
	return a + b, true
}

// tensorBytes is the byte size of n elements of a dtype, checked for overflow.
func tensorBytes(n int64, dtype string) (int64, error) {
	size, ok := dtypeSize[dtype]
	if !ok {
		return 0, fmt.Errorf("unknown dtype %s", safetext.Quote(dtype))
	}
	b, ok := mulInt64(n, int64(size))
	if !ok {
		return 0, fmt.Errorf("%d elements of %s overflow", n, dtype)
	}
	return b, nil
}

// readSafetensors reads the header of the safetensors file at path and
// returns its tensors as sources with absolute offsets.
func readSafetensors(path string) ([]Source, error) {
	return readSourcesAt(path, "safetensors", readSafetensorsFrom)
}

// readSourcesAt opens path and reads its tensor table with read; errors
// name the format and the file.
func readSourcesAt(path, format string, read func(r io.ReaderAt, size int64, path string) ([]Source, error)) ([]Source, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	srcs, err := read(f, st.Size(), path)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", format, path, err)
	}
	return srcs, nil
}

// readSafetensorsFrom reads the header of the safetensors file r, of the
// given size; path is recorded in each Source.
func readSafetensorsFrom(r io.ReaderAt, size int64, path string) ([]Source, error) {
	var lenBuf [8]byte
	if _, err := r.ReadAt(lenBuf[:], 0); err != nil {
		return nil, fmt.Errorf("truncated (%d bytes, no header length)", size)
	}
	hl := binary.LittleEndian.Uint64(lenBuf[:])
	if hl > maxSafetensorsHeader || int64(hl) > size-8 {
		return nil, fmt.Errorf("header length %d does not fit the %d-byte file (truncated or not safetensors)", hl, size)
	}
	hdr := make([]byte, hl)
	if _, err := r.ReadAt(hdr, 8); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	base := 8 + int64(hl)
	entries, _, err := ParseSafetensorsHeader(hdr, size-base)
	if err != nil {
		return nil, err
	}
	out := make([]Source, len(entries))
	for i, e := range entries {
		out[i] = Source{Name: e.Name, DType: e.DType, Shape: e.Shape, File: path, Offset: base + e.Begin, Size: e.End - e.Begin}
	}
	return out, nil
}
