package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/chatglm/chatglm/internal/config"
	"github.com/chatglm/chatglm/internal/measure/bench"
	"github.com/chatglm/chatglm/third_party/llamacpp"
)

func init() { register(newBenchCmd) }

// Config keys of the bench command (lists, as llama-bench's options).
const (
	keyBenchModels    = "bench.models"
	keyBenchPrompt    = "bench.n_prompt"
	keyBenchGen       = "bench.n_gen"
	keyBenchPG        = "bench.n_pg"
	keyBenchBatch     = "bench.n_batch"
	keyBenchUBatch    = "bench.n_ubatch"
	keyBenchThreads   = "bench.threads"
	keyBenchGPULayers = "bench.gpu_layers"
	keyBenchFlashAttn = "bench.flash_attn"
	keyBenchTypeK     = "bench.cache_type_k"
	keyBenchTypeV     = "bench.cache_type_v"
	keyBenchMmap      = "bench.mmap"
	keyBenchReps      = "bench.repetitions"
	keyBenchNoWarmup  = "bench.no_warmup"
	keyBenchOutput    = "bench.output"
	keyBenchJSON      = "bench.json"
	keyBenchMemBW     = "bench.mem_bw"
	keyBenchHugePages = "bench.hugepages"
)

const benchLong = `Measure prompt processing (ppN) and generation (tgN) speed of llama.cpp
through chatglm's binding, with llama-bench's method:

  - every test gets a fresh context with n_ctx = n_prompt + n_gen;
  - a warm-up run is made first and not counted (the whole prompt for pp,
    one token for tg);
  - each repetition clears the KV cache, then times the test: pp decodes
    n_prompt random tokens in chunks of --batch-size, tg decodes n_gen single
    random tokens;
  - t/s = tokens / seconds per repetition, shown as mean ± sample stddev.

Every option takes a comma-separated list; the tests run for every
combination (e.g. -t 1,2). The model is loaded once per model and load
setting; "load s" is that load time. --json writes records with
llama-bench's field names (plus load_ns, peak_rss_bytes, bytes_per_token,
mem_bw_gbs, bw_fraction). --mem-bw also measures the memory bandwidth
of a read-only stream (STREAM-like, per thread count) and shows tg x
bytes-per-token (every weight but the embedding table) as a fraction of it.`

// newBenchCmd builds `chatglm bench`.
func newBenchCmd(cfg *config.Store) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench -m model.gguf [-p 512] [-n 128] [-t 1,2] [-r 5]",
		Short: "Benchmark prompt processing and generation speed, like llama-bench",
		Long:  benchLong,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, format, err := benchParams(cfg)
			if err != nil {
				return err
			}
			stderr := cmd.ErrOrStderr()
			p.Progress = func(msg string) { fmt.Fprintln(stderr, "bench:", msg) }
			out := cmd.OutOrStdout()
			var md *bench.Markdown
			if format == "md" {
				md = bench.NewMarkdown(out, p)
			}
			recs, err := bench.Run(cmd.Context(), p, func(r bench.Record) error {
				if md != nil {
					return md.Row(&r)
				}
				return nil
			})
			if err != nil {
				return err
			}
			if md != nil {
				return md.Footer(llamacpp.Base)
			}
			return bench.WriteJSON(out, recs)
		},
	}
	d := bench.DefaultParams()
	ints := func(v []int) []string {
		s := make([]string, len(v))
		for i, x := range v {
			s[i] = strconv.Itoa(x)
		}
		return s
	}
	cfg.Declare(cmd.Flags(),
		config.Key{Name: keyBenchModels, Flag: "model", Short: "m", Default: []string{}, Usage: "GGUF file(s) or store names to benchmark"},
		config.Key{Name: keyBenchPrompt, Flag: "n-prompt", Short: "p", Default: ints(d.NPrompt), Usage: "prompt lengths (pp tests; 0 = none)"},
		config.Key{Name: keyBenchGen, Flag: "n-gen", Short: "n", Default: ints(d.NGen), Usage: "generation lengths (tg tests; 0 = none)"},
		config.Key{Name: keyBenchPG, Flag: "pg", Default: []string{}, Usage: "combined tests as pp,tg pairs separated by ';' or given repeatedly, e.g. --pg 512,128"},
		config.Key{Name: keyBenchBatch, Flag: "batch-size", Short: "b", Default: ints(d.NBatch), Usage: "logical batch sizes"},
		config.Key{Name: keyBenchUBatch, Flag: "ubatch-size", Default: ints(d.NUBatch), Usage: "physical micro-batch sizes"},
		config.Key{Name: keyBenchThreads, Flag: "threads", Short: "t", Default: ints(d.Threads), Usage: "thread counts"},
		config.Key{Name: keyBenchGPULayers, Flag: "gpu-layers", Default: ints(d.GPULayers), Usage: "layers to offload (-1 = all, when a GPU backend is loaded)"},
		config.Key{Name: keyBenchFlashAttn, Flag: "flash-attn", Default: d.FlashAttn, Usage: "flash attention: on, off, auto"},
		config.Key{Name: keyBenchTypeK, Flag: "cache-type-k", Default: d.TypeK, Usage: "K cache types"},
		config.Key{Name: keyBenchTypeV, Flag: "cache-type-v", Default: d.TypeV, Usage: "V cache types"},
		config.Key{Name: keyBenchMmap, Flag: "mmap", Default: ints(d.Mmap), Usage: "1 = mmap the model, 0 = read it into memory"},
		config.Key{Name: keyBenchReps, Flag: "repetitions", Short: "r", Default: d.Reps, Usage: "repetitions of each test"},
		config.Key{Name: keyBenchNoWarmup, Flag: "no-warmup", Default: false, Usage: "skip the warm-up run"},
		config.Key{Name: keyBenchOutput, Flag: "output", Short: "o", Default: "md", Usage: "output format: md or json"},
		config.Key{Name: keyBenchJSON, Flag: "json", Default: false, Usage: "same as -o json"},
		config.Key{Name: keyBenchMemBW, Flag: "mem-bw", Default: false, Usage: "measure memory bandwidth and show tg as a fraction of it"},
		config.Key{Name: keyBenchHugePages, Flag: "hugepages", Default: false,
			Usage: "back the weights held in memory and the KV cache with transparent huge pages"},
	)
	declareStoreKey(cfg, cmd)
	return cmd
}

// benchParams reads the flags into bench.Params and the output format.
func benchParams(cfg *config.Store) (bench.Params, string, error) {
	p := bench.DefaultParams()
	var err error
	for _, m := range cfg.Strings(keyBenchModels) {
		path, rerr := resolveModelIn(m, cfg.String(keyModelsDir))
		if rerr != nil {
			return p, "", fmt.Errorf("bench: %w", rerr)
		}
		p.Models = append(p.Models, path)
	}
	if len(p.Models) == 0 {
		return p, "", fmt.Errorf("bench: no model (give -m FILE.gguf)")
	}
	for _, f := range []struct {
		key string
		dst *[]int
	}{
		{keyBenchPrompt, &p.NPrompt}, {keyBenchGen, &p.NGen}, {keyBenchBatch, &p.NBatch},
		{keyBenchUBatch, &p.NUBatch}, {keyBenchThreads, &p.Threads}, {keyBenchGPULayers, &p.GPULayers},
		{keyBenchMmap, &p.Mmap},
	} {
		if *f.dst, err = parseIntList(cfg.Strings(f.key)); err != nil {
			return p, "", fmt.Errorf("bench: --%s: %w", strings.ReplaceAll(strings.TrimPrefix(f.key, "bench."), "_", "-"), err)
		}
	}
	if p.PG, err = parsePG(cfg.Strings(keyBenchPG)); err != nil {
		return p, "", fmt.Errorf("bench: --pg: %w", err)
	}
	p.FlashAttn = cfg.Strings(keyBenchFlashAttn)
	p.TypeK = cfg.Strings(keyBenchTypeK)
	p.TypeV = cfg.Strings(keyBenchTypeV)
	p.Reps = cfg.Int(keyBenchReps)
	p.NoWarmup = cfg.Bool(keyBenchNoWarmup)
	p.MemBW = cfg.Bool(keyBenchMemBW)
	p.HugePages = cfg.Bool(keyBenchHugePages)
	format := strings.ToLower(cfg.String(keyBenchOutput))
	if cfg.Bool(keyBenchJSON) {
		format = "json"
	}
	if format != "md" && format != "json" {
		return p, "", fmt.Errorf("bench: --output %q: want md or json", format)
	}
	if err := p.Validate(); err != nil {
		return p, "", err
	}
	return p, format, nil
}

// parseIntList reads a list of integers (each element may itself hold
// commas, as config files and environment variables give one string).
func parseIntList(v []string) ([]int, error) {
	var out []int
	for _, s := range v {
		for _, f := range strings.Split(s, ",") {
			f = strings.TrimSpace(f)
			if f == "" {
				continue
			}
			n, err := strconv.Atoi(f)
			if err != nil {
				return nil, fmt.Errorf("%q is not an integer", f)
			}
			out = append(out, n)
		}
	}
	return out, nil
}

// parsePG reads "pp,tg" pairs; the flag splits on commas, so the values
// arrive as alternating numbers or as "pp,tg" strings.
func parsePG(v []string) ([][2]int, error) {
	var nums []int
	for _, s := range v {
		for _, part := range strings.Split(s, ";") {
			ns, err := parseIntList([]string{part})
			if err != nil {
				return nil, err
			}
			nums = append(nums, ns...)
		}
	}
	if len(nums)%2 != 0 {
		return nil, fmt.Errorf("want pairs of prompt,generation lengths, got %d numbers", len(nums))
	}
	var out [][2]int
	for i := 0; i < len(nums); i += 2 {
		if nums[i] < 0 || nums[i+1] < 0 {
			return nil, fmt.Errorf("negative length in %d,%d", nums[i], nums[i+1])
		}
		out = append(out, [2]int{nums[i], nums[i+1]})
	}
	return out, nil
}
