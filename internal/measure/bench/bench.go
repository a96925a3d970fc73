// Package bench measures llama.cpp's prompt processing and generation speed
// through chatglm's binding with llama-bench's method, so its numbers can be
// set beside upstream's:
//
//   - every test gets a fresh context with n_ctx = n_prompt + n_gen and the
//     test's batch, micro-batch, KV types, flash attention and threads;
//   - a warm-up run is made first and not counted: the whole prompt for a
//     prompt test, one token for a generation test;
//   - each repetition clears the KV cache, then times the test;
//   - a prompt test (ppN) decodes N random tokens in chunks of n_batch, the
//     output kept for the last token of each chunk only; a generation test
//     (tgN) decodes N single random tokens one after the other;
//   - tokens/s per repetition = (n_prompt + n_gen) / seconds; the record
//     holds the mean and the sample standard deviation.
//
// The model is loaded once per model and load settings (GPU layers, mmap);
// its load time is recorded with every test of that model.
package bench

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/chatglm/chatglm/binding"
	"github.com/chatglm/chatglm/gguf"
	"github.com/chatglm/chatglm/internal/measure/membw"
	"github.com/chatglm/chatglm/third_party/llamacpp"
)

// Params are the test parameters; every list is a dimension of the test
// matrix, as in llama-bench.
type Params struct {
	Models     []string
	NPrompt    []int    // prompt lengths (0 entries are skipped)
	NGen       []int    // generation lengths (0 entries are skipped)
	PG         [][2]int // combined prompt+generation tests
	NBatch     []int
	NUBatch    []int
	Threads    []int
	GPULayers  []int
	FlashAttn  []string // "auto", "on", "off"
	TypeK      []string
	TypeV      []string
	Mmap       []int // 1 = mmap the file (default), 0 = read it into memory
	HugePages  bool  // binding.SetHugePages for every test
	Reps       int
	NoWarmup   bool
	MemBW      bool  // measure memory bandwidth per thread count (for tg tests)
	MemBWBytes int64 // array size for the bandwidth measurement (0 = default)
	// Progress, if set, receives one line per step (for stderr).
	Progress func(msg string)
}

// DefaultParams are llama-bench's defaults: pp512 and tg128, batch 2048,
// micro-batch 512, f16 KV, flash attention auto, all layers on the GPU,
// mmap, 5 repetitions, and as many threads as CPU cores.
func DefaultParams() Params {
	return Params{
		NPrompt:   []int{512},
		NGen:      []int{128},
		NBatch:    []int{2048},
		NUBatch:   []int{512},
		Threads:   []int{binding.DefaultThreads()},
		GPULayers: []int{-1},
		FlashAttn: []string{"auto"},
		TypeK:     []string{"f16"},
		TypeV:     []string{"f16"},
		Mmap:      []int{1},
		Reps:      5,
	}
}

// instance is one context configuration with one test.
type instance struct {
	model     string
	gpuLayers int
	mmap      bool
	nPrompt   int
	nGen      int
	nBatch    int
	nUBatch   int
	typeK     string
	typeV     string
	flashAttn binding.FlashAttn
	flashCode int
	threads   int
}

// instances expands the parameter lists in llama-bench's order (the model
// and load settings outermost, so each model is loaded as few times as
// possible).
func (p Params) instances() ([]instance, error) {
	var out []instance
	for _, m := range p.Models {
		for _, ngl := range p.GPULayers {
			for _, mm := range p.Mmap {
				for _, nb := range p.NBatch {
					for _, nub := range p.NUBatch {
						for _, tk := range p.TypeK {
							for _, tv := range p.TypeV {
								for _, fas := range p.FlashAttn {
									fa, err := binding.ParseFlashAttn(fas)
									if err != nil {
										return nil, err
									}
									for _, nt := range p.Threads {
										base := instance{model: m, gpuLayers: ngl, mmap: mm != 0, nBatch: nb, nUBatch: nub,
											typeK: tk, typeV: tv, flashAttn: fa, flashCode: flashCode(fa), threads: nt}
										for _, n := range p.NPrompt {
											if n > 0 {
												i := base
												i.nPrompt = n
												out = append(out, i)
											}
										}
										for _, n := range p.NGen {
											if n > 0 {
												i := base
												i.nGen = n
												out = append(out, i)
											}
										}
										for _, pg := range p.PG {
											if pg[0] > 0 || pg[1] > 0 {
												i := base
												i.nPrompt, i.nGen = pg[0], pg[1]
												out = append(out, i)
											}
										}
									}
								}
							}
						}
					}
				}
			}
		}
	}
	return out, nil
}

// flashCode is llama_flash_attn_type's value, as llama-bench records it.
func flashCode(fa binding.FlashAttn) int {
	switch fa {
	case binding.FlashAttnOn:
		return 1
	case binding.FlashAttnOff:
		return 0
	}
	return -1
}

// Validate checks the parameters before anything is loaded.
func (p Params) Validate() error {
	if len(p.Models) == 0 {
		return fmt.Errorf("bench: no model")
	}
	if p.Reps < 1 {
		return fmt.Errorf("bench: repetitions %d: need at least 1", p.Reps)
	}
	for _, m := range p.Models {
		if _, err := os.Stat(m); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
	}
	check := func(name string, v []int, lo int) error {
		if len(v) == 0 {
			return fmt.Errorf("bench: %s: no value", name)
		}
		for _, x := range v {
			if x < lo {
				return fmt.Errorf("bench: %s %d: must be at least %d", name, x, lo)
			}
		}
		return nil
	}
	for _, c := range []struct {
		name string
		v    []int
		lo   int
	}{{"n-prompt", p.NPrompt, 0}, {"n-gen", p.NGen, 0}, {"batch-size", p.NBatch, 1}, {"ubatch-size", p.NUBatch, 1}, {"threads", p.Threads, 1}, {"gpu-layers", p.GPULayers, -1}, {"mmap", p.Mmap, 0}} {
		if c.name == "n-prompt" || c.name == "n-gen" {
			if len(c.v) == 0 {
				continue
			}
		}
		if err := check(c.name, c.v, c.lo); err != nil {
			return err
		}
	}
	for _, t := range append(append([]string(nil), p.TypeK...), p.TypeV...) {
		if err := binding.CheckCacheType(t); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
	}
	for _, f := range p.FlashAttn {
		if _, err := binding.ParseFlashAttn(f); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
	}
	if len(p.TypeK) == 0 || len(p.TypeV) == 0 || len(p.FlashAttn) == 0 {
		return fmt.Errorf("bench: empty KV type or flash attention list")
	}
	return nil
}

// loaded is the model currently held by Run.
type loaded struct {
	path      string
	gpuLayers int
	mmap      bool
	model     *binding.Model
	loadNS    uint64
	bpt       uint64
}

// Run runs every test and calls emit with each record as soon as it is
// done. It returns the records.
func Run(ctx context.Context, p Params, emit func(Record) error) ([]Record, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	insts, err := p.instances()
	if err != nil {
		return nil, err
	}
	binding.SetHugePages(p.HugePages)
	defer binding.SetHugePages(false)
	progress := func(format string, a ...any) {
		if p.Progress != nil {
			p.Progress(fmt.Sprintf(format, a...))
		}
	}
	cpuInfo, gpuInfo := deviceInfo()
	bw := map[int]float64{}
	var cur *loaded
	defer func() {
		if cur != nil {
			cur.model.Close()
		}
	}()
	var recs []Record
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 42))
	for idx, in := range insts {
		if err := ctx.Err(); err != nil {
			return recs, err
		}
		if cur == nil || cur.path != in.model || cur.gpuLayers != in.gpuLayers || cur.mmap != in.mmap {
			if cur != nil {
				cur.model.Close()
				cur = nil
			}
			progress("loading %s", in.model)
			t0 := time.Now()
			m, err := binding.LoadModel(ctx, in.model, binding.ModelParams{GPULayers: in.gpuLayers, NoMmap: !in.mmap})
			if err != nil {
				return recs, fmt.Errorf("bench: %w", err)
			}
			cur = &loaded{path: in.model, gpuLayers: in.gpuLayers, mmap: in.mmap, model: m, loadNS: uint64(time.Since(t0))}
			if cur.bpt, err = BytesPerToken(in.model); err != nil {
				slog.Warn("bench: bytes per token unknown", "model", in.model, "err", err)
			}
		}
		name := testName(in)
		progress("test %d/%d: %s, %d threads", idx+1, len(insts), name, in.threads)
		samples, err := runTest(ctx, cur.model, in, p.Reps, !p.NoWarmup, rng)
		if err != nil {
			return recs, fmt.Errorf("bench: %s %s: %w", in.model, name, err)
		}
		r := Record{
			BuildCommit: llamacpp.Base, BuildNumber: 0,
			CPUInfo: cpuInfo, GPUInfo: gpuInfo, Backends: backendsName(),
			ModelFilename: in.model, ModelType: cur.model.Description(),
			ModelSize: cur.model.Size(), ModelNParams: cur.model.NParams(),
			NBatch: in.nBatch, NUBatch: in.nUBatch, NThreads: in.threads,
			CPUMask: "0x0", Poll: 50,
			TypeK: strings.ToLower(orDefault(in.typeK, "f16")), TypeV: strings.ToLower(orDefault(in.typeV, "f16")),
			NGPULayers: in.gpuLayers, SplitMode: "layer", FlashAttn: in.flashCode,
			Devices: "auto", TensorSplit: "0.00", TensorBuftOverrides: "none",
			UseMmap: in.mmap, NPrompt: in.nPrompt, NGen: in.nGen,
			TestTime: time.Now().UTC().Format(time.RFC3339),
			LoadNS:   cur.loadNS, PeakRSSBytes: peakRSS(), BytesPerToken: cur.bpt,
			HugePages: p.HugePages,
		}
		r.setSamples(samples)
		if p.MemBW && in.nGen > 0 && in.nPrompt == 0 {
			gbs, ok := bw[in.threads]
			if !ok {
				progress("measuring memory bandwidth with %d threads", in.threads)
				res, err := membw.Measure(in.threads, p.MemBWBytes, 10)
				if err != nil {
					return recs, fmt.Errorf("bench: %w", err)
				}
				gbs = res.Bound()
				progress("memory bandwidth, %d threads: read %.1f GB/s (the bound), copy %.1f, triad %.1f (STREAM counting)", in.threads, res.Read, res.Copy, res.Triad)
				bw[in.threads] = gbs
			}
			r.MemBWGBs = gbs
			if gbs > 0 && r.BytesPerToken > 0 {
				r.BWFraction = r.AvgTS * float64(r.BytesPerToken) / (gbs * 1e9)
			}
		}
		recs = append(recs, r)
		if emit != nil {
			if err := emit(r); err != nil {
				return recs, err
			}
		}
	}
	return recs, nil
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func testName(in instance) string {
	r := Record{NPrompt: in.nPrompt, NGen: in.nGen}
	return r.TestName()
}

// runTest makes the test's context, warms up and returns the duration of
// each repetition in nanoseconds.
func runTest(ctx context.Context, m *binding.Model, in instance, reps int, warmup bool, rng *rand.Rand) ([]uint64, error) {
	lc, err := m.NewContext(binding.ContextParams{
		NCtx:      in.nPrompt + in.nGen,
		NBatch:    in.nBatch,
		NUBatch:   in.nUBatch,
		Threads:   in.threads,
		FlashAttn: in.flashAttn,
		TypeK:     in.typeK,
		TypeV:     in.typeV,
	})
	if err != nil {
		return nil, err
	}
	defer lc.Close()
	nb := min(in.nBatch, lc.BatchSize())
	b, err := binding.NewBatch(max(nb, 1), 1)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	t := &tester{ctx: ctx, lc: lc, b: b, nVocab: int32(m.VocabSize()), nBatch: nb, rng: rng}
	if m.AddBOS() {
		t.bos = m.BOS()
	} else {
		t.bos = -1
	}
	lc.ClearMemory(false)
	if warmup {
		if in.nPrompt > 0 {
			if err := t.prompt(in.nPrompt); err != nil {
				return nil, fmt.Errorf("warm-up: %w", err)
			}
		}
		if in.nGen > 0 {
			if err := t.gen(1); err != nil {
				return nil, fmt.Errorf("warm-up: %w", err)
			}
		}
	}
	samples := make([]uint64, 0, reps)
	for i := 0; i < reps; i++ {
		lc.ClearMemory(false)
		t.pos = 0
		start := time.Now()
		if in.nPrompt > 0 {
			if err := t.prompt(in.nPrompt); err != nil {
				return nil, err
			}
		}
		if in.nGen > 0 {
			if err := t.gen(in.nGen); err != nil {
				return nil, err
			}
		}
		samples = append(samples, uint64(time.Since(start)))
	}
	return samples, nil
}

// tester decodes random tokens as llama-bench's test_prompt and test_gen.
type tester struct {
	ctx    context.Context
	lc     *binding.Context
	b      *binding.Batch
	nVocab int32
	nBatch int
	bos    int32 // -1: the model adds no BOS
	pos    int
	rng    *rand.Rand
}

func (t *tester) token() int32 { return t.rng.Int32N(t.nVocab) }

// prompt decodes n random tokens in chunks of nBatch, keeping the output of
// each chunk's last token only.
func (t *tester) prompt(n int) error {
	for done := 0; done < n; {
		k := min(n-done, t.nBatch)
		t.b.Clear()
		for i := 0; i < k; i++ {
			tok := t.token()
			if done == 0 && i == 0 && t.bos >= 0 {
				tok = t.bos
			}
			if _, err := t.b.Add(tok, t.pos+i, seq0, i == k-1); err != nil {
				return err
			}
		}
		if err := t.lc.Decode(t.ctx, t.b); err != nil {
			return err
		}
		t.pos += k
		done += k
	}
	t.lc.Synchronize()
	return nil
}

// gen decodes n single tokens.
func (t *tester) gen(n int) error {
	tok := t.token()
	if t.bos >= 0 {
		tok = t.bos
	}
	for i := 0; i < n; i++ {
		t.b.Clear()
		if _, err := t.b.Add(tok, t.pos, seq0, true); err != nil {
			return err
		}
		if err := t.lc.Decode(t.ctx, t.b); err != nil {
			return err
		}
		t.lc.Synchronize()
		t.pos++
		tok = t.token()
	}
	return nil
}

var seq0 = []int{0}

// deviceInfo returns the CPU and GPU descriptions, as llama-bench's
// cpu_info and gpu_info.
func deviceInfo() (cpu, gpu string) {
	var cpus, gpus []string
	for _, d := range binding.Devices() {
		switch d.Type {
		case "cpu", "accel":
			cpus = append(cpus, d.Description)
		case "gpu", "igpu":
			gpus = append(gpus, d.Description)
		}
	}
	return strings.Join(cpus, ", "), strings.Join(gpus, ", ")
}

// backendsName is llama-bench's "backends": the non-CPU backends, or CPU.
func backendsName() string {
	seen := map[string]bool{}
	var names []string
	for _, d := range binding.Devices() {
		if d.Backend != "CPU" && !seen[d.Backend] {
			seen[d.Backend] = true
			names = append(names, d.Backend)
		}
	}
	if len(names) == 0 {
		return "CPU"
	}
	return strings.Join(names, ",")
}

// peakRSS is the process's peak resident set size in bytes.
func peakRSS() uint64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return uint64(ru.Maxrss) * 1024
}

// BytesPerToken is the weight bytes one generated token reads: every tensor
// of the GGUF file except the token embedding table, of which only one row
// is read (unless the model reuses it as the output head).
func BytesPerToken(path string) (uint64, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return 0, err
	}
	var total uint64
	hasOutput := false
	for _, t := range f.Tensors {
		if t.Name == "output.weight" {
			hasOutput = true
		}
	}
	for _, t := range f.Tensors {
		if t.Name == "token_embd.weight" && hasOutput {
			if len(t.Dims) == 2 && t.Dims[1] > 0 {
				total += t.Size / t.Dims[1]
			}
			continue
		}
		total += t.Size
	}
	return total, nil
}
