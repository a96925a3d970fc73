package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chatglm/chatglm/internal/fixture/testmodel"
)

// llamaBenchFields are the fields `llama-bench -o json` writes for every
// test (llama.cpp tools/llama-bench), which a Record must carry too.
var llamaBenchFields = []string{
	"build_commit", "build_number", "cpu_info", "gpu_info", "backends",
	"model_filename", "model_type", "model_size", "model_n_params", "n_batch",
	"n_ubatch", "n_threads", "cpu_mask", "cpu_strict", "poll",
	"type_k", "type_v", "n_gpu_layers", "n_cpu_moe", "split_mode",
	"main_gpu", "no_kv_offload", "flash_attn", "devices", "tensor_split",
	"tensor_buft_overrides", "embeddings", "no_op_offload",
	"n_prompt", "n_gen", "n_depth", "test_time", "avg_ns", "stddev_ns", "avg_ts", "stddev_ts",
	"samples_ns", "samples_ts",
}

func TestRecordJSONShape(t *testing.T) {
	r := Record{NPrompt: 512, ModelType: "chatglm 6B Q4_0"}
	r.setSamples([]uint64{1e9, 2e9})
	var buf bytes.Buffer
	if err := WriteJSON(&buf, []Record{r}); err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("%d records", len(got))
	}
	for _, f := range llamaBenchFields {
		if _, ok := got[0][f]; !ok {
			t.Errorf("field %q missing", f)
		}
	}
	// JSON types as llama-bench writes them.
	for f, kind := range map[string]string{
		"n_prompt": "number", "avg_ts": "number", "avg_ns": "number", "flash_attn": "number",
		"model_type": "string", "type_k": "string", "cpu_strict": "bool", "no_kv_offload": "bool",
		"samples_ns": "array", "samples_ts": "array",
	} {
		var k string
		switch got[0][f].(type) {
		case float64:
			k = "number"
		case string:
			k = "string"
		case bool:
			k = "bool"
		case []any:
			k = "array"
		}
		if k != kind {
			t.Errorf("field %s is a %s, want %s", f, k, kind)
		}
	}
	var empty bytes.Buffer
	WriteJSON(&empty, nil)
	if strings.TrimSpace(empty.String()) != "[]" {
		t.Errorf("no records: %q", empty.String())
	}
}

func TestSamplesMath(t *testing.T) {
	r := Record{NGen: 128}
	r.setSamples([]uint64{1e9, 2e9, 4e9})
	wantTS := []float64{128, 64, 32}
	for i, v := range wantTS {
		if math.Abs(r.SamplesTS[i]-v) > 1e-9 {
			t.Fatalf("samples_ts %v", r.SamplesTS)
		}
	}
	if r.AvgNS != 2333333333 {
		t.Errorf("avg_ns %d", r.AvgNS)
	}
	// Sample standard deviation (n-1) as llama-bench.
	if math.Abs(r.AvgTS-224.0/3) > 1e-9 || math.Abs(r.StddevTS-math.Sqrt((math.Pow(128-224.0/3, 2)+math.Pow(64-224.0/3, 2)+math.Pow(32-224.0/3, 2))/2)) > 1e-9 {
		t.Errorf("avg_ts %v stddev_ts %v", r.AvgTS, r.StddevTS)
	}
	if r.StddevNS != uint64(math.Sqrt((math.Pow(1e9-7e9/3, 2)+math.Pow(2e9-7e9/3, 2)+math.Pow(4e9-7e9/3, 2))/2)) {
		t.Errorf("stddev_ns %d", r.StddevNS)
	}
	one := Record{NPrompt: 10}
	one.setSamples([]uint64{5e8})
	if one.StddevTS != 0 || one.AvgTS != 20 {
		t.Errorf("one sample: %+v", one)
	}
	for _, c := range []struct {
		r    Record
		want string
	}{{Record{NPrompt: 512}, "pp512"}, {Record{NGen: 128}, "tg128"}, {Record{NPrompt: 512, NGen: 128}, "pp512+tg128"}, {Record{NGen: 32, NDepth: 100}, "tg32 @ d100"}} {
		if got := c.r.TestName(); got != c.want {
			t.Errorf("TestName %q, want %q", got, c.want)
		}
	}
}

func TestInstancesOrder(t *testing.T) {
	p := DefaultParams()
	p.Models = []string{"a", "b"}
	p.Threads = []int{1, 2}
	p.PG = [][2]int{{16, 4}}
	in, err := p.instances()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, i := range in {
		got = append(got, i.model+":"+testName(i)+":"+string(rune('0'+i.threads)))
	}
	want := "a:pp512:1 a:tg128:1 a:pp16+tg4:1 a:pp512:2 a:tg128:2 a:pp16+tg4:2 b:pp512:1 b:tg128:1 b:pp16+tg4:1 b:pp512:2 b:tg128:2 b:pp16+tg4:2"
	if strings.Join(got, " ") != want {
		t.Fatalf("order\n got %s\nwant %s", strings.Join(got, " "), want)
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(dir, "m.gguf")
	os.WriteFile(model, []byte("x"), 0o644)
	good := DefaultParams()
	good.Models = []string{model}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*Params){
		"no model":      func(p *Params) { p.Models = nil },
		"missing model": func(p *Params) { p.Models = []string{filepath.Join(dir, "nope")} },
		"zero reps":     func(p *Params) { p.Reps = 0 },
		"zero threads":  func(p *Params) { p.Threads = []int{0} },
		"bad kv type":   func(p *Params) { p.TypeK = []string{"q7"} },
		"bad fa":        func(p *Params) { p.FlashAttn = []string{"maybe"} },
		"zero batch":    func(p *Params) { p.NBatch = []int{0} },
	} {
		p := good
		mod(&p)
		if err := p.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestRunTiny runs the whole method on a tiny model: records, table, JSON.
func TestRunTiny(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(dir, "tiny.gguf")
	if _, err := testmodel.WriteToyGGUF(model, testmodel.ToyConfig{F16: true}); err != nil {
		t.Fatal(err)
	}
	p := DefaultParams()
	p.Models = []string{model}
	p.NPrompt = []int{40}
	p.NGen = []int{8}
	p.NBatch = []int{16}
	p.Threads = []int{1, 2}
	p.Reps = 2
	p.MemBW = true
	p.MemBWBytes = 4 << 20
	var steps []string
	p.Progress = func(s string) { steps = append(steps, s) }
	var table bytes.Buffer
	md := NewMarkdown(&table, p)
	recs, err := Run(context.Background(), p, func(r Record) error { return md.Row(&r) })
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 4 {
		t.Fatalf("%d records", len(recs))
	}
	bpt, err := BytesPerToken(model)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if len(r.SamplesNS) != 2 || len(r.SamplesTS) != 2 || r.AvgTS <= 0 || r.AvgNS == 0 {
			t.Errorf("timings %+v", r)
		}
		if r.ModelSize == 0 || r.ModelNParams == 0 || !strings.HasPrefix(r.ModelType, "chatglm") || r.LoadNS == 0 || r.PeakRSSBytes == 0 {
			t.Errorf("model fields %+v", r)
		}
		if r.NBatch != 16 || r.NUBatch != 512 || r.TypeK != "f16" || r.FlashAttn != -1 || !r.UseMmap || r.Backends == "" {
			t.Errorf("settings %+v", r)
		}
		if r.NGen > 0 && (r.MemBWGBs <= 0 || r.BWFraction <= 0 || r.BytesPerToken != bpt) {
			t.Errorf("bandwidth fields %+v", r)
		}
		if r.NPrompt > 0 && r.BWFraction != 0 {
			t.Errorf("bandwidth fraction on a prompt test %+v", r)
		}
	}
	lines := strings.Split(strings.TrimSpace(table.String()), "\n")
	if len(lines) != 6 || !strings.Contains(lines[0], "| model |") || !strings.Contains(lines[0], "n_batch") ||
		!strings.Contains(lines[2], "pp40") || !strings.Contains(lines[3], "tg8") || !strings.Contains(lines[3], "%") {
		t.Errorf("table:\n%s", table.String())
	}
	t.Log("\n" + table.String())
	if len(steps) == 0 {
		t.Error("no progress")
	}
	// Bytes per token: every tensor but the embedding table, plus one row.
	if bpt == 0 || bpt >= recs[0].ModelSize {
		t.Errorf("bytes per token %d vs model %d", bpt, recs[0].ModelSize)
	}
}

func TestRunCancelled(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(dir, "tiny.gguf")
	if _, err := testmodel.WriteToyGGUF(model, testmodel.ToyConfig{}); err != nil {
		t.Fatal(err)
	}
	p := DefaultParams()
	p.Models = []string{model}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Run(ctx, p, nil); err == nil {
		t.Fatal("cancelled run succeeded")
	}
}
