package testmodel

import (
	"bytes"
	"encoding/binary"
	"math"
)

// pickler writes the pickle protocol 2 stream torch.save produces for a
// dict of tensors, with the same opcodes and memo use as Python's pickler.
type pickler struct {
	b    bytes.Buffer
	memo map[string]uint32 // memoized globals and strings, by a key
	next uint32
}

func newPickler() *pickler {
	p := &pickler{memo: map[string]uint32{}}
	p.b.Write([]byte{0x80, 2}) // PROTO 2
	return p
}

func (p *pickler) put() {
	if p.next < 256 {
		p.b.Write([]byte{'q', byte(p.next)})
	} else {
		p.b.WriteByte('r')
		p.b.Write(binary.LittleEndian.AppendUint32(nil, p.next))
	}
	p.next++
}

func (p *pickler) get(i uint32) {
	if i < 256 {
		p.b.Write([]byte{'h', byte(i)})
	} else {
		p.b.WriteByte('j')
		p.b.Write(binary.LittleEndian.AppendUint32(nil, i))
	}
}

// global emits GLOBAL module\nname\n once and BINGET afterwards.
func (p *pickler) global(mod, name string) {
	key := "g:" + mod + "." + name
	if i, ok := p.memo[key]; ok {
		p.get(i)
		return
	}
	p.b.WriteString("c" + mod + "\n" + name + "\n")
	p.memo[key] = p.next
	p.put()
}

// str emits BINUNICODE (memoized like Python does for repeated strings).
func (p *pickler) str(s string) {
	key := "s:" + s
	if i, ok := p.memo[key]; ok {
		p.get(i)
		return
	}
	p.b.WriteByte('X')
	p.b.Write(binary.LittleEndian.AppendUint32(nil, uint32(len(s))))
	p.b.WriteString(s)
	p.memo[key] = p.next
	p.put()
}

func (p *pickler) int(v int64) {
	switch {
	case v >= 0 && v < 256:
		p.b.Write([]byte{'K', byte(v)})
	case v >= 0 && v < 65536:
		p.b.WriteByte('M')
		p.b.Write(binary.LittleEndian.AppendUint16(nil, uint16(v)))
	case v >= math.MinInt32 && v <= math.MaxInt32:
		p.b.WriteByte('J')
		p.b.Write(binary.LittleEndian.AppendUint32(nil, uint32(int32(v))))
	default: // LONG1, minimal two's complement
		var enc []byte
		for x := v; ; {
			enc = append(enc, byte(x))
			x >>= 8
			last := enc[len(enc)-1]
			if (x == 0 && last&0x80 == 0) || (x == -1 && last&0x80 != 0) {
				break
			}
		}
		p.b.Write([]byte{0x8a, byte(len(enc))})
		p.b.Write(enc)
	}
}

// tuple emits a tuple of ints the way Python does (TUPLE1-3 or MARK..TUPLE).
func (p *pickler) intTuple(v []int64) {
	if len(v) == 0 {
		p.b.WriteByte(')')
		return
	}
	if len(v) > 3 {
		p.b.WriteByte('(')
	}
	for _, x := range v {
		p.int(x)
	}
	switch len(v) {
	case 1:
		p.b.WriteByte(0x85)
	case 2:
		p.b.WriteByte(0x86)
	case 3:
		p.b.WriteByte(0x87)
	default:
		p.b.WriteByte('t')
	}
	p.put()
}

// pickleTensor is one entry of the state dict.
type pickleTensor struct {
	name    string
	storage string // torch storage class, e.g. BFloat16Storage
	key     string // archive/data/<key>
	numel   int64
	shape   []int64
}

// stateDict pickles name -> tensor as torch.save does: an OrderedDict (or a
// plain dict, as HF's sharded save_pretrained passes) of
// _rebuild_tensor_v2(persistent storage, 0, size, stride, False, OrderedDict()).
func stateDict(tensors []pickleTensor, ordered bool) []byte {
	p := newPickler()
	if ordered {
		p.global("collections", "OrderedDict")
		p.b.WriteByte(')')
		p.b.WriteByte('R')
		p.put()
	} else {
		p.b.WriteByte('}')
		p.put()
	}
	for i, t := range tensors {
		if i%1000 == 0 {
			if i > 0 {
				p.b.WriteByte('u')
			}
			p.b.WriteByte('(')
		}
		p.str(t.name)
		p.global("torch._utils", "_rebuild_tensor_v2")
		p.b.WriteByte('(') // args tuple (6 items)
		// persistent id ('storage', storage_type, key, location, numel)
		p.b.WriteByte('(')
		p.str("storage")
		p.global("torch", t.storage)
		p.str(t.key)
		p.str("cpu")
		p.int(t.numel)
		p.b.WriteByte('t')
		p.put()
		p.b.WriteByte('Q') // BINPERSID
		p.int(0)           // storage offset
		p.intTuple(t.shape)
		stride := make([]int64, len(t.shape))
		s := int64(1)
		for d := len(t.shape) - 1; d >= 0; d-- {
			stride[d] = s
			s *= t.shape[d]
		}
		p.intTuple(stride)
		p.b.WriteByte(0x89) // requires_grad False
		p.global("collections", "OrderedDict")
		p.b.WriteByte(')')
		p.b.WriteByte('R') // backward_hooks = OrderedDict()
		p.put()
		p.b.WriteByte('t')
		p.put()
		p.b.WriteByte('R')
		p.put()
	}
	if len(tensors) > 0 {
		p.b.WriteByte('u')
	}
	p.b.WriteByte('.')
	return p.b.Bytes()
}
