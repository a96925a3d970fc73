// Package convert turns a ChatGLM3 HuggingFace checkpoint folder
// (config.json, safetensors or PyTorch .bin weights, tokenizer.model and
// tokenizer_config.json) into a GGUF file for llama.cpp's chatglm
// architecture, exactly as llama.cpp's convert_hf_to_gguf.py does, without
// Python. It also exposes the readers it is built from: config.json,
// safetensors, a restricted pickle reader for torch .bin files, and
// SentencePiece's ModelProto.
package convert

import (
	"encoding/json"
	"fmt"
	"path/filepath"

	"github.com/chatglm/chatglm/spm"
)

// Config holds the config.json keys of a ChatGLM2/3 checkpoint.
type Config struct {
	NameOrPath          string   `json:"_name_or_path"`
	ModelType           string   `json:"model_type"`
	Architectures       []string `json:"architectures"`
	NumLayers           int      `json:"num_layers"`
	HiddenSize          int      `json:"hidden_size"`
	FFNHiddenSize       int      `json:"ffn_hidden_size"`
	KVChannels          int      `json:"kv_channels"`
	NumAttentionHeads   int      `json:"num_attention_heads"`
	MultiQueryAttention bool     `json:"multi_query_attention"`
	MultiQueryGroupNum  int      `json:"multi_query_group_num"`
	PaddedVocabSize     int      `json:"padded_vocab_size"`
	SeqLength           int      `json:"seq_length"`
	LayerNormEpsilon    float64  `json:"layernorm_epsilon"`
	RopeRatio           float64  `json:"rope_ratio"`
	AddQKVBias          bool     `json:"add_qkv_bias"`
	AddBiasLinear       bool     `json:"add_bias_linear"`
	RMSNorm             bool     `json:"rmsnorm"`
	PostLayerNorm       bool     `json:"post_layer_norm"`
	ApplyResidualPostLN bool     `json:"apply_residual_connection_post_layernorm"`
	TieWordEmbeddings   bool     `json:"tie_word_embeddings"`
	TorchDType          string   `json:"torch_dtype"`
	EOSTokenID          *int     `json:"eos_token_id"`
	PadTokenID          *int     `json:"pad_token_id"`
}

// KVHeads is the number of key/value heads (multi_query_group_num with
// multi-query attention, else the number of attention heads).
func (c *Config) KVHeads() int {
	if c.MultiQueryAttention {
		return c.MultiQueryGroupNum
	}
	return c.NumAttentionHeads
}

// HeadDim is the size of one attention head (kv_channels).
func (c *Config) HeadDim() int { return c.KVChannels }

// QKVRows is the output size of the fused query_key_value projection.
func (c *Config) QKVRows() int { return c.HiddenSize + 2*c.KVHeads()*c.HeadDim() }

// RopeBase is the rotary base, 10000 × rope_ratio.
func (c *Config) RopeBase() float64 { return 10000 * c.RopeRatio }

// RopeDims is the number of rotated dimensions per head (half of it, as in
// convert_hf_to_gguf.py: hidden_size / num_attention_heads × 0.5).
func (c *Config) RopeDims() int { return c.HiddenSize / c.NumAttentionHeads / 2 }

// LoadConfig reads dir/config.json and checks that it describes a ChatGLM
// model this converter supports.
func LoadConfig(dir string) (*Config, error) {
	path := filepath.Join(dir, "config.json")
	data, err := readFileLimited(path, maxJSONFile)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// ParseConfig decodes and validates the contents of a config.json.
func ParseConfig(data []byte) (*Config, error) {
	c := &Config{
		LayerNormEpsilon: 1e-5, RopeRatio: 1, RMSNorm: true, PostLayerNorm: true,
		AddQKVBias: true, MultiQueryAttention: true,
	}
	if err := json.Unmarshal(data, c); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Config) validate() error {
	if c.ModelType != "chatglm" {
		return fmt.Errorf("unsupported model_type %q (want \"chatglm\")", c.ModelType)
	}
	pos := map[string]int{
		"num_layers": c.NumLayers, "hidden_size": c.HiddenSize, "ffn_hidden_size": c.FFNHiddenSize,
		"kv_channels": c.KVChannels, "num_attention_heads": c.NumAttentionHeads,
		"padded_vocab_size": c.PaddedVocabSize, "seq_length": c.SeqLength,
	}
	for _, k := range []string{"num_layers", "hidden_size", "ffn_hidden_size", "kv_channels", "num_attention_heads", "padded_vocab_size", "seq_length"} {
		if pos[k] <= 0 || pos[k] > 1<<24 {
			return fmt.Errorf("%s = %d: want a positive size", k, pos[k])
		}
	}
	// The vocabulary is built in memory, a token per id (ChatGLM3: 65024).
	if c.PaddedVocabSize > spm.MaxPieces {
		return fmt.Errorf("padded_vocab_size = %d: at most %d", c.PaddedVocabSize, spm.MaxPieces)
	}
	if c.MultiQueryAttention && (c.MultiQueryGroupNum <= 0 || c.NumAttentionHeads%c.MultiQueryGroupNum != 0) {
		return fmt.Errorf("multi_query_group_num = %d does not divide num_attention_heads = %d", c.MultiQueryGroupNum, c.NumAttentionHeads)
	}
	if c.KVChannels*c.NumAttentionHeads != c.HiddenSize {
		return fmt.Errorf("kv_channels %d × num_attention_heads %d != hidden_size %d (llama.cpp's chatglm needs head size = hidden/heads)",
			c.KVChannels, c.NumAttentionHeads, c.HiddenSize)
	}
	if c.KVChannels%4 != 0 {
		return fmt.Errorf("kv_channels = %d: the rotary half must hold whole pairs", c.KVChannels)
	}
	switch {
	case !c.RMSNorm:
		return fmt.Errorf("rmsnorm = false (LayerNorm ChatGLM variants) is not supported")
	case !c.PostLayerNorm:
		return fmt.Errorf("post_layer_norm = false is not supported")
	case c.ApplyResidualPostLN:
		return fmt.Errorf("apply_residual_connection_post_layernorm = true is not supported")
	case c.AddBiasLinear:
		return fmt.Errorf("add_bias_linear = true is not supported")
	case c.TieWordEmbeddings:
		return fmt.Errorf("tie_word_embeddings = true is not supported")
	case !(c.LayerNormEpsilon > 0):
		return fmt.Errorf("layernorm_epsilon = %g: want > 0", c.LayerNormEpsilon)
	case !(c.RopeRatio > 0):
		return fmt.Errorf("rope_ratio = %g: want > 0", c.RopeRatio)
	}
	return nil
}
