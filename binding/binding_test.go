package binding_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/chatglm/chatglm/binding"
	"github.com/chatglm/chatglm/internal/fixture/testmodel"
)

func TestMain(m *testing.M) { testmodel.Main(m) }

func loadTiny(t *testing.T) *binding.Model {
	t.Helper()
	m, err := binding.LoadModel(context.Background(), testmodel.TinyGGUF(t), binding.ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func newCtx(t *testing.T, m *binding.Model, p binding.ContextParams) *binding.Context {
	t.Helper()
	if p.NCtx == 0 {
		p.NCtx = 256
	}
	if p.Threads == 0 {
		p.Threads = 2
	}
	c, err := m.NewContext(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// decode evaluates tokens in seq starting at pos and returns the logits of
// the last one.
func decode(t *testing.T, c *binding.Context, seq, pos int, toks []int32) []float32 {
	t.Helper()
	b, err := binding.NewBatch(len(toks), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for i, tok := range toks {
		if _, err := b.Add(tok, pos+i, []int{seq}, i == len(toks)-1); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Decode(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	l, err := c.Logits(-1)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func cpuHas(flag string) bool {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "flags") {
			return slices.Contains(strings.Fields(line), flag)
		}
	}
	return false
}

func TestSystemInfoHasMachineSIMD(t *testing.T) {
	info := binding.SystemInfo()
	for flag, name := range map[string]string{"avx2": "AVX2", "fma": "FMA", "f16c": "F16C", "avx512f": "AVX512"} {
		if cpuHas(flag) && !strings.Contains(info, name+" = 1") {
			t.Errorf("CPU has %s but ggml was built without it: %s", flag, info)
		}
	}
	for _, want := range []string{"OPENMP = 1", "REPACK = 1", "LLAMAFILE = 1"} {
		if !strings.Contains(info, want) {
			t.Errorf("system info lacks %q: %s", want, info)
		}
	}
	devs := binding.Devices()
	if len(devs) == 0 || devs[0].Type != "cpu" {
		t.Errorf("devices = %+v, want a CPU device", devs)
	}
}

func TestModelMetadata(t *testing.T) {
	m := loadTiny(t)
	if got := m.Architecture(); got != "chatglm" {
		t.Errorf("architecture = %q", got)
	}
	if m.VocabSize() != 65024 {
		t.Errorf("vocab = %d", m.VocabSize())
	}
	if m.ContextLength() != 256 || m.Layers() != 2 || m.EmbeddingLength() != 64 || m.Heads() != 4 || m.HeadsKV() != 2 {
		t.Errorf("hparams: ctx %d layers %d embd %d heads %d/%d", m.ContextLength(), m.Layers(), m.EmbeddingLength(), m.Heads(), m.HeadsKV())
	}
	if !strings.Contains(m.ChatTemplate(), "[gMASK]sop") {
		t.Errorf("chat template = %q", m.ChatTemplate())
	}
	if v, ok := m.Meta("tokenizer.ggml.add_bos_token"); !ok || v != "false" {
		t.Errorf("add_bos_token = %q, %v", v, ok)
	}
	if _, ok := m.Meta("no.such.key"); ok {
		t.Error("Meta reports a missing key")
	}
	if md := m.Metadata(); md["general.architecture"] != "chatglm" {
		t.Errorf("Metadata() = %v", md)
	}
	if m.NParams() == 0 || m.Size() == 0 || m.Description() == "" {
		t.Errorf("params %d size %d desc %q", m.NParams(), m.Size(), m.Description())
	}
}

func TestLoadProgressAndCancel(t *testing.T) {
	path := testmodel.TinyGGUF(t)
	var last float32
	calls := 0
	m, err := binding.LoadModel(context.Background(), path, binding.ModelParams{Progress: func(f float32) { last = f; calls++ }})
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	if calls == 0 || last != 1 {
		t.Errorf("progress: %d calls, last %v", calls, last)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := binding.LoadModel(ctx, path, binding.ModelParams{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled load: err = %v", err)
	}
}

func TestLoadBadFiles(t *testing.T) {
	good, err := os.ReadFile(testmodel.TinyGGUF(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	wrongArch := bytes.Replace(bytes.Clone(good), []byte("chatglm"), []byte("chatxyz"), 1)
	corrupt := bytes.Clone(good)
	copy(corrupt[8:24], bytes.Repeat([]byte{0xff}, 16)) // absurd tensor and KV counts
	cases := map[string]string{
		filepath.Join(dir, "missing.gguf"):                       "no such file",
		write("text.gguf", []byte("this is not a model at all")): "not a GGUF file",
		write("empty.gguf", nil):                                 "not a GGUF file",
		write("truncated.gguf", good[:len(good)/2]):              "could not load",
		write("header.gguf", good[:200]):                         "could not load",
		write("corrupt.gguf", corrupt):                           "could not load",
		write("arch.gguf", wrongArch):                            "could not load",
	}
	for path, want := range cases {
		m, err := binding.LoadModel(context.Background(), path, binding.ModelParams{})
		if err == nil {
			m.Close()
			t.Errorf("%s: loaded", filepath.Base(path))
			continue
		}
		if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: err = %v, want it to name the file and say %q", filepath.Base(path), err, want)
		}
	}
}

func TestTokenizeRealTokenizer(t *testing.T) {
	m := loadTiny(t)
	for _, tc := range []struct {
		text  string
		parse bool
		want  []int32
	}{
		{"你好", false, []int32{36474, 54591}},
		{"Hello world", false, []int32{13755, 993}},
		{"\n", false, []int32{30910, 13}},
		{"<|user|>", false, []int32{906, 31007, 4865, 31007, 30994}},
		{"<|user|>", true, []int32{64795}},
	} {
		got, err := m.Tokenize(tc.text, false, tc.parse)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("Tokenize(%q, parse=%v) = %v, want %v", tc.text, tc.parse, got, tc.want)
		}
	}
	for _, text := range []string{"你好👋！我是人工智能助手 ChatGLM3-6B", "func main() {\n\tfmt.Println(\"hi\")\n}", "  spaces   and\n\nnewlines"} {
		ids, err := m.Tokenize(text, false, false)
		if err != nil {
			t.Fatal(err)
		}
		back, err := m.Detokenize(ids, false, false)
		if err != nil {
			t.Fatal(err)
		}
		if back != text && back != " "+text {
			t.Errorf("round trip %q -> %v -> %q", text, ids, back)
		}
		var pieces []byte
		for _, id := range ids {
			p, err := m.TokenPiece(id, false)
			if err != nil {
				t.Fatal(err)
			}
			pieces = append(pieces, p...)
		}
		if strings.TrimPrefix(string(pieces), " ") != text {
			t.Errorf("pieces of %q join to %q", text, pieces)
		}
	}
	if p, _ := m.TokenPiece(64796, true); string(p) != "<|assistant|>" {
		t.Errorf("special piece = %q", p)
	}
	if p, _ := m.TokenPiece(64796, false); len(p) != 0 {
		t.Errorf("control token rendered without special: %q", p)
	}
	if _, err := m.TokenPiece(70000, false); err == nil {
		t.Error("TokenPiece accepted an id out of range")
	}
	if _, err := m.Detokenize([]int32{1, -5}, false, false); err == nil {
		t.Error("Detokenize accepted a negative id")
	}
}

func argmax(v []float32) int32 {
	best := 0
	for i := range v {
		if v[i] > v[best] {
			best = i
		}
	}
	return int32(best)
}

var prompt = []int32{64790, 64792, 64795, 30910, 13, 36474, 54591, 64796}

func TestDecodeDeterministicAndKVOps(t *testing.T) {
	m := loadTiny(t)
	c := newCtx(t, m, binding.ContextParams{NSeqMax: 2, KVUnified: true, FlashAttn: binding.FlashAttnOff})
	full := decode(t, c, 0, 0, prompt)
	for _, v := range full {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatal("non-finite logit")
		}
	}
	if got := posMax(t, c, 0); got != len(prompt)-1 {
		t.Errorf("SeqPosMax = %d", got)
	}
	// Drop the last three positions and evaluate them again: same logits.
	if err := c.SeqRemove(0, len(prompt)-3, -1); err != nil {
		t.Fatal(err)
	}
	if got := posMax(t, c, 0); got != len(prompt)-4 {
		t.Errorf("SeqPosMax after remove = %d", got)
	}
	again := decode(t, c, 0, len(prompt)-3, prompt[len(prompt)-3:])
	assertClose(t, "re-evaluated", full, again, 1e-4)
	// Copy seq 0 into seq 1; the same continuation on both agrees.
	if err := c.SeqCopy(0, 1, -1, -1); err != nil {
		t.Fatal(err)
	}
	next := argmax(full)
	a := decode(t, c, 0, len(prompt), []int32{next})
	b := decode(t, c, 1, len(prompt), []int32{next})
	assertClose(t, "copied sequence", a, b, 1e-4)
	if err := c.SeqKeep(1); err != nil {
		t.Fatal(err)
	}
	if posMax(t, c, 0) != -1 || posMax(t, c, 1) != len(prompt) {
		t.Errorf("after keep: seq0 %d seq1 %d", posMax(t, c, 0), posMax(t, c, 1))
	}
	if err := c.SeqShift(1, 0, -1, 5); err != nil {
		t.Fatal(err)
	}
	if p, err := c.SeqPosMin(1); err != nil || p != 5 {
		t.Errorf("after shift: min pos %d, %v", p, err)
	}
	if err := c.ClearMemory(true); err != nil {
		t.Fatal(err)
	}
	if posMax(t, c, 1) != -1 {
		t.Error("memory not cleared")
	}
	fresh := decode(t, c, 0, 0, prompt)
	assertClose(t, "fresh context", full, fresh, 1e-4)
}

func posMax(t *testing.T, c *binding.Context, seq int) int {
	t.Helper()
	p, err := c.SeqPosMax(seq)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func assertClose(t *testing.T, what string, a, b []float32, tol float64) {
	t.Helper()
	worst := 0.0
	for i := range a {
		worst = max(worst, math.Abs(float64(a[i]-b[i])))
	}
	if worst > tol {
		t.Errorf("%s: max |dlogit| = %g > %g", what, worst, tol)
	}
}

func TestStateSaveRestore(t *testing.T) {
	m := loadTiny(t)
	c := newCtx(t, m, binding.ContextParams{NSeqMax: 2})
	decode(t, c, 0, 0, prompt)
	state, err := c.SeqState(0)
	if err != nil {
		t.Fatal(err)
	}
	want := decode(t, c, 0, len(prompt), []int32{13})
	file := filepath.Join(t.TempDir(), "seq.state")
	c.SeqRemove(0, len(prompt), -1)
	if err := c.SaveSeqState(file, 0, prompt); err != nil {
		t.Fatal(err)
	}
	// Restore the bytes into another sequence.
	c.ClearMemory(false)
	if err := c.SetSeqState(1, state); err != nil {
		t.Fatal(err)
	}
	got := decode(t, c, 1, len(prompt), []int32{13})
	assertClose(t, "restored state", want, got, 1e-4)
	// And from the file.
	c.ClearMemory(false)
	toks, err := c.LoadSeqState(file, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(toks, prompt) {
		t.Errorf("tokens from state file = %v", toks)
	}
	got = decode(t, c, 0, len(prompt), []int32{13})
	assertClose(t, "state file", want, got, 1e-4)
	if err := c.SetSeqState(0, []byte("garbage")); err == nil {
		t.Error("garbage state accepted")
	}
	if _, err := c.LoadSeqState(filepath.Join(t.TempDir(), "none"), 0); err == nil {
		t.Error("missing state file accepted")
	}
}

func TestSamplingDeterminism(t *testing.T) {
	m := loadTiny(t)
	c := newCtx(t, m, binding.ContextParams{})
	run := func(p binding.SamplerParams) []int32 {
		c.ClearMemory(false)
		s, err := binding.NewSampler(p)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		logits := decode(t, c, 0, 0, prompt)
		var out []int32
		for i := 0; i < 12; i++ {
			tok, err := s.Sample(c, -1)
			if err != nil {
				t.Fatal(err)
			}
			if p.Temperature <= 0 && tok != argmax(logits) {
				t.Errorf("greedy picked %d, argmax is %d", tok, argmax(logits))
			}
			out = append(out, tok)
			logits = decode(t, c, 0, len(prompt)+i, []int32{tok})
		}
		return out
	}
	hot := binding.SamplerParams{Temperature: 1.5, TopK: 0, TopP: 1, Seed: 42}
	a, b := run(hot), run(hot)
	if !slices.Equal(a, b) {
		t.Errorf("same seed, different tokens: %v vs %v", a, b)
	}
	hot.Seed = 7
	if cOut := run(hot); slices.Equal(a, cOut) {
		t.Errorf("different seeds gave the same 12 tokens %v", a)
	}
	run(binding.SamplerParams{Temperature: 0})
	run(binding.SamplerParams{Temperature: 0.8, TopK: 40, TopP: 0.8, MinP: 0.05, RepeatPenalty: 1.1, PresencePenalty: 0.5, FrequencyPenalty: 0.5, Seed: 1})
	if _, err := binding.NewSampler(binding.SamplerParams{Temperature: 1, TopP: 2}); err == nil {
		t.Error("top_p 2 accepted")
	}
}

func TestDecodeBadInput(t *testing.T) {
	m := loadTiny(t)
	c := newCtx(t, m, binding.ContextParams{NCtx: 256, NBatch: 64, NUBatch: 64})
	b, _ := binding.NewBatch(128, 1)
	defer b.Close()
	ctx := context.Background()
	if err := c.Decode(ctx, b); err == nil {
		t.Error("empty batch accepted")
	}
	b.Add(70000, 0, []int{0}, true)
	if err := c.Decode(ctx, b); err == nil || !strings.Contains(err.Error(), "out of range") {
		t.Errorf("token out of range: %v", err)
	}
	b.Clear()
	b.Add(5, 0, []int{3}, true)
	if err := c.Decode(ctx, b); err == nil || !strings.Contains(err.Error(), "sequence") {
		t.Errorf("sequence out of range: %v", err)
	}
	b.Clear()
	for i := 0; i < 100; i++ {
		b.Add(100, i, []int{0}, false)
	}
	if err := c.Decode(ctx, b); err == nil || !strings.Contains(err.Error(), "batch size") {
		t.Errorf("oversized batch: %v", err)
	}
	if _, err := b.Add(1, 0, nil, false); err == nil {
		t.Error("row without a sequence accepted")
	}
	// Fill the context: a prompt longer than it fails with ErrNoKVSlot.
	var err error
	for pos := 0; pos < 512 && err == nil; pos += 64 {
		b.Clear()
		for i := 0; i < 64; i++ {
			b.Add(100, pos+i, []int{0}, i == 63)
		}
		err = c.Decode(ctx, b)
	}
	if !errors.Is(err, binding.ErrNoKVSlot) {
		t.Errorf("overfull context: err = %v, want ErrNoKVSlot", err)
	}
	if _, err := c.Logits(5000); err == nil {
		t.Error("logits of a row that does not exist")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := c.Decode(cctx, b); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled decode: %v", err)
	}
}

func TestContextParamsErrors(t *testing.T) {
	m := loadTiny(t)
	if _, err := m.NewContext(binding.ContextParams{TypeK: "q9_9"}); err == nil {
		t.Error("unknown cache type accepted")
	}
	if _, err := m.NewContext(binding.ContextParams{TypeV: "q8_0", FlashAttn: binding.FlashAttnOff}); err == nil {
		t.Error("quantized V cache without flash attention accepted")
	}
	if _, err := binding.ParseFlashAttn("sometimes"); err == nil {
		t.Error("bad flash-attn value accepted")
	}
	c := newCtx(t, m, binding.ContextParams{TypeK: "q8_0", TypeV: "q8_0", FlashAttn: binding.FlashAttnOn, Perf: true})
	decode(t, c, 0, 0, prompt)
	if p, err := c.Perf(); err != nil || p.PromptTokens != len(prompt) {
		t.Errorf("perf counters: %+v, %v", p, err)
	}
}

func TestCloseTwiceAndUseAfterClose(t *testing.T) {
	m, err := binding.LoadModel(context.Background(), testmodel.TinyGGUF(t), binding.ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := m.NewContext(binding.ContextParams{NCtx: 256})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err == nil {
		t.Error("model closed while a context is open")
	}
	c.Close()
	c.Close()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Tokenize("x", false, false); !errors.Is(err, binding.ErrClosed) {
		t.Errorf("tokenize after close: %v", err)
	}
	if _, err := m.NewContext(binding.ContextParams{}); !errors.Is(err, binding.ErrClosed) {
		t.Errorf("context after close: %v", err)
	}
	b, _ := binding.NewBatch(4, 1)
	b.Add(1, 0, []int{0}, true)
	if err := c.Decode(context.Background(), b); !errors.Is(err, binding.ErrClosed) {
		t.Errorf("decode after close: %v", err)
	}
	b.Close()
	b.Close()
	s, _ := binding.NewSampler(binding.SamplerParams{})
	s.Close()
	s.Close()
}

func TestQuantize(t *testing.T) {
	in := testmodel.TinyGGUF(t)
	out := filepath.Join(t.TempDir(), "q8.gguf")
	if err := binding.Quantize(in, out, "q8_0", 2); err != nil {
		t.Fatal(err)
	}
	m, err := binding.LoadModel(context.Background(), out, binding.ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if !strings.Contains(m.Description(), "Q8_0") {
		t.Errorf("quantized model: %q", m.Description())
	}
	if err := binding.Quantize(in, out+"2", "q9_0", 2); err == nil {
		t.Error("unknown type accepted")
	}
	if err := binding.Quantize(filepath.Join(t.TempDir(), "none.gguf"), out+"3", "q8_0", 2); err == nil {
		t.Error("missing input accepted")
	}
}

// hugePageMappings counts the mappings of 4 MiB or more that carry the
// kernel's "hg" flag (madvise MADV_HUGEPAGE), from /proc/self/smaps.
func hugePageMappings(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Skipf("no /proc/self/smaps: %v", err)
	}
	n, size := 0, 0
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 3 && f[0] == "Size:":
			size, _ = strconv.Atoi(f[1])
		case len(f) > 0 && f[0] == "VmFlags:":
			if size >= 4096 && slices.Contains(f[1:], "hg") {
				n++
			}
		}
	}
	return n
}

// With SetHugePages(true), the weights read into memory (no mmap) land in a
// buffer the kernel was asked to back with huge pages; without it, none is.
func TestSetHugePagesMarksWeightBuffers(t *testing.T) {
	load := func() int {
		before := hugePageMappings(t)
		m, err := binding.LoadModel(context.Background(), testmodel.TinyGGUF(t), binding.ModelParams{NoMmap: true})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		return hugePageMappings(t) - before
	}
	if n := load(); n != 0 {
		t.Fatalf("huge pages off: %d new MADV_HUGEPAGE mappings, want 0", n)
	}
	binding.SetHugePages(true)
	defer binding.SetHugePages(false)
	if n := load(); n < 1 {
		t.Fatalf("huge pages on: %d new MADV_HUGEPAGE mappings, want >= 1 (the 16 MiB weight buffer)", n)
	}
}

// TestVocabOnlyLoad: a vocab-only load (what `chatglm get` uses to check a
// converted file) has no layers; reading the per-layer head counts aborted
// the process in llama.cpp.
func TestVocabOnlyLoad(t *testing.T) {
	m, err := binding.LoadModel(context.Background(), testmodel.TinyGGUF(t), binding.ModelParams{VocabOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.VocabSize() != 65024 {
		t.Errorf("vocab size %d", m.VocabSize())
	}
}

// TestSharedKVHasNoOverflowWarning: a KV buffer shared by 4 sequences of
// the training context each is not a training-context overflow, although
// llama.cpp counts the whole buffer per sequence; one sequence over the
// training context still is, and is warned about.
func TestSharedKVHasNoOverflowWarning(t *testing.T) {
	m, err := binding.LoadModel(context.Background(), testmodel.TinyGGUF(t), binding.ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	train := m.ContextLength()
	var logs strings.Builder
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})))
	defer slog.SetDefault(old)
	for _, c := range []struct {
		p    binding.ContextParams
		warn bool
	}{
		{binding.ContextParams{NCtx: 4 * train, NSeqMax: 4, KVUnified: true}, false},
		{binding.ContextParams{NCtx: 2 * train, NSeqMax: 1}, true},
	} {
		logs.Reset()
		lctx, err := m.NewContext(c.p)
		if err != nil {
			t.Fatal(err)
		}
		lctx.Close()
		if got := strings.Contains(logs.String(), "n_ctx_train"); got != c.warn {
			t.Errorf("%+v: warned %v, want %v:\n%s", c.p, got, c.warn, logs.String())
		}
	}
}
