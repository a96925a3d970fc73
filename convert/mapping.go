package convert

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/chatglm/chatglm/gguf"
	"github.com/chatglm/chatglm/internal/safetext"
	"github.com/chatglm/chatglm/spm"
)

// ChatGLM3's nine special tokens, placed right after the SentencePiece
// vocabulary in this order ([MASK] = 64789 ... <|observation|> = 64797).
var SpecialTokens = []string{"[MASK]", "[gMASK]", "[sMASK]", "sop", "eop", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"}

// Vocab is the token table written to tokenizer.ggml.*.
type Vocab struct {
	Tokens []string
	Scores []float32
	Types  []int32
}

// BuildVocab pads a SentencePiece vocabulary to n entries the way
// convert_hf_to_gguf.py's set_vocab_chatglm3 does: ids 0/1/2 renamed
// <unk>/<bos>/<eos>, the nine ChatGLM3 specials as control tokens, and
// [PAD{id}] unused fillers up to n.
func BuildVocab(pieces []spm.Piece, n int) (*Vocab, error) {
	sp := len(pieces)
	if n < sp+len(SpecialTokens) {
		return nil, fmt.Errorf("padded_vocab_size %d is smaller than the %d SentencePiece pieces + %d specials", n, sp, len(SpecialTokens))
	}
	v := &Vocab{Tokens: make([]string, n), Scores: make([]float32, n), Types: make([]int32, n)}
	for id := 0; id < n; id++ {
		switch {
		case id < sp:
			text := pieces[id].Text
			switch id {
			case 0:
				text = "<unk>"
			case 1:
				text = "<bos>"
			case 2:
				text = "<eos>"
			}
			v.Tokens[id] = text
			if text != "" {
				v.Scores[id] = pieces[id].Score
			}
			// GGUF's token types are SentencePiece's piece types;
			// user-defined pieces are written as normal ones.
			switch t := pieces[id].Type; t {
			case spm.Unknown, spm.Control, spm.Unused, spm.Byte:
				v.Types[id] = int32(t)
			default:
				v.Types[id] = int32(spm.Normal)
			}
		case id < sp+len(SpecialTokens):
			v.Tokens[id] = SpecialTokens[id-sp]
			v.Types[id] = int32(spm.Control)
		default:
			v.Tokens[id] = "[PAD" + strconv.Itoa(id) + "]"
			v.Types[id] = int32(spm.Unused)
		}
	}
	return v, nil
}

// TensorMap is one output tensor: its GGUF name, type and dims, and the
// checkpoint tensor it is made from.
type TensorMap struct {
	Name string // GGUF name
	Type gguf.GGMLType
	Dims []uint64 // ggml order
	Src  Source
}

type expected struct {
	gguf  string
	shape []int64
}

// expectedTensors lists every HF tensor a ChatGLM3 checkpoint with this
// config must have, with its GGUF name and PyTorch shape.
func expectedTensors(c *Config) map[string]expected {
	h, v := int64(c.HiddenSize), int64(c.PaddedVocabSize)
	f, qkv := int64(c.FFNHiddenSize), int64(c.QKVRows())
	m := map[string]expected{
		"transformer.embedding.word_embeddings.weight": {"token_embd.weight", []int64{v, h}},
		"transformer.encoder.final_layernorm.weight":   {"output_norm.weight", []int64{h}},
		"transformer.output_layer.weight":              {"output.weight", []int64{v, h}},
	}
	for i := 0; i < c.NumLayers; i++ {
		p := fmt.Sprintf("transformer.encoder.layers.%d.", i)
		b := fmt.Sprintf("blk.%d.", i)
		m[p+"input_layernorm.weight"] = expected{b + "attn_norm.weight", []int64{h}}
		m[p+"self_attention.query_key_value.weight"] = expected{b + "attn_qkv.weight", []int64{qkv, h}}
		if c.AddQKVBias {
			m[p+"self_attention.query_key_value.bias"] = expected{b + "attn_qkv.bias", []int64{qkv}}
		}
		m[p+"self_attention.dense.weight"] = expected{b + "attn_output.weight", []int64{h, h}}
		m[p+"post_attention_layernorm.weight"] = expected{b + "ffn_norm.weight", []int64{h}}
		m[p+"mlp.dense_h_to_4h.weight"] = expected{b + "ffn_up.weight", []int64{2 * f, h}}
		m[p+"mlp.dense_4h_to_h.weight"] = expected{b + "ffn_down.weight", []int64{h, f}}
	}
	return m
}

// outputType applies convert_hf_to_gguf.py's rule: 1-D tensors, norms and
// biases stay F32; other weights take the chosen type.
func outputType(gname string, ndim int, want gguf.GGMLType) gguf.GGMLType {
	if ndim <= 1 || strings.HasSuffix(gname, "_norm.weight") || !strings.HasSuffix(gname, ".weight") {
		return gguf.F32
	}
	return want
}

// MapTensors checks the checkpoint against the config (every tensor
// present, none unexpected, shapes and dtypes right) and returns the output
// tensors in checkpoint file order. rotary_pos_emb.inv_freq is dropped.
func MapTensors(c *Config, ck *Checkpoint, want gguf.GGMLType) ([]TensorMap, error) {
	exp := expectedTensors(c)
	for name, e := range exp {
		if _, ok := ck.Tensors[name]; !ok {
			return nil, fmt.Errorf("tensor %s (-> %s) missing from the checkpoint in %s", name, e.gguf, ck.Dir)
		}
	}
	var out []TensorMap
	for _, name := range ck.Names() {
		s := ck.Tensors[name]
		if strings.HasSuffix(name, ".rotary_pos_emb.inv_freq") {
			continue
		}
		e, ok := exp[name]
		if !ok {
			return nil, fmt.Errorf("unexpected tensor %s in %s", safetext.Quote(name), s.File)
		}
		if !slices.Equal(s.Shape, e.shape) {
			return nil, fmt.Errorf("tensor %s in %s: shape %v disagrees with config.json (want %v)", name, s.File, s.Shape, e.shape)
		}
		switch s.DType {
		case "F16", "BF16", "F32":
		default:
			return nil, fmt.Errorf("tensor %s in %s: unsupported dtype %s (want F16, BF16 or F32)", name, s.File, s.DType)
		}
		dims := make([]uint64, len(s.Shape))
		for i, d := range s.Shape {
			dims[len(dims)-1-i] = uint64(d)
		}
		out = append(out, TensorMap{Name: e.gguf, Type: outputType(e.gguf, len(s.Shape), want), Dims: dims, Src: s})
	}
	return out, nil
}

// TokenizerConfig holds the tokenizer_config.json keys the converter uses.
type TokenizerConfig struct {
	ChatTemplate string
}

// LoadTokenizerConfig reads dir/tokenizer_config.json; a missing file gives
// an empty config.
func LoadTokenizerConfig(dir string) (*TokenizerConfig, error) {
	path := filepath.Join(dir, "tokenizer_config.json")
	data, err := readFileLimited(path, maxJSONFile)
	if os.IsNotExist(err) {
		return &TokenizerConfig{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("tokenizer config: %w", err)
	}
	tc, err := ParseTokenizerConfig(data)
	if err != nil {
		return nil, fmt.Errorf("tokenizer config %s: %w", path, err)
	}
	return tc, nil
}

// ParseTokenizerConfig decodes the contents of a tokenizer_config.json.
func ParseTokenizerConfig(data []byte) (*TokenizerConfig, error) {
	var raw struct {
		ChatTemplate json.RawMessage `json:"chat_template"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, err
	}
	tc := &TokenizerConfig{}
	if len(raw.ChatTemplate) > 0 && string(raw.ChatTemplate) != "null" {
		if err := json.Unmarshal(raw.ChatTemplate, &tc.ChatTemplate); err != nil {
			// Newer files may hold a list of named templates; take "default".
			var named []struct{ Name, Template string }
			if err2 := json.Unmarshal(raw.ChatTemplate, &named); err2 != nil {
				return nil, fmt.Errorf("chat_template: %w", err)
			}
			for _, t := range named {
				if t.Name == "default" {
					tc.ChatTemplate = t.Template
				}
			}
		}
	}
	return tc, nil
}

// SizeLabel formats a parameter count the way gguf-py does ("6.2B", "4.3M").
func SizeLabel(params int64) string {
	x := float64(params)
	scaled, suffix := x, ""
	switch {
	case x > 1e12:
		scaled, suffix = x*1e-12, "T"
	case x > 1e9:
		scaled, suffix = x*1e-9, "B"
	case x > 1e6:
		scaled, suffix = x*1e-6, "M"
	default:
		scaled, suffix = x*1e-3, "K"
	}
	digits := len(strings.TrimLeft(strconv.FormatInt(int64(math.RoundToEven(scaled)), 10), "0"))
	fix := max(2-digits, 0)
	return strconv.FormatFloat(scaled, 'f', fix, 64) + suffix
}

// fileType maps the output tensor type to general.file_type.
func fileType(t gguf.GGMLType) gguf.FileType {
	switch t {
	case gguf.F32:
		return gguf.FileTypeAllF32
	case gguf.BF16:
		return gguf.FileTypeMostlyBF16
	}
	return gguf.FileTypeMostlyF16
}

// writeMetadata adds every key convert_hf_to_gguf.py writes for ChatGLM3.
func writeMetadata(w *gguf.Writer, c *Config, name string, params int64, want gguf.GGMLType, v *Vocab, tc *TokenizerConfig) {
	w.Add("general.architecture", "chatglm")
	w.Add("general.type", "model")
	w.Add("general.name", name)
	w.Add("general.size_label", SizeLabel(params))
	if parts := strings.Split(c.NameOrPath, "/"); len(parts) == 2 && parts[0] != "" && parts[1] != "" && !strings.HasPrefix(c.NameOrPath, ".") {
		w.Add("general.source.repo_url", "https://huggingface.co/"+c.NameOrPath)
	}
	w.Add("chatglm.context_length", uint32(c.SeqLength))
	w.Add("chatglm.embedding_length", uint32(c.HiddenSize))
	w.Add("chatglm.feed_forward_length", uint32(c.FFNHiddenSize))
	w.Add("chatglm.block_count", uint32(c.NumLayers))
	w.Add("chatglm.attention.head_count", uint32(c.NumAttentionHeads))
	w.Add("chatglm.attention.head_count_kv", uint32(c.KVHeads()))
	w.Add("chatglm.attention.layer_norm_rms_epsilon", float32(c.LayerNormEpsilon))
	w.Add("general.file_type", uint32(fileType(want)))
	w.Add("chatglm.rope.dimension_count", uint32(c.RopeDims()))
	w.Add("tokenizer.ggml.add_bos_token", false)
	w.Add("chatglm.rope.freq_base", float32(c.RopeBase()))
	w.Add("general.quantization_version", uint32(2))
	w.Add("tokenizer.ggml.model", "llama")
	w.Add("tokenizer.ggml.pre", "chatglm-spm")
	w.Add("tokenizer.ggml.tokens", v.Tokens)
	w.Add("tokenizer.ggml.scores", v.Scores)
	w.Add("tokenizer.ggml.token_type", v.Types)
	if c.EOSTokenID != nil && *c.EOSTokenID >= 0 && *c.EOSTokenID < len(v.Tokens) {
		w.Add("tokenizer.ggml.eos_token_id", uint32(*c.EOSTokenID))
	}
	if c.PadTokenID != nil && *c.PadTokenID >= 0 && *c.PadTokenID < len(v.Tokens) {
		w.Add("tokenizer.ggml.padding_token_id", uint32(*c.PadTokenID))
	}
	if tc.ChatTemplate != "" {
		w.Add("tokenizer.chat_template", tc.ChatTemplate)
	}
}
