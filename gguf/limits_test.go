package gguf

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"runtime"
	"strings"
	"testing"
)

// rawGGUF assembles a GGUF v3 header by hand (no Writer), so that the
// tests below also describe files the Writer would refuse to produce.
type rawGGUF struct {
	b bytes.Buffer
}

func newRaw(nTensors, nKV uint64) *rawGGUF {
	r := &rawGGUF{}
	r.b.WriteString(Magic)
	r.u32(3)
	r.u64(nTensors)
	r.u64(nKV)
	return r
}

func (r *rawGGUF) u32(v uint32) { r.b.Write(binary.LittleEndian.AppendUint32(nil, v)) }
func (r *rawGGUF) u64(v uint64) { r.b.Write(binary.LittleEndian.AppendUint64(nil, v)) }
func (r *rawGGUF) str(s string) { r.u64(uint64(len(s))); r.b.WriteString(s) }

// rawArray is a GGUF holding one array of n elem values encoded in payload.
func rawArray(elem ValueType, n uint64, payload []byte) []byte {
	r := newRaw(0, 1)
	r.str("k")
	r.u32(uint32(TypeArray))
	r.u32(uint32(elem))
	r.u64(n)
	r.b.Write(payload)
	return r.b.Bytes()
}

// allocsOf returns the bytes allocated while reading b.
func allocsOf(t *testing.T, b []byte) uint64 {
	t.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := Read(bytes.NewReader(b), int64(len(b)), "mem.gguf")
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	return after.TotalAlloc - before.TotalAlloc
}

// TestReadMemoryIsProportional is the regression test for a 30 MB file
// holding one 30M-element u8 array, which made the reader allocate 484 MB
// ([]any of boxed bytes). Every kind of large header must now cost at
// most about four times its size on disk.
func TestReadMemoryIsProportional(t *testing.T) {
	const n = 4 << 20
	files := map[string][]byte{}

	files["u8 array"] = rawArray(TypeUint8, n, make([]byte, n))
	files["f32 array"] = rawArray(TypeFloat32, n/4, make([]byte, n))
	files["empty strings"] = rawArray(TypeString, n/8, make([]byte, n))

	r := newRaw(0, 1)
	r.str("big.nested")
	r.u32(uint32(TypeArray))
	r.u32(uint32(TypeArray))
	r.u64(n / 12)
	for i := 0; i < n/12; i++ {
		r.u32(uint32(TypeUint8))
		r.u64(0)
	}
	files["empty nested arrays"] = r.b.Bytes()

	const kvs = n / 16
	r = newRaw(0, kvs)
	for i := 0; i < kvs; i++ {
		// 3-byte keys would collide; 4 bytes of key are enough for n/16.
		r.str(string(binary.LittleEndian.AppendUint32(nil, uint32(i))))
		r.u32(uint32(TypeUint8))
		r.b.WriteByte(0)
	}
	files["many pairs"] = r.b.Bytes()

	for name, b := range files {
		got := allocsOf(t, b)
		limit := 4*uint64(len(b)) + 1<<20
		t.Logf("%s: %d bytes on disk, %d allocated (%.2fx)", name, len(b), got, float64(got)/float64(len(b)))
		if got > limit {
			t.Errorf("%s: reading %d bytes allocated %d (limit %d)", name, len(b), got, limit)
		}
	}
}

func TestReadLimits(t *testing.T) {
	arr := func(elem ValueType, n uint64) []byte { return rawArray(elem, n, nil) }
	longString := func(n uint64) []byte {
		r := newRaw(0, 1)
		r.str("k")
		r.u32(uint32(TypeString))
		r.u64(n)
		return r.b.Bytes()
	}
	dup := newRaw(0, 2)
	for range 2 {
		dup.str("k")
		dup.u32(uint32(TypeUint8))
		dup.b.WriteByte(1)
	}
	dupTensor := newRaw(2, 0)
	for range 2 {
		dupTensor.str("t")
		dupTensor.u32(1)
		dupTensor.u64(1)
		dupTensor.u32(uint32(F32))
		dupTensor.u64(0)
	}
	// 2^61 F64 elements are 2^64 bytes, which wrapped around to 0 and
	// passed the check that the data lies inside the file.
	wrap := newRaw(1, 0)
	wrap.str("t")
	wrap.u32(2)
	wrap.u64(1 << 31)
	wrap.u64(1 << 30)
	wrap.u32(uint32(F64))
	wrap.u64(0)
	wrap.b.Write(make([]byte, int(alignUp(uint64(wrap.b.Len()), 32))-wrap.b.Len())) // an empty data section
	cases := map[string]struct {
		b    []byte
		want string
	}{
		"array length":      {arr(TypeUint8, maxArrayLen+1), "exceeds the limit"},
		"array past end":    {arr(TypeUint64, 1<<20), "truncated"},
		"string length":     {longString(maxStringLen + 1), "exceeds the limit"},
		"string past end":   {longString(1 << 20), "truncated"},
		"pair count":        {newRaw(0, maxKVs+1).b.Bytes(), "metadata pairs (at most"},
		"tensor count":      {newRaw(maxTensors+1, 0).b.Bytes(), "tensors (at most"},
		"duplicate key":     {dup.b.Bytes(), "duplicate key"},
		"duplicate tensor":  {dupTensor.b.Bytes(), "duplicate name"},
		"unknown elem type": {arr(99, 1), "unknown element type"},
		"byte count wraps":  {wrap.b.Bytes(), "overflow"},
	}
	for name, c := range cases {
		_, err := Read(bytes.NewReader(c.b), int64(len(c.b)), name)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: got %v, want an error naming the file and saying %q", name, err, c.want)
		}
	}
}

// hostile returns a GGUF whose key, string value and tensor name hold
// terminal escape sequences, and whose float values are not finite.
func hostile(t *testing.T) *File {
	t.Helper()
	w := NewWriter()
	w.Add("general.name\x1b[2J", "title\x1b]0;pwned\x07 \u009b31m \u202eevil")
	w.Add("nan", float32(math.NaN()))
	w.Add("infs", []float64{math.Inf(1), math.Inf(-1), 1.5})
	w.AddTensor("tok\x1b[31m", F32, []uint64{1})
	var buf bytes.Buffer
	dw, err := w.WriteHeader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	dw.Write(make([]byte, 4))
	if err := dw.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := Read(bytes.NewReader(buf.Bytes()), int64(buf.Len()), "evil\x1b[2J.gguf")
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// rawControl reports the first terminal control character in s: C0 (but
// newline and tab, which the table itself uses), DEL, C1 or a bidi override.
func rawControl(s string) (rune, bool) {
	for _, r := range s {
		if (r < 0x20 && r != '\n' && r != '\t') || r == 0x7f || (r >= 0x80 && r < 0xa0) || isBidi(r) {
			return r, true
		}
	}
	return 0, false
}

func TestInfoEscapesControlCharacters(t *testing.T) {
	in := hostile(t).Describe(8)
	var text bytes.Buffer
	if err := in.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if r, ok := rawControl(text.String()); ok {
		t.Errorf("text output holds raw %U:\n%s", r, text.String())
	}
	for _, want := range []string{`"general.name\x1b[2J"`, `"tok\x1b[31m"`, `\x1b]0;pwned\a`, `\u009b31m`, `\u202eevil`, "NaN", "+Inf"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text output lacks %s:\n%s", want, text.String())
		}
	}

	var js bytes.Buffer
	if err := in.WriteJSON(&js); err != nil {
		t.Fatalf("WriteJSON: %v", err)
	}
	if r, ok := rawControl(js.String()); ok {
		t.Errorf("JSON output holds raw %U:\n%s", r, js.String())
	}
	var back struct {
		File     string
		Metadata []struct {
			Key   string
			Value any
		}
		Tensors []struct{ Name string }
	}
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatalf("JSON output does not parse: %v\n%s", err, js.String())
	}
	// The escapes decode to the file's exact strings.
	if back.File != "evil\x1b[2J.gguf" || back.Metadata[0].Key != "general.name\x1b[2J" ||
		back.Metadata[0].Value != "title\x1b]0;pwned\x07 \u009b31m \u202eevil" || back.Tensors[0].Name != "tok\x1b[31m" {
		t.Errorf("JSON round trip changed strings: %+v", back)
	}
	if back.Metadata[1].Value != "NaN" {
		t.Errorf("NaN written as %v", back.Metadata[1].Value)
	}
	if got, _ := json.Marshal(back.Metadata[2].Value); string(got) != `["+Inf","-Inf",1.5]` {
		t.Errorf("infinities written as %s", got)
	}
}

func TestErrorsQuoteNames(t *testing.T) {
	r := newRaw(1, 0)
	r.str("bad\x1b[2J")
	r.u32(1)
	r.u64(1)
	r.u32(uint32(F32))
	r.u64(0)
	b := r.b.Bytes()
	b = append(b, make([]byte, int(alignUp(uint64(len(b)), 32))-len(b)+2)...) // 2 of the 4 data bytes
	_, err := Read(bytes.NewReader(b), int64(len(b)), "x.gguf")
	if err == nil || !errors.Is(err, ErrTruncated) {
		t.Fatalf("got %v", err)
	}
	if strings.Contains(err.Error(), "\x1b") || !strings.Contains(err.Error(), `"bad\x1b[2J"`) {
		t.Errorf("error does not quote the tensor name: %q", err)
	}
}
