package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chatglm/chatglm/gguf"
)

// TestInfoHostileFile: a GGUF whose key and tensor name hold terminal
// escapes and whose metadata holds NaN. `info` must not print the escapes
// raw, and `info --json` must not fail on NaN (it did: encoding/json
// refuses NaN).
func TestInfoHostileFile(t *testing.T) {
	w := gguf.NewWriter()
	w.Add("evil\x1b[2J", "\x1b]0;title\x07")
	w.Add("nan", float32(math.NaN()))
	w.AddTensor("t\x1b[31m", gguf.F32, []uint64{1})
	var buf bytes.Buffer
	dw, err := w.WriteHeader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	dw.Write(make([]byte, 4))
	if err := dw.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "evil.gguf")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := runProgram(t, "info", p)
	if err != nil {
		t.Fatalf("info: %v\n%s", err, stderr)
	}
	if strings.ContainsRune(out, 0x1b) || !strings.Contains(out, `"evil\x1b[2J"`) || !strings.Contains(out, "NaN") {
		t.Errorf("info output:\n%q", out)
	}
	out, stderr, err = runProgram(t, "info", "--json", p)
	if err != nil {
		t.Fatalf("info --json: %v\n%s", err, stderr)
	}
	var in gguf.Info
	if err := json.Unmarshal([]byte(out), &in); err != nil {
		t.Fatalf("info --json output: %v\n%s", err, out)
	}
	if strings.ContainsRune(out, 0x1b) || in.Metadata[1].Value != "NaN" || in.Metadata[0].Key != "evil\x1b[2J" {
		t.Errorf("info --json output:\n%s", out)
	}
}
