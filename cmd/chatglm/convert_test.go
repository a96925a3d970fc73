package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chatglm/chatglm/internal/fixture/shareddata"
	"github.com/chatglm/chatglm/internal/fixture/testmodel"
)

// runProgram runs the program and returns stdout, stderr and the exit error.
func runProgram(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	cmd := helperCmd(t, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

func TestConvertCommand(t *testing.T) {
	dir := t.TempDir()
	ckpt := filepath.Join(dir, "ckpt")
	if err := os.Mkdir(ckpt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := testmodel.WriteDir(ckpt, testmodel.Tiny, shareddata.ChatGLM3(t)); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "m.gguf")
	if _, stderr, err := runProgram(t, "convert", ckpt, "-o", out, "--type", "f32"); err != nil {
		t.Fatalf("convert: %v\n%s", err, stderr)
	}
	first, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	// No overwrite without --force, and the file is left as it was.
	_, stderr, err := runProgram(t, "convert", ckpt, "-o", out)
	if err == nil || !strings.Contains(stderr, out) || !strings.Contains(stderr, "--force") {
		t.Errorf("overwrite without --force: err %v, stderr %q", err, stderr)
	}
	if again, _ := os.ReadFile(out); !bytes.Equal(again, first) {
		t.Error("refused conversion changed the existing file")
	}
	if _, stderr, err := runProgram(t, "convert", ckpt, "-o", out, "--force"); err != nil {
		t.Fatalf("convert --force: %v\n%s", err, stderr)
	}
	if again, _ := os.ReadFile(out); bytes.Equal(again, first) {
		t.Error("--force f16 output is identical to the f32 file")
	}
	// A broken checkpoint: a clear error naming the file, nothing written.
	if err := os.Remove(filepath.Join(ckpt, "config.json")); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.gguf")
	_, stderr, err = runProgram(t, "convert", ckpt, "-o", bad)
	if err == nil || !strings.Contains(stderr, "config.json") {
		t.Errorf("missing config.json: err %v, stderr %q", err, stderr)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "bad.gguf") {
			t.Errorf("failed conversion left %s behind", e.Name())
		}
	}
}

func TestInfoCommand(t *testing.T) {
	model := tinyModel(t)
	stdout, stderr, err := runProgram(t, "info", model)
	if err != nil {
		t.Fatalf("info: %v\n%s", err, stderr)
	}
	for _, want := range []string{"chatglm", "token_embd.weight", "blk.1.attn_qkv.bias", "F16", "65024"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("info output lacks %q", want)
		}
	}
	stdout, _, err = runProgram(t, "info", model, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
		t.Fatalf("info --json is not JSON: %v\n%s", err, stdout)
	}
	dir := t.TempDir()
	notGGUF := filepath.Join(dir, "notes.txt")
	os.WriteFile(notGGUF, []byte("hello, not a model"), 0o644)
	data, _ := os.ReadFile(model)
	truncated := filepath.Join(dir, "cut.gguf")
	os.WriteFile(truncated, data[:4096], 0o644)
	for _, p := range []string{notGGUF, truncated, filepath.Join(dir, "missing.gguf")} {
		_, stderr, err := runProgram(t, "info", p)
		if err == nil || !strings.Contains(stderr, p) {
			t.Errorf("info %s: err %v, stderr %q", filepath.Base(p), err, stderr)
		}
	}
}
