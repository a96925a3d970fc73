package convert_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/chatglm/chatglm/convert"
	"github.com/chatglm/chatglm/gguf"
	"github.com/chatglm/chatglm/internal/fixture/shareddata"
	"github.com/chatglm/chatglm/internal/fixture/testmodel"
)

var (
	cacheMu sync.Mutex
	cached  = map[string]string{}
)

// fresh returns a new folder holding the checkpoint of spec. Each spec is
// generated once per test process and copied, which keeps the race-detector
// build of these tests fast.
func fresh(t *testing.T, spec testmodel.Spec) string {
	t.Helper()
	key := fmt.Sprintf("%+v", spec)
	cacheMu.Lock()
	src, ok := cached[key]
	if !ok {
		d, err := os.MkdirTemp("", "convert-test-")
		if err != nil {
			cacheMu.Unlock()
			t.Fatal(err)
		}
		if err := testmodel.WriteDir(d, spec, shareddata.ChatGLM3(t)); err != nil {
			cacheMu.Unlock()
			t.Fatal(err)
		}
		cached[key], src = d, d
	}
	cacheMu.Unlock()
	dst := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err == nil {
			err = os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, d := range cached {
		os.RemoveAll(d)
	}
	os.Exit(code)
}

func convertTo(t *testing.T, dir, typ string) (string, *convert.Result) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "model.gguf")
	var calls int
	var last convert.Progress
	res, err := convert.Convert(context.Background(), convert.Options{
		Input: dir, Output: out, Type: typ, Threads: 2, ChunkBytes: 64 << 10,
		Progress: func(p convert.Progress) { calls++; last = p },
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls == 0 || last.Bytes != last.TotalBytes || last.TensorIndex != last.Tensors {
		t.Errorf("progress: %d calls, last %+v", calls, last)
	}
	return out, res
}

func TestConvertMetadata(t *testing.T) {
	dir := fresh(t, testmodel.Spec{RopeRatio: 50, Eps: 1e-2})
	out, res := convertTo(t, dir, "")
	f, err := gguf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	if res.Tensors != 3+2*7 || len(f.Tensors) != res.Tensors || res.Format != "safetensors" {
		t.Fatalf("result %+v, %d tensors in file", res, len(f.Tensors))
	}
	wantU := map[string]uint64{
		"chatglm.context_length": 256, "chatglm.embedding_length": 64, "chatglm.feed_forward_length": 96,
		"chatglm.block_count": 2, "chatglm.attention.head_count": 4, "chatglm.attention.head_count_kv": 2,
		"chatglm.rope.dimension_count": 8, "general.file_type": 1, "general.quantization_version": 2,
		"tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.padding_token_id": 0,
	}
	for k, v := range wantU {
		kv, ok := f.KV(k)
		if !ok || kv.Type != gguf.TypeUint32 {
			t.Errorf("%s missing or not u32: %+v", k, kv)
			continue
		}
		if got, _ := gguf.AsUint(kv.Value); got != v {
			t.Errorf("%s = %d, want %d", k, got, v)
		}
	}
	if v, _ := f.Float("chatglm.rope.freq_base"); v != 500000 {
		t.Errorf("freq_base %g", v)
	}
	if v, _ := f.Float("chatglm.attention.layer_norm_rms_epsilon"); float32(v) != float32(1e-2) {
		t.Errorf("eps %g", v)
	}
	strs := map[string]string{
		"general.architecture": "chatglm", "tokenizer.ggml.model": "llama", "tokenizer.ggml.pre": "chatglm-spm",
		"general.type": "model", "general.name": "chatglm3-6b", "general.source.repo_url": "https://huggingface.co/THUDM/chatglm3-6b",
	}
	for k, v := range strs {
		if got := f.String(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if kv, _ := f.KV("tokenizer.ggml.add_bos_token"); kv.Value != false {
		t.Errorf("add_bos_token %v", kv.Value)
	}
	if !strings.HasPrefix(f.String("tokenizer.chat_template"), "{% for message in messages %}") {
		t.Errorf("chat template %q", f.String("tokenizer.chat_template"))
	}
	toks, err := gguf.ArrayOf[string](f, "tokenizer.ggml.tokens")
	if err != nil {
		t.Fatal(err)
	}
	types, err := gguf.ArrayOf[int32](f, "tokenizer.ggml.token_type")
	if err != nil {
		t.Fatal(err)
	}
	scores, err := gguf.ArrayOf[float32](f, "tokenizer.ggml.scores")
	if err != nil {
		t.Fatal(err)
	}
	if len(toks) != 65024 || len(types) != 65024 || len(scores) != 65024 {
		t.Fatalf("vocab sizes %d %d %d", len(toks), len(types), len(scores))
	}
	check := func(id int, text string, typ int32) {
		t.Helper()
		if toks[id] != text || types[id] != typ {
			t.Errorf("token %d = %q type %v, want %q type %d", id, toks[id], types[id], text, typ)
		}
	}
	check(0, "<unk>", 2)
	check(1, "<bos>", 3)
	check(2, "<eos>", 3)
	check(3, "<0x00>", 6)
	check(13, "<0x0A>", 6)
	check(258, "<0xFF>", 6)
	check(30910, "▁", 1)
	check(36474, "▁你", 1)
	check(64789, "[MASK]", 3)
	check(64790, "[gMASK]", 3)
	check(64792, "sop", 3)
	check(64797, "<|observation|>", 3)
	check(64798, "[PAD64798]", 5)
	check(65023, "[PAD65023]", 5)
	if scores[64790] != float32(0) || scores[36474] == float32(0) {
		t.Errorf("scores: special %v, ▁你 %v", scores[64790], scores[36474])
	}
	// Tensor names, dims and types.
	want := map[string]struct {
		dims []uint64
		typ  gguf.GGMLType
	}{
		"token_embd.weight":        {[]uint64{64, 65024}, gguf.F16},
		"output.weight":            {[]uint64{64, 65024}, gguf.F16},
		"output_norm.weight":       {[]uint64{64}, gguf.F32},
		"blk.1.attn_norm.weight":   {[]uint64{64}, gguf.F32},
		"blk.1.attn_qkv.weight":    {[]uint64{64, 128}, gguf.F16},
		"blk.1.attn_qkv.bias":      {[]uint64{128}, gguf.F32},
		"blk.1.attn_output.weight": {[]uint64{64, 64}, gguf.F16},
		"blk.1.ffn_norm.weight":    {[]uint64{64}, gguf.F32},
		"blk.1.ffn_up.weight":      {[]uint64{64, 192}, gguf.F16},
		"blk.1.ffn_down.weight":    {[]uint64{96, 64}, gguf.F16},
	}
	for name, w := range want {
		ti, ok := f.Tensor(name)
		if !ok {
			t.Errorf("tensor %s missing", name)
			continue
		}
		if ti.Type != w.typ || len(ti.Dims) != len(w.dims) || ti.Dims[0] != w.dims[0] || ti.Dims[len(ti.Dims)-1] != w.dims[len(w.dims)-1] {
			t.Errorf("tensor %s: %v %v, want %v %v", name, ti.Type, ti.Dims, w.typ, w.dims)
		}
	}
	for _, ti := range f.Tensors {
		if strings.Contains(ti.Name, "inv_freq") || strings.Contains(ti.Name, "rotary") {
			t.Errorf("rotary tensor %s not dropped", ti.Name)
		}
	}
	st, _ := os.Stat(out)
	if res.Bytes != st.Size() {
		t.Errorf("result bytes %d, file %d", res.Bytes, st.Size())
	}
}

// readTensor returns a GGUF tensor's data decoded to float32.
func readTensor(t *testing.T, path string, f *gguf.File, name string) []float32 {
	t.Helper()
	ti, ok := f.Tensor(name)
	if !ok {
		t.Fatalf("no tensor %s", name)
	}
	raw := make([]byte, ti.Size)
	fh, _ := os.Open(path)
	defer fh.Close()
	if _, err := fh.ReadAt(raw, int64(f.DataOffset+ti.Offset)); err != nil {
		t.Fatal(err)
	}
	n := ti.Elements()
	out := make([]float32, n)
	for i := range out {
		switch ti.Type {
		case gguf.F32:
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		case gguf.F16:
			out[i] = convert.F16ToF32(binary.LittleEndian.Uint16(raw[2*i:]))
		case gguf.BF16:
			out[i] = convert.BF16ToF32(binary.LittleEndian.Uint16(raw[2*i:]))
		}
	}
	return out
}

// sourceTensor reads a checkpoint tensor through the convert readers.
func sourceTensor(t *testing.T, ck *convert.Checkpoint, name string) []float32 {
	t.Helper()
	v, err := ck.ReadF32(name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestConvertFormatsAndTypes(t *testing.T) {
	cases := []struct {
		spec testmodel.Spec
		typ  string
		want gguf.GGMLType
	}{
		{testmodel.Spec{Format: testmodel.Safetensors, DType: "BF16"}, "f16", gguf.F16},
		{testmodel.Spec{Format: testmodel.SafetensorsSharded, DType: "F32", Shards: 3}, "f16", gguf.F16},
		{testmodel.Spec{Format: testmodel.Bin, DType: "F16"}, "f32", gguf.F32},
		{testmodel.Spec{Format: testmodel.BinSharded, DType: "BF16", Shards: 4}, "bf16", gguf.BF16},
		{testmodel.Spec{Format: testmodel.Safetensors, DType: "F32"}, "f32", gguf.F32},
		{testmodel.Spec{Format: testmodel.Bin, DType: "F32"}, "bf16", gguf.BF16},
	}
	for _, c := range cases {
		t.Run(c.spec.Format+"-"+c.spec.DType+"-"+c.typ, func(t *testing.T) {
			c.spec.Layers, c.spec.Hidden, c.spec.Heads, c.spec.KVGroups, c.spec.FFN = 1, 16, 2, 1, 24
			dir := fresh(t, c.spec)
			out, res := convertTo(t, dir, c.typ)
			f, err := gguf.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			if res.Type != c.want {
				t.Errorf("type %v", res.Type)
			}
			ck, err := convert.OpenCheckpoint(dir)
			if err != nil {
				t.Fatal(err)
			}
			pairs := map[string]string{
				"transformer.embedding.word_embeddings.weight":                     "token_embd.weight",
				"transformer.encoder.layers.0.self_attention.query_key_value.bias": "blk.0.attn_qkv.bias",
				"transformer.encoder.layers.0.mlp.dense_4h_to_h.weight":            "blk.0.ffn_down.weight",
				"transformer.encoder.final_layernorm.weight":                       "output_norm.weight",
			}
			for hf, gg := range pairs {
				src := sourceTensor(t, ck, hf)
				got := readTensor(t, out, f, gg)
				if len(src) != len(got) {
					t.Fatalf("%s: %d vs %d elements", gg, len(src), len(got))
				}
				ti, _ := f.Tensor(gg)
				step := 1
				if len(src) > 10000 {
					step = 61 // a sample of the 1M-element embedding keeps the race build fast
				}
				for i := 0; i < len(src); i += step {
					var want float32
					switch ti.Type {
					case gguf.F32:
						want = src[i]
					case gguf.F16:
						want = convert.F16ToF32(convert.F32ToF16(src[i]))
					case gguf.BF16:
						want = convert.BF16ToF32(convert.F32ToBF16(src[i]))
					}
					if got[i] != want {
						t.Fatalf("%s[%d] = %g, want %g (source %g)", gg, i, got[i], want, src[i])
					}
				}
			}
		})
	}
}

func TestConvertRefusesOverwrite(t *testing.T) {
	dir := fresh(t, testmodel.Spec{Layers: 1, Hidden: 16, Heads: 2, KVGroups: 1, FFN: 24})
	out := filepath.Join(t.TempDir(), "m.gguf")
	os.WriteFile(out, []byte("keep me"), 0o644)
	_, err := convert.Convert(context.Background(), convert.Options{Input: dir, Output: out})
	// The library says what is wrong, not which CLI flag to use.
	if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), out) || strings.Contains(err.Error(), "--force") {
		t.Fatalf("got %v, want an fs.ErrExist naming %s", err, out)
	}
	if b, _ := os.ReadFile(out); string(b) != "keep me" {
		t.Fatal("target changed")
	}
	if _, err := convert.Convert(context.Background(), convert.Options{Input: dir, Output: out, Force: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := gguf.Open(out); err != nil {
		t.Fatal(err)
	}
	assertNoTemp(t, filepath.Dir(out))
}

func assertNoTemp(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temp file %s left behind", e.Name())
		}
	}
}

func TestConvertCancel(t *testing.T) {
	dir := fresh(t, testmodel.Spec{Layers: 1, Hidden: 16, Heads: 2, KVGroups: 1, FFN: 24})
	outDir := t.TempDir()
	out := filepath.Join(outDir, "m.gguf")
	os.WriteFile(out, []byte("old"), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	_, err := convert.Convert(ctx, convert.Options{Input: dir, Output: out, Force: true, ChunkBytes: 4096,
		Progress: func(p convert.Progress) {
			if p.TensorIndex == 2 {
				cancel()
			}
		}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if b, _ := os.ReadFile(out); string(b) != "old" {
		t.Fatal("target changed")
	}
	assertNoTemp(t, outDir)
}

// corrupt writes a checkpoint, applies f to the folder and checks that
// conversion fails with an error containing every string in want.
func corrupt(t *testing.T, spec testmodel.Spec, f func(dir string), want ...string) {
	t.Helper()
	dir := fresh(t, spec)
	f(dir)
	outDir := t.TempDir()
	_, err := convert.Convert(context.Background(), convert.Options{Input: dir, Output: filepath.Join(outDir, "m.gguf")})
	if err == nil {
		t.Fatalf("corrupt checkpoint accepted")
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
	assertNoTemp(t, outDir)
	if _, err := os.Stat(filepath.Join(outDir, "m.gguf")); err == nil {
		t.Error("output written")
	}
}

func editConfig(t *testing.T, dir string, edit func(m map[string]any)) {
	t.Helper()
	p := filepath.Join(dir, "config.json")
	var m map[string]any
	b, _ := os.ReadFile(p)
	if err := jsonUnmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	os.WriteFile(p, jsonMarshal(m), 0o644)
}

func TestConvertBadInput(t *testing.T) {
	sharded := testmodel.Spec{Layers: 1, Hidden: 16, Heads: 2, KVGroups: 1, FFN: 24, Format: testmodel.SafetensorsSharded, Shards: 3}
	t.Run("missing shard", func(t *testing.T) {
		corrupt(t, sharded, func(dir string) { os.Remove(filepath.Join(dir, "model-00002-of-00003.safetensors")) },
			"model-00002-of-00003.safetensors", "missing file", "transformer.")
	})
	t.Run("truncated shard", func(t *testing.T) {
		corrupt(t, sharded, func(dir string) {
			p := filepath.Join(dir, "model-00003-of-00003.safetensors")
			st, _ := os.Stat(p)
			os.Truncate(p, st.Size()-100)
		}, "model-00003-of-00003.safetensors", "transformer.output_layer.weight", "out of range")
	})
	t.Run("header offsets", func(t *testing.T) {
		corrupt(t, testmodel.Spec{Layers: 1, Hidden: 16, Heads: 2, KVGroups: 1, FFN: 24}, func(dir string) {
			rewriteHeader(t, filepath.Join(dir, "model.safetensors"), func(h map[string]any) {
				e := h["transformer.encoder.final_layernorm.weight"].(map[string]any)
				e["data_offsets"] = []int64{1 << 40, 1<<40 + 128}
			})
		}, "model.safetensors", "transformer.encoder.final_layernorm.weight", "data_offsets")
	})
	t.Run("shape vs config", func(t *testing.T) {
		corrupt(t, testmodel.Spec{Layers: 1, Hidden: 16, Heads: 2, KVGroups: 1, FFN: 24}, func(dir string) {
			editConfig(t, dir, func(m map[string]any) { m["ffn_hidden_size"] = 100 })
		}, "transformer.encoder.layers.0.mlp.dense_h_to_4h.weight", "model.safetensors", "disagrees with config.json")
	})
	t.Run("missing tensor", func(t *testing.T) {
		corrupt(t, testmodel.Spec{Layers: 1, Hidden: 16, Heads: 2, KVGroups: 1, FFN: 24}, func(dir string) {
			editConfig(t, dir, func(m map[string]any) { m["num_layers"] = 2 })
		}, "transformer.encoder.layers.1.", "missing")
	})
	t.Run("unexpected tensor", func(t *testing.T) {
		corrupt(t, testmodel.Spec{Layers: 2, Hidden: 16, Heads: 2, KVGroups: 1, FFN: 24}, func(dir string) {
			editConfig(t, dir, func(m map[string]any) { m["num_layers"] = 1 })
		}, "unexpected tensor transformer.encoder.layers.1.", "model.safetensors")
	})
	t.Run("unsupported dtype", func(t *testing.T) {
		corrupt(t, testmodel.Spec{Layers: 1, Hidden: 16, Heads: 2, KVGroups: 1, FFN: 24, DType: "F16"}, func(dir string) {
			p := filepath.Join(dir, "model.safetensors")
			b, _ := os.ReadFile(p)
			// Same element size, so the header stays consistent.
			s := strings.Replace(string(b), `"F16","shape":[16]`, `"I16","shape":[16]`, 1)
			os.WriteFile(p, []byte(s), 0o644)
		}, "unsupported dtype I16", "model.safetensors", "layernorm")
	})
	t.Run("index names missing file", func(t *testing.T) {
		corrupt(t, sharded, func(dir string) {
			p := filepath.Join(dir, "model.safetensors.index.json")
			b, _ := os.ReadFile(p)
			os.WriteFile(p, []byte(strings.Replace(string(b), "model-00001-of-00003", "model-00009-of-00003", 1)), 0o644)
		}, "model-00009-of-00003.safetensors", "missing file")
	})
	t.Run("corrupt zip", func(t *testing.T) {
		corrupt(t, testmodel.Spec{Layers: 1, Hidden: 16, Heads: 2, KVGroups: 1, FFN: 24, Format: testmodel.Bin}, func(dir string) {
			p := filepath.Join(dir, "pytorch_model.bin")
			st, _ := os.Stat(p)
			os.Truncate(p, st.Size()/2)
		}, "pytorch_model.bin", "zip")
	})
	t.Run("corrupt pickle", func(t *testing.T) {
		corrupt(t, testmodel.Spec{Layers: 1, Hidden: 16, Heads: 2, KVGroups: 1, FFN: 24, Format: testmodel.Bin}, func(dir string) {
			p := filepath.Join(dir, "pytorch_model.bin")
			b, _ := os.ReadFile(p)
			i := strings.Index(string(b), "_rebuild_tensor_v2")
			copy(b[i:], "os\nsystem\n") // a GLOBAL the reader must refuse
			os.WriteFile(p, b, 0o644)
		}, "pytorch_model.bin", "data.pkl")
	})
	t.Run("unknown model type", func(t *testing.T) {
		corrupt(t, testmodel.Spec{Layers: 1, Hidden: 16, Heads: 2, KVGroups: 1, FFN: 24}, func(dir string) {
			editConfig(t, dir, func(m map[string]any) { m["model_type"] = "llama" })
		}, `unsupported model_type "llama"`, "config.json")
	})
	t.Run("no weights", func(t *testing.T) {
		corrupt(t, testmodel.Spec{Layers: 1, Hidden: 16, Heads: 2, KVGroups: 1, FFN: 24}, func(dir string) { os.Remove(filepath.Join(dir, "model.safetensors")) }, "no weights")
	})
}

func TestPrefersSafetensors(t *testing.T) {
	dir := fresh(t, testmodel.Spec{Layers: 1, Hidden: 16, Heads: 2, KVGroups: 1, FFN: 24, Format: testmodel.Bin})
	other := fresh(t, testmodel.Spec{Layers: 1, Hidden: 16, Heads: 2, KVGroups: 1, FFN: 24, Format: testmodel.Safetensors})
	b, _ := os.ReadFile(filepath.Join(other, "model.safetensors"))
	os.WriteFile(filepath.Join(dir, "model.safetensors"), b, 0o644)
	ck, err := convert.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	if ck.Format != "safetensors" {
		t.Errorf("format %s", ck.Format)
	}
}

func TestRealConfig(t *testing.T) {
	c, err := convert.LoadConfig(shareddata.ChatGLM3(t))
	if err != nil {
		t.Fatal(err)
	}
	if c.NumLayers != 28 || c.KVHeads() != 2 || c.QKVRows() != 4608 || c.RopeDims() != 64 || c.RopeBase() != 10000 || c.LayerNormEpsilon != 1e-5 {
		t.Errorf("%+v", c)
	}
	if convert.SizeLabel(6243584000) != "6.2B" || convert.SizeLabel(12_000_000) != "12M" {
		t.Errorf("size labels %s %s", convert.SizeLabel(6243584000), convert.SizeLabel(12_000_000))
	}
}

// rewriteHeader edits the JSON header of a safetensors file, keeping the data.
func rewriteHeader(t *testing.T, p string, edit func(map[string]any)) {
	t.Helper()
	b, _ := os.ReadFile(p)
	n := binary.LittleEndian.Uint64(b)
	var h map[string]any
	if err := jsonUnmarshal(b[8:8+n], &h); err != nil {
		t.Fatal(err)
	}
	edit(h)
	nh := jsonMarshal(h)
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(nh)))
	out = append(append(out, nh...), b[8+n:]...)
	os.WriteFile(p, out, 0o644)
}
