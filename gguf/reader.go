package gguf

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
)

// Limits that keep a hostile or corrupt file from driving allocations.
const (
	maxDims       = 4       // GGML_MAX_DIMS
	maxKeyLen     = 1 << 16 // spec: keys are at most 65535 bytes
	maxArrayDepth = 8       // nested arrays deeper than this are refused
)

// KV is one metadata key/value pair.
type KV struct {
	Key   string
	Type  ValueType
	Value any // uint8, int8, uint16, int16, uint32, int32, float32, bool, string, uint64, int64, float64 or *Array
}

// Array is an array metadata value. Values holds Go values of the element
// type (see KV.Value); nested arrays hold *Array elements.
type Array struct {
	Elem   ValueType
	Values []any
}

// TensorInfo describes one tensor of a GGUF file.
type TensorInfo struct {
	Name   string
	Dims   []uint64 // ne0 first (fastest varying), the reverse of a PyTorch shape
	Type   GGMLType
	Offset uint64 // relative to the start of the data section
	Size   uint64 // bytes of tensor data (0 if the type is unknown)
}

// Elements is the number of elements in the tensor.
func (t TensorInfo) Elements() uint64 {
	n := uint64(1)
	for _, d := range t.Dims {
		n *= d
	}
	return n
}

// File is the parsed header of a GGUF file.
type File struct {
	Name       string // the file name used in errors
	Version    uint32
	KVs        []KV
	Tensors    []TensorInfo
	Alignment  uint64
	DataOffset uint64 // absolute offset of the data section
	Size       int64  // total file size
}

// KV returns the pair with the given key.
func (f *File) KV(key string) (KV, bool) {
	for _, kv := range f.KVs {
		if kv.Key == key {
			return kv, true
		}
	}
	return KV{}, false
}

// String returns a string value, or "" if the key is absent or not a string.
func (f *File) String(key string) string {
	kv, _ := f.KV(key)
	s, _ := kv.Value.(string)
	return s
}

// Uint returns an unsigned integer value of any width (also non-negative
// signed ones), and whether the key holds one.
func (f *File) Uint(key string) (uint64, bool) {
	kv, ok := f.KV(key)
	if !ok {
		return 0, false
	}
	return AsUint(kv.Value)
}

// Float returns a float value (f32 or f64), and whether the key holds one.
func (f *File) Float(key string) (float64, bool) {
	kv, _ := f.KV(key)
	switch v := kv.Value.(type) {
	case float32:
		return float64(v), true
	case float64:
		return v, true
	}
	return 0, false
}

// Tensor returns the tensor with the given name.
func (f *File) Tensor(name string) (TensorInfo, bool) {
	for _, t := range f.Tensors {
		if t.Name == name {
			return t, true
		}
	}
	return TensorInfo{}, false
}

// AsUint converts an integer metadata value to uint64.
func AsUint(v any) (uint64, bool) {
	switch x := v.(type) {
	case uint8:
		return uint64(x), true
	case uint16:
		return uint64(x), true
	case uint32:
		return uint64(x), true
	case uint64:
		return x, true
	case int8:
		return uint64(x), x >= 0
	case int16:
		return uint64(x), x >= 0
	case int32:
		return uint64(x), x >= 0
	case int64:
		return uint64(x), x >= 0
	}
	return 0, false
}

// ErrNotGGUF is returned (wrapped) for files that do not start with the GGUF magic.
var ErrNotGGUF = errors.New("not a GGUF file")

// ErrTruncated is returned (wrapped) when a file ends before its header or data does.
var ErrTruncated = errors.New("truncated GGUF file")

// Open reads the header of the GGUF file at path.
func Open(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	return Read(fh, st.Size(), path)
}

// Read parses a GGUF header from r, a file of the given size; name labels errors.
// It checks that every tensor's data lies inside the file.
func Read(r io.ReaderAt, size int64, name string) (*File, error) {
	f, err := read(r, size, name)
	if err != nil {
		return nil, fmt.Errorf("gguf %s: %w", name, err)
	}
	return f, nil
}

type decoder struct {
	r    *bufio.Reader
	pos  int64
	size int64
	buf  [8]byte
}

func (d *decoder) remaining() int64 { return d.size - d.pos }

func (d *decoder) read(n int) ([]byte, error) {
	if int64(n) > d.remaining() {
		return nil, ErrTruncated
	}
	b := d.buf[:n]
	if _, err := io.ReadFull(d.r, b); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, ErrTruncated
		}
		return nil, err
	}
	d.pos += int64(n)
	return b, nil
}

func (d *decoder) u32() (uint32, error) {
	b, err := d.read(4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (d *decoder) u64() (uint64, error) {
	b, err := d.read(8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

func (d *decoder) str(limit uint64) (string, error) {
	n, err := d.u64()
	if err != nil {
		return "", err
	}
	if limit > 0 && n > limit {
		return "", fmt.Errorf("string of %d bytes exceeds the limit of %d", n, limit)
	}
	if n > uint64(d.remaining()) {
		return "", ErrTruncated
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(d.r, b); err != nil {
		return "", ErrTruncated
	}
	d.pos += int64(n)
	return string(b), nil
}

func (d *decoder) value(t ValueType, depth int) (any, error) {
	switch t {
	case TypeString:
		return d.str(0)
	case TypeArray:
		if depth >= maxArrayDepth {
			return nil, fmt.Errorf("arrays nested deeper than %d", maxArrayDepth)
		}
		et, err := d.u32()
		if err != nil {
			return nil, err
		}
		elem := ValueType(et)
		n, err := d.u64()
		if err != nil {
			return nil, err
		}
		// Every element takes at least one byte (strings and arrays at least 8),
		// so a count larger than the rest of the file is corrupt.
		min := uint64(elem.scalarSize())
		if elem == TypeString || elem == TypeArray {
			min = 8
		}
		if min == 0 {
			return nil, fmt.Errorf("array of unknown element type %d", et)
		}
		if n > uint64(d.remaining())/min {
			return nil, fmt.Errorf("array of %d %s elements: %w", n, elem, ErrTruncated)
		}
		a := &Array{Elem: elem, Values: make([]any, 0, n)}
		for i := uint64(0); i < n; i++ {
			v, err := d.value(elem, depth+1)
			if err != nil {
				return nil, fmt.Errorf("element %d: %w", i, err)
			}
			a.Values = append(a.Values, v)
		}
		return a, nil
	}
	sz := t.scalarSize()
	if sz == 0 {
		return nil, fmt.Errorf("unknown value type %d", uint32(t))
	}
	b, err := d.read(sz)
	if err != nil {
		return nil, err
	}
	switch t {
	case TypeUint8:
		return b[0], nil
	case TypeInt8:
		return int8(b[0]), nil
	case TypeBool:
		if b[0] > 1 {
			return nil, fmt.Errorf("bool value %d", b[0])
		}
		return b[0] == 1, nil
	case TypeUint16:
		return binary.LittleEndian.Uint16(b), nil
	case TypeInt16:
		return int16(binary.LittleEndian.Uint16(b)), nil
	case TypeUint32:
		return binary.LittleEndian.Uint32(b), nil
	case TypeInt32:
		return int32(binary.LittleEndian.Uint32(b)), nil
	case TypeFloat32:
		return math.Float32frombits(binary.LittleEndian.Uint32(b)), nil
	case TypeUint64:
		return binary.LittleEndian.Uint64(b), nil
	case TypeInt64:
		return int64(binary.LittleEndian.Uint64(b)), nil
	default: // TypeFloat64
		return math.Float64frombits(binary.LittleEndian.Uint64(b)), nil
	}
}

func read(r io.ReaderAt, size int64, name string) (*File, error) {
	d := &decoder{r: bufio.NewReaderSize(io.NewSectionReader(r, 0, size), 1<<16), size: size}
	f := &File{Name: name, Size: size, Alignment: DefaultAlignment}
	magic, err := d.read(4)
	if err != nil {
		if errors.Is(err, ErrTruncated) {
			return nil, fmt.Errorf("%w (%d bytes)", ErrNotGGUF, size)
		}
		return nil, err
	}
	if string(magic) != Magic {
		return nil, fmt.Errorf("%w (magic %q)", ErrNotGGUF, magic)
	}
	if f.Version, err = d.u32(); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	if f.Version < 2 || f.Version > 3 {
		return nil, fmt.Errorf("unsupported GGUF version %d", f.Version)
	}
	nTensors, err := d.u64()
	if err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	nKV, err := d.u64()
	if err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	// Each KV takes at least 8+4+1 bytes, each tensor info 8+4+4+8.
	if nKV > uint64(d.remaining())/13 {
		return nil, fmt.Errorf("header claims %d metadata pairs: %w", nKV, ErrTruncated)
	}
	if nTensors > uint64(d.remaining())/24 {
		return nil, fmt.Errorf("header claims %d tensors: %w", nTensors, ErrTruncated)
	}
	f.KVs = make([]KV, 0, nKV)
	for i := uint64(0); i < nKV; i++ {
		key, err := d.str(maxKeyLen)
		if err != nil {
			return nil, fmt.Errorf("metadata pair %d: key: %w", i, err)
		}
		t, err := d.u32()
		if err != nil {
			return nil, fmt.Errorf("metadata %s: %w", key, err)
		}
		v, err := d.value(ValueType(t), 0)
		if err != nil {
			return nil, fmt.Errorf("metadata %s: %w", key, err)
		}
		f.KVs = append(f.KVs, KV{Key: key, Type: ValueType(t), Value: v})
		if key == "general.alignment" {
			a, ok := AsUint(v)
			if !ok || a == 0 || a%8 != 0 || a > 1<<30 {
				return nil, fmt.Errorf("general.alignment %v is not a positive multiple of 8", v)
			}
			f.Alignment = a
		}
	}
	f.Tensors = make([]TensorInfo, 0, nTensors)
	for i := uint64(0); i < nTensors; i++ {
		tname, err := d.str(maxKeyLen)
		if err != nil {
			return nil, fmt.Errorf("tensor %d: name: %w", i, err)
		}
		nd, err := d.u32()
		if err != nil {
			return nil, fmt.Errorf("tensor %s: %w", tname, err)
		}
		if nd > maxDims {
			return nil, fmt.Errorf("tensor %s: %d dimensions (at most %d)", tname, nd, maxDims)
		}
		ti := TensorInfo{Name: tname, Dims: make([]uint64, nd)}
		n := uint64(1)
		for j := range ti.Dims {
			if ti.Dims[j], err = d.u64(); err != nil {
				return nil, fmt.Errorf("tensor %s: %w", tname, err)
			}
			if ti.Dims[j] != 0 && n > math.MaxInt64/ti.Dims[j] {
				return nil, fmt.Errorf("tensor %s: element count overflows", tname)
			}
			n *= ti.Dims[j]
		}
		typ, err := d.u32()
		if err != nil {
			return nil, fmt.Errorf("tensor %s: %w", tname, err)
		}
		ti.Type = GGMLType(typ)
		if ti.Offset, err = d.u64(); err != nil {
			return nil, fmt.Errorf("tensor %s: %w", tname, err)
		}
		if ti.Type.Known() {
			if ti.Size, err = ti.Type.RowBytes(n); err != nil {
				return nil, fmt.Errorf("tensor %s: %w", tname, err)
			}
		}
		f.Tensors = append(f.Tensors, ti)
	}
	f.DataOffset = alignUp(uint64(d.pos), f.Alignment)
	if f.DataOffset > uint64(size) && nTensors > 0 {
		return nil, fmt.Errorf("data section at %d is past the end of the file (%d bytes): %w", f.DataOffset, size, ErrTruncated)
	}
	dataLen := uint64(0)
	if uint64(size) > f.DataOffset {
		dataLen = uint64(size) - f.DataOffset
	}
	for _, t := range f.Tensors {
		if t.Offset%f.Alignment != 0 {
			return nil, fmt.Errorf("tensor %s: offset %d is not a multiple of the alignment %d", t.Name, t.Offset, f.Alignment)
		}
		if t.Offset > dataLen || t.Size > dataLen-t.Offset {
			return nil, fmt.Errorf("tensor %s: data [%d, %d) lies beyond the %d data bytes in the file: %w",
				t.Name, t.Offset, t.Offset+t.Size, dataLen, ErrTruncated)
		}
	}
	return f, nil
}

func alignUp(n, a uint64) uint64 { return (n + a - 1) / a * a }
