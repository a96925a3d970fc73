package perplexity

import (
	"bytes"
	"context"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"

	"github.com/chatglm/chatglm/binding"
	"github.com/chatglm/chatglm/internal/fixture/testmodel"
)

var (
	modelOnce sync.Once
	modelPath string
	modelErr  error
)

// tinyModel writes one tiny model per test binary.
func tinyModel(t *testing.T) *binding.Model {
	t.Helper()
	modelOnce.Do(func() {
		dir, err := tempDir()
		if err != nil {
			modelErr = err
			return
		}
		modelPath = filepath.Join(dir, "tiny.gguf")
		_, modelErr = testmodel.WriteToyGGUF(modelPath, testmodel.ToyConfig{Layers: 2})
	})
	if modelErr != nil {
		t.Fatal(modelErr)
	}
	m, err := binding.LoadModel(context.Background(), modelPath, binding.ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func newCtx(t *testing.T, m *binding.Model, nctx, nbatch int) *binding.Context {
	t.Helper()
	// f32 KV and no flash attention keep the numbers of different batch
	// splits as close as the arithmetic allows.
	lc, err := m.NewContext(binding.ContextParams{NCtx: nctx, NBatch: nbatch, NUBatch: nbatch, Threads: 1, TypeK: "f32", TypeV: "f32", FlashAttn: binding.FlashAttnOff})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lc.Close() })
	return lc
}

// testTokens is a deterministic pseudo-random token sequence.
func testTokens(n, vocab int) []int32 {
	out := make([]int32, n)
	x := uint32(12345)
	for i := range out {
		x = x*1664525 + 1013904223
		out[i] = int32(x>>8) % int32(vocab)
	}
	return out
}

// directLogits evaluates each window of tokens with one decode holding
// every position and returns all rows, computed without the package.
func directLogits(t *testing.T, lc *binding.Context, tokens []int32, window int) [][]float32 {
	t.Helper()
	var rows [][]float32
	for s := 0; s < len(tokens); s += window {
		e := min(s+window, len(tokens))
		lc.ClearMemory(false)
		b, err := binding.NewBatch(e-s, 1)
		if err != nil {
			t.Fatal(err)
		}
		for i := s; i < e; i++ {
			if _, err := b.Add(tokens[i], i-s, []int{0}, true); err != nil {
				t.Fatal(err)
			}
		}
		if err := lc.Decode(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		for i := s; i < e; i++ {
			r, err := lc.Logits(i - s)
			if err != nil {
				t.Fatal(err)
			}
			rows = append(rows, r)
		}
		b.Close()
	}
	lc.ClearMemory(false)
	return rows
}

// naivePPL is the textbook formula over all rows but the last.
func naivePPL(rows [][]float32, tokens []int32) float64 {
	var sum float64
	for t := 0; t+1 < len(tokens); t++ {
		var z float64
		for _, v := range rows[t] {
			z += math.Exp(float64(v))
		}
		p := math.Exp(float64(rows[t][tokens[t+1]])) / z
		sum -= math.Log(p)
	}
	return math.Exp(sum / float64(len(tokens)-1))
}

func TestMatchesDirectComputation(t *testing.T) {
	m := tinyModel(t)
	tokens := testTokens(100, m.VocabSize())
	for _, c := range []struct {
		name          string
		window, batch int
	}{
		{"one window", 128, 128},
		{"one window, small batches", 128, 32},
		{"windows of 40", 40, 40},
		{"windows of 40, batches of 16", 40, 16},
	} {
		t.Run(c.name, func(t *testing.T) {
			lc := newCtx(t, m, 128, 128)
			rows := directLogits(t, lc, tokens, c.window)
			want := naivePPL(rows, tokens)

			var dump bytes.Buffer
			res, err := Compute(context.Background(), lc, tokens, Options{Window: c.window, Batch: c.batch, Logits: &dump})
			if err != nil {
				t.Fatal(err)
			}
			if res.Tokens != 100 || res.Scored != 99 || res.Windows != (100+c.window-1)/c.window {
				t.Fatalf("counts %+v", res)
			}
			if math.Abs(res.Perplexity-want)/want > 1e-5 {
				t.Fatalf("perplexity %v, direct %v", res.Perplexity, want)
			}
			if math.Abs(math.Exp(res.MeanNLL())-res.Perplexity) > 1e-9*res.Perplexity {
				t.Fatalf("MeanNLL inconsistent: %+v", res)
			}
			nv := m.VocabSize()
			if dump.Len() != 4*nv*len(tokens) {
				t.Fatalf("dump has %d bytes, want %d", dump.Len(), 4*nv*len(tokens))
			}
			raw := dump.Bytes()
			var maxDiff float64
			for r := range tokens {
				for k := 0; k < nv; k++ {
					v := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*(r*nv+k):]))
					maxDiff = max(maxDiff, math.Abs(float64(v-rows[r][k])))
				}
			}
			// Same batch split: identical; other splits: float rounding only.
			limit := 0.0
			if c.batch != c.window && c.batch < 100 {
				limit = 1e-4
			}
			if maxDiff > limit {
				t.Fatalf("dumped logits differ from direct ones by %g", maxDiff)
			}
		})
	}
}

func TestWindowTooLarge(t *testing.T) {
	m := tinyModel(t)
	lc := newCtx(t, m, 256, 64)
	if _, err := Compute(context.Background(), lc, testTokens(10, m.VocabSize()), Options{Window: 100000}); err == nil {
		t.Fatal("window larger than the context accepted")
	}
	if _, err := Compute(context.Background(), lc, []int32{5}, Options{}); err == nil {
		t.Fatal("one token accepted")
	}
	if _, err := Compute(context.Background(), lc, []int32{5, int32(m.VocabSize())}, Options{}); err == nil {
		t.Fatal("out-of-range token accepted")
	}
}

func TestCancel(t *testing.T) {
	m := tinyModel(t)
	lc := newCtx(t, m, 256, 64)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Compute(ctx, lc, testTokens(50, m.VocabSize()), Options{}); err == nil {
		t.Fatal("cancelled context not reported")
	}
}

func TestNLL(t *testing.T) {
	logits := []float32{1, 2, 3, 4}
	var z float64
	for _, v := range logits {
		z += math.Exp(float64(v))
	}
	for i := range logits {
		want := -math.Log(math.Exp(float64(logits[i])) / z)
		if got := NLL(logits, int32(i)); math.Abs(got-want) > 1e-12 {
			t.Errorf("NLL(%d) = %v, want %v", i, got, want)
		}
	}
	// Shift invariance with values that would overflow a naive exp.
	big := []float32{1001, 1002, 1003, 1004}
	if got, want := NLL(big, 2), NLL(logits, 2); math.Abs(got-want) > 1e-9 {
		t.Errorf("large logits: %v, want %v", got, want)
	}
	if got := NLL([]float32{0, 0}, 1); math.Abs(got-math.Ln2) > 1e-12 {
		t.Errorf("uniform pair: %v", got)
	}
}

func TestParseTokens(t *testing.T) {
	for in, want := range map[string][]int32{
		"1 2 3":                        {1, 2, 3},
		"1,2,3\n":                      {1, 2, 3},
		"  64790, 64792\n36474 54591 ": {64790, 64792, 36474, 54591},
		"[1, 2,\n 3]":                  {1, 2, 3},
		"7\r\n8\t9":                    {7, 8, 9},
	} {
		got, err := ParseTokens(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("ParseTokens(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "  \n", "1 x 3", "1 -2", "99999999999", "1.5"} {
		if _, err := ParseTokens(bad); err == nil {
			t.Errorf("ParseTokens(%q) accepted", bad)
		}
	}
}

var sharedDir string

func tempDir() (string, error) { return sharedDir, nil }

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "perplexity-test-")
	if err != nil {
		panic(err)
	}
	sharedDir = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}
