// Package testgguf gives tests a tiny random ChatGLM3 model as a GGUF file:
// internal/testmodel writes the HuggingFace checkpoint (real tensor names,
// the real tokenizer) and convert.Convert turns it into GGUF, exactly as a
// user's `chatglm convert` would. Files are made once per test process and
// spec; call Main from TestMain so they are removed when the tests end.
package testgguf

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/chatglm/chatglm/convert"
	"github.com/chatglm/chatglm/internal/testdata"
	"github.com/chatglm/chatglm/internal/testmodel"
)

var (
	mu    sync.Mutex
	dir   string
	cache = map[string]string{}
)

// Main runs the tests and then removes the files made for them.
// Use it as: func TestMain(m *testing.M) { testgguf.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	mu.Lock()
	if dir != "" {
		os.RemoveAll(dir)
	}
	mu.Unlock()
	os.Exit(code)
}

// Tiny returns the GGUF of testmodel.Tiny converted to f16.
func Tiny(t testing.TB) string { return Make(t, testmodel.Tiny, "f16") }

// Make returns a GGUF of the spec's checkpoint converted to typ ("f16",
// "bf16" or "f32"), making it on first use.
func Make(t testing.TB, spec testmodel.Spec, typ string) string {
	t.Helper()
	testdata.ChatGLM3(t)
	key := fmt.Sprintf("%+v/%s", spec, typ)
	mu.Lock()
	defer mu.Unlock()
	if p, ok := cache[key]; ok {
		return p
	}
	if dir == "" {
		d, err := os.MkdirTemp("", "chatglm-testgguf-")
		if err != nil {
			t.Fatal(err)
		}
		dir = d
	}
	n := len(cache)
	hf := filepath.Join(dir, fmt.Sprintf("hf-%d", n))
	if err := os.MkdirAll(hf, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := testmodel.WriteDir(hf, spec, testdata.ChatGLM3(t)); err != nil {
		t.Fatalf("write tiny checkpoint: %v", err)
	}
	out := filepath.Join(dir, fmt.Sprintf("model-%d-%s.gguf", n, typ))
	if _, err := convert.Convert(context.Background(), convert.Options{Input: hf, Output: out, Type: typ}); err != nil {
		t.Fatalf("convert tiny checkpoint: %v", err)
	}
	cache[key] = out
	return out
}
