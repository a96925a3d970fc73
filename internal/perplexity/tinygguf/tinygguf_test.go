package tinygguf

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/chatglm/chatglm/binding"
)

// TestLoadsInLlamaCpp checks that llama.cpp loads the model, tokenizes text
// and produces finite logits.
func TestLoadsInLlamaCpp(t *testing.T) {
	for _, f16 := range []bool{false, true} {
		path := filepath.Join(t.TempDir(), "tiny.gguf")
		nv, err := Write(path, Config{F16: f16})
		if err != nil {
			t.Fatal(err)
		}
		m, err := binding.LoadModel(context.Background(), path, binding.ModelParams{})
		if err != nil {
			t.Fatal(err)
		}
		if m.VocabSize() != nv {
			t.Fatalf("vocab %d, want %d", m.VocabSize(), nv)
		}
		toks, err := m.Tokenize("the world is new, and 42 ü", true, false)
		if err != nil || len(toks) == 0 {
			t.Fatalf("tokenize: %v %v", toks, err)
		}
		lc, err := m.NewContext(binding.ContextParams{NCtx: 64, Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := binding.NewBatch(len(toks), 1)
		for i, id := range toks {
			b.Add(id, i, []int{0}, i == len(toks)-1)
		}
		if err := lc.Decode(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		lg, err := lc.Logits(-1)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range lg {
			if v != v || v > 1e6 || v < -1e6 {
				t.Fatalf("bad logit %v", v)
			}
		}
		t.Logf("f16=%v tokens %v desc %q size %d logits[0..3] %v", f16, toks, m.Description(), m.Size(), lg[:4])
		b.Close()
		lc.Close()
		m.Close()
	}
}

func TestF16(t *testing.T) {
	for _, c := range []struct {
		in   float32
		want uint16
	}{{0, 0}, {1, 0x3c00}, {-2, 0xc000}, {0.1, 0x2e66}, {6.1035156e-05, 0x0400}, {5.96e-8, 0x0001}, {0.33325195, 0x3555}} {
		if got := f16(c.in); got != c.want {
			t.Errorf("f16(%v) = %#x, want %#x", c.in, got, c.want)
		}
	}
}
