package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// Record is the result of one test, with llama-bench's JSON field names so
// tools made for `llama-bench -o json` read it. Fields after SamplesTS are
// chatglm's own additions.
type Record struct {
	BuildCommit         string    `json:"build_commit"`
	BuildNumber         int       `json:"build_number"`
	CPUInfo             string    `json:"cpu_info"`
	GPUInfo             string    `json:"gpu_info"`
	Backends            string    `json:"backends"`
	ModelFilename       string    `json:"model_filename"`
	ModelType           string    `json:"model_type"`
	ModelSize           uint64    `json:"model_size"`
	ModelNParams        uint64    `json:"model_n_params"`
	NBatch              int       `json:"n_batch"`
	NUBatch             int       `json:"n_ubatch"`
	NThreads            int       `json:"n_threads"`
	CPUMask             string    `json:"cpu_mask"`
	CPUStrict           bool      `json:"cpu_strict"`
	Poll                int       `json:"poll"`
	TypeK               string    `json:"type_k"`
	TypeV               string    `json:"type_v"`
	NGPULayers          int       `json:"n_gpu_layers"`
	NCPUMoE             int       `json:"n_cpu_moe"`
	SplitMode           string    `json:"split_mode"`
	MainGPU             int       `json:"main_gpu"`
	NoKVOffload         bool      `json:"no_kv_offload"`
	FlashAttn           int       `json:"flash_attn"` // -1 auto, 0 off, 1 on (llama_flash_attn_type)
	Devices             string    `json:"devices"`
	TensorSplit         string    `json:"tensor_split"`
	TensorBuftOverrides string    `json:"tensor_buft_overrides"`
	UseMmap             bool      `json:"use_mmap"`
	Embeddings          bool      `json:"embeddings"`
	NoOpOffload         int       `json:"no_op_offload"`
	NPrompt             int       `json:"n_prompt"`
	NGen                int       `json:"n_gen"`
	NDepth              int       `json:"n_depth"`
	TestTime            string    `json:"test_time"`
	AvgNS               uint64    `json:"avg_ns"`
	StddevNS            uint64    `json:"stddev_ns"`
	AvgTS               float64   `json:"avg_ts"`
	StddevTS            float64   `json:"stddev_ts"`
	SamplesNS           []uint64  `json:"samples_ns"`
	SamplesTS           []float64 `json:"samples_ts"`

	// LoadNS is the time LoadModel took for the model of this test (the
	// model is loaded once per model and load settings).
	LoadNS uint64 `json:"load_ns"`
	// HugePages tells whether ggml's CPU buffers asked for huge pages.
	HugePages bool `json:"hugepages"`
	// PeakRSSBytes is the process's peak resident set size after the test.
	PeakRSSBytes uint64 `json:"peak_rss_bytes"`
	// BytesPerToken is what generating one token reads from memory: every
	// weight except the token embedding table (of which one row is read).
	BytesPerToken uint64 `json:"bytes_per_token,omitempty"`
	// MemBWGBs is the memory bandwidth measured with the same number of
	// threads (the read-only STREAM-like kernel, GB/s), when requested.
	MemBWGBs float64 `json:"mem_bw_gbs,omitempty"`
	// BWFraction is avg_ts x bytes_per_token / mem_bw for generation tests.
	BWFraction float64 `json:"bw_fraction,omitempty"`
}

// TestName is llama-bench's name of the test: pp512, tg128 or pp512+tg128.
func (r *Record) TestName() string {
	var s string
	switch {
	case r.NPrompt > 0 && r.NGen == 0:
		s = fmt.Sprintf("pp%d", r.NPrompt)
	case r.NGen > 0 && r.NPrompt == 0:
		s = fmt.Sprintf("tg%d", r.NGen)
	default:
		s = fmt.Sprintf("pp%d+tg%d", r.NPrompt, r.NGen)
	}
	if r.NDepth > 0 {
		s += fmt.Sprintf(" @ d%d", r.NDepth)
	}
	return s
}

// setSamples fills the timing fields from per-repetition durations, as
// llama-bench does: tokens/s per sample = (n_prompt+n_gen) / seconds, then
// the mean and the sample standard deviation (n-1) of each series.
func (r *Record) setSamples(ns []uint64) {
	r.SamplesNS = append([]uint64(nil), ns...)
	n := float64(r.NPrompt + r.NGen)
	r.SamplesTS = make([]float64, len(ns))
	fs := make([]float64, len(ns))
	for i, v := range ns {
		fs[i] = float64(v)
		if v > 0 {
			r.SamplesTS[i] = 1e9 * n / float64(v)
		}
	}
	m, sd := meanStddev(fs)
	r.AvgNS, r.StddevNS = uint64(m), uint64(sd)
	r.AvgTS, r.StddevTS = meanStddev(r.SamplesTS)
}

// meanStddev returns the mean and the sample standard deviation (0 for
// fewer than two values).
func meanStddev(v []float64) (float64, float64) {
	if len(v) == 0 {
		return 0, 0
	}
	var sum float64
	for _, x := range v {
		sum += x
	}
	mean := sum / float64(len(v))
	if len(v) < 2 {
		return mean, 0
	}
	var sq float64
	for _, x := range v {
		sq += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(sq / float64(len(v)-1))
}

// WriteJSON writes the records as a JSON array, as `llama-bench -o json`.
func WriteJSON(w io.Writer, recs []Record) error {
	if recs == nil {
		recs = []Record{}
	}
	b, err := json.MarshalIndent(recs, "", "  ")
	if err != nil {
		return fmt.Errorf("bench: encode json: %w", err)
	}
	b = append(b, '\n')
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("bench: write json: %w", err)
	}
	return nil
}

// column is one column of the markdown table.
type column struct {
	name  string
	right bool
	value func(r *Record) string
}

// Markdown prints records as llama-bench's markdown table: model, size,
// params, backend, threads, the settings that differ from the defaults, the
// load time, test and t/s; plus the bandwidth columns when measured.
type Markdown struct {
	w       io.Writer
	cols    []column
	started bool
}

// NewMarkdown returns a table printer for tests run with p. Columns for
// settings are shown when p sets them away from the defaults or varies them.
func NewMarkdown(w io.Writer, p Params) *Markdown {
	d := DefaultParams()
	cols := []column{
		{"model", false, func(r *Record) string { return r.ModelType }},
		{"size", true, func(r *Record) string { return humanBytes(r.ModelSize) }},
		{"params", true, func(r *Record) string { return humanParams(r.ModelNParams) }},
		{"backend", false, func(r *Record) string { return r.Backends }},
	}
	gpu := !strings.Contains(backendsName(), "CPU")
	if gpu {
		cols = append(cols, column{"ngl", true, func(r *Record) string { return fmt.Sprint(r.NGPULayers) }})
	}
	cols = append(cols, column{"threads", true, func(r *Record) string { return fmt.Sprint(r.NThreads) }})
	if !slices.Equal(p.NBatch, d.NBatch) {
		cols = append(cols, column{"n_batch", true, func(r *Record) string { return fmt.Sprint(r.NBatch) }})
	}
	if !slices.Equal(p.NUBatch, d.NUBatch) {
		cols = append(cols, column{"n_ubatch", true, func(r *Record) string { return fmt.Sprint(r.NUBatch) }})
	}
	if !slices.Equal(p.TypeK, d.TypeK) {
		cols = append(cols, column{"type_k", true, func(r *Record) string { return r.TypeK }})
	}
	if !slices.Equal(p.TypeV, d.TypeV) {
		cols = append(cols, column{"type_v", true, func(r *Record) string { return r.TypeV }})
	}
	if !slices.Equal(p.FlashAttn, d.FlashAttn) {
		cols = append(cols, column{"fa", true, func(r *Record) string { return fmt.Sprint(r.FlashAttn) }})
	}
	if !slices.Equal(p.Mmap, d.Mmap) {
		cols = append(cols, column{"mmap", true, func(r *Record) string { return fmt.Sprint(boolInt(r.UseMmap)) }})
	}
	cols = append(cols,
		column{"load s", true, func(r *Record) string { return fmt.Sprintf("%.2f", float64(r.LoadNS)/1e9) }},
		column{"test", true, func(r *Record) string { return r.TestName() }},
		column{"t/s", true, func(r *Record) string { return fmt.Sprintf("%.2f ± %.2f", r.AvgTS, r.StddevTS) }},
	)
	if p.MemBW {
		cols = append(cols,
			column{"mem GB/s", true, func(r *Record) string {
				if r.MemBWGBs == 0 {
					return ""
				}
				return fmt.Sprintf("%.1f", r.MemBWGBs)
			}},
			column{"% of bw", true, func(r *Record) string {
				if r.BWFraction == 0 {
					return ""
				}
				return fmt.Sprintf("%.0f%%", 100*r.BWFraction)
			}},
		)
	}
	return &Markdown{w: w, cols: cols}
}

// Row prints one record (and the header before the first).
func (m *Markdown) Row(r *Record) error {
	var b strings.Builder
	if !m.started {
		m.started = true
		b.WriteString("|")
		for _, c := range m.cols {
			fmt.Fprintf(&b, " %s |", c.name)
		}
		b.WriteString("\n|")
		for _, c := range m.cols {
			dashes := strings.Repeat("-", max(3, len([]rune(c.name)))-1)
			if c.right {
				fmt.Fprintf(&b, " %s: |", dashes)
			} else {
				fmt.Fprintf(&b, " %s- |", dashes)
			}
		}
		b.WriteString("\n")
	}
	b.WriteString("|")
	for _, c := range m.cols {
		fmt.Fprintf(&b, " %s |", c.value(r))
	}
	b.WriteString("\n")
	if _, err := io.WriteString(m.w, b.String()); err != nil {
		return fmt.Errorf("bench: write table: %w", err)
	}
	return nil
}

// Footer prints the build line under the table.
func (m *Markdown) Footer(commit string) error {
	_, err := fmt.Fprintf(m.w, "\nbuild: llama.cpp %s (chatglm binding)\n", commit)
	return err
}

func humanBytes(n uint64) string {
	if n < 1<<30 {
		return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
}

func humanParams(n uint64) string {
	if n < 1e9 {
		return fmt.Sprintf("%.2f M", float64(n)/1e6)
	}
	return fmt.Sprintf("%.2f B", float64(n)/1e9)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
