package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/chatglm/chatglm/binding"
	"github.com/chatglm/chatglm/chat"
	"github.com/chatglm/chatglm/chat/backend"
	"github.com/chatglm/chatglm/engine"
	"github.com/chatglm/chatglm/gen"
	"github.com/chatglm/chatglm/gguf"
	"github.com/chatglm/chatglm/hub"
	"github.com/chatglm/chatglm/internal/config"
	"github.com/chatglm/chatglm/spm"
)

// Config keys shared by the commands that load a model (chat, run, and
// serve/bench when they adopt them). Each command declares them on its own
// flags with declareModelKeys / declareSamplingKeys.
const (
	keyModel      = "model"
	keyCtxSize    = "context.size"
	keyThreads    = "threads"
	keyGPULayers  = "gpu.layers"
	keyFlashAttn  = "flash_attn"
	keyCacheTypeK = "cache.type_k"
	keyCacheTypeV = "cache.type_v"
	keyMmap       = "mmap"
	keyNoMmap     = "no_mmap"
	keyHugePages  = "hugepages"

	keyTemperature   = "sampling.temperature"
	keyTopP          = "sampling.top_p"
	keyTopK          = "sampling.top_k"
	keyMinP          = "sampling.min_p"
	keyRepeatPenalty = "sampling.repeat_penalty"
	keySeed          = "sampling.seed"
	keyMaxTokens     = "sampling.max_tokens"
)

// declareModelKeys declares the model-loading keys on cmd's flags, and the
// model store folder used to find a model by name.
func declareModelKeys(cfg *config.Store, cmd *cobra.Command) {
	cfg.Declare(cmd.Flags(),
		config.Key{Name: keyModel, Flag: "model", Short: "m", Default: "",
			Usage: "GGUF file, or a model in the local store by name (THUDM/chatglm3-6b, THUDM/chatglm3-6b@revision)"},
		config.Key{Name: keyCtxSize, Flag: "ctx-size", Short: "c", Default: 0,
			Usage: "context size in tokens (0 = the model's training context, 8192 for ChatGLM3-6B)"},
		config.Key{Name: keyThreads, Flag: "threads", Short: "t", Default: 0, Usage: "CPU threads (0 = all cores)"},
		config.Key{Name: keyGPULayers, Flag: "gpu-layers", Default: -1,
			Usage: "layers to offload to a GPU (-1 = all, when a GPU backend is loaded; 0 = CPU only)"},
		config.Key{Name: keyFlashAttn, Flag: "flash-attn", Default: "auto", Usage: "flash attention: on, off or auto"},
		config.Key{Name: keyCacheTypeK, Flag: "cache-type-k", Default: "f16", Usage: "KV cache type of K: f16, q8_0, q4_0, ..."},
		config.Key{Name: keyCacheTypeV, Flag: "cache-type-v", Default: "f16", Usage: "KV cache type of V (quantized V needs flash attention)"},
		config.Key{Name: keyMmap, Flag: "mmap", Default: string(engine.MmapAuto),
			Usage: "map the model file (on), read it into memory (off), or auto: read it when the CPU repacks its weights (q4_0 and friends), which a mapped file would hold twice"},
		config.Key{Name: keyNoMmap, Flag: "no-mmap", Default: false,
			Usage: "the same as --mmap off"},
		config.Key{Name: keyHugePages, Flag: "hugepages", Default: false,
			Usage: "back the weights held in memory and the KV cache with transparent huge pages (CPU generation ~10% faster, loading slower)"},
	)
	declareStoreKey(cfg, cmd)
}

// recipeTemperature is the temperature of the recipe chatglm reproduces
// (model.chat(..., temperature=0.7)); ChatGLM3's own chat() default is 0.8.
const recipeTemperature = 0.7

// declareSamplingKeys declares the sampling keys. chat, run and serve share
// one rule: temperature 0.7 from the recipe, everything else ChatGLM3's
// chat() (top_p 0.8) and the HF transformers defaults under it (top_k 50,
// no repetition penalty); an API request's own fields override them.
func declareSamplingKeys(cfg *config.Store, cmd *cobra.Command) {
	def := chat.DefaultSampling()
	def.Temperature = recipeTemperature
	cfg.Declare(cmd.Flags(),
		config.Key{Name: keyTemperature, Flag: "temperature", Default: decimal(def.Temperature), Usage: "sampling temperature (0 = greedy, deterministic)"},
		config.Key{Name: keyTopP, Flag: "top-p", Default: decimal(def.TopP), Usage: "nucleus sampling: keep the smallest set of tokens with this probability (1 = off)"},
		config.Key{Name: keyTopK, Flag: "top-k", Default: def.TopK, Usage: "keep the k most likely tokens (0 = off)"},
		config.Key{Name: keyMinP, Flag: "min-p", Default: decimal(def.MinP), Usage: "drop tokens below min-p x the top probability (0 = off)"},
		config.Key{Name: keyRepeatPenalty, Flag: "repeat-penalty", Default: decimal(def.RepeatPenalty), Usage: "penalty for repeating recent tokens (1 = off)"},
		config.Key{Name: keySeed, Flag: "seed", Default: -1, Usage: "random seed (-1 = a new one each run)"},
		config.Key{Name: keyMaxTokens, Flag: "max-tokens", Short: "n", Default: 0, Usage: "most tokens per reply (0 = up to the end of the context)"},
	)
}

// samplingFromConfig reads the sampling keys.
func samplingFromConfig(cfg *config.Store) (gen.Sampling, int, error) {
	s := chat.DefaultSampling()
	s.Temperature = float32(cfg.Float(keyTemperature))
	s.TopP = float32(cfg.Float(keyTopP))
	s.TopK = cfg.Int(keyTopK)
	s.MinP = float32(cfg.Float(keyMinP))
	s.RepeatPenalty = float32(cfg.Float(keyRepeatPenalty))
	seed, err := parseSeed(cfg.Int(keySeed))
	if err != nil {
		return s, 0, err
	}
	s.Seed = seed
	maxTokens := cfg.Int(keyMaxTokens)
	if err := checkSampling(s, maxTokens); err != nil {
		return s, 0, err
	}
	return s, maxTokens, nil
}

func parseSeed(v int) (uint32, error) {
	switch {
	case v == -1:
		return binding.RandomSeed, nil
	case v < 0 || v >= math.MaxUint32:
		return 0, fmt.Errorf("seed %d: want -1 (random) or 0..%d", v, uint32(math.MaxUint32-1))
	}
	return uint32(v), nil
}

func checkSampling(s gen.Sampling, maxTokens int) error {
	switch {
	case s.Temperature < 0:
		return fmt.Errorf("temperature %g: must be 0 or more", s.Temperature)
	case s.TopP < 0 || s.TopP > 1:
		return fmt.Errorf("top_p %g: must be in 0..1", s.TopP)
	case s.TopK < 0:
		return fmt.Errorf("top_k %d: must be 0 (off) or more", s.TopK)
	case s.MinP < 0 || s.MinP > 1:
		return fmt.Errorf("min_p %g: must be in 0..1", s.MinP)
	case s.RepeatPenalty < 0:
		return fmt.Errorf("repeat_penalty %g: must be 0 or more (1 = off)", s.RepeatPenalty)
	case maxTokens < 0:
		return fmt.Errorf("max_tokens %d: must be 0 (no limit) or more", maxTokens)
	}
	return nil
}

// repoName matches a model name in the store: org/name, optionally @revision.
var repoName = regexp.MustCompile(`^([A-Za-z0-9][\w.-]*/[\w.-]+)(?:@([\w./-]+))?$`)

// resolveModel turns the model key into a GGUF path: an existing file as it
// is, or a name such as THUDM/chatglm3-6b looked up in the local store (the
// newest GGUF converted in that snapshot). A missing model says how to get
// it.
func resolveModel(cfg *config.Store) (string, error) {
	m := cfg.String(keyModel)
	if m == "" {
		return "", errors.New("no model: give -m FILE.gguf or -m THUDM/chatglm3-6b (get one with `chatglm get THUDM/chatglm3-6b`)")
	}
	return resolveModelIn(m, cfg.String(keyModelsDir))
}

func resolveModelIn(m, storeDir string) (string, error) {
	if st, err := os.Stat(m); err == nil {
		if st.IsDir() {
			return "", fmt.Errorf("model %s is a folder; give the .gguf file in it (or convert it with `chatglm convert %s`)", m, m)
		}
		return m, nil
	}
	match := repoName.FindStringSubmatch(m)
	if match == nil || strings.HasSuffix(m, ".gguf") {
		return "", fmt.Errorf("model %s: no such file", m)
	}
	repo, rev := match[1], match[2]
	store := hub.NewStore(storeDir)
	revs := []string{rev}
	if rev == "" {
		revs = []string{"main", "master"}
	}
	for _, r := range revs {
		_, dir, err := store.Local(repo, r)
		if err != nil {
			continue
		}
		if p := newestGGUF(dir); p != "" {
			slog.Debug("model from the store", "name", m, "path", p)
			return p, nil
		}
		return "", fmt.Errorf("model %s is downloaded but not converted to GGUF; run `chatglm get %s`", m, repo)
	}
	return "", fmt.Errorf("model %s is not in the local store (%s); get it with `chatglm get %s`", m, store.Dir, repo)
}

// newestGGUF returns the most recently written .gguf file in dir, or "".
func newestGGUF(dir string) string {
	var best string
	var bestTime time.Time
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".gguf") {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		if best == "" || info.ModTime().After(bestTime) {
			best, bestTime = filepath.Join(dir, e.Name()), info.ModTime()
		}
	}
	return best
}

// loadedModel is an opened engine with the chat model (tokenizer and
// context size) that goes with it.
type loadedModel struct {
	Engine   *engine.Engine
	Model    backend.Model
	Path     string
	LoadTime time.Duration
}

// Close frees the engine.
func (l *loadedModel) Close() error { return l.Engine.Close() }

// openModel resolves and loads the model from the config with parallel
// sequences. With verbose, the load time goes to stderr.
func openModel(ctx context.Context, cfg *config.Store, parallel int, stderr io.Writer, verbose bool) (*loadedModel, error) {
	path, err := resolveModel(cfg)
	if err != nil {
		return nil, err
	}
	fa, err := binding.ParseFlashAttn(cfg.String(keyFlashAttn))
	if err != nil {
		return nil, fmt.Errorf("--flash-attn: %w", err)
	}
	ctxSize := cfg.Int(keyCtxSize)
	if ctxSize < 0 {
		return nil, fmt.Errorf("--ctx-size %d: must be 0 (the model's) or more", ctxSize)
	}
	// One line when llama.cpp was compiled for a generic CPU (plain go build).
	if note := binding.CPUBuildInfo().Note(); note != "" {
		fmt.Fprintln(stderr, "chatglm:", note)
	}
	// One line when GPU layers were asked for (the default) but none can run.
	if cfg.Int(keyGPULayers) != 0 {
		if note := binding.GPUNote(); note != "" {
			fmt.Fprintln(stderr, "chatglm:", note)
		}
	}
	mmap, err := mmapSetting(cfg)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	e, err := engine.Open(ctx, engine.Options{
		ModelPath:   path,
		GPULayers:   cfg.Int(keyGPULayers),
		ContextSize: ctxSize,
		Parallel:    parallel,
		Threads:     cfg.Int(keyThreads),
		FlashAttn:   fa,
		CacheTypeK:  cfg.String(keyCacheTypeK),
		CacheTypeV:  cfg.String(keyCacheTypeV),
		Mmap:        mmap,
		HugePages:   cfg.Bool(keyHugePages),
	})
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	m, err := backend.NewModel(e, path)
	if err != nil {
		e.Close()
		return nil, err
	}
	l := &loadedModel{Engine: e, Model: m, Path: path, LoadTime: time.Since(start)}
	if verbose {
		_, why := e.Mapped()
		fmt.Fprintf(stderr, "loaded %s in %s (context %d tokens; %s)\n", path, l.LoadTime.Round(time.Millisecond), e.ContextSize(), why)
	}
	return l, nil
}

// mmapSetting reads --mmap, with --no-mmap as an old spelling of off.
func mmapSetting(cfg *config.Store) (engine.Mmap, error) {
	if cfg.Bool(keyNoMmap) {
		return engine.MmapOff, nil
	}
	m, err := engine.ParseMmap(cfg.String(keyMmap))
	if err != nil {
		return "", fmt.Errorf("--mmap: %w", err)
	}
	return m, nil
}

// tokenizerOnly is a chat.Model that needs no weights: the tokenizer from
// the GGUF's vocabulary and the context size from --ctx-size or the file's
// training context. `run --dry-run` uses it.
type tokenizerOnly struct {
	*spm.Encoder
	ctx int
}

func (t tokenizerOnly) ContextSize() int { return t.ctx }

func openTokenizerOnly(cfg *config.Store) (tokenizerOnly, string, error) {
	path, err := resolveModel(cfg)
	if err != nil {
		return tokenizerOnly{}, "", err
	}
	enc, err := spm.LoadGGUF(path)
	if err != nil {
		return tokenizerOnly{}, "", err
	}
	n := cfg.Int(keyCtxSize)
	if n <= 0 {
		f, err := gguf.Open(path)
		if err != nil {
			return tokenizerOnly{}, "", err
		}
		arch := f.String("general.architecture")
		v, ok := f.Uint(arch + ".context_length")
		if !ok {
			return tokenizerOnly{}, "", fmt.Errorf("%s: no %q key; give --ctx-size", path, arch+".context_length")
		}
		n = int(v)
	}
	return tokenizerOnly{Encoder: enc, ctx: n}, path, nil
}

// isNotExist reports whether err means a missing file.
func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }

// decimal widens a float32 default to the float64 with the same short
// decimal form (0.8, not 0.800000011920929), as flags and docs show it.
func decimal(f float32) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(float64(f), 'g', -1, 32), 64)
	return v
}
