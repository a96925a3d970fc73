package gguf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
)

// Writer builds a GGUF file in two steps: first every metadata pair and
// every tensor description (with its type and shape) is added, then
// WriteHeader writes the header with precomputed data offsets and returns a
// DataWriter that takes the tensor bytes in the order the tensors were added.
type Writer struct {
	kvs       []KV
	tensors   []TensorInfo
	alignment uint64
	dataSize  uint64
	keys      map[string]bool
	names     map[string]bool
	err       error
}

// NewWriter returns an empty writer with the default alignment (32).
func NewWriter() *Writer {
	return &Writer{alignment: DefaultAlignment, keys: map[string]bool{}, names: map[string]bool{}}
}

// SetAlignment sets the data alignment and records it as general.alignment.
func (w *Writer) SetAlignment(a uint32) {
	if a == 0 || a%8 != 0 {
		w.setErr(fmt.Errorf("alignment %d is not a positive multiple of 8", a))
		return
	}
	if len(w.tensors) > 0 {
		w.setErr(errors.New("SetAlignment after AddTensor"))
		return
	}
	w.alignment = uint64(a)
	w.Add("general.alignment", a)
}

func (w *Writer) setErr(err error) {
	if w.err == nil {
		w.err = err
	}
}

// Add appends a metadata pair. The GGUF type follows the Go type of v:
// uint8, int8, uint16, int16, uint32, int32, float32, bool, string, uint64,
// int64, float64, a slice of one of those (an array), or *Array.
func (w *Writer) Add(key string, v any) {
	if w.keys[key] {
		w.setErr(fmt.Errorf("duplicate metadata key %s", key))
		return
	}
	t, val, err := normalize(v)
	if err != nil {
		w.setErr(fmt.Errorf("metadata %s: %w", key, err))
		return
	}
	w.keys[key] = true
	w.kvs = append(w.kvs, KV{Key: key, Type: t, Value: val})
}

func normalize(v any) (ValueType, any, error) {
	switch x := v.(type) {
	case uint8:
		return TypeUint8, x, nil
	case int8:
		return TypeInt8, x, nil
	case uint16:
		return TypeUint16, x, nil
	case int16:
		return TypeInt16, x, nil
	case uint32:
		return TypeUint32, x, nil
	case int32:
		return TypeInt32, x, nil
	case float32:
		return TypeFloat32, x, nil
	case bool:
		return TypeBool, x, nil
	case string:
		return TypeString, x, nil
	case uint64:
		return TypeUint64, x, nil
	case int64:
		return TypeInt64, x, nil
	case float64:
		return TypeFloat64, x, nil
	case *Array:
		et, ok := elemType(x.Values)
		if !ok {
			return 0, nil, fmt.Errorf("array values of Go type %T", x.Values)
		}
		if et != x.Elem {
			return 0, nil, fmt.Errorf("array of %s holds %s values", x.Elem, et)
		}
		if nested, ok := x.Values.([]*Array); ok {
			for _, e := range nested {
				if _, _, err := normalize(e); err != nil {
					return 0, nil, err
				}
			}
		}
		return TypeArray, x, nil
	}
	// A slice of a scalar type becomes an array holding a copy of it.
	if et, ok := elemType(v); ok && et != TypeArray {
		return TypeArray, &Array{Elem: et, Values: cloneSlice(v)}, nil
	}
	return 0, nil, fmt.Errorf("unsupported Go type %T", v)
}

// cloneSlice copies a slice of one of the scalar element types.
func cloneSlice(v any) any {
	switch x := v.(type) {
	case []uint8:
		return slices.Clone(x)
	case []int8:
		return slices.Clone(x)
	case []uint16:
		return slices.Clone(x)
	case []int16:
		return slices.Clone(x)
	case []uint32:
		return slices.Clone(x)
	case []int32:
		return slices.Clone(x)
	case []float32:
		return slices.Clone(x)
	case []bool:
		return slices.Clone(x)
	case []string:
		return slices.Clone(x)
	case []uint64:
		return slices.Clone(x)
	case []int64:
		return slices.Clone(x)
	case []float64:
		return slices.Clone(x)
	}
	return v
}

// AddTensor describes the next tensor: dims are ggml order (ne0 first).
// Its data must later be written to the DataWriter in this order.
func (w *Writer) AddTensor(name string, typ GGMLType, dims []uint64) {
	if w.names[name] {
		w.setErr(fmt.Errorf("duplicate tensor %s", name))
		return
	}
	if len(dims) == 0 || len(dims) > maxDims {
		w.setErr(fmt.Errorf("tensor %s: %d dimensions", name, len(dims)))
		return
	}
	n := uint64(1)
	for _, d := range dims {
		if d != 0 && n > math.MaxInt64/d {
			w.setErr(fmt.Errorf("tensor %s: shape %v overflows", name, dims))
			return
		}
		n *= d
	}
	size, err := typ.RowBytes(n)
	if err != nil {
		w.setErr(fmt.Errorf("tensor %s: %w", name, err))
		return
	}
	w.names[name] = true
	w.tensors = append(w.tensors, TensorInfo{Name: name, Dims: append([]uint64(nil), dims...), Type: typ, Offset: w.dataSize, Size: size})
	w.dataSize = alignUp(w.dataSize+size, w.alignment)
}

// Tensors returns the tensor descriptions added so far, with their offsets.
func (w *Writer) Tensors() []TensorInfo { return w.tensors }

// DataSize is the length of the data section including padding.
func (w *Writer) DataSize() uint64 { return w.dataSize }

// Header encodes the header, metadata, tensor infos and the padding that
// precedes the data section.
func (w *Writer) Header() ([]byte, error) {
	if w.err != nil {
		return nil, fmt.Errorf("gguf writer: %w", w.err)
	}
	var b bytes.Buffer
	b.WriteString(Magic)
	le := binary.LittleEndian
	b.Write(le.AppendUint32(nil, Version))
	b.Write(le.AppendUint64(nil, uint64(len(w.tensors))))
	b.Write(le.AppendUint64(nil, uint64(len(w.kvs))))
	for _, kv := range w.kvs {
		putString(&b, kv.Key)
		b.Write(le.AppendUint32(nil, uint32(kv.Type)))
		putValue(&b, kv.Type, kv.Value)
	}
	for _, t := range w.tensors {
		putString(&b, t.Name)
		b.Write(le.AppendUint32(nil, uint32(len(t.Dims))))
		for _, d := range t.Dims {
			b.Write(le.AppendUint64(nil, d))
		}
		b.Write(le.AppendUint32(nil, uint32(t.Type)))
		b.Write(le.AppendUint64(nil, t.Offset))
	}
	pad := alignUp(uint64(b.Len()), w.alignment) - uint64(b.Len())
	b.Write(make([]byte, pad))
	return b.Bytes(), nil
}

func putString(b *bytes.Buffer, s string) {
	b.Write(binary.LittleEndian.AppendUint64(nil, uint64(len(s))))
	b.WriteString(s)
}

func putValue(b *bytes.Buffer, t ValueType, v any) {
	le := binary.LittleEndian
	var tmp [8]byte
	switch t {
	case TypeUint8:
		b.WriteByte(v.(uint8))
	case TypeInt8:
		b.WriteByte(byte(v.(int8)))
	case TypeBool:
		if v.(bool) {
			b.WriteByte(1)
		} else {
			b.WriteByte(0)
		}
	case TypeUint16:
		b.Write(le.AppendUint16(tmp[:0], v.(uint16)))
	case TypeInt16:
		b.Write(le.AppendUint16(tmp[:0], uint16(v.(int16))))
	case TypeUint32:
		b.Write(le.AppendUint32(tmp[:0], v.(uint32)))
	case TypeInt32:
		b.Write(le.AppendUint32(tmp[:0], uint32(v.(int32))))
	case TypeFloat32:
		b.Write(le.AppendUint32(tmp[:0], math.Float32bits(v.(float32))))
	case TypeUint64:
		b.Write(le.AppendUint64(tmp[:0], v.(uint64)))
	case TypeInt64:
		b.Write(le.AppendUint64(tmp[:0], uint64(v.(int64))))
	case TypeFloat64:
		b.Write(le.AppendUint64(tmp[:0], math.Float64bits(v.(float64))))
	case TypeString:
		putString(b, v.(string))
	case TypeArray:
		a := v.(*Array)
		b.Write(le.AppendUint32(tmp[:0], uint32(a.Elem)))
		n := a.Len()
		b.Write(le.AppendUint64(tmp[:0], uint64(n)))
		for i := 0; i < n; i++ {
			putValue(b, a.Elem, a.Index(i))
		}
	}
}

// WriteHeader writes the header to out and returns a DataWriter for the
// tensor data that follows it.
func (w *Writer) WriteHeader(out io.Writer) (*DataWriter, error) {
	h, err := w.Header()
	if err != nil {
		return nil, err
	}
	if _, err := out.Write(h); err != nil {
		return nil, fmt.Errorf("gguf writer: header: %w", err)
	}
	return &DataWriter{out: out, tensors: w.tensors, alignment: w.alignment}, nil
}

// DataWriter takes the concatenated tensor data, in the order the tensors
// were added, and inserts the alignment padding between tensors. Writes may
// be of any size and may span tensors.
type DataWriter struct {
	out       io.Writer
	tensors   []TensorInfo
	alignment uint64
	cur       int    // index of the tensor being written
	done      uint64 // bytes of the current tensor written
	zero      []byte
}

// Current returns the index of the tensor the next byte belongs to
// (len(tensors) once all data is written).
func (d *DataWriter) Current() int { return d.cur }

// Write implements io.Writer.
func (d *DataWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		d.skipEmpty()
		if d.cur >= len(d.tensors) {
			return written, fmt.Errorf("gguf writer: %d bytes past the last tensor", len(p))
		}
		t := d.tensors[d.cur]
		n := min(uint64(len(p)), t.Size-d.done)
		if _, err := d.out.Write(p[:n]); err != nil {
			return written, fmt.Errorf("gguf writer: tensor %s: %w", t.Name, err)
		}
		written += int(n)
		p = p[n:]
		d.done += n
		if d.done == t.Size {
			if err := d.pad(t); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

func (d *DataWriter) skipEmpty() {
	for d.cur < len(d.tensors) && d.tensors[d.cur].Size == 0 {
		d.cur++
	}
}

func (d *DataWriter) pad(t TensorInfo) error {
	pad := alignUp(t.Size, d.alignment) - t.Size
	if pad > 0 {
		if uint64(len(d.zero)) < pad {
			d.zero = make([]byte, pad)
		}
		if _, err := d.out.Write(d.zero[:pad]); err != nil {
			return fmt.Errorf("gguf writer: tensor %s padding: %w", t.Name, err)
		}
	}
	d.cur++
	d.done = 0
	return nil
}

// Close checks that every tensor's data was written in full.
func (d *DataWriter) Close() error {
	d.skipEmpty()
	if d.cur < len(d.tensors) {
		t := d.tensors[d.cur]
		return fmt.Errorf("gguf writer: tensor %s: %d of %d bytes written", t.Name, d.done, t.Size)
	}
	return nil
}
