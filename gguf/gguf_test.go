package gguf

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// sample builds a small GGUF with every value type, a nested array and
// three tensors of different types and sizes.
func sample(t testing.TB) ([]byte, *Writer) {
	t.Helper()
	w := NewWriter()
	w.Add("general.architecture", "chatglm")
	w.Add("u8", uint8(7))
	w.Add("i8", int8(-7))
	w.Add("u16", uint16(65535))
	w.Add("i16", int16(-300))
	w.Add("u32", uint32(4096))
	w.Add("i32", int32(-1))
	w.Add("f32", float32(1e-5))
	w.Add("bool", true)
	w.Add("u64", uint64(1<<40))
	w.Add("i64", int64(-1<<40))
	w.Add("f64", 3.25)
	w.Add("strs", []string{"<unk>", "▁你", ""})
	w.Add("floats", []float32{0, -1.5})
	w.Add("nested", &Array{Elem: TypeArray, Values: []*Array{
		{Elem: TypeInt32, Values: []int32{1, 2}},
		{Elem: TypeString, Values: []string{"a"}},
	}})
	w.AddTensor("a", F32, []uint64{3})
	w.AddTensor("b", F16, []uint64{5, 2})
	w.AddTensor("c", Q8_0, []uint64{32, 1})
	var buf bytes.Buffer
	dw, err := w.WriteHeader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	// 12 + 20 + 34 data bytes written in odd-sized pieces spanning tensors.
	data := make([]byte, 12+20+34)
	for i := range data {
		data[i] = byte(i + 1)
	}
	for _, part := range [][]byte{data[:5], data[5:30], data[30:]} {
		if _, err := dw.Write(part); err != nil {
			t.Fatal(err)
		}
	}
	if err := dw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), w
}

func TestRoundTrip(t *testing.T) {
	b, w := sample(t)
	f, err := Read(bytes.NewReader(b), int64(len(b)), "mem.gguf")
	if err != nil {
		t.Fatal(err)
	}
	if f.Version != 3 || len(f.KVs) != len(w.kvs) || len(f.Tensors) != 3 {
		t.Fatalf("got version %d, %d kvs, %d tensors", f.Version, len(f.KVs), len(f.Tensors))
	}
	if !reflect.DeepEqual(f.KVs, w.kvs) {
		t.Errorf("metadata differs:\n got %#v\nwant %#v", f.KVs, w.kvs)
	}
	if f.String("general.architecture") != "chatglm" {
		t.Error("architecture")
	}
	if v, ok := f.Uint("u32"); !ok || v != 4096 {
		t.Error("u32", v, ok)
	}
	if v, ok := f.Float("f32"); !ok || float32(v) != 1e-5 {
		t.Error("f32", v)
	}
	want := []TensorInfo{
		{Name: "a", Dims: []uint64{3}, Type: F32, Offset: 0, Size: 12},
		{Name: "b", Dims: []uint64{5, 2}, Type: F16, Offset: 32, Size: 20},
		{Name: "c", Dims: []uint64{32, 1}, Type: Q8_0, Offset: 64, Size: 34},
	}
	if !reflect.DeepEqual(f.Tensors, want) {
		t.Errorf("tensors:\n got %+v\nwant %+v", f.Tensors, want)
	}
	if f.DataOffset%32 != 0 {
		t.Errorf("data offset %d not aligned", f.DataOffset)
	}
	// Tensor data sits at DataOffset+Offset with zero padding between.
	if got := b[f.DataOffset+32]; got != 13 {
		t.Errorf("first byte of b = %d, want 13", got)
	}
	if got := b[f.DataOffset+12]; got != 0 {
		t.Errorf("padding byte = %d", got)
	}
	if uint64(len(b)) != f.DataOffset+64+64 {
		t.Errorf("file length %d, want %d", len(b), f.DataOffset+128)
	}
}

func TestCustomAlignment(t *testing.T) {
	w := NewWriter()
	w.SetAlignment(64)
	w.AddTensor("x", F32, []uint64{1})
	w.AddTensor("y", F32, []uint64{1})
	var buf bytes.Buffer
	dw, err := w.WriteHeader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	dw.Write(make([]byte, 8))
	if err := dw.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := Read(bytes.NewReader(buf.Bytes()), int64(buf.Len()), "x")
	if err != nil {
		t.Fatal(err)
	}
	if f.Alignment != 64 || f.Tensors[1].Offset != 64 || f.DataOffset%64 != 0 {
		t.Errorf("alignment %d offset %d data %d", f.Alignment, f.Tensors[1].Offset, f.DataOffset)
	}
}

func TestTruncatedEverywhere(t *testing.T) {
	b, _ := sample(t)
	full, _ := Read(bytes.NewReader(b), int64(len(b)), "full")
	// The trailing padding after the last tensor is optional.
	end := int(full.DataOffset) + 64 + 34
	for n := 0; n < end; n++ {
		_, err := Read(bytes.NewReader(b[:n]), int64(n), "cut.gguf")
		if err == nil {
			t.Fatalf("prefix of %d bytes accepted", n)
		}
		if !strings.Contains(err.Error(), "cut.gguf") {
			t.Fatalf("error does not name the file: %v", err)
		}
		if n >= 4 && !errors.Is(err, ErrTruncated) {
			t.Fatalf("prefix %d: %v is not ErrTruncated", n, err)
		}
	}
}

func TestNotGGUF(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "model.safetensors")
	os.WriteFile(p, []byte(`{"not":"gguf"} and some more bytes`), 0o644)
	_, err := Open(p)
	if !errors.Is(err, ErrNotGGUF) || !strings.Contains(err.Error(), p) {
		t.Fatalf("got %v", err)
	}
	os.WriteFile(p, nil, 0o644)
	if _, err := Open(p); !errors.Is(err, ErrNotGGUF) {
		t.Fatalf("empty file: %v", err)
	}
	if _, err := Open(filepath.Join(dir, "missing.gguf")); err == nil || !strings.Contains(err.Error(), "missing.gguf") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestCorruptHeaders(t *testing.T) {
	b, _ := sample(t)
	mut := func(f func(c []byte)) []byte { c := append([]byte(nil), b...); f(c); return c }
	cases := map[string][]byte{
		"version":  mut(func(c []byte) { c[4] = 9 }),
		"kv count": mut(func(c []byte) { c[16+7] = 0x7f }),
		"tensors":  mut(func(c []byte) { c[8+7] = 0x7f }),
	}
	for name, c := range cases {
		if _, err := Read(bytes.NewReader(c), int64(len(c)), name); err == nil {
			t.Errorf("%s: corrupt header accepted", name)
		}
	}
}

func TestWriterErrors(t *testing.T) {
	w := NewWriter()
	w.AddTensor("q", Q8_0, []uint64{31})
	if _, err := w.Header(); err == nil {
		t.Error("Q8_0 tensor of 31 elements accepted")
	}
	w = NewWriter()
	w.AddTensor("huge", F32, []uint64{1 << 32, 1 << 32})
	if _, err := w.Header(); err == nil {
		t.Error("tensor of 2^64 elements accepted")
	}
	w = NewWriter()
	w.Add("k", 1) // int is not a GGUF type
	if _, err := w.Header(); err == nil {
		t.Error("int value accepted")
	}
	w = NewWriter()
	w.Add("k", uint32(1))
	w.Add("k", uint32(2))
	if _, err := w.Header(); err == nil {
		t.Error("duplicate key accepted")
	}
	w = NewWriter()
	w.AddTensor("a", F32, []uint64{2})
	var buf bytes.Buffer
	dw, _ := w.WriteHeader(&buf)
	dw.Write(make([]byte, 4))
	if err := dw.Close(); err == nil {
		t.Error("short tensor data accepted")
	}
	if _, err := dw.Write(make([]byte, 8)); err == nil {
		t.Error("data past the last tensor accepted")
	}
}

func TestParseGGMLType(t *testing.T) {
	for _, s := range []string{"f16", "F32", "bf16", "q4_k"} {
		if _, err := ParseGGMLType(s); err != nil {
			t.Error(s, err)
		}
	}
	if _, err := ParseGGMLType("f8"); err == nil {
		t.Error("f8 accepted")
	}
	if BF16.String() != "BF16" || GGMLType(99).String() != "GGMLType(99)" {
		t.Error("names")
	}
}

func FuzzRead(f *testing.F) {
	b, _ := sample(f)
	f.Add(b)
	f.Add([]byte("GGUF"))
	f.Add([]byte("GGUF\x03\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Read(bytes.NewReader(data), int64(len(data)), "fuzz")
		if err != nil {
			return
		}
		for _, ti := range file.Tensors {
			if file.DataOffset+ti.Offset+ti.Size > uint64(len(data)) {
				t.Fatalf("tensor %s outside the file", ti.Name)
			}
		}
		// Whatever the file holds, info prints it without failing and
		// without raw control characters.
		in := file.Describe(8)
		var text, js bytes.Buffer
		if err := in.WriteText(&text); err != nil {
			t.Fatal(err)
		}
		if err := in.WriteJSON(&js); err != nil {
			t.Fatalf("WriteJSON: %v", err)
		}
		for _, out := range []string{text.String(), js.String()} {
			if r, ok := rawControl(out); ok {
				t.Fatalf("output holds raw %U:\n%s", r, out)
			}
		}
	})
}

func TestDescribe(t *testing.T) {
	b, _ := sample(t)
	f, err := Read(bytes.NewReader(b), int64(len(b)), "mem.gguf")
	if err != nil {
		t.Fatal(err)
	}
	in := f.Describe(2)
	if in.Params != 3+10+32 || in.TensorData != 12+20+34 || len(in.Tensors) != 3 {
		t.Errorf("%+v", in)
	}
	var strs InfoKV
	for _, kv := range in.Metadata {
		if kv.Key == "strs" {
			strs = kv
		}
	}
	if strs.Len != 3 || len(strs.Value.([]any)) != 2 || strs.Type != "arr[str]" {
		t.Errorf("array summary %+v", strs)
	}
	var out bytes.Buffer
	if err := in.WriteText(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"general.architecture", `"chatglm"`, "... (3 total)", "Q8_0", "[32, 1]"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, out.String())
		}
	}
}
