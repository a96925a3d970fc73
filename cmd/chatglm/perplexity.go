package main

import (
	"fmt"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/chatglm/chatglm/binding"
	"github.com/chatglm/chatglm/engine"
	"github.com/chatglm/chatglm/internal/config"
	"github.com/chatglm/chatglm/internal/measure/perplexity"
)

func init() { register(newPerplexityCmd) }

// Config keys of the perplexity command (the model keys come from
// declareModelKeys).
const (
	pplFile      = "perplexity.file"
	pplTokens    = "perplexity.tokens_file"
	pplLogitsOut = "perplexity.logits_out"
	pplBatch     = "perplexity.batch_size"
)

const perplexityLong = `Compute the perplexity of a model over a text or a list of token ids.

Input: -f text.txt is tokenized with the model's own tokenizer (the model's
BOS rule applies: none for ChatGLM3; special-token text such as "<|user|>"
is NOT parsed, it stays plain text). --tokens-file ids.txt gives the token
ids directly, separated by spaces, commas or newlines.

Method: the tokens are cut into consecutive, non-overlapping windows of
--ctx-size tokens (default: the model's training context); each window is evaluated from an empty KV cache at
positions 0..n-1 with the logits of every position kept. Every position
t = 0..N-2 is scored: the logits after token t predict token t+1 (the last
row of a window predicts the first token of the next window). The result is
exp(mean negative log-likelihood) over those N-1 predictions, so a text that
fits in one window gets the plain full-sequence perplexity. (llama.cpp's
llama-perplexity scores only the second half of each window, so its numbers
differ.)

--logits-out F writes every position's logits as raw little-endian float32,
N rows of n_vocab values, row t = the logits after token t.

For an exact comparison with a reference implementation use
--flash-attn off --cache-type-k f32 --cache-type-v f32 on an f32 GGUF.`

// newPerplexityCmd builds `chatglm perplexity`.
func newPerplexityCmd(cfg *config.Store) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "perplexity -m model.gguf (-f text.txt | --tokens-file ids.txt)",
		Short: "Compute perplexity over a text or token ids; optionally dump every position's logits",
		Long:  perplexityLong,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runPerplexity(cmd, cfg)
		},
	}
	declareModelKeys(cfg, cmd)
	cfg.Declare(cmd.Flags(),
		config.Key{Name: pplFile, Flag: "file", Short: "f", Default: "", Usage: "text file to tokenize and score"},
		config.Key{Name: pplTokens, Flag: "tokens-file", Default: "", Usage: "file of token ids (spaces, commas or newlines between them)"},
		config.Key{Name: pplLogitsOut, Flag: "logits-out", Default: "", Usage: "write every position's logits here (raw little-endian float32, n_tokens x n_vocab)"},
		config.Key{Name: pplBatch, Flag: "batch-size", Short: "b", Default: 512, Usage: "tokens per decode call"},
	)
	return cmd
}

func runPerplexity(cmd *cobra.Command, cfg *config.Store) error {
	ctx := cmd.Context()
	modelPath, err := resolveModel(cfg)
	if err != nil {
		return fmt.Errorf("perplexity: %w", err)
	}
	textFile, idsFile := cfg.String(pplFile), cfg.String(pplTokens)
	if (textFile == "") == (idsFile == "") {
		return fmt.Errorf("perplexity: give exactly one of -f/--file and --tokens-file")
	}
	fa, err := binding.ParseFlashAttn(cfg.String(keyFlashAttn))
	if err != nil {
		return fmt.Errorf("perplexity: %w", err)
	}
	typeK, typeV := cfg.String(keyCacheTypeK), cfg.String(keyCacheTypeV)
	for _, t := range []string{typeK, typeV} {
		if err := binding.CheckCacheType(t); err != nil {
			return fmt.Errorf("perplexity: %w", err)
		}
	}
	window := cfg.Int(keyCtxSize)
	if window < 0 || cfg.Int(pplBatch) < 0 {
		return fmt.Errorf("perplexity: --ctx-size and --batch-size must not be negative")
	}

	setting, err := mmapSetting(cfg)
	if err != nil {
		return fmt.Errorf("perplexity: %w", err)
	}
	mapped, _, err := engine.ResolveMmap(setting, modelPath, cfg.Int(keyGPULayers), binding.HasGPU())
	if err != nil {
		return fmt.Errorf("perplexity: %w", err)
	}
	m, err := binding.LoadModel(ctx, modelPath, binding.ModelParams{GPULayers: cfg.Int(keyGPULayers), NoMmap: !mapped})
	if err != nil {
		return fmt.Errorf("perplexity: %w", err)
	}
	defer m.Close()

	var tokens []int32
	if textFile != "" {
		text, err := os.ReadFile(textFile)
		if err != nil {
			return fmt.Errorf("perplexity: %w", err)
		}
		if tokens, err = m.Tokenize(string(text), true, false); err != nil {
			return fmt.Errorf("perplexity: tokenize %s: %w", textFile, err)
		}
	} else {
		data, err := os.ReadFile(idsFile)
		if err != nil {
			return fmt.Errorf("perplexity: %w", err)
		}
		if tokens, err = perplexity.ParseTokens(string(data)); err != nil {
			return fmt.Errorf("perplexity: %s: %w", idsFile, err)
		}
	}
	if len(tokens) < 2 {
		return fmt.Errorf("perplexity: the input has %d token(s); need at least 2", len(tokens))
	}
	if window == 0 {
		window = m.ContextLength()
	}
	window = min(window, len(tokens))
	batch := cfg.Int(pplBatch)
	if batch == 0 || batch > window {
		batch = window
	}
	lc, err := m.NewContext(binding.ContextParams{
		NCtx: window, NBatch: batch, NUBatch: batch, Threads: cfg.Int(keyThreads),
		FlashAttn: fa, TypeK: typeK, TypeV: typeV,
	})
	if err != nil {
		return fmt.Errorf("perplexity: %w", err)
	}
	defer lc.Close()

	opts := perplexity.Options{Window: window, Batch: batch}
	var logitsFile *os.File
	if p := cfg.String(pplLogitsOut); p != "" {
		if logitsFile, err = os.Create(p); err != nil {
			return fmt.Errorf("perplexity: %w", err)
		}
		defer logitsFile.Close()
		opts.Logits = logitsFile
	}
	bar := progressbar.NewOptions(len(tokens),
		progressbar.OptionSetWriter(cmd.ErrOrStderr()),
		progressbar.OptionSetDescription("evaluating tokens"),
		progressbar.OptionShowCount(),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(200*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
	opts.Progress = func(done, total int) { _ = bar.Set(done) }
	start := time.Now()
	res, err := perplexity.Compute(ctx, lc, tokens, opts)
	_ = bar.Finish()
	if err != nil {
		if logitsFile != nil {
			logitsFile.Close()
			os.Remove(logitsFile.Name())
		}
		return err
	}
	if logitsFile != nil {
		if err := logitsFile.Close(); err != nil {
			return fmt.Errorf("perplexity: %w", err)
		}
	}
	elapsed := time.Since(start)
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "tokens: %d, scored: %d, windows: %d of %d tokens\n", res.Tokens, res.Scored, res.Windows, res.Window)
	fmt.Fprintf(out, "mean NLL: %.6f nats (%.1f tokens/s)\n", res.MeanNLL(), float64(res.Tokens)/elapsed.Seconds())
	fmt.Fprintf(out, "perplexity: %.4f\n", res.Perplexity)
	return nil
}
