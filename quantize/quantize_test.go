package quantize

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatglm/chatglm/binding"
	"github.com/chatglm/chatglm/gguf"
	"github.com/chatglm/chatglm/internal/fixture/testmodel"
)

// tiny writes a tiny f32 model into dir.
func tiny(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "tiny-f32.gguf")
	if _, err := testmodel.WriteToyGGUF(p, testmodel.ToyConfig{}); err != nil {
		t.Fatal(err)
	}
	return p
}

// leftovers lists temporary files in dir.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.tmp-*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestQuantizeTypes(t *testing.T) {
	dir := t.TempDir()
	in := tiny(t, dir)
	want := map[string]gguf.GGMLType{"q8_0": gguf.Q8_0, "q6_K": gguf.Q6_K, "q5_K_M": gguf.Q5_K, "q4_K_M": gguf.Q4_K, "q4_0": gguf.Q4_0}
	for typ, ggmlType := range want {
		t.Run(typ, func(t *testing.T) {
			out := filepath.Join(dir, "tiny-"+typ+".gguf")
			var last [2]int64
			calls := 0
			err := File(context.Background(), in, out, typ, Options{Threads: 2, Progress: func(w, e int64) {
				calls++
				last = [2]int64{w, e}
			}})
			if err != nil {
				t.Fatal(err)
			}
			if calls == 0 || last[0] != last[1] {
				t.Fatalf("progress: %d calls, last %v", calls, last)
			}
			// Readable by all, like convert's output (the temporary file
			// it is renamed from is created 0600).
			if st, err := os.Stat(out); err != nil || st.Mode().Perm()&0o044 != 0o044 {
				t.Fatalf("output mode: %v %v", st.Mode(), err)
			}
			f, err := gguf.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			qkv, ok := f.Tensor("blk.1.ffn_up.weight")
			if !ok || qkv.Type != ggmlType {
				t.Fatalf("blk.1.ffn_up.weight has type %v, want %v", qkv.Type, ggmlType)
			}
			if norm, _ := f.Tensor("blk.0.attn_norm.weight"); norm.Type != gguf.F32 {
				t.Fatalf("norm quantized to %v", norm.Type)
			}
			est, err := EstimateSize(in, typ)
			if err != nil {
				t.Fatal(err)
			}
			st, _ := os.Stat(out)
			if ratio := float64(est) / float64(st.Size()); ratio < 0.75 || ratio > 1.33 {
				t.Errorf("estimate %d vs actual %d", est, st.Size())
			}
			m, err := binding.LoadModel(context.Background(), out, binding.ModelParams{})
			if err != nil {
				t.Fatal(err)
			}
			m.Close()
			if l := leftovers(t, dir); len(l) > 0 {
				t.Fatalf("temporary files left: %v", l)
			}
		})
	}
}

func TestRefusesOverwrite(t *testing.T) {
	dir := t.TempDir()
	in := tiny(t, dir)
	out := filepath.Join(dir, "out.gguf")
	if err := os.WriteFile(out, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := File(context.Background(), in, out, "q8_0", Options{})
	if !errors.Is(err, fs.ErrExist) || strings.Contains(err.Error(), "--force") {
		t.Fatalf("got %v, want an fs.ErrExist that does not speak of CLI flags", err)
	}
	if b, _ := os.ReadFile(out); string(b) != "keep me" {
		t.Fatal("target changed")
	}
	if err := File(context.Background(), in, out, "q8_0", Options{Force: true}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); !bytes.HasPrefix(b, []byte("GGUF")) {
		t.Fatal("target not replaced with --force")
	}
	if l := leftovers(t, dir); len(l) > 0 {
		t.Fatalf("temporary files left: %v", l)
	}
}

func TestErrorsLeaveNothing(t *testing.T) {
	dir := t.TempDir()
	in := tiny(t, dir)
	notGGUF := filepath.Join(dir, "bad.gguf")
	os.WriteFile(notGGUF, []byte("this is not a model at all, just text"), 0o644)
	q := filepath.Join(dir, "q4.gguf")
	if err := File(context.Background(), in, q, "q4_0", Options{}); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct{ in, out, typ string }{
		"unknown type":   {in, filepath.Join(dir, "a.gguf"), "q9_9"},
		"missing input":  {filepath.Join(dir, "nope.gguf"), filepath.Join(dir, "a.gguf"), "q8_0"},
		"not gguf":       {notGGUF, filepath.Join(dir, "a.gguf"), "q8_0"},
		"same file":      {in, in, "q8_0"},
		"missing folder": {in, filepath.Join(dir, "no", "such", "a.gguf"), "q8_0"},
		// llama.cpp refuses to requantize an already quantized model.
		"requantize": {q, filepath.Join(dir, "a.gguf"), "q8_0"},
	} {
		t.Run(name, func(t *testing.T) {
			err := File(context.Background(), c.in, c.out, c.typ, Options{})
			if err == nil {
				t.Fatal("no error")
			}
			t.Log(err)
			if c.out != in {
				if _, serr := os.Stat(c.out); serr == nil {
					t.Fatalf("%s was created", c.out)
				}
			}
			if l := leftovers(t, dir); len(l) > 0 {
				t.Fatalf("temporary files left: %v", l)
			}
		})
	}
	if !strings.Contains(File(context.Background(), in, filepath.Join(dir, "b.gguf"), "q9_9", Options{}).Error(), "q4_K_M") {
		t.Error("unknown type error does not list the valid types")
	}
}

func TestCancel(t *testing.T) {
	dir := t.TempDir()
	in := tiny(t, dir)
	out := filepath.Join(dir, "out.gguf")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := File(ctx, in, out, "q8_0", Options{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}

	// Cancel while llama.cpp runs (at the first progress tick).
	ctx, cancel = context.WithCancel(context.Background())
	err := File(ctx, in, out, "q6_K", Options{ProgressInterval: time.Microsecond, Progress: func(int64, int64) { cancel() }})
	if err == nil {
		// The tiny model can finish before the first tick.
		t.Skip("quantization finished before it could be cancelled")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("target created by a cancelled quantization")
	}
	// llama.cpp finishes in the background; its file is removed then.
	deadline := time.Now().Add(10 * time.Second)
	for len(leftovers(t, dir)) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if l := leftovers(t, dir); len(l) > 0 {
		t.Fatalf("temporary files left: %v", l)
	}
}
