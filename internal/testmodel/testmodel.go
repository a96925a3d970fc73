// Package testmodel writes ChatGLM3 HuggingFace checkpoints for tests: tiny
// random models with the real tensor names, a config.json shaped like the
// real one, the real tokenizer files, and weights as safetensors (single or
// sharded) or PyTorch .bin (zip + pickle, as torch.save writes them) in
// bf16, f16 or f32. Values are deterministic for a seed and small enough to
// keep the model numerically tame. It also writes the full-size synthetic
// checkpoint the conversion benchmark uses (see Synth).
package testmodel

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/chatglm/chatglm/convert"
	"github.com/chatglm/chatglm/internal/testdata"
)

// Weight file layouts.
const (
	Safetensors        = "safetensors"         // model.safetensors
	SafetensorsSharded = "safetensors-sharded" // model-0000N-of-0000M.safetensors + index
	Bin                = "bin"                 // pytorch_model.bin
	BinSharded         = "bin-sharded"         // pytorch_model-0000N-of-0000M.bin + index
)

// Spec describes a tiny checkpoint. Zero fields take the defaults of Tiny.
type Spec struct {
	Layers    int     // num_layers
	Hidden    int     // hidden_size
	Heads     int     // num_attention_heads (kv_channels = Hidden/Heads)
	KVGroups  int     // multi_query_group_num
	FFN       int     // ffn_hidden_size
	SeqLength int     // seq_length
	RopeRatio float64 // rope_ratio (written only when not 0)
	Eps       float64 // layernorm_epsilon
	Format    string  // Safetensors, SafetensorsSharded, Bin or BinSharded
	DType     string  // "BF16", "F16" or "F32"
	Shards    int     // number of shards for the sharded formats (default 3)
	Seed      int64
}

// Vocab is the padded vocabulary size; it must stay ChatGLM3's so the real
// tokenizer fits.
const Vocab = 65024

// Tiny is the default spec: hidden 64, 4 heads of 16, 2 KV groups, FFN 96,
// 2 layers, bf16 safetensors.
var Tiny = Spec{Layers: 2, Hidden: 64, Heads: 4, KVGroups: 2, FFN: 96, SeqLength: 256, Eps: 1e-5, Format: Safetensors, DType: "BF16", Shards: 3, Seed: 1}

func (s Spec) withDefaults() Spec {
	d := Tiny
	if s.Layers != 0 {
		d.Layers = s.Layers
	}
	if s.Hidden != 0 {
		d.Hidden = s.Hidden
	}
	if s.Heads != 0 {
		d.Heads = s.Heads
	}
	if s.KVGroups != 0 {
		d.KVGroups = s.KVGroups
	}
	if s.FFN != 0 {
		d.FFN = s.FFN
	}
	if s.SeqLength != 0 {
		d.SeqLength = s.SeqLength
	}
	d.RopeRatio = s.RopeRatio
	if s.Eps != 0 {
		d.Eps = s.Eps
	}
	if s.Format != "" {
		d.Format = s.Format
	}
	if s.DType != "" {
		d.DType = s.DType
	}
	if s.Shards != 0 {
		d.Shards = s.Shards
	}
	if s.Seed != 0 {
		d.Seed = s.Seed
	}
	return d
}

// Write creates the checkpoint described by spec in a new t.TempDir() and
// returns the folder.
func Write(t testing.TB, spec Spec) string {
	t.Helper()
	dir := t.TempDir()
	if err := WriteDir(dir, spec, testdata.ChatGLM3(t)); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TensorDef is one tensor of a checkpoint: name, PyTorch shape and the
// scale of its random values.
type TensorDef struct {
	Name  string
	Shape []int64
	kind  int
	std   float64
}

const (
	kindWeight = iota
	kindNorm
	kindBias
	kindInvFreq
)

// Tensors lists the tensors of a ChatGLM3 checkpoint with these sizes, in
// the order the real checkpoint stores them.
func Tensors(layers, hidden, heads, kvGroups, ffn, vocab int) []TensorDef {
	h, f, v := int64(hidden), int64(ffn), int64(vocab)
	headDim := h / int64(heads)
	qkv := h + 2*int64(kvGroups)*headDim
	defs := []TensorDef{
		{"transformer.embedding.word_embeddings.weight", []int64{v, h}, kindWeight, 1},
		{"transformer.rotary_pos_emb.inv_freq", []int64{headDim / 4}, kindInvFreq, 0},
	}
	for i := 0; i < layers; i++ {
		p := fmt.Sprintf("transformer.encoder.layers.%d.", i)
		defs = append(defs,
			TensorDef{p + "input_layernorm.weight", []int64{h}, kindNorm, 0.1},
			TensorDef{p + "self_attention.query_key_value.weight", []int64{qkv, h}, kindWeight, 1.2 / math.Sqrt(float64(h))},
			TensorDef{p + "self_attention.query_key_value.bias", []int64{qkv}, kindBias, 0.1},
			TensorDef{p + "self_attention.dense.weight", []int64{h, h}, kindWeight, 0.5 / math.Sqrt(float64(h))},
			TensorDef{p + "post_attention_layernorm.weight", []int64{h}, kindNorm, 0.1},
			TensorDef{p + "mlp.dense_h_to_4h.weight", []int64{2 * f, h}, kindWeight, 1 / math.Sqrt(float64(h))},
			TensorDef{p + "mlp.dense_4h_to_h.weight", []int64{h, f}, kindWeight, 0.5 / math.Sqrt(float64(f))},
		)
	}
	defs = append(defs,
		TensorDef{"transformer.encoder.final_layernorm.weight", []int64{h}, kindNorm, 0.1},
		TensorDef{"transformer.output_layer.weight", []int64{v, h}, kindWeight, 3 / math.Sqrt(float64(h))},
	)
	return defs
}

func numel(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

// values draws the tensor's values from a generator seeded by the seed and
// the tensor's name, so values do not depend on the file layout.
func (d TensorDef) values(seed int64) []float32 {
	n := numel(d.Shape)
	out := make([]float32, n)
	if d.kind == kindInvFreq {
		dim := float64(2 * n)
		for i := range out {
			out[i] = float32(1 / math.Pow(10000, float64(2*i)/dim))
		}
		return out
	}
	hf := fnv.New64a()
	hf.Write([]byte(d.Name))
	state := uint64(seed) ^ hf.Sum64()
	// Approximately normal values: the sum of four uniforms (Irwin–Hall),
	// centred and scaled to unit variance; cheap and deterministic.
	const scale = 1.7320508075688772 / (1 << 32) // sqrt(3) / 2^32 (four 32-bit uniforms)
	for i := range out {
		r1, r2 := splitmix(&state), splitmix(&state)
		sum := float64(r1>>32) + float64(r1&0xffffffff) + float64(r2>>32) + float64(r2&0xffffffff)
		x := (sum*scale - 2*1.7320508075688772) * d.std
		if d.kind == kindNorm {
			x += 1
		}
		out[i] = float32(x)
	}
	return out
}

func splitmix(s *uint64) uint64 {
	*s += 0x9e3779b97f4a7c15
	z := *s
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// encode stores values little-endian in the dtype (rounding to nearest even).
func encode(vals []float32, dtype string) []byte {
	switch dtype {
	case "F32":
		b := make([]byte, 4*len(vals))
		for i, v := range vals {
			u := math.Float32bits(v)
			b[4*i], b[4*i+1], b[4*i+2], b[4*i+3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
		}
		return b
	case "F16", "BF16":
		b := make([]byte, 2*len(vals))
		for i, v := range vals {
			var u uint16
			if dtype == "F16" {
				u = convert.F32ToF16(v)
			} else {
				u = convert.F32ToBF16(v)
			}
			b[2*i], b[2*i+1] = byte(u), byte(u>>8)
		}
		return b
	}
	panic("testmodel: dtype " + dtype)
}

func dtypeSize(dtype string) int64 {
	if dtype == "F32" {
		return 4
	}
	return 2
}

// WriteDir writes the checkpoint into dir, copying tokenizer.model and
// tokenizer_config.json and basing config.json on the one in tokDir.
func WriteDir(dir string, spec Spec, tokDir string) error {
	s := spec.withDefaults()
	if s.Hidden%s.Heads != 0 || s.Heads%s.KVGroups != 0 {
		return fmt.Errorf("testmodel: heads %d do not divide hidden %d, or groups %d do not divide heads", s.Heads, s.Hidden, s.KVGroups)
	}
	if err := writeConfig(dir, tokDir, func(c map[string]any) {
		c["num_layers"] = s.Layers
		c["hidden_size"] = s.Hidden
		c["num_attention_heads"] = s.Heads
		c["multi_query_group_num"] = s.KVGroups
		c["kv_channels"] = s.Hidden / s.Heads
		c["ffn_hidden_size"] = s.FFN
		c["padded_vocab_size"] = Vocab
		c["seq_length"] = s.SeqLength
		c["layernorm_epsilon"] = s.Eps
		if s.RopeRatio != 0 {
			c["rope_ratio"] = s.RopeRatio
		}
		c["torch_dtype"] = map[string]string{"BF16": "bfloat16", "F16": "float16", "F32": "float32"}[s.DType]
	}); err != nil {
		return err
	}
	defs := Tensors(s.Layers, s.Hidden, s.Heads, s.KVGroups, s.FFN, Vocab)
	data := func(d TensorDef) []byte { return encode(d.values(s.Seed), s.DType) }
	switch s.Format {
	case Safetensors:
		return writeSafetensors(filepath.Join(dir, "model.safetensors"), defs, s.DType, func(d TensorDef, w writerTo) error {
			_, err := w.Write(data(d))
			return err
		})
	case SafetensorsSharded:
		return writeSharded(dir, defs, s, "model-%05d-of-%05d.safetensors", "model.safetensors.index.json", func(path string, part []TensorDef) error {
			return writeSafetensors(path, part, s.DType, func(d TensorDef, w writerTo) error {
				_, err := w.Write(data(d))
				return err
			})
		})
	case Bin:
		return writeTorchBin(filepath.Join(dir, "pytorch_model.bin"), defs, s.DType, true, data)
	case BinSharded:
		return writeSharded(dir, defs, s, "pytorch_model-%05d-of-%05d.bin", "pytorch_model.bin.index.json", func(path string, part []TensorDef) error {
			return writeTorchBin(path, part, s.DType, false, data)
		})
	}
	return fmt.Errorf("testmodel: unknown format %q", s.Format)
}

// writeConfig writes config.json from the real one with edits, and copies
// the tokenizer files.
func writeConfig(dir, tokDir string, edit func(map[string]any)) error {
	raw, err := os.ReadFile(filepath.Join(tokDir, "config.json"))
	if err != nil {
		return fmt.Errorf("testmodel: %w", err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return fmt.Errorf("testmodel: config.json: %w", err)
	}
	edit(cfg)
	out, _ := json.MarshalIndent(cfg, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "config.json"), out, 0o644); err != nil {
		return fmt.Errorf("testmodel: %w", err)
	}
	for _, f := range []string{"tokenizer.model", "tokenizer_config.json"} {
		b, err := os.ReadFile(filepath.Join(tokDir, f))
		if err != nil {
			return fmt.Errorf("testmodel: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			return fmt.Errorf("testmodel: %w", err)
		}
	}
	return nil
}

// writeSharded splits defs into s.Shards files in order and writes the index.
func writeSharded(dir string, defs []TensorDef, s Spec, pattern, indexName string, write func(string, []TensorDef) error) error {
	n := min(s.Shards, len(defs))
	weightMap := map[string]string{}
	var total int64
	for i := 0; i < n; i++ {
		lo, hi := i*len(defs)/n, (i+1)*len(defs)/n
		name := fmt.Sprintf(pattern, i+1, n)
		for _, d := range defs[lo:hi] {
			weightMap[d.Name] = name
			total += numel(d.Shape) * dtypeSize(s.DType)
		}
		if err := write(filepath.Join(dir, name), defs[lo:hi]); err != nil {
			return err
		}
	}
	return writeIndex(filepath.Join(dir, indexName), total, weightMap)
}

func writeIndex(path string, total int64, weightMap map[string]string) error {
	idx := map[string]any{"metadata": map[string]any{"total_size": total}, "weight_map": weightMap}
	b, _ := json.MarshalIndent(idx, "", "  ")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("testmodel: %w", err)
	}
	return nil
}
