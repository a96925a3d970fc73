// Package reference is an independent float32/float64 forward pass of
// ChatGLM3 written from the semantics of THUDM's modeling_chatglm.py, used
// by tests to check what llama.cpp computes from converted GGUF files. It
// reads the HuggingFace checkpoint directly (through the convert readers),
// so it shares no code with the GGUF mapping it checks.
//
// Per layer: RMSNorm → fused QKV (with bias) → rotary embedding on the
// first half of each head's dims, rotating adjacent pairs (x[2i], x[2i+1])
// by pos·base^(-2i/(head_dim/2)), base = 10000·rope_ratio → causal
// multi-query attention (query head h reads KV group h / (heads/groups)),
// scaled by 1/sqrt(head_dim) → dense → residual → RMSNorm → dense_h_to_4h,
// split in halves, silu(first) · second → dense_4h_to_h → residual. Then
// the final RMSNorm and output_layer.
package reference

import (
	"fmt"
	"math"

	"github.com/chatglm/chatglm/convert"
)

// Model holds a checkpoint's weights as float32.
type Model struct {
	Cfg    *convert.Config
	embed  []float32 // [vocab, hidden]
	layers []layer
	final  []float32
	output []float32 // [vocab, hidden]
}

type layer struct {
	inNorm, qkvW, qkvB, dense, postNorm, up, down []float32
}

// Load reads the config and every weight of the checkpoint in dir.
func Load(dir string) (*Model, error) {
	cfg, err := convert.LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	ck, err := convert.OpenCheckpoint(dir)
	if err != nil {
		return nil, err
	}
	m := &Model{Cfg: cfg}
	read := func(name string, want int) ([]float32, error) {
		v, err := ck.ReadF32(name)
		if err != nil {
			return nil, err
		}
		if len(v) != want {
			return nil, fmt.Errorf("reference: %s has %d values, want %d", name, len(v), want)
		}
		return v, nil
	}
	h, v, f, qkv := cfg.HiddenSize, cfg.PaddedVocabSize, cfg.FFNHiddenSize, cfg.QKVRows()
	if m.embed, err = read("transformer.embedding.word_embeddings.weight", v*h); err != nil {
		return nil, err
	}
	if m.final, err = read("transformer.encoder.final_layernorm.weight", h); err != nil {
		return nil, err
	}
	if m.output, err = read("transformer.output_layer.weight", v*h); err != nil {
		return nil, err
	}
	for i := 0; i < cfg.NumLayers; i++ {
		p := fmt.Sprintf("transformer.encoder.layers.%d.", i)
		var l layer
		for _, x := range []struct {
			dst  *[]float32
			name string
			n    int
		}{
			{&l.inNorm, "input_layernorm.weight", h},
			{&l.qkvW, "self_attention.query_key_value.weight", qkv * h},
			{&l.qkvB, "self_attention.query_key_value.bias", qkv},
			{&l.dense, "self_attention.dense.weight", h * h},
			{&l.postNorm, "post_attention_layernorm.weight", h},
			{&l.up, "mlp.dense_h_to_4h.weight", 2 * f * h},
			{&l.down, "mlp.dense_4h_to_h.weight", h * f},
		} {
			if *x.dst, err = read(p+x.name, x.n); err != nil {
				return nil, err
			}
		}
		m.layers = append(m.layers, l)
	}
	return m, nil
}

// rmsNorm returns x / sqrt(mean(x²) + eps) · w.
func rmsNorm(x, w []float32, eps float64) []float32 {
	var ss float64
	for _, v := range x {
		ss += float64(v) * float64(v)
	}
	s := 1 / math.Sqrt(ss/float64(len(x))+eps)
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = float32(float64(v) * s * float64(w[i]))
	}
	return out
}

// linear computes W·x (+ b) for a row-major W of shape [len(out), len(x)].
func linear(w, b, x []float32, rows int) []float32 {
	n := len(x)
	out := make([]float32, rows)
	for r := 0; r < rows; r++ {
		row := w[r*n : (r+1)*n]
		var s float64
		for i, v := range x {
			s += float64(row[i]) * float64(v)
		}
		if b != nil {
			s += float64(b[r])
		}
		out[r] = float32(s)
	}
	return out
}

// rope rotates the first half of a head's dims in adjacent pairs.
func rope(x []float32, pos int, base float64) {
	rot := len(x) / 2 // rotary dims of this head
	for i := 0; i < rot/2; i++ {
		theta := float64(pos) * math.Pow(base, -float64(2*i)/float64(rot))
		c, s := math.Cos(theta), math.Sin(theta)
		a, b := float64(x[2*i]), float64(x[2*i+1])
		x[2*i] = float32(a*c - b*s)
		x[2*i+1] = float32(b*c + a*s)
	}
}

// Forward runs the whole sequence (positions 0..n-1) and returns the
// logits after every token: out[t] has PaddedVocabSize values.
func (m *Model) Forward(tokens []int32) ([][]float32, error) {
	c := m.Cfg
	h, hd, heads, groups, ffn := c.HiddenSize, c.HeadDim(), c.NumAttentionHeads, c.KVHeads(), c.FFNHiddenSize
	n := len(tokens)
	x := make([][]float32, n)
	for t, tok := range tokens {
		if tok < 0 || int(tok) >= c.PaddedVocabSize {
			return nil, fmt.Errorf("reference: token %d out of range", tok)
		}
		x[t] = append([]float32(nil), m.embed[int(tok)*h:(int(tok)+1)*h]...)
	}
	base := c.RopeBase()
	per := heads / groups
	for _, l := range m.layers {
		q := make([][]float32, n)
		k := make([][]float32, n)
		v := make([][]float32, n)
		for t := 0; t < n; t++ {
			y := rmsNorm(x[t], l.inNorm, c.LayerNormEpsilon)
			qkv := linear(l.qkvW, l.qkvB, y, c.QKVRows())
			q[t] = qkv[:h]
			k[t] = qkv[h : h+groups*hd]
			v[t] = qkv[h+groups*hd:]
			for hh := 0; hh < heads; hh++ {
				rope(q[t][hh*hd:(hh+1)*hd], t, base)
			}
			for g := 0; g < groups; g++ {
				rope(k[t][g*hd:(g+1)*hd], t, base)
			}
		}
		scale := 1 / math.Sqrt(float64(hd))
		for t := 0; t < n; t++ {
			ctx := make([]float32, h)
			scores := make([]float64, t+1)
			for hh := 0; hh < heads; hh++ {
				g := hh / per
				qh := q[t][hh*hd : (hh+1)*hd]
				maxS := math.Inf(-1)
				for s := 0; s <= t; s++ {
					kh := k[s][g*hd : (g+1)*hd]
					var d float64
					for i := range qh {
						d += float64(qh[i]) * float64(kh[i])
					}
					scores[s] = d * scale
					maxS = math.Max(maxS, scores[s])
				}
				var sum float64
				for s := 0; s <= t; s++ {
					scores[s] = math.Exp(scores[s] - maxS)
					sum += scores[s]
				}
				for i := 0; i < hd; i++ {
					var acc float64
					for s := 0; s <= t; s++ {
						acc += scores[s] * float64(v[s][g*hd+i])
					}
					ctx[hh*hd+i] = float32(acc / sum)
				}
			}
			attn := linear(l.dense, nil, ctx, h)
			for i := range x[t] {
				x[t][i] += attn[i]
			}
		}
		for t := 0; t < n; t++ {
			y := rmsNorm(x[t], l.postNorm, c.LayerNormEpsilon)
			u := linear(l.up, nil, y, 2*ffn)
			act := make([]float32, ffn)
			for i := 0; i < ffn; i++ {
				g := float64(u[i])
				act[i] = float32(g / (1 + math.Exp(-g)) * float64(u[ffn+i]))
			}
			d := linear(l.down, nil, act, h)
			for i := range x[t] {
				x[t][i] += d[i]
			}
		}
	}
	out := make([][]float32, n)
	for t := 0; t < n; t++ {
		y := rmsNorm(x[t], m.final, c.LayerNormEpsilon)
		out[t] = linear(m.output, nil, y, c.PaddedVocabSize)
	}
	return out, nil
}
