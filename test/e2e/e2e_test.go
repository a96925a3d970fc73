// Package e2e_test proves the converter through llama.cpp: tiny random
// ChatGLM3 checkpoints are converted to GGUF, run through the binding, and
// every position's logits are compared with internal/fixture/reference, an
// independent Go forward pass over the HuggingFace checkpoint. It also
// checks that the GGUF's tokenizer matches SentencePiece on a table of
// strings whose ids were produced by python3-sentencepiece.
package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/chatglm/chatglm/binding"
	"github.com/chatglm/chatglm/convert"
	"github.com/chatglm/chatglm/internal/fixture/reference"
	"github.com/chatglm/chatglm/internal/fixture/testmodel"
)

// sequence is a 48-token input: a ChatGLM3 prompt prefix, then ids from
// every region of the vocabulary (bytes, common pieces, rare pieces).
func sequence() []int32 {
	seq := []int32{64790, 64792, 64795, 30910, 13, 36474, 54591, 64796, 30910, 13}
	rng := rand.New(rand.NewSource(42))
	for len(seq) < 48 {
		switch len(seq) % 3 {
		case 0:
			seq = append(seq, int32(3+rng.Intn(256)))
		case 1:
			seq = append(seq, int32(259+rng.Intn(30000)))
		default:
			seq = append(seq, int32(30000+rng.Intn(34789)))
		}
	}
	return seq
}

// run converts the checkpoint to typ and returns the logits of every
// position computed by llama.cpp.
func run(t *testing.T, dir, typ string, cp binding.ContextParams, toks []int32) [][]float32 {
	t.Helper()
	out := filepath.Join(t.TempDir(), "m-"+typ+".gguf")
	if _, err := convert.Convert(context.Background(), convert.Options{Input: dir, Output: out, Type: typ}); err != nil {
		t.Fatal(err)
	}
	m, err := binding.LoadModel(context.Background(), out, binding.ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cp.NCtx, cp.NBatch, cp.NUBatch, cp.Threads = 128, 64, 64, 2
	c, err := m.NewContext(cp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, err := binding.NewBatch(len(toks), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for i, tok := range toks {
		if _, err := b.Add(tok, i, []int{0}, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Decode(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	logits := make([][]float32, len(toks))
	for i := range toks {
		if logits[i], err = c.Logits(i); err != nil {
			t.Fatal(err)
		}
	}
	return logits
}

type stats struct {
	maxDiff   float64
	pplRef    float64
	pplGot    float64
	top1Agree int // positions with equal argmax
	confident int // positions where the reference's top-1 margin > 0.5
	confAgree int // ... of those, with equal argmax
	positions int
}

func logSoftmax(v []float32, i int32) float64 {
	mx := math.Inf(-1)
	for _, x := range v {
		mx = math.Max(mx, float64(x))
	}
	var s float64
	for _, x := range v {
		s += math.Exp(float64(x) - mx)
	}
	return float64(v[i]) - mx - math.Log(s)
}

func top2(v []float32) (int, float64) {
	best, second := -1, -1
	for i, x := range v {
		if best < 0 || x > v[best] {
			best, second = i, best
		} else if second < 0 || x > v[second] {
			second = i
		}
	}
	return best, float64(v[best] - v[second])
}

func compare(ref, got [][]float32, toks []int32) stats {
	var s stats
	var nllRef, nllGot float64
	for p := range ref {
		for i := range ref[p] {
			s.maxDiff = math.Max(s.maxDiff, math.Abs(float64(ref[p][i]-got[p][i])))
		}
		rb, margin := top2(ref[p])
		gb, _ := top2(got[p])
		if rb == gb {
			s.top1Agree++
		}
		if margin > 0.5 {
			s.confident++
			if rb == gb {
				s.confAgree++
			}
		}
		if p+1 < len(toks) {
			nllRef -= logSoftmax(ref[p], toks[p+1])
			nllGot -= logSoftmax(got[p], toks[p+1])
		}
		s.positions++
	}
	n := float64(len(toks) - 1)
	s.pplRef, s.pplGot = math.Exp(nllRef/n), math.Exp(nllGot/n)
	return s
}

func (s stats) String() string {
	return fmt.Sprintf("max|dlogit| %.3g, ppl ref %.6g got %.6g (%.4f%%), top-1 %d/%d, confident top-1 %d/%d",
		s.maxDiff, s.pplRef, s.pplGot, 100*(s.pplGot/s.pplRef-1), s.top1Agree, s.positions, s.confAgree, s.confident)
}

// The checkpoints: several shapes, rope_ratio != 1, large RMS epsilons so
// a wrong epsilon shows, safetensors and .bin, bf16, f16 and f32 sources.
var specs = []struct {
	name string
	spec testmodel.Spec
}{
	{"safetensors-bf16-h64-mqa2-rope50-eps1e-2", testmodel.Spec{Layers: 2, Hidden: 64, Heads: 4, KVGroups: 2, FFN: 96, RopeRatio: 50, Eps: 1e-2, Format: testmodel.Safetensors, DType: "BF16", Seed: 7}},
	{"bin-f32-h96-mqa1-rope2.5-eps5e-2", testmodel.Spec{Layers: 3, Hidden: 96, Heads: 6, KVGroups: 1, FFN: 160, RopeRatio: 2.5, Eps: 5e-2, Format: testmodel.Bin, DType: "F32", Seed: 11}},
	{"sharded-safetensors-f32-h128-mha-eps1e-5", testmodel.Spec{Layers: 2, Hidden: 128, Heads: 4, KVGroups: 4, FFN: 200, Eps: 1e-5, Format: testmodel.SafetensorsSharded, DType: "F32", Shards: 3, Seed: 3}},
	{"sharded-bin-bf16-h64-heads2-rope500-eps1e-1", testmodel.Spec{Layers: 1, Hidden: 64, Heads: 2, KVGroups: 1, FFN: 64, RopeRatio: 500, Eps: 1e-1, Format: testmodel.BinSharded, DType: "BF16", Shards: 2, Seed: 5}},
}

func TestLogitsMatchReference(t *testing.T) {
	toks := sequence()
	for _, sc := range specs {
		t.Run(sc.name, func(t *testing.T) {
			dir := testmodel.Write(t, sc.spec)
			ref, err := reference.Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			want, err := ref.Forward(toks)
			if err != nil {
				t.Fatal(err)
			}

			// Exact path: f32 weights, f32 KV cache, no flash attention.
			got := run(t, dir, "f32", binding.ContextParams{FlashAttn: binding.FlashAttnOff, TypeK: "f32", TypeV: "f32"}, toks)
			s := compare(want, got, toks)
			t.Logf("f32 GGUF, f32 KV, FA off: %v", s)
			if s.maxDiff > 1e-3 {
				t.Errorf("f32: max |dlogit| %g > 1e-3", s.maxDiff)
			}

			// Default path: f16 weights, default cache and attention.
			got = run(t, dir, "f16", binding.ContextParams{}, toks)
			s = compare(want, got, toks)
			t.Logf("f16 GGUF, defaults: %v", s)
			if s.maxDiff > 0.1 {
				t.Errorf("f16: max |dlogit| %g > 0.1", s.maxDiff)
			}
			if d := math.Abs(s.pplGot/s.pplRef - 1); d > 0.005 {
				t.Errorf("f16: perplexity %g vs reference %g (%.3f%% > 0.5%%)", s.pplGot, s.pplRef, 100*d)
			}
			if s.confAgree != s.confident {
				t.Errorf("f16: top-1 differs at %d of %d positions with a reference margin > 0.5", s.confident-s.confAgree, s.confident)
			}
			if s.confident == 0 {
				t.Errorf("no position has a top-1 margin > 0.5: the check is vacuous")
			}
		})
	}
}

// A wrong epsilon, rope base or head split would show; this guards the
// comparison itself: a model with a different epsilon must not pass.
func TestReferenceDetectsWrongEpsilon(t *testing.T) {
	toks := sequence()[:16]
	spec := specs[0].spec
	dir := testmodel.Write(t, spec)
	spec.Eps = 1e-5
	other := testmodel.Write(t, spec)
	ref, err := reference.Load(other) // same weights, eps 1e-5 instead of 1e-2
	if err != nil {
		t.Fatal(err)
	}
	want, _ := ref.Forward(toks)
	got := run(t, dir, "f32", binding.ContextParams{FlashAttn: binding.FlashAttnOff, TypeK: "f32", TypeV: "f32"}, toks)
	if s := compare(want, got, toks); s.maxDiff < 1e-2 {
		t.Errorf("epsilon 1e-2 vs 1e-5 gives max |dlogit| %g: the comparison cannot see eps", s.maxDiff)
	}
}

// llamaDivergence lists the golden strings that llama.cpp's SPM tokenizer
// (at the pinned commit) encodes differently from SentencePiece, with the
// ids llama.cpp gives. The cause is in llama.cpp, not in the GGUF: its SPM
// merge loop accepts any vocabulary entry whose text equals the merged
// symbols, including CONTROL tokens, and ranks merges by score. ChatGLM3's
// control tokens "sop" (64792) and "eop" (64793) have score 0, above every
// real piece (scores are negative), so where SentencePiece stops at
// "s"+"op" (30917 404) or "e"+"op" (30911 404), llama.cpp merges into the
// control token, even with parse_special=false. It only happens when "sop"
// or "eop" is not absorbed by a longer or earlier merge (after punctuation
// or a digit, or "hopeop"); "sop" alone, "Aesop" and "isopropyl" agree.
// llama.cpp's upstream converter writes the same vocabulary, so its GGUFs
// behave the same. Callers that must be exact (the chat prompt builder)
// should encode user text with a SentencePiece implementation.
var llamaDivergence = map[string][]int32{
	"text containing <|user|> and <|assistant|> and [gMASK]sop tokens": {2254, 8156, 906, 31007, 4865, 31007, 30994, 293, 906, 31007, 530, 18971, 31007, 30994, 293, 790, 30927, 30944, 2080, 30984, 30996, 64792, 24690},
	"Europe, hopeop": {2015, 30932, 3800, 64793},
	"x]sop y]eop":    {1994, 30996, 64792, 324, 30996, 64793},
	"(sop)":          {359, 64792, 30945},
	"1sop 2eop":      {30910, 30939, 64792, 30910, 30943, 64793},
}

type golden struct {
	Cases []struct {
		Text string  `json:"text"`
		IDs  []int32 `json:"ids"`
	} `json:"cases"`
}

func TestTokenizerMatchesSentencePiece(t *testing.T) {
	raw, err := os.ReadFile("testdata/tokenizer_golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var g golden
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatal(err)
	}
	dir := testmodel.Write(t, testmodel.Spec{Layers: 1, Hidden: 32, Heads: 2, KVGroups: 1, FFN: 32})
	out := filepath.Join(t.TempDir(), "m.gguf")
	if _, err := convert.Convert(context.Background(), convert.Options{Input: dir, Output: out}); err != nil {
		t.Fatal(err)
	}
	m, err := binding.LoadModel(context.Background(), out, binding.ModelParams{VocabOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if len(g.Cases) < 20 {
		t.Fatalf("golden has %d cases", len(g.Cases))
	}
	for _, c := range g.Cases {
		got, err := m.Tokenize(c.Text, false, false)
		if err != nil {
			t.Fatal(err)
		}
		want := c.IDs
		if want == nil {
			want = []int32{}
		}
		if slices.Equal(got, want) {
			if _, known := llamaDivergence[c.Text]; known {
				t.Errorf("tokenize %q now matches SentencePiece: drop it from llamaDivergence", c.Text)
			}
			continue
		}
		if ids, known := llamaDivergence[c.Text]; known && slices.Equal(got, ids) {
			t.Logf("known llama.cpp divergence: %q\n  llama.cpp     %v\n  SentencePiece %v", c.Text, got, want)
			continue
		}
		t.Errorf("tokenize %q:\n got  %v\n want %v (SentencePiece)", c.Text, got, want)
	}
	// Special tokens: text naming them stays text without parse_special,
	// and becomes the control ids with it.
	got, _ := m.Tokenize("[gMASK]sop<|user|>", false, true)
	if !slices.Equal(got, []int32{64790, 64792, 64795}) {
		t.Errorf("parse_special: %v", got)
	}
	if m.EOS() != 2 {
		t.Errorf("eos %d", m.EOS())
	}
}
