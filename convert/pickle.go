package convert

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
)

// The pickle reader below understands the subset of the pickle protocol
// that torch.save emits for a state dict (protocol 2, plus the few
// protocol 3/4 opcodes newer writers use). It never imports or calls
// anything: GLOBAL may only name a short allow-list of torch and
// collections objects, and REDUCE only "calls" those by building Go values.

// PickleGlobal is a module-level name referenced by a pickle (GLOBAL).
type PickleGlobal struct{ Module, Name string }

// PickleTuple is a Python tuple.
type PickleTuple []any

// PickleList is a Python list.
type PickleList struct{ Items []any }

// PickleDict is a Python dict or OrderedDict; Keys keeps insertion order.
type PickleDict struct {
	Keys   []any
	Values map[any]any
}

func newDict() *PickleDict { return &PickleDict{Values: map[any]any{}} }

func (d *PickleDict) set(k, v any) error {
	switch k.(type) {
	case string, int64, bool, nil, float64:
	default:
		return fmt.Errorf("unsupported dict key type %T", k)
	}
	if _, ok := d.Values[k]; !ok {
		d.Keys = append(d.Keys, k)
	}
	d.Values[k] = v
	return nil
}

// TorchStorage is a storage named by a persistent id:
// ('storage', <torch.XStorage>, key, location, numel).
type TorchStorage struct {
	DType    string // F16, BF16, F32, F64, I64, ...
	Key      string // the archive/data/<key> entry
	Location string
	Numel    int64
}

// TorchTensor is a tensor rebuilt by torch._utils._rebuild_tensor_v2.
type TorchTensor struct {
	Storage       *TorchStorage
	StorageOffset int64 // in elements
	Shape         []int64
	Stride        []int64
}

// storageDTypes maps torch's legacy storage class names to dtypes.
var storageDTypes = map[string]string{
	"HalfStorage": "F16", "BFloat16Storage": "BF16", "FloatStorage": "F32",
	"DoubleStorage": "F64", "LongStorage": "I64", "IntStorage": "I32",
	"ShortStorage": "I16", "CharStorage": "I8", "ByteStorage": "U8", "BoolStorage": "BOOL",
}

type storageType struct{ dtype string }

type pickleMark struct{}

// Limits for hostile input. A ChatGLM3 state dict pushes about 20 values
// and memoizes about 8 per tensor (a few thousand in all). Every value a
// pickle creates is pushed once, so maxPickleValues bounds the memory the
// reader can be made to hold (lists and dicts only collect pushed values).
const (
	maxPickleStack  = 1 << 20
	maxPickleMemo   = 1 << 20
	maxPickleValues = 1 << 21
)

var errPickleStack = errors.New("stack underflow")

type unpickler struct {
	data  []byte
	pos   int
	stack []any
	memo  map[uint32]any
	made  int // values pushed so far
}

// Unpickle runs the restricted pickle VM over data and returns the object
// that STOP leaves.
func Unpickle(data []byte) (any, error) {
	u := &unpickler{data: data, memo: map[uint32]any{}}
	v, err := u.run()
	if err != nil {
		return nil, fmt.Errorf("pickle at byte %d: %w", u.pos, err)
	}
	return v, nil
}

func (u *unpickler) take(n int) ([]byte, error) {
	if n < 0 || n > len(u.data)-u.pos {
		return nil, errors.New("truncated")
	}
	b := u.data[u.pos : u.pos+n]
	u.pos += n
	return b, nil
}

func (u *unpickler) line() (string, error) {
	for i := u.pos; i < len(u.data); i++ {
		if u.data[i] == '\n' {
			s := string(u.data[u.pos:i])
			u.pos = i + 1
			return s, nil
		}
	}
	return "", errors.New("truncated line")
}

func (u *unpickler) push(v any) error {
	if len(u.stack) >= maxPickleStack {
		return errors.New("stack too deep")
	}
	if u.made >= maxPickleValues {
		return fmt.Errorf("more than %d values", maxPickleValues)
	}
	u.made++
	u.stack = append(u.stack, v)
	return nil
}

func (u *unpickler) pop() (any, error) {
	if len(u.stack) == 0 {
		return nil, errPickleStack
	}
	v := u.stack[len(u.stack)-1]
	u.stack = u.stack[:len(u.stack)-1]
	if _, ok := v.(pickleMark); ok {
		return nil, errors.New("unexpected mark")
	}
	return v, nil
}

func (u *unpickler) top() (any, error) {
	if len(u.stack) == 0 {
		return nil, errPickleStack
	}
	v := u.stack[len(u.stack)-1]
	if _, ok := v.(pickleMark); ok {
		return nil, errors.New("unexpected mark")
	}
	return v, nil
}

// popMark pops everything above the topmost mark, and the mark.
func (u *unpickler) popMark() ([]any, error) {
	for i := len(u.stack) - 1; i >= 0; i-- {
		if _, ok := u.stack[i].(pickleMark); ok {
			items := append([]any(nil), u.stack[i+1:]...)
			u.stack = u.stack[:i]
			return items, nil
		}
	}
	return nil, errors.New("no mark on the stack")
}

func (u *unpickler) memoPut(i uint32) error {
	v, err := u.top()
	if err != nil {
		return err
	}
	if _, ok := u.memo[i]; !ok && len(u.memo) >= maxPickleMemo {
		return errors.New("memo too large")
	}
	u.memo[i] = v
	return nil
}

func (u *unpickler) run() (any, error) {
	le := binary.LittleEndian
	for {
		b, err := u.take(1)
		if err != nil {
			return nil, errors.New("truncated: no STOP")
		}
		op := b[0]
		switch op {
		case 0x80: // PROTO
			p, err := u.take(1)
			if err != nil {
				return nil, err
			}
			if p[0] > 5 {
				return nil, fmt.Errorf("unsupported pickle protocol %d", p[0])
			}
		case 0x95: // FRAME (8-byte length; frames are just inline data here)
			if _, err := u.take(8); err != nil {
				return nil, err
			}
		case '.': // STOP
			return u.pop()
		case '(': // MARK
			err = u.push(pickleMark{})
		case '}': // EMPTY_DICT
			err = u.push(newDict())
		case ']': // EMPTY_LIST
			err = u.push(&PickleList{})
		case ')': // EMPTY_TUPLE
			err = u.push(PickleTuple{})
		case 'N': // NONE
			err = u.push(nil)
		case 0x88: // NEWTRUE
			err = u.push(true)
		case 0x89: // NEWFALSE
			err = u.push(false)
		case 'K': // BININT1
			var x []byte
			if x, err = u.take(1); err == nil {
				err = u.push(int64(x[0]))
			}
		case 'M': // BININT2
			var x []byte
			if x, err = u.take(2); err == nil {
				err = u.push(int64(le.Uint16(x)))
			}
		case 'J': // BININT
			var x []byte
			if x, err = u.take(4); err == nil {
				err = u.push(int64(int32(le.Uint32(x))))
			}
		case 0x8a, 0x8b: // LONG1, LONG4
			var n int
			if op == 0x8a {
				var x []byte
				if x, err = u.take(1); err != nil {
					return nil, err
				}
				n = int(x[0])
			} else {
				var x []byte
				if x, err = u.take(4); err != nil {
					return nil, err
				}
				n = int(int32(le.Uint32(x)))
			}
			var x []byte
			if x, err = u.take(n); err != nil {
				return nil, err
			}
			v, err := decodeLong(x)
			if err != nil {
				return nil, err
			}
			err = u.push(v)
			if err != nil {
				return nil, err
			}
		case 'G': // BINFLOAT (big-endian)
			var x []byte
			if x, err = u.take(8); err == nil {
				err = u.push(math.Float64frombits(binary.BigEndian.Uint64(x)))
			}
		case 'X', 0x8c, 'T', 'U', 'B', 'C', 0x8e: // BINUNICODE, SHORT_BINUNICODE, BINSTRING, SHORT_BINSTRING, BINBYTES, SHORT_BINBYTES, BINBYTES8
			var n uint64
			switch op {
			case 0x8c, 'U', 'C':
				var x []byte
				if x, err = u.take(1); err != nil {
					return nil, err
				}
				n = uint64(x[0])
			case 0x8e:
				var x []byte
				if x, err = u.take(8); err != nil {
					return nil, err
				}
				n = le.Uint64(x)
			default:
				var x []byte
				if x, err = u.take(4); err != nil {
					return nil, err
				}
				n = uint64(le.Uint32(x))
			}
			if n > uint64(len(u.data)-u.pos) {
				return nil, errors.New("truncated string")
			}
			s, _ := u.take(int(n))
			if op == 'B' || op == 'C' || op == 0x8e {
				err = u.push(append([]byte(nil), s...))
			} else {
				err = u.push(string(s))
			}
		case 'q': // BINPUT
			var x []byte
			if x, err = u.take(1); err == nil {
				err = u.memoPut(uint32(x[0]))
			}
		case 'r': // LONG_BINPUT
			var x []byte
			if x, err = u.take(4); err == nil {
				err = u.memoPut(le.Uint32(x))
			}
		case 0x94: // MEMOIZE
			err = u.memoPut(uint32(len(u.memo)))
		case 'h', 'j': // BINGET, LONG_BINGET
			var idx uint32
			if op == 'h' {
				var x []byte
				if x, err = u.take(1); err != nil {
					return nil, err
				}
				idx = uint32(x[0])
			} else {
				var x []byte
				if x, err = u.take(4); err != nil {
					return nil, err
				}
				idx = le.Uint32(x)
			}
			v, ok := u.memo[idx]
			if !ok {
				return nil, fmt.Errorf("memo entry %d missing", idx)
			}
			err = u.push(v)
		case 'c': // GLOBAL
			mod, err := u.line()
			if err != nil {
				return nil, err
			}
			name, err := u.line()
			if err != nil {
				return nil, err
			}
			g, err := resolveGlobal(mod, name)
			if err != nil {
				return nil, err
			}
			if err := u.push(g); err != nil {
				return nil, err
			}
		case 0x93: // STACK_GLOBAL
			n, err := u.pop()
			if err != nil {
				return nil, err
			}
			m, err := u.pop()
			if err != nil {
				return nil, err
			}
			ms, ok1 := m.(string)
			ns, ok2 := n.(string)
			if !ok1 || !ok2 {
				return nil, errors.New("STACK_GLOBAL needs two strings")
			}
			g, err := resolveGlobal(ms, ns)
			if err != nil {
				return nil, err
			}
			if err := u.push(g); err != nil {
				return nil, err
			}
		case 't': // TUPLE
			items, err := u.popMark()
			if err != nil {
				return nil, err
			}
			if err := u.push(PickleTuple(items)); err != nil {
				return nil, err
			}
		case 0x85, 0x86, 0x87: // TUPLE1, TUPLE2, TUPLE3
			n := int(op - 0x84)
			if len(u.stack) < n {
				return nil, errPickleStack
			}
			items := make(PickleTuple, n)
			for i := n - 1; i >= 0; i-- {
				if items[i], err = u.pop(); err != nil {
					return nil, err
				}
			}
			err = u.push(items)
		case 'a', 'e': // APPEND one value, APPENDS the values above the mark
			name, items := "APPEND", []any(nil)
			if op == 'a' {
				v, err := u.pop()
				if err != nil {
					return nil, err
				}
				items = []any{v}
			} else {
				name = "APPENDS"
				if items, err = u.popMark(); err != nil {
					return nil, err
				}
			}
			t, err := u.top()
			if err != nil {
				return nil, err
			}
			l, ok := t.(*PickleList)
			if !ok {
				return nil, fmt.Errorf("%s to %T", name, t)
			}
			l.Items = append(l.Items, items...)
		case 's', 'u': // SETITEM one key and value, SETITEMS the pairs above the mark
			name, items := "SETITEM", []any(nil)
			if op == 's' {
				v, err := u.pop()
				if err != nil {
					return nil, err
				}
				k, err := u.pop()
				if err != nil {
					return nil, err
				}
				items = []any{k, v}
			} else {
				name = "SETITEMS"
				if items, err = u.popMark(); err != nil {
					return nil, err
				}
				if len(items)%2 != 0 {
					return nil, errors.New("SETITEMS with an odd number of items")
				}
			}
			t, err := u.top()
			if err != nil {
				return nil, err
			}
			d, ok := t.(*PickleDict)
			if !ok {
				return nil, fmt.Errorf("%s on %T", name, t)
			}
			for i := 0; i < len(items); i += 2 {
				if err := d.set(items[i], items[i+1]); err != nil {
					return nil, err
				}
			}
		case 'Q': // BINPERSID
			pid, err := u.pop()
			if err != nil {
				return nil, err
			}
			s, err := persistentLoad(pid)
			if err != nil {
				return nil, err
			}
			err = u.push(s)
			if err != nil {
				return nil, err
			}
		case 'R', 0x81: // REDUCE fn(*args), NEWOBJ cls(*args): the same allow-listed rebuild
			args, err := u.pop()
			if err != nil {
				return nil, err
			}
			fn, err := u.pop()
			if err != nil {
				return nil, err
			}
			v, err := reduce(fn, args)
			if err != nil {
				return nil, err
			}
			err = u.push(v)
			if err != nil {
				return nil, err
			}
		case 'b': // BUILD: state is accepted and ignored (e.g. a state dict's _metadata)
			if _, err := u.pop(); err != nil {
				return nil, err
			}
			if _, err := u.top(); err != nil {
				return nil, err
			}
		case '0': // POP
			_, err = u.pop()
		case '2': // DUP
			var v any
			if v, err = u.top(); err == nil {
				err = u.push(v)
			}
		default:
			return nil, fmt.Errorf("unsupported pickle opcode 0x%02x", op)
		}
		if err != nil {
			return nil, err
		}
	}
}

func decodeLong(x []byte) (int64, error) {
	if len(x) == 0 {
		return 0, nil
	}
	if len(x) > 8 {
		// Two's complement little-endian; only values that fit int64 are useful.
		b := make([]byte, len(x))
		for i := range x {
			b[len(x)-1-i] = x[i]
		}
		v := new(big.Int).SetBytes(b)
		if x[len(x)-1]&0x80 != 0 {
			v.Sub(v, new(big.Int).Lsh(big.NewInt(1), uint(8*len(x))))
		}
		if !v.IsInt64() {
			return 0, errors.New("integer too large")
		}
		return v.Int64(), nil
	}
	var u uint64
	for i := len(x) - 1; i >= 0; i-- {
		u = u<<8 | uint64(x[i])
	}
	if x[len(x)-1]&0x80 != 0 && len(x) < 8 {
		u -= 1 << (8 * uint(len(x)))
	}
	return int64(u), nil
}

// resolveGlobal admits only the names a torch state dict needs.
func resolveGlobal(mod, name string) (any, error) {
	switch mod + "." + name {
	case "collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter", "builtins.dict":
		return PickleGlobal{mod, name}, nil
	}
	if mod == "torch" {
		if dt, ok := storageDTypes[name]; ok {
			return storageType{dt}, nil
		}
	}
	return nil, fmt.Errorf("refusing global %s.%s (not a torch state dict object)", mod, name)
}

func persistentLoad(pid any) (*TorchStorage, error) {
	t, ok := pid.(PickleTuple)
	if !ok || len(t) != 5 {
		return nil, fmt.Errorf("persistent id %T is not a 5-tuple", pid)
	}
	if s, _ := t[0].(string); s != "storage" {
		return nil, fmt.Errorf("persistent id kind %v, want 'storage'", t[0])
	}
	st, ok := t[1].(storageType)
	if !ok {
		return nil, fmt.Errorf("persistent id storage type %T", t[1])
	}
	key, ok := t[2].(string)
	if !ok {
		return nil, fmt.Errorf("persistent id key %T", t[2])
	}
	loc, _ := t[3].(string)
	n, ok := t[4].(int64)
	if !ok || n < 0 {
		return nil, fmt.Errorf("persistent id numel %v", t[4])
	}
	return &TorchStorage{DType: st.dtype, Key: key, Location: loc, Numel: n}, nil
}

func intTuple(v any, what string) ([]int64, error) {
	t, ok := v.(PickleTuple)
	if !ok {
		return nil, fmt.Errorf("%s is %T, want a tuple", what, v)
	}
	out := make([]int64, len(t))
	for i, e := range t {
		n, ok := e.(int64)
		if !ok {
			return nil, fmt.Errorf("%s[%d] is %T", what, i, e)
		}
		out[i] = n
	}
	return out, nil
}

func reduce(fn, args any) (any, error) {
	g, ok := fn.(PickleGlobal)
	if !ok {
		return nil, fmt.Errorf("REDUCE on %T", fn)
	}
	a, ok := args.(PickleTuple)
	if !ok {
		return nil, fmt.Errorf("REDUCE arguments %T", args)
	}
	switch g.Module + "." + g.Name {
	case "collections.OrderedDict", "builtins.dict":
		if len(a) != 0 {
			return nil, fmt.Errorf("%s with %d arguments", g.Name, len(a))
		}
		return newDict(), nil
	case "torch._utils._rebuild_parameter":
		if len(a) < 1 {
			return nil, errors.New("_rebuild_parameter without data")
		}
		if _, ok := a[0].(*TorchTensor); !ok {
			return nil, fmt.Errorf("_rebuild_parameter of %T", a[0])
		}
		return a[0], nil
	case "torch._utils._rebuild_tensor_v2":
		if len(a) < 4 {
			return nil, fmt.Errorf("_rebuild_tensor_v2 with %d arguments", len(a))
		}
		st, ok := a[0].(*TorchStorage)
		if !ok {
			return nil, fmt.Errorf("_rebuild_tensor_v2 storage is %T", a[0])
		}
		off, ok := a[1].(int64)
		if !ok || off < 0 {
			return nil, fmt.Errorf("_rebuild_tensor_v2 storage offset %v", a[1])
		}
		shape, err := intTuple(a[2], "size")
		if err != nil {
			return nil, err
		}
		stride, err := intTuple(a[3], "stride")
		if err != nil {
			return nil, err
		}
		if len(stride) != len(shape) {
			return nil, fmt.Errorf("size %v and stride %v differ in length", shape, stride)
		}
		return &TorchTensor{Storage: st, StorageOffset: off, Shape: shape, Stride: stride}, nil
	}
	return nil, fmt.Errorf("cannot call %s.%s", g.Module, g.Name)
}

// StateDictTensors extracts name → tensor from an unpickled state dict.
func StateDictTensors(v any) (map[string]*TorchTensor, []string, error) {
	d, ok := v.(*PickleDict)
	if !ok {
		return nil, nil, fmt.Errorf("top-level object is %T, want a dict of tensors", v)
	}
	out := make(map[string]*TorchTensor, len(d.Keys))
	var names []string
	for _, k := range d.Keys {
		name, ok := k.(string)
		if !ok {
			return nil, nil, fmt.Errorf("state dict key %v is not a string", k)
		}
		t, ok := d.Values[k].(*TorchTensor)
		if !ok {
			return nil, nil, fmt.Errorf("state dict entry %s is %T, not a tensor", name, d.Values[k])
		}
		out[name] = t
		names = append(names, name)
	}
	return out, names, nil
}
