package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/chatglm/chatglm/internal/fixture/testmodel"
)

// tinyRandomModel writes a tiny random model (toy vocabulary) for the
// bench, quantize and perplexity commands, which need no chat tokens.
func tinyRandomModel(t *testing.T) (string, int) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tiny-f32.gguf")
	nv, err := testmodel.WriteToyGGUF(p, testmodel.ToyConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return p, nv
}

func TestParseIntList(t *testing.T) {
	got, err := parseIntList([]string{"1", "2,3", " 4 ,5", ""})
	if err != nil || !reflect.DeepEqual(got, []int{1, 2, 3, 4, 5}) {
		t.Fatalf("got %v, %v", got, err)
	}
	if _, err := parseIntList([]string{"1,x"}); err == nil {
		t.Fatal("non-integer accepted")
	}
	pg, err := parsePG([]string{"512", "128", "64,16;8,4"})
	if err != nil || !reflect.DeepEqual(pg, [][2]int{{512, 128}, {64, 16}, {8, 4}}) {
		t.Fatalf("pg %v, %v", pg, err)
	}
	if _, err := parsePG([]string{"512"}); err == nil {
		t.Fatal("odd pg accepted")
	}
}

func TestBenchCommandJSON(t *testing.T) {
	model, _ := tinyRandomModel(t)
	out, err := helperCmd(t, "bench", "-m", model, "-p", "16", "-n", "4", "-t", "1,2", "-r", "2", "--json").Output()
	if err != nil {
		t.Fatalf("%v", err)
	}
	var recs []map[string]any
	if err := json.Unmarshal(out, &recs); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(recs) != 4 {
		t.Fatalf("%d records", len(recs))
	}
	want := [][2]float64{{16, 0}, {0, 4}, {16, 0}, {0, 4}}
	for i, r := range recs {
		if r["n_prompt"] != want[i][0] || r["n_gen"] != want[i][1] || r["model_filename"] != model {
			t.Errorf("record %d: %v", i, r)
		}
		if ts, _ := r["samples_ts"].([]any); len(ts) != 2 {
			t.Errorf("record %d: samples_ts %v", i, r["samples_ts"])
		}
	}
	md, err := helperCmd(t, "bench", "-m", model, "-p", "8", "-n", "0", "-r", "1").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^\| model \| size \| params \| backend \| threads \|.*\| test \| t/s \|$`).Match(md) ||
		!strings.Contains(string(md), "| pp8 |") || !strings.Contains(string(md), "build: llama.cpp") {
		t.Fatalf("table:\n%s", md)
	}
	if _, err := helperCmd(t, "bench", "-m", model, "-t", "0").Output(); err == nil {
		t.Fatal("0 threads accepted")
	}
}

func TestQuantizeCommand(t *testing.T) {
	model, _ := tinyRandomModel(t)
	out := filepath.Join(t.TempDir(), "q8.gguf")
	if b, err := helperCmd(t, "quantize", model, out, "q8_0").CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	st, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	b, err := helperCmd(t, "quantize", model, out, "q8_0").CombinedOutput()
	if err == nil || !strings.Contains(string(b), "--force") {
		t.Fatalf("overwrite without --force: %v\n%s", err, b)
	}
	if b, err := helperCmd(t, "quantize", model, out, "q4_0", "--force").CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	st2, _ := os.Stat(out)
	if st2.Size() >= st.Size() {
		t.Fatalf("q4_0 (%d bytes) not smaller than q8_0 (%d)", st2.Size(), st.Size())
	}
	if b, err := helperCmd(t, "quantize", model, out+"x", "q3_X").CombinedOutput(); err == nil || !strings.Contains(string(b), "q4_K_M") {
		t.Fatalf("bad type: %v\n%s", err, b)
	}
}

func TestPerplexityCommand(t *testing.T) {
	model, nv := tinyRandomModel(t)
	dir := t.TempDir()
	ids := filepath.Join(dir, "ids.txt")
	os.WriteFile(ids, []byte("5, 17, 300\n301 302,303\n10"), 0o644)
	logits := filepath.Join(dir, "logits.bin")
	out, err := helperCmd(t, "perplexity", "-m", model, "--tokens-file", ids, "--logits-out", logits, "-c", "4",
		"--flash-attn", "off", "--cache-type-k", "f32", "--cache-type-v", "f32").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^perplexity: \d+\.\d+$`).Match(out) || !strings.Contains(string(out), "tokens: 7, scored: 6, windows: 2 of 4 tokens") {
		t.Fatalf("output:\n%s", out)
	}
	st, err := os.Stat(logits)
	if err != nil || st.Size() != int64(7*nv*4) {
		t.Fatalf("logits file: %v, %v (want %d bytes)", st, err, 7*nv*4)
	}
	text := filepath.Join(dir, "t.txt")
	os.WriteFile(text, []byte("the people of the world know that it was good"), 0o644)
	if out, err := helperCmd(t, "perplexity", "-m", model, "-f", text).Output(); err != nil || !strings.Contains(string(out), "perplexity:") {
		t.Fatalf("text: %v\n%s", err, out)
	}
	if _, err := helperCmd(t, "perplexity", "-m", model, "-f", text, "--tokens-file", ids).Output(); err == nil {
		t.Fatal("both inputs accepted")
	}
}
