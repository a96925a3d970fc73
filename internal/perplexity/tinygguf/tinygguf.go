// Package tinygguf writes tiny ChatGLM-architecture GGUF models with random
// weights, so tests of code that runs llama.cpp (perplexity, quantize,
// bench) get a real model file in milliseconds. The shapes follow
// ChatGLM3 (fused QKV with bias, multi-query attention, fused SwiGLU
// up/gate, separate output head) at a toy size; the vocabulary is a small
// SentencePiece-style table with byte fallback, enough for llama.cpp's
// tokenizer to encode any text.
package tinygguf

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"

	"github.com/chatglm/chatglm/gguf"
)

// Config sets the shape of a tiny model. Zero fields take the defaults of
// Default.
type Config struct {
	Embd    int     // hidden size (default 256, a multiple of 256 so k-quants apply)
	Heads   int     // attention heads (default 4)
	HeadsKV int     // key/value heads (default 2)
	FFN     int     // feed-forward size (default 512)
	Layers  int     // transformer blocks (default 2)
	Context int     // training context length (default 512)
	F16     bool    // store 2-D weights as f16 instead of f32
	Seed    uint64  // weight seed (default 1)
	Scale   float32 // uniform weight range ±Scale (default 0.08)
}

// Default is the configuration used for zero fields.
var Default = Config{Embd: 256, Heads: 4, HeadsKV: 2, FFN: 512, Layers: 2, Context: 512, Seed: 1, Scale: 0.08}

func (c Config) withDefaults() Config {
	if c.Embd == 0 {
		c.Embd = Default.Embd
	}
	if c.Heads == 0 {
		c.Heads = Default.Heads
	}
	if c.HeadsKV == 0 {
		c.HeadsKV = Default.HeadsKV
	}
	if c.FFN == 0 {
		c.FFN = Default.FFN
	}
	if c.Layers == 0 {
		c.Layers = Default.Layers
	}
	if c.Context == 0 {
		c.Context = Default.Context
	}
	if c.Seed == 0 {
		c.Seed = Default.Seed
	}
	if c.Scale == 0 {
		c.Scale = Default.Scale
	}
	return c
}

// words are the whole-word pieces of the vocabulary (besides bytes and
// single letters), so ordinary English text tokenizes into a mix of words,
// letters and byte fallbacks.
var words = []string{
	"the", "of", "and", "to", "in", "is", "it", "that", "for", "on", "was", "with",
	"he", "as", "at", "by", "this", "had", "not", "are", "but", "from", "or", "have",
	"an", "they", "which", "one", "you", "were", "her", "all", "she", "there", "would",
	"their", "we", "him", "been", "has", "when", "who", "will", "more", "no", "if",
	"out", "so", "said", "what", "up", "its", "about", "into", "than", "them", "can",
	"only", "other", "new", "some", "could", "time", "these", "two", "may", "then",
	"do", "first", "any", "my", "now", "such", "like", "our", "over", "man", "me",
	"even", "most", "made", "after", "also", "did", "many", "before", "must", "through",
	"back", "years", "where", "much", "your", "way", "well", "down", "should", "because",
	"each", "just", "those", "people", "how", "too", "little", "state", "good", "very",
	"make", "world", "still", "own", "see", "men", "work", "long", "get", "here",
	"between", "both", "life", "being", "under", "never", "day", "same", "another", "know",
}

// Vocab returns the tiny vocabulary: token texts, scores and llama.cpp token
// types (1 normal, 2 unknown, 3 control, 6 byte).
func Vocab() (tokens []string, scores []float32, types []int32) {
	add := func(t string, s float32, ty int32) {
		tokens = append(tokens, t)
		scores = append(scores, s)
		types = append(types, ty)
	}
	add("<unk>", 0, 2)
	add("<s>", 0, 3)
	add("</s>", 0, 3)
	for b := 0; b < 256; b++ {
		add(fmt.Sprintf("<0x%02X>", b), 0, 6)
	}
	add("\u2581", -2, 1)
	for c := 'a'; c <= 'z'; c++ {
		add(string(c), -5, 1)
		add("\u2581"+string(c), -4, 1)
	}
	for i, w := range words {
		add("\u2581"+w, -1-float32(i)/1000, 1)
	}
	return tokens, scores, types
}

// Write writes a tiny random model to path and returns the vocabulary size.
func Write(path string, cfg Config) (int, error) {
	c := cfg.withDefaults()
	if c.Embd%c.Heads != 0 || c.Heads%c.HeadsKV != 0 {
		return 0, fmt.Errorf("tinygguf: embd %d, heads %d, kv heads %d do not divide", c.Embd, c.Heads, c.HeadsKV)
	}
	headDim := c.Embd / c.Heads
	qkv := c.Embd + 2*c.HeadsKV*headDim
	tokens, scores, types := Vocab()
	nVocab := len(tokens)

	w := gguf.NewWriter()
	w.Add("general.architecture", "chatglm")
	w.Add("general.type", "model")
	w.Add("general.name", "tiny-chatglm")
	fileType := uint32(0)
	wtype := gguf.F32
	if c.F16 {
		fileType, wtype = 1, gguf.F16
	}
	w.Add("general.file_type", fileType)
	w.Add("general.quantization_version", uint32(2))
	w.Add("chatglm.context_length", uint32(c.Context))
	w.Add("chatglm.embedding_length", uint32(c.Embd))
	w.Add("chatglm.feed_forward_length", uint32(c.FFN))
	w.Add("chatglm.block_count", uint32(c.Layers))
	w.Add("chatglm.attention.head_count", uint32(c.Heads))
	w.Add("chatglm.attention.head_count_kv", uint32(c.HeadsKV))
	w.Add("chatglm.attention.layer_norm_rms_epsilon", float32(1e-5))
	w.Add("chatglm.rope.dimension_count", uint32(headDim/2))
	w.Add("chatglm.rope.freq_base", float32(10000))
	w.Add("tokenizer.ggml.model", "llama")
	w.Add("tokenizer.ggml.pre", "chatglm-spm")
	w.Add("tokenizer.ggml.tokens", tokens)
	w.Add("tokenizer.ggml.scores", scores)
	w.Add("tokenizer.ggml.token_type", types)
	w.Add("tokenizer.ggml.add_bos_token", false)
	w.Add("tokenizer.ggml.eos_token_id", uint32(2))
	w.Add("tokenizer.ggml.padding_token_id", uint32(0))

	type tensor struct {
		name string
		dims []uint64
		norm bool // f32, filled with ones
		bias bool // f32, random
	}
	var ts []tensor
	u := func(v int) uint64 { return uint64(v) }
	ts = append(ts, tensor{name: "token_embd.weight", dims: []uint64{u(c.Embd), u(nVocab)}})
	for l := 0; l < c.Layers; l++ {
		p := fmt.Sprintf("blk.%d.", l)
		ts = append(ts,
			tensor{name: p + "attn_norm.weight", dims: []uint64{u(c.Embd)}, norm: true},
			tensor{name: p + "attn_qkv.weight", dims: []uint64{u(c.Embd), u(qkv)}},
			tensor{name: p + "attn_qkv.bias", dims: []uint64{u(qkv)}, bias: true},
			tensor{name: p + "attn_output.weight", dims: []uint64{u(c.Embd), u(c.Embd)}},
			tensor{name: p + "ffn_norm.weight", dims: []uint64{u(c.Embd)}, norm: true},
			tensor{name: p + "ffn_up.weight", dims: []uint64{u(c.Embd), u(2 * c.FFN)}},
			tensor{name: p + "ffn_down.weight", dims: []uint64{u(c.FFN), u(c.Embd)}},
		)
	}
	ts = append(ts,
		tensor{name: "output_norm.weight", dims: []uint64{u(c.Embd)}, norm: true},
		tensor{name: "output.weight", dims: []uint64{u(c.Embd), u(nVocab)}},
	)
	for _, t := range ts {
		typ := wtype
		if t.norm || t.bias {
			typ = gguf.F32
		}
		w.AddTensor(t.name, typ, t.dims)
	}

	f, err := os.Create(path)
	if err != nil {
		return 0, fmt.Errorf("tinygguf: %w", err)
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	dw, err := w.WriteHeader(bw)
	if err != nil {
		f.Close()
		return 0, fmt.Errorf("tinygguf: %w", err)
	}
	rng := rand.New(rand.NewPCG(c.Seed, 0x9e3779b97f4a7c15))
	var buf []byte
	for _, t := range ts {
		n := 1
		for _, d := range t.dims {
			n *= int(d)
		}
		buf = buf[:0]
		for i := 0; i < n; i++ {
			v := c.Scale * (2*rng.Float32() - 1)
			if t.norm {
				v = 1
			}
			if wtype == gguf.F16 && !t.norm && !t.bias {
				buf = binary.LittleEndian.AppendUint16(buf, f16(v))
			} else {
				buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
			}
		}
		if _, err := dw.Write(buf); err != nil {
			f.Close()
			return 0, fmt.Errorf("tinygguf: %w", err)
		}
	}
	if err := dw.Close(); err != nil {
		f.Close()
		return 0, fmt.Errorf("tinygguf: %w", err)
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return 0, fmt.Errorf("tinygguf: %w", err)
	}
	if err := f.Close(); err != nil {
		return 0, fmt.Errorf("tinygguf: %w", err)
	}
	return nVocab, nil
}

// f16 converts a small normal float32 (|v| well inside f16's range, as the
// weights here are) to IEEE half precision, rounding to nearest even.
func f16(v float32) uint16 {
	b := math.Float32bits(v)
	sign := uint16(b>>16) & 0x8000
	exp := int((b>>23)&0xff) - 127 + 15
	mant := b & 0x7fffff
	if exp <= 0 {
		// Subnormal or zero in f16.
		if exp < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint32(14 - exp)
		half := uint32(1) << (shift - 1)
		r := mant >> shift
		rem := mant & ((1 << shift) - 1)
		if rem > half || (rem == half && r&1 == 1) {
			r++
		}
		return sign | uint16(r)
	}
	r := uint32(exp)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && r&1 == 1) {
		r++
	}
	return sign | uint16(r)
}
