package convert

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// The torch checkpoint reader is three files:
//   - pickle.go (this file): a restricted pickle interpreter. It understands
//     the subset of the protocol that torch.save emits for a state dict
//     (protocol 2, plus the few protocol 3/4 opcodes newer writers use) and
//     never imports or calls anything.
//   - torch.go: the torch objects a state dict pickle may build (storages,
//     tensors, OrderedDict) and StateDictTensors, which reads the result.
//   - torchbin.go: the torch.save zip archive around the pickle and the
//     storages, and where each tensor's bytes lie in it.

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

var (
	errPickleStack = errors.New("stack underflow")
	errTruncated   = errors.New("truncated")
)

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

// run executes opcodes until STOP. Every opcode's handler returns a plain
// error, which run prefixes with the opcode's name.
func (u *unpickler) run() (any, error) {
	for {
		if u.pos >= len(u.data) {
			return nil, errors.New("truncated: no STOP")
		}
		code := u.data[u.pos]
		u.pos++
		if code == '.' { // STOP
			v, err := u.pop()
			if err != nil {
				return nil, fmt.Errorf("STOP: %w", err)
			}
			return v, nil
		}
		op := pickleOps[code]
		if op.run == nil {
			return nil, fmt.Errorf("unsupported pickle opcode 0x%02x", code)
		}
		if err := op.run(u, code); err != nil {
			return nil, fmt.Errorf("%s: %w", op.name, err)
		}
	}
}

// pickleOp is the handler of one opcode; code is the opcode byte, for
// handlers shared by a group of opcodes.
type pickleOp struct {
	name string
	run  func(u *unpickler, code byte) error
}

// pickleOps lists every opcode the reader understands, by group.
var pickleOps = [256]pickleOp{
	// Protocol and framing.
	0x80: {"PROTO", (*unpickler).opProto},
	0x95: {"FRAME", (*unpickler).opFrame}, // frames are just inline data here

	// Constants and empty containers.
	'(':  {"MARK", pushConst(func() any { return pickleMark{} })},
	'}':  {"EMPTY_DICT", pushConst(func() any { return newDict() })},
	']':  {"EMPTY_LIST", pushConst(func() any { return &PickleList{} })},
	')':  {"EMPTY_TUPLE", pushConst(func() any { return PickleTuple{} })},
	'N':  {"NONE", pushConst(func() any { return nil })},
	0x88: {"NEWTRUE", pushConst(func() any { return true })},
	0x89: {"NEWFALSE", pushConst(func() any { return false })},

	// Numbers.
	'K':  {"BININT1", (*unpickler).opInt},
	'M':  {"BININT2", (*unpickler).opInt},
	'J':  {"BININT", (*unpickler).opInt},
	0x8a: {"LONG1", (*unpickler).opLong},
	0x8b: {"LONG4", (*unpickler).opLong},
	'G':  {"BINFLOAT", (*unpickler).opFloat},

	// Strings and bytes.
	'X':  {"BINUNICODE", (*unpickler).opString},
	0x8c: {"SHORT_BINUNICODE", (*unpickler).opString},
	'T':  {"BINSTRING", (*unpickler).opString},
	'U':  {"SHORT_BINSTRING", (*unpickler).opString},
	'B':  {"BINBYTES", (*unpickler).opString},
	'C':  {"SHORT_BINBYTES", (*unpickler).opString},
	0x8e: {"BINBYTES8", (*unpickler).opString},

	// The memo.
	'q':  {"BINPUT", (*unpickler).opPut},
	'r':  {"LONG_BINPUT", (*unpickler).opPut},
	0x94: {"MEMOIZE", (*unpickler).opPut},
	'h':  {"BINGET", (*unpickler).opGet},
	'j':  {"LONG_BINGET", (*unpickler).opGet},

	// Tuples, lists and dicts.
	't':  {"TUPLE", (*unpickler).opTuple},
	0x85: {"TUPLE1", (*unpickler).opTuple},
	0x86: {"TUPLE2", (*unpickler).opTuple},
	0x87: {"TUPLE3", (*unpickler).opTuple},
	'a':  {"APPEND", (*unpickler).opAppend},
	'e':  {"APPENDS", (*unpickler).opAppend},
	's':  {"SETITEM", (*unpickler).opSetItem},
	'u':  {"SETITEMS", (*unpickler).opSetItem},

	// Objects: only the allow-listed torch and collections names (torch.go).
	'c':  {"GLOBAL", (*unpickler).opGlobal},
	0x93: {"STACK_GLOBAL", (*unpickler).opGlobal},
	'Q':  {"BINPERSID", (*unpickler).opPersID},
	'R':  {"REDUCE", (*unpickler).opReduce},
	0x81: {"NEWOBJ", (*unpickler).opReduce}, // cls(*args): the same allow-listed rebuild
	'b':  {"BUILD", (*unpickler).opBuild},

	// Stack manipulation.
	'0': {"POP", (*unpickler).opPop},
	'2': {"DUP", (*unpickler).opDup},
}

// Reading the opcode stream.

func (u *unpickler) take(n int) ([]byte, error) {
	if n < 0 || n > len(u.data)-u.pos {
		return nil, errTruncated
	}
	b := u.data[u.pos : u.pos+n]
	u.pos += n
	return b, nil
}

// uint reads an n-byte (1, 2, 4 or 8) little-endian unsigned integer.
func (u *unpickler) uint(n int) (uint64, error) {
	b, err := u.take(n)
	if err != nil {
		return 0, err
	}
	var v uint64
	for i := n - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v, nil
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

// The stack.

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
	v, err := u.top()
	if err != nil {
		return nil, err
	}
	u.stack = u.stack[:len(u.stack)-1]
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

// popN pops the top n values, returning them in stack order.
func (u *unpickler) popN(n int) ([]any, error) {
	items := make([]any, n)
	for i := n - 1; i >= 0; i-- {
		v, err := u.pop()
		if err != nil {
			return nil, err
		}
		items[i] = v
	}
	return items, nil
}

// popArgs pops an opcode's operands: the top n values, or with n == 0
// everything above the topmost mark (and the mark).
func (u *unpickler) popArgs(n int) ([]any, error) {
	if n == 0 {
		return u.popMark()
	}
	return u.popN(n)
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

// Opcode handlers, in the order of pickleOps.

func (u *unpickler) opProto(byte) error {
	p, err := u.uint(1)
	if err != nil {
		return err
	}
	if p > 5 {
		return fmt.Errorf("unsupported pickle protocol %d", p)
	}
	return nil
}

func (u *unpickler) opFrame(byte) error {
	_, err := u.take(8)
	return err
}

// pushConst makes the handler of an opcode that pushes a fresh constant.
func pushConst(v func() any) func(*unpickler, byte) error {
	return func(u *unpickler, _ byte) error { return u.push(v()) }
}

func (u *unpickler) opInt(code byte) error {
	var v int64
	switch code {
	case 'K':
		x, err := u.uint(1)
		if err != nil {
			return err
		}
		v = int64(x)
	case 'M':
		x, err := u.uint(2)
		if err != nil {
			return err
		}
		v = int64(x)
	default: // 'J', a signed 32-bit integer
		x, err := u.uint(4)
		if err != nil {
			return err
		}
		v = int64(int32(uint32(x)))
	}
	return u.push(v)
}

func (u *unpickler) opLong(code byte) error {
	width := 1 // LONG1
	if code == 0x8b {
		width = 4 // LONG4
	}
	n, err := u.uint(width)
	if err != nil {
		return err
	}
	if width == 4 {
		n = uint64(int64(int32(uint32(n)))) // a negative length is truncation below
	}
	x, err := u.take(int(n))
	if err != nil {
		return err
	}
	v, err := decodeLong(x)
	if err != nil {
		return err
	}
	return u.push(v)
}

// decodeLong decodes a little-endian two's complement integer of any
// length; only values that fit int64 are accepted.
func decodeLong(x []byte) (int64, error) {
	if len(x) == 0 {
		return 0, nil
	}
	neg := x[len(x)-1]&0x80 != 0
	if len(x) > 8 {
		// The bytes past the eighth may only extend the sign.
		ext := byte(0)
		if neg {
			ext = 0xff
		}
		for _, b := range x[8:] {
			if b != ext {
				return 0, errors.New("integer too large")
			}
		}
		if (x[7]&0x80 != 0) != neg {
			return 0, errors.New("integer too large")
		}
		x = x[:8]
	}
	var v uint64
	for i := len(x) - 1; i >= 0; i-- {
		v = v<<8 | uint64(x[i])
	}
	if neg && len(x) < 8 {
		v |= ^uint64(0) << (8 * uint(len(x)))
	}
	return int64(v), nil
}

func (u *unpickler) opFloat(byte) error {
	b, err := u.take(8)
	if err != nil {
		return err
	}
	return u.push(math.Float64frombits(binary.BigEndian.Uint64(b))) // big-endian, unlike the rest
}

func (u *unpickler) opString(code byte) error {
	width := 4 // BINUNICODE, BINSTRING, BINBYTES
	switch code {
	case 0x8c, 'U', 'C':
		width = 1
	case 0x8e:
		width = 8
	}
	n, err := u.uint(width)
	if err != nil {
		return err
	}
	if n > uint64(len(u.data)-u.pos) {
		return errors.New("truncated string")
	}
	s, _ := u.take(int(n))
	if code == 'B' || code == 'C' || code == 0x8e {
		return u.push(append([]byte(nil), s...))
	}
	return u.push(string(s))
}

func (u *unpickler) opPut(code byte) error {
	var i uint64
	switch code {
	case 'q':
		var err error
		if i, err = u.uint(1); err != nil {
			return err
		}
	case 'r':
		var err error
		if i, err = u.uint(4); err != nil {
			return err
		}
	default: // MEMOIZE
		i = uint64(len(u.memo))
	}
	v, err := u.top()
	if err != nil {
		return err
	}
	if _, ok := u.memo[uint32(i)]; !ok && len(u.memo) >= maxPickleMemo {
		return fmt.Errorf("memo holds more than %d values", maxPickleMemo)
	}
	u.memo[uint32(i)] = v
	return nil
}

func (u *unpickler) opGet(code byte) error {
	width := 1
	if code == 'j' {
		width = 4
	}
	i, err := u.uint(width)
	if err != nil {
		return err
	}
	v, ok := u.memo[uint32(i)]
	if !ok {
		return fmt.Errorf("memo entry %d missing", i)
	}
	return u.push(v)
}

func (u *unpickler) opTuple(code byte) error {
	n := 0 // TUPLE: the values above the mark
	if code != 't' {
		n = int(code - 0x84) // TUPLE1..TUPLE3
	}
	items, err := u.popArgs(n)
	if err != nil {
		return err
	}
	return u.push(PickleTuple(items))
}

func (u *unpickler) opAppend(code byte) error {
	n := 0 // APPENDS: the values above the mark
	if code == 'a' {
		n = 1
	}
	items, err := u.popArgs(n)
	if err != nil {
		return err
	}
	t, err := u.top()
	if err != nil {
		return err
	}
	l, ok := t.(*PickleList)
	if !ok {
		return fmt.Errorf("append to %T", t)
	}
	l.Items = append(l.Items, items...)
	return nil
}

func (u *unpickler) opSetItem(code byte) error {
	n := 0 // SETITEMS: the key/value pairs above the mark
	if code == 's' {
		n = 2
	}
	items, err := u.popArgs(n)
	if err != nil {
		return err
	}
	if len(items)%2 != 0 {
		return errors.New("an odd number of items")
	}
	t, err := u.top()
	if err != nil {
		return err
	}
	d, ok := t.(*PickleDict)
	if !ok {
		return fmt.Errorf("set item on %T", t)
	}
	for i := 0; i < len(items); i += 2 {
		if err := d.set(items[i], items[i+1]); err != nil {
			return err
		}
	}
	return nil
}

func (u *unpickler) opGlobal(code byte) error {
	var mod, name string
	if code == 'c' {
		var err error
		if mod, err = u.line(); err != nil {
			return err
		}
		if name, err = u.line(); err != nil {
			return err
		}
	} else { // STACK_GLOBAL
		items, err := u.popN(2)
		if err != nil {
			return err
		}
		var ok1, ok2 bool
		mod, ok1 = items[0].(string)
		name, ok2 = items[1].(string)
		if !ok1 || !ok2 {
			return errors.New("needs two strings")
		}
	}
	g, err := resolveGlobal(mod, name)
	if err != nil {
		return err
	}
	return u.push(g)
}

func (u *unpickler) opPersID(byte) error {
	pid, err := u.pop()
	if err != nil {
		return err
	}
	s, err := persistentLoad(pid)
	if err != nil {
		return err
	}
	return u.push(s)
}

func (u *unpickler) opReduce(byte) error {
	items, err := u.popN(2)
	if err != nil {
		return err
	}
	v, err := reduce(items[0], items[1])
	if err != nil {
		return err
	}
	return u.push(v)
}

// opBuild accepts and ignores the state (e.g. a state dict's _metadata).
func (u *unpickler) opBuild(byte) error {
	if _, err := u.pop(); err != nil {
		return err
	}
	_, err := u.top()
	return err
}

func (u *unpickler) opPop(byte) error {
	_, err := u.pop()
	return err
}

func (u *unpickler) opDup(byte) error {
	v, err := u.top()
	if err != nil {
		return err
	}
	return u.push(v)
}
