package gguf

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"

	"github.com/chatglm/chatglm/internal/safetext"
)

// Limits that keep a hostile or corrupt file from driving allocations.
// Every count is also checked against the bytes left in the file before
// anything is allocated, so what a header holds in memory is proportional
// to its size on disk (at most about four times).
const (
	maxDims       = 4        // GGML_MAX_DIMS
	maxKeyLen     = 1 << 16  // spec: keys and tensor names are at most 65535 bytes
	maxStringLen  = 64 << 20 // a string value (chat templates, embedded JSON)
	maxArrayLen   = 1 << 26  // elements of one metadata array
	maxArrayDepth = 8        // nested arrays deeper than this are refused
	maxKVs        = 1 << 20  // metadata pairs
	maxTensors    = 1 << 20  // tensor descriptions
)

// KV is one metadata pair.
type KV struct {
	Key   string
	Type  ValueType
	Value any // uint8, int8, uint16, int16, uint32, int32, float32, bool, string, uint64, int64, float64 or *Array
}

// Array is an array metadata value. Values is a slice of the element type:
// []uint8, []int8, []uint16, []int16, []uint32, []int32, []float32, []bool,
// []string, []uint64, []int64, []float64, or []*Array for nested arrays.
type Array struct {
	Elem   ValueType
	Values any
}

// Len is the number of elements.
func (a *Array) Len() int {
	switch v := a.Values.(type) {
	case []uint8:
		return len(v)
	case []int8:
		return len(v)
	case []uint16:
		return len(v)
	case []int16:
		return len(v)
	case []uint32:
		return len(v)
	case []int32:
		return len(v)
	case []float32:
		return len(v)
	case []bool:
		return len(v)
	case []string:
		return len(v)
	case []uint64:
		return len(v)
	case []int64:
		return len(v)
	case []float64:
		return len(v)
	case []*Array:
		return len(v)
	}
	return 0
}

// Index returns element i as a KV.Value-style Go value (*Array for nested
// arrays). It panics if i is out of range, like a slice index.
func (a *Array) Index(i int) any {
	switch v := a.Values.(type) {
	case []uint8:
		return v[i]
	case []int8:
		return v[i]
	case []uint16:
		return v[i]
	case []int16:
		return v[i]
	case []uint32:
		return v[i]
	case []int32:
		return v[i]
	case []float32:
		return v[i]
	case []bool:
		return v[i]
	case []string:
		return v[i]
	case []uint64:
		return v[i]
	case []int64:
		return v[i]
	case []float64:
		return v[i]
	case []*Array:
		return v[i]
	}
	panic(fmt.Sprintf("gguf: Array.Index on %T", a.Values))
}

// elemType is the element type of a slice that Array.Values may hold.
func elemType(values any) (ValueType, bool) {
	switch values.(type) {
	case []uint8:
		return TypeUint8, true
	case []int8:
		return TypeInt8, true
	case []uint16:
		return TypeUint16, true
	case []int16:
		return TypeInt16, true
	case []uint32:
		return TypeUint32, true
	case []int32:
		return TypeInt32, true
	case []float32:
		return TypeFloat32, true
	case []bool:
		return TypeBool, true
	case []string:
		return TypeString, true
	case []uint64:
		return TypeUint64, true
	case []int64:
		return TypeInt64, true
	case []float64:
		return TypeFloat64, true
	case []*Array:
		return TypeArray, true
	}
	return 0, false
}

// ArrayOf returns the elements of the array stored under key when its
// element type is T (for example ArrayOf[string](f, "tokenizer.ggml.tokens")).
// It fails when the key is absent or holds something else.
func ArrayOf[T any](f *File, key string) ([]T, error) {
	kv, ok := f.KV(key)
	if !ok {
		return nil, fmt.Errorf("gguf %s: no %s", f.Name, key)
	}
	a, ok := kv.Value.(*Array)
	if !ok {
		return nil, fmt.Errorf("gguf %s: %s is a %s, not an array", f.Name, key, kv.Type)
	}
	v, ok := a.Values.([]T)
	if !ok {
		var zero T
		return nil, fmt.Errorf("gguf %s: %s is an array of %s, not of %T", f.Name, key, a.Elem, zero)
	}
	return v, nil
}

// TensorInfo describes one tensor of a GGUF file.
type TensorInfo struct {
	Name   string
	Dims   []uint64 // ne0 first (fastest varying), the reverse of a PyTorch shape
	Type   GGMLType
	Offset uint64 // relative to the start of the data section
	Size   uint64 // bytes of tensor data (0 if the type is unknown)
}

// Elements is the number of elements in the tensor. The reader refuses
// tensors whose element count overflows int64.
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
	// chunk holds fixed-size array elements on their way to a typed slice.
	chunk [4096]byte
}

func (d *decoder) remaining() int64 { return d.size - d.pos }

// fill reads len(b) bytes into b.
func (d *decoder) fill(b []byte) error {
	if int64(len(b)) > d.remaining() {
		return ErrTruncated
	}
	if _, err := io.ReadFull(d.r, b); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return ErrTruncated
		}
		return err
	}
	d.pos += int64(len(b))
	return nil
}

// read returns the next n (at most 8) bytes in a buffer reused by the next call.
func (d *decoder) read(n int) ([]byte, error) {
	b := d.buf[:n]
	if err := d.fill(b); err != nil {
		return nil, err
	}
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

// str reads a length-prefixed string of at most limit bytes.
func (d *decoder) str(limit uint64) (string, error) {
	n, err := d.u64()
	if err != nil {
		return "", err
	}
	if n > limit {
		return "", fmt.Errorf("string of %d bytes exceeds the limit of %d", n, limit)
	}
	if n > uint64(d.remaining()) {
		return "", ErrTruncated
	}
	if n <= uint64(d.r.Size()) {
		// Short strings (all but the odd template) are copied once, from
		// the read buffer.
		b, err := d.r.Peek(int(n))
		if err != nil {
			return "", ErrTruncated
		}
		s := string(b)
		d.r.Discard(int(n))
		d.pos += int64(n)
		return s, nil
	}
	var sb strings.Builder
	sb.Grow(int(n))
	if _, err := io.CopyN(&sb, d.r, int64(n)); err != nil {
		return "", ErrTruncated
	}
	d.pos += int64(n)
	return sb.String(), nil
}

func (d *decoder) value(t ValueType, depth int) (any, error) {
	switch t {
	case TypeString:
		return d.str(maxStringLen)
	case TypeArray:
		return d.array(depth)
	}
	return d.scalars(t, 1, true)
}

// array reads an array value into a slice of its element type.
func (d *decoder) array(depth int) (*Array, error) {
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
	// Every element takes at least one byte (strings 8, arrays 12), so a
	// count larger than the rest of the file is corrupt.
	min := uint64(elem.scalarSize())
	switch elem {
	case TypeString:
		min = 8
	case TypeArray:
		min = 12
	}
	if min == 0 {
		return nil, fmt.Errorf("array of unknown element type %d", et)
	}
	if n > maxArrayLen {
		return nil, fmt.Errorf("array of %d %s elements exceeds the limit of %d", n, elem, maxArrayLen)
	}
	if n > uint64(d.remaining())/min {
		return nil, fmt.Errorf("array of %d %s elements: %w", n, elem, ErrTruncated)
	}
	a := &Array{Elem: elem}
	switch elem {
	case TypeString:
		v := make([]string, n)
		for i := range v {
			if v[i], err = d.str(maxStringLen); err != nil {
				return nil, fmt.Errorf("element %d: %w", i, err)
			}
		}
		a.Values = v
	case TypeArray:
		v := make([]*Array, n)
		for i := range v {
			if v[i], err = d.array(depth + 1); err != nil {
				return nil, fmt.Errorf("element %d: %w", i, err)
			}
		}
		a.Values = v
	default:
		a.Values, err = d.scalars(elem, n, false)
	}
	if err != nil {
		return nil, err
	}
	return a, nil
}

// scalars reads n values of the fixed-size type t into a slice of its Go
// type, or with single one value of that type. The caller has checked n
// against the bytes left in the file.
func (d *decoder) scalars(t ValueType, n uint64, single bool) (any, error) {
	le := binary.LittleEndian
	switch t {
	case TypeUint8:
		return readN(d, n, single, 1, func(b []byte) (uint8, error) { return b[0], nil })
	case TypeInt8:
		return readN(d, n, single, 1, func(b []byte) (int8, error) { return int8(b[0]), nil })
	case TypeBool:
		return readN(d, n, single, 1, func(b []byte) (bool, error) {
			if b[0] > 1 {
				return false, fmt.Errorf("bool value %d", b[0])
			}
			return b[0] == 1, nil
		})
	case TypeUint16:
		return readN(d, n, single, 2, func(b []byte) (uint16, error) { return le.Uint16(b), nil })
	case TypeInt16:
		return readN(d, n, single, 2, func(b []byte) (int16, error) { return int16(le.Uint16(b)), nil })
	case TypeUint32:
		return readN(d, n, single, 4, func(b []byte) (uint32, error) { return le.Uint32(b), nil })
	case TypeInt32:
		return readN(d, n, single, 4, func(b []byte) (int32, error) { return int32(le.Uint32(b)), nil })
	case TypeFloat32:
		return readN(d, n, single, 4, func(b []byte) (float32, error) { return math.Float32frombits(le.Uint32(b)), nil })
	case TypeUint64:
		return readN(d, n, single, 8, func(b []byte) (uint64, error) { return le.Uint64(b), nil })
	case TypeInt64:
		return readN(d, n, single, 8, func(b []byte) (int64, error) { return int64(le.Uint64(b)), nil })
	case TypeFloat64:
		return readN(d, n, single, 8, func(b []byte) (float64, error) { return math.Float64frombits(le.Uint64(b)), nil })
	}
	return nil, fmt.Errorf("unknown value type %d", uint32(t))
}

// readN reads n elements of size bytes each into a []T, a buffer-full at a
// time; with single it reads one and returns it as a T.
func readN[T any](d *decoder, n uint64, single bool, size int, conv func([]byte) (T, error)) (any, error) {
	if single {
		b, err := d.read(size)
		if err != nil {
			return nil, err
		}
		return conv(b)
	}
	if n == 0 {
		return []T(nil), nil // a nil slice in an interface costs no allocation
	}
	out := make([]T, n)
	per := len(d.chunk) / size
	for i := 0; i < len(out); {
		k := min(len(out)-i, per)
		b := d.chunk[:k*size]
		if err := d.fill(b); err != nil {
			return nil, err
		}
		for j := 0; j < k; j++ {
			v, err := conv(b[j*size:])
			if err != nil {
				return nil, fmt.Errorf("element %d: %w", i+j, err)
			}
			out[i+j] = v
		}
		i += k
	}
	return out, nil
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
	if nKV > maxKVs {
		return nil, fmt.Errorf("header claims %d metadata pairs (at most %d)", nKV, maxKVs)
	}
	if nTensors > maxTensors {
		return nil, fmt.Errorf("header claims %d tensors (at most %d)", nTensors, maxTensors)
	}
	// Each KV takes at least 8+4+1 bytes, each tensor info 8+4+4+8.
	if nKV > uint64(d.remaining())/13 {
		return nil, fmt.Errorf("header claims %d metadata pairs: %w", nKV, ErrTruncated)
	}
	if nTensors > uint64(d.remaining())/24 {
		return nil, fmt.Errorf("header claims %d tensors: %w", nTensors, ErrTruncated)
	}
	if err := d.readKVs(f, nKV); err != nil {
		return nil, err
	}
	if err := d.readTensorInfos(f, nTensors); err != nil {
		return nil, err
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
			return nil, fmt.Errorf("tensor %s: offset %d is not a multiple of the alignment %d", safetext.Quote(t.Name), t.Offset, f.Alignment)
		}
		if t.Offset > dataLen || t.Size > dataLen-t.Offset {
			return nil, fmt.Errorf("tensor %s: data [%d, %d) lies beyond the %d data bytes in the file: %w",
				safetext.Quote(t.Name), t.Offset, t.Offset+t.Size, dataLen, ErrTruncated)
		}
	}
	return f, nil
}

// readKVs reads n metadata pairs into f.KVs; general.alignment sets f.Alignment.
func (d *decoder) readKVs(f *File, n uint64) error {
	f.KVs = make([]KV, 0, n)
	for i := uint64(0); i < n; i++ {
		key, err := d.str(maxKeyLen)
		if err != nil {
			return fmt.Errorf("metadata pair %d: key: %w", i, err)
		}
		t, err := d.u32()
		if err != nil {
			return fmt.Errorf("metadata %s: %w", safetext.Quote(key), err)
		}
		v, err := d.value(ValueType(t), 0)
		if err != nil {
			return fmt.Errorf("metadata %s: %w", safetext.Quote(key), err)
		}
		f.KVs = append(f.KVs, KV{Key: key, Type: ValueType(t), Value: v})
		if key == "general.alignment" {
			a, ok := AsUint(v)
			if !ok || a == 0 || a%8 != 0 || a > 1<<30 {
				return fmt.Errorf("general.alignment %v is not a positive multiple of 8", v)
			}
			f.Alignment = a
		}
	}
	if dup, ok := firstDuplicate(len(f.KVs), func(i int) string { return f.KVs[i].Key }); ok {
		return fmt.Errorf("metadata %s: duplicate key", safetext.Quote(dup))
	}
	return nil
}

// firstDuplicate returns a name that occurs twice among the n names that
// name(i) returns. It sorts indices (4 bytes a name) rather than filling a
// map, which would cost several times the header's size.
func firstDuplicate(n int, name func(int) string) (string, bool) {
	idx := make([]int32, n)
	for i := range idx {
		idx[i] = int32(i)
	}
	slices.SortFunc(idx, func(a, b int32) int { return strings.Compare(name(int(a)), name(int(b))) })
	for i := 1; i < len(idx); i++ {
		if name(int(idx[i])) == name(int(idx[i-1])) {
			return name(int(idx[i])), true
		}
	}
	return "", false
}

// readTensorInfos reads n tensor descriptions into f.Tensors.
func (d *decoder) readTensorInfos(f *File, n uint64) error {
	f.Tensors = make([]TensorInfo, 0, n)
	for i := uint64(0); i < n; i++ {
		tname, err := d.str(maxKeyLen)
		if err != nil {
			return fmt.Errorf("tensor %d: name: %w", i, err)
		}
		q := safetext.Quote(tname)
		nd, err := d.u32()
		if err != nil {
			return fmt.Errorf("tensor %s: %w", q, err)
		}
		if nd > maxDims {
			return fmt.Errorf("tensor %s: %d dimensions (at most %d)", q, nd, maxDims)
		}
		ti := TensorInfo{Name: tname, Dims: make([]uint64, nd)}
		n := uint64(1)
		for j := range ti.Dims {
			if ti.Dims[j], err = d.u64(); err != nil {
				return fmt.Errorf("tensor %s: %w", q, err)
			}
			if ti.Dims[j] != 0 && n > math.MaxInt64/ti.Dims[j] {
				return fmt.Errorf("tensor %s: element count overflows", q)
			}
			n *= ti.Dims[j]
		}
		typ, err := d.u32()
		if err != nil {
			return fmt.Errorf("tensor %s: %w", q, err)
		}
		ti.Type = GGMLType(typ)
		if ti.Offset, err = d.u64(); err != nil {
			return fmt.Errorf("tensor %s: %w", q, err)
		}
		if ti.Type.Known() {
			if ti.Size, err = ti.Type.RowBytes(n); err != nil {
				return fmt.Errorf("tensor %s: %w", q, err)
			}
		}
		f.Tensors = append(f.Tensors, ti)
	}
	if dup, ok := firstDuplicate(len(f.Tensors), func(i int) string { return f.Tensors[i].Name }); ok {
		return fmt.Errorf("tensor %s: duplicate name", safetext.Quote(dup))
	}
	return nil
}

func alignUp(n, a uint64) uint64 { return (n + a - 1) / a * a }
