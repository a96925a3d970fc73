// Package perplexity measures how well a model predicts a token sequence
// and can dump the logits it produced at every position.
//
// Method. The tokens are cut into consecutive, non-overlapping windows of
// Window tokens (the last one may be shorter). Each window is evaluated
// from an empty KV cache at positions 0..len-1, with the logits of every
// position kept, so row t of the logits is the model's prediction after
// tokens [start of t's window .. t]. Every position t = 0..N-2 is scored:
// its logits predict token t+1, including the last row of a window, whose
// target is the first token of the next window. The perplexity is
//
//	exp( (1/(N-1)) * sum_{t=0}^{N-2} -log softmax(logits[t])[tokens[t+1]] )
//
// so a sequence that fits in one window gets the textbook full-sequence
// perplexity. (llama.cpp's llama-perplexity instead scores only the second
// half of each window; numbers from the two tools differ for that reason.)
package perplexity

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/chatglm/chatglm/binding"
)

// Options control Compute.
type Options struct {
	// Window is the number of tokens evaluated together from an empty KV
	// cache; 0 means the context's per-sequence size.
	Window int
	// Batch is the most tokens per Decode call; 0 means the context's
	// batch size.
	Batch int
	// Logits, if set, receives every position's logits as raw
	// little-endian float32, n_tokens rows of n_vocab values, row t being
	// the logits after token t.
	Logits io.Writer
	// Progress, if set, is called after each decode with the number of
	// tokens evaluated so far and the total.
	Progress func(done, total int)
}

// Result is the outcome of Compute.
type Result struct {
	Tokens     int     // tokens evaluated
	Scored     int     // predictions scored (Tokens-1)
	Windows    int     // windows evaluated
	Window     int     // window size used
	NLL        float64 // sum of the negative log-likelihoods, in nats
	Perplexity float64 // exp(NLL/Scored)
}

// MeanNLL is the average negative log-likelihood per scored token.
func (r Result) MeanNLL() float64 {
	if r.Scored == 0 {
		return 0
	}
	return r.NLL / float64(r.Scored)
}

// Compute evaluates tokens with the context (sequence 0; the context's KV
// memory is cleared first and after every window) and returns the
// perplexity; see the package comment for the exact method.
func Compute(ctx context.Context, lc *binding.Context, tokens []int32, o Options) (Result, error) {
	if len(tokens) < 2 {
		return Result{}, fmt.Errorf("perplexity: need at least 2 tokens, got %d", len(tokens))
	}
	m := lc.Model()
	nVocab := m.VocabSize()
	for i, t := range tokens {
		if !m.ValidToken(t) {
			return Result{}, fmt.Errorf("perplexity: token %d at index %d out of range [0, %d)", t, i, nVocab)
		}
	}
	window := o.Window
	if window <= 0 {
		window = lc.SeqSize()
	}
	if window > lc.SeqSize() {
		return Result{}, fmt.Errorf("perplexity: window of %d tokens exceeds the context's %d", window, lc.SeqSize())
	}
	batch := o.Batch
	if batch <= 0 || batch > lc.BatchSize() {
		batch = lc.BatchSize()
	}
	batch = min(batch, window)
	b, err := binding.NewBatch(batch, 1)
	if err != nil {
		return Result{}, fmt.Errorf("perplexity: %w", err)
	}
	defer b.Close()

	var out *bufio.Writer
	if o.Logits != nil {
		out = bufio.NewWriterSize(o.Logits, 1<<20)
	}
	row := make([]float32, nVocab)
	enc := make([]byte, 4*nVocab)
	res := Result{Tokens: len(tokens), Window: window}
	seq := []int{0}
	for start := 0; start < len(tokens); start += window {
		end := min(start+window, len(tokens))
		lc.ClearMemory(false)
		res.Windows++
		for c := start; c < end; c += batch {
			ce := min(c+batch, end)
			b.Clear()
			for i := c; i < ce; i++ {
				if _, err := b.Add(tokens[i], i-start, seq, true); err != nil {
					return res, fmt.Errorf("perplexity: %w", err)
				}
			}
			if err := lc.Decode(ctx, b); err != nil {
				return res, fmt.Errorf("perplexity: decode tokens %d..%d: %w", c, ce-1, err)
			}
			for i := c; i < ce; i++ {
				if err := lc.LogitsInto(i-c, row); err != nil {
					return res, fmt.Errorf("perplexity: token %d: %w", i, err)
				}
				if out != nil {
					for k, v := range row {
						binary.LittleEndian.PutUint32(enc[4*k:], math.Float32bits(v))
					}
					if _, err := out.Write(enc); err != nil {
						return res, fmt.Errorf("perplexity: write logits: %w", err)
					}
				}
				if i+1 < len(tokens) {
					nll := NLL(row, tokens[i+1])
					if math.IsNaN(nll) || math.IsInf(nll, 0) {
						return res, fmt.Errorf("perplexity: non-finite log-likelihood at token %d", i)
					}
					res.NLL += nll
					res.Scored++
				}
			}
			if o.Progress != nil {
				o.Progress(ce, len(tokens))
			}
		}
	}
	lc.ClearMemory(false)
	if out != nil {
		if err := out.Flush(); err != nil {
			return res, fmt.Errorf("perplexity: write logits: %w", err)
		}
	}
	res.Perplexity = math.Exp(res.NLL / float64(res.Scored))
	return res, nil
}

// NLL is -log softmax(logits)[target], computed in float64 with the
// maximum subtracted first.
func NLL(logits []float32, target int32) float64 {
	mx := math.Inf(-1)
	for _, v := range logits {
		mx = max(mx, float64(v))
	}
	var sum float64
	for _, v := range logits {
		sum += math.Exp(float64(v) - mx)
	}
	return math.Log(sum) + mx - float64(logits[target])
}

// ParseTokens reads token ids separated by spaces, tabs, commas or
// newlines (an optional surrounding pair of brackets is accepted, so a
// JSON or Python list works too).
func ParseTokens(s string) ([]int32, error) {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "[")
	s = strings.TrimSuffix(s, "]")
	fields := strings.FieldsFunc(s, func(r rune) bool {
		return r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == ','
	})
	if len(fields) == 0 {
		return nil, errors.New("no token ids")
	}
	out := make([]int32, 0, len(fields))
	for i, f := range fields {
		v, err := strconv.ParseInt(f, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("token %d: %q is not an integer id", i, f)
		}
		if v < 0 {
			return nil, fmt.Errorf("token %d: negative id %d", i, v)
		}
		out = append(out, int32(v))
	}
	return out, nil
}
