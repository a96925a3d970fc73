// Command benchreport folds the raw outputs of scripts/bench.sh into one
// table: markdown on stdout and in <dir>/bench.md, JSON in <dir>/bench.json.
// Every figure is given beside the baseline measured in the same run.
//
//	go run ./tools/benchreport -dir bench-results/<run>
//
// It reads, from <dir>/raw: bench-<type>.json (chatglm bench --json) and
// bench-<type>.time (GNU time -v) for each model type, convert.txt
// (scripts/bench-convert.sh), ttft.json (tools/benchttft),
// download.txt (scripts/bench-download.sh), server.txt
// (scripts/bench-server.sh), replicas.txt (scripts/bench-replicas.sh),
// soak.txt (scripts/bench-soak.sh) and info.txt; missing files leave their
// rows out.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/chatglm/chatglm/internal/measure/soakresult"
)

// benchRecord holds the fields of a `chatglm bench --json` record used here.
type benchRecord struct {
	ModelFilename string  `json:"model_filename"`
	ModelType     string  `json:"model_type"`
	ModelSize     uint64  `json:"model_size"`
	NThreads      int     `json:"n_threads"`
	NPrompt       int     `json:"n_prompt"`
	NGen          int     `json:"n_gen"`
	AvgTS         float64 `json:"avg_ts"`
	StddevTS      float64 `json:"stddev_ts"`
	LoadNS        uint64  `json:"load_ns"`
	PeakRSSBytes  uint64  `json:"peak_rss_bytes"`
	BytesPerToken uint64  `json:"bytes_per_token"`
	MemBWGBs      float64 `json:"mem_bw_gbs"`
	BWFraction    float64 `json:"bw_fraction"`
	UseMmap       bool    `json:"use_mmap"`
}

// ModelRow is one model at one thread count.
type ModelRow struct {
	Type          string  `json:"type"`
	ModelType     string  `json:"model_type"`
	SizeBytes     uint64  `json:"size_bytes"`
	LoadSeconds   float64 `json:"load_s"`
	PeakRSSBytes  uint64  `json:"peak_rss_bytes"`
	Threads       int     `json:"threads"`
	NPrompt       int     `json:"n_prompt"`
	PPTS          float64 `json:"pp_ts"`
	PPStddev      float64 `json:"pp_stddev_ts"`
	NGen          int     `json:"n_gen"`
	TGTS          float64 `json:"tg_ts"`
	TGStddev      float64 `json:"tg_stddev_ts"`
	BytesPerToken uint64  `json:"bytes_per_token"`
	TGGBs         float64 `json:"tg_gbs"`      // tg_ts x bytes_per_token
	MemBWGBs      float64 `json:"mem_bw_gbs"`  // the bound, same threads
	BWFraction    float64 `json:"bw_fraction"` // tg_gbs / mem_bw_gbs
}

// Pair is a figure beside its baseline.
type Pair struct {
	Name     string  `json:"name"`
	Value    string  `json:"value"`
	Baseline string  `json:"baseline"`
	Ratio    float64 `json:"ratio"`
	Target   string  `json:"target,omitempty"`
	Note     string  `json:"note,omitempty"`
}

// Variant is one q4_0 generation run under other load settings.
type Variant struct {
	Settings   string  `json:"settings"`
	Threads    int     `json:"threads"`
	NGen       int     `json:"n_gen"`
	TGTS       float64 `json:"tg_ts"`
	TGStddev   float64 `json:"tg_stddev_ts"`
	TGGBs      float64 `json:"tg_gbs"`
	MemBWGBs   float64 `json:"mem_bw_gbs"`
	BWFraction float64 `json:"bw_fraction"`
	LoadS      float64 `json:"load_s"`
	PeakRSS    uint64  `json:"peak_rss_bytes"`
}

// Kernel is one measurement of the matrix-vector kernel alone (kbench).
type Kernel struct {
	Type       string  `json:"type"`
	Where      string  `json:"where"` // cache or memory
	Threads    int     `json:"threads"`
	Repacked   bool    `json:"repacked"`
	HugePages  bool    `json:"hugepages"`
	WeightMB   float64 `json:"weight_mb"`
	GBps       float64 `json:"gbs"`
	MemBWGBs   float64 `json:"mem_bw_gbs"`
	BWFraction float64 `json:"bw_fraction"`
}

// Report is the JSON written to bench.json.
type Report struct {
	Info     map[string]string `json:"info"`
	MemBW    map[int]float64   `json:"mem_bw_gbs"`
	Models   []ModelRow        `json:"models"`
	Variants []Variant         `json:"variants,omitempty"`
	Kernels  []Kernel          `json:"kernels,omitempty"`
	Figures  []Pair            `json:"figures"`
	Soak     *Soak             `json:"soak,omitempty"`
}

// Soak is the soak run: the verdict line of loadgen -soak-compare
// (scripts/bench-soak.sh).
type Soak = soakresult.Verdict

// SoakRun is one run of the soak.
type SoakRun = soakresult.Run

func main() {
	dir := flag.String("dir", "", "run folder written by scripts/bench.sh")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "usage: benchreport -dir RUN")
		os.Exit(2)
	}
	rep, err := build(filepath.Join(*dir, "raw"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
	md := markdown(rep)
	js, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(filepath.Join(*dir, "bench.md"), []byte(md), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
	if err := os.WriteFile(filepath.Join(*dir, "bench.json"), append(js, '\n'), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
	fmt.Print(md)
}

func build(raw string) (*Report, error) {
	rep := &Report{Info: map[string]string{}, MemBW: map[int]float64{}}
	if b, err := os.ReadFile(filepath.Join(raw, "info.txt")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ": "); ok {
				rep.Info[strings.TrimSpace(k)] = strings.TrimSpace(v)
			}
		}
	}
	for _, typ := range []string{"f16", "q8_0", "q4_0"} {
		rows, err := modelRows(raw, typ)
		if err != nil {
			return nil, err
		}
		for _, r := range rows {
			rep.MemBW[r.Threads] = max(rep.MemBW[r.Threads], r.MemBWGBs)
		}
		rep.Models = append(rep.Models, rows...)
	}
	v, err := variants(raw)
	if err != nil {
		return nil, err
	}
	rep.Variants = v
	for _, x := range rep.Variants {
		rep.MemBW[x.Threads] = max(rep.MemBW[x.Threads], x.MemBWGBs)
	}
	// The bound is the best bandwidth measured at a thread count anywhere in
	// the run: a measurement disturbed by another process only lowers it.
	for i := range rep.Models {
		m := &rep.Models[i]
		if bw := rep.MemBW[m.Threads]; bw > 0 && m.TGGBs > 0 {
			m.MemBWGBs, m.BWFraction = bw, m.TGGBs/bw
		}
	}
	for i := range rep.Variants {
		x := &rep.Variants[i]
		if bw := rep.MemBW[x.Threads]; bw > 0 && x.TGGBs > 0 {
			x.MemBWGBs, x.BWFraction = bw, x.TGGBs/bw
		}
	}
	k, err := kernels(raw)
	if err != nil {
		return nil, err
	}
	for i := range k {
		if bw := rep.MemBW[k[i].Threads]; bw > 0 {
			k[i].MemBWGBs, k[i].BWFraction = bw, k[i].GBps/bw
		}
	}
	rep.Kernels = k
	if p, ok := convertPair(raw); ok {
		rep.Figures = append(rep.Figures, p...)
	}
	if p, ok := ttftPair(raw); ok {
		rep.Figures = append(rep.Figures, p)
	}
	if p, ok := downloadPair(raw); ok {
		rep.Figures = append(rep.Figures, p)
	}
	if p, ok := serverPair(raw); ok {
		rep.Figures = append(rep.Figures, p)
	}
	rep.Figures = append(rep.Figures, replicasPairs(raw)...)
	if sk, ok := soak(raw); ok {
		rep.Soak = sk
		rep.Figures = append(rep.Figures, soakPairs(sk)...)
	}
	return rep, nil
}

func modelRows(raw, typ string) ([]ModelRow, error) {
	b, err := os.ReadFile(filepath.Join(raw, "bench-"+typ+".json"))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var recs []benchRecord
	if err := json.Unmarshal(b, &recs); err != nil {
		return nil, fmt.Errorf("bench-%s.json: %w", typ, err)
	}
	rss := timeRSS(filepath.Join(raw, "bench-"+typ+".time"))
	byThreads := map[int]*ModelRow{}
	var order []int
	for _, r := range recs {
		row := byThreads[r.NThreads]
		if row == nil {
			row = &ModelRow{Type: typ, ModelType: r.ModelType, SizeBytes: r.ModelSize, LoadSeconds: float64(r.LoadNS) / 1e9,
				PeakRSSBytes: max(rss, r.PeakRSSBytes), Threads: r.NThreads, BytesPerToken: r.BytesPerToken}
			byThreads[r.NThreads] = row
			order = append(order, r.NThreads)
		}
		switch {
		case r.NPrompt > 0 && r.NGen == 0:
			row.NPrompt, row.PPTS, row.PPStddev = r.NPrompt, r.AvgTS, r.StddevTS
		case r.NGen > 0 && r.NPrompt == 0:
			row.NGen, row.TGTS, row.TGStddev = r.NGen, r.AvgTS, r.StddevTS
			row.MemBWGBs, row.BWFraction = r.MemBWGBs, r.BWFraction
			row.TGGBs = r.AvgTS * float64(r.BytesPerToken) / 1e9
		}
	}
	sort.Ints(order)
	var out []ModelRow
	for _, t := range order {
		out = append(out, *byThreads[t])
	}
	return out, nil
}

// variants reads the generation runs under other load settings, one
// process each (raw/<name>.json and .time).
func variants(raw string) ([]Variant, error) {
	var out []Variant
	for _, v := range []struct{ name, settings string }{
		{"bench-q4_0-thp-mmap1", "q4_0, mmap, --hugepages (THP for the repacked weights)"},
		{"bench-q4_0-thp-mmap0", "q4_0, no mmap (read into memory), --hugepages"},
		{"bench-q8_0-mmap0", "q8_0, no mmap (read into memory)"},
	} {
		b, err := os.ReadFile(filepath.Join(raw, v.name+".json"))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var recs []benchRecord
		if err := json.Unmarshal(b, &recs); err != nil {
			return nil, fmt.Errorf("%s.json: %w", v.name, err)
		}
		rss := timeRSS(filepath.Join(raw, v.name+".time"))
		for _, r := range recs {
			if r.NGen == 0 || r.NPrompt != 0 {
				continue
			}
			out = append(out, Variant{Settings: v.settings, Threads: r.NThreads, NGen: r.NGen, TGTS: r.AvgTS, TGStddev: r.StddevTS,
				TGGBs: r.AvgTS * float64(r.BytesPerToken) / 1e9, MemBWGBs: r.MemBWGBs, BWFraction: r.BWFraction,
				LoadS: float64(r.LoadNS) / 1e9, PeakRSS: max(rss, r.PeakRSSBytes)})
		}
	}
	return out, nil
}

// timeRSS reads "Maximum resident set size (kbytes)" from GNU time -v.
// kernels reads raw/kernel.json (kbench), if the run made one.
func kernels(raw string) ([]Kernel, error) {
	b, err := os.ReadFile(filepath.Join(raw, "kernel.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var recs []struct {
		Type        string  `json:"type"`
		Where       string  `json:"where"`
		Threads     int     `json:"threads"`
		Repacked    bool    `json:"repacked"`
		HugePages   bool    `json:"hugepages"`
		WeightBytes int64   `json:"weight_bytes"`
		GBps        float64 `json:"gbs"`
	}
	if err := json.Unmarshal(b, &recs); err != nil {
		return nil, fmt.Errorf("kernel.json: %w", err)
	}
	var out []Kernel
	for _, r := range recs {
		out = append(out, Kernel{Type: r.Type, Where: r.Where, Threads: r.Threads, Repacked: r.Repacked,
			HugePages: r.HugePages, WeightMB: float64(r.WeightBytes) / 1e6, GBps: r.GBps})
	}
	return out, nil
}

func timeRSS(path string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	m := regexp.MustCompile(`Maximum resident set size \(kbytes\): (\d+)`).FindSubmatch(b)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseUint(string(m[1]), 10, 64)
	return v * 1024
}

// grab returns the first submatch of re in the file, as a float.
func grab(text, re string) (float64, bool) {
	m := regexp.MustCompile(re).FindStringSubmatch(text)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, err == nil
}

func readText(raw, name string) (string, bool) {
	b, err := os.ReadFile(filepath.Join(raw, name))
	if err != nil {
		return "", false
	}
	return string(b), true
}

func convertPair(raw string) ([]Pair, bool) {
	t, ok := readText(raw, "convert.txt")
	if !ok {
		return nil, false
	}
	cp, ok1 := grab(t, `cp \(\+sync\):\s+([\d.]+) s`)
	conv, ok2 := grab(t, `convert f16:\s+([\d.]+) s`)
	rss, ok3 := grab(t, `peak RSS:\s+([\d.]+) MiB`)
	ratio, ok4 := grab(t, `ratio:\s+([\d.]+)`)
	if !ok1 || !ok2 || !ok4 {
		return nil, false
	}
	out := []Pair{{Name: "convert f16 (12.5 GB checkpoint), throughput", Value: fmt.Sprintf("%.1f s", conv),
		Baseline: fmt.Sprintf("cp + sync %.1f s", cp), Ratio: ratio, Target: ">= 0.5"}}
	if ok3 {
		out = append(out, Pair{Name: "convert f16, peak RSS", Value: fmt.Sprintf("%.0f MiB", rss),
			Baseline: "1024 MiB limit", Ratio: rss / 1024, Target: "< 1"})
	}
	return out, true
}

func ttftPair(raw string) (Pair, bool) {
	b, err := os.ReadFile(filepath.Join(raw, "ttft.json"))
	if err != nil {
		return Pair{}, false
	}
	var r struct {
		Model string `json:"model"`
		Turns []struct {
			Turn            int     `json:"turn"`
			TTFT            float64 `json:"ttft_ms"`
			PromptTokens    int     `json:"prompt_tokens"`
			EvaluatedTokens int     `json:"evaluated_tokens"`
		} `json:"turns"`
		Ratio float64 `json:"ttft_ratio"`
	}
	if err := json.Unmarshal(lastLine(b), &r); err != nil || len(r.Turns) < 2 {
		return Pair{}, false
	}
	first, last := r.Turns[0], r.Turns[len(r.Turns)-1]
	return Pair{
		Name:     fmt.Sprintf("multi-turn TTFT (chat, %s), turn %d / turn 1", filepath.Base(r.Model), last.Turn),
		Value:    fmt.Sprintf("%.0f ms (prompt %d tokens, %d evaluated)", last.TTFT, last.PromptTokens, last.EvaluatedTokens),
		Baseline: fmt.Sprintf("%.0f ms (prompt %d tokens)", first.TTFT, first.PromptTokens),
		Ratio:    r.Ratio,
		Note:     "KV prefix reuse: without it the ratio would grow with the history",
	}, true
}

func downloadPair(raw string) (Pair, bool) {
	t, ok := readText(raw, "download.txt")
	if !ok {
		return Pair{}, false
	}
	curl, ok1 := grab(t, `curl\s+[\d.]+ s\s+([\d.]+) MB/s`)
	pull, ok2 := grab(t, `chatglm pull\s+[\d.]+ s\s+([\d.]+) MB/s`)
	ratio, ok3 := grab(t, `ratio pull/curl ([\d.]+)`)
	if !ok1 || !ok2 || !ok3 {
		return Pair{}, false
	}
	return Pair{Name: "download (local Hub, sha256-verified)", Value: fmt.Sprintf("%.0f MB/s", pull),
		Baseline: fmt.Sprintf("curl %.0f MB/s", curl), Ratio: ratio, Target: ">= 0.9"}, true
}

func serverPair(raw string) (Pair, bool) {
	t, ok := readText(raw, "server.txt")
	if !ok {
		return Pair{}, false
	}
	var r struct {
		Model    string  `json:"model"`
		Ratio    float64 `json:"ratio"`
		Failures int     `json:"failures"`
		Runs     []struct {
			Label string  `json:"label"`
			TPS   float64 `json:"tokens_per_s"`
		} `json:"runs"`
	}
	if err := json.Unmarshal(lastLine([]byte(t)), &r); err != nil || len(r.Runs) < 2 {
		return Pair{}, false
	}
	return Pair{Name: "server load, aggregate tokens/s", Value: fmt.Sprintf("%s %.1f t/s", r.Runs[0].Label, r.Runs[0].TPS),
		Baseline: fmt.Sprintf("%s %.1f t/s", r.Runs[1].Label, r.Runs[1].TPS), Ratio: r.Ratio, Target: ">= 2",
		Note: fmt.Sprintf("%d failures; model: %s", r.Failures, r.Model)}, true
}

// replicasPairs reads raw/replicas.txt (scripts/bench-replicas.sh): the
// multi-turn TTFT with session affinity against round robin, and the
// aggregate tokens/s of three replicas against one.
func replicasPairs(raw string) []Pair {
	t, ok := readText(raw, "replicas.txt")
	if !ok {
		return nil
	}
	var r struct {
		Model     string  `json:"model"`
		Convs     int     `json:"conversations"`
		Turns     int     `json:"turns"`
		AffTTFT   float64 `json:"affinity_mean_ttft_ms"`
		RRTTFT    float64 `json:"roundrobin_mean_ttft_ms"`
		TTFTRatio float64 `json:"ttft_ratio"`
		AffCached float64 `json:"affinity_cached_share"`
		RRCached  float64 `json:"roundrobin_cached_share"`
		OneTPS    float64 `json:"one_replica_tokens_per_s"`
		ThreeTPS  float64 `json:"three_tokens_per_s"`
		TPSRatio  float64 `json:"tps_ratio"`
		Failures  int     `json:"failures"`
		LoadAvg   string  `json:"loadavg"`
	}
	if err := json.Unmarshal(lastLine([]byte(t)), &r); err != nil || r.AffTTFT == 0 {
		return nil
	}
	note := fmt.Sprintf("3 replicas on this machine's cores, behind HAProxy; %d failures; load average %s; model: %s", r.Failures, r.LoadAvg, r.Model)
	return []Pair{
		{Name: fmt.Sprintf("multi-turn TTFT across 3 replicas (%d conversations x %d turns), round robin / session affinity", r.Convs, r.Turns),
			Value:    fmt.Sprintf("affinity %.0f ms (%.0f%% of prompt tokens cached)", r.AffTTFT, 100*r.AffCached),
			Baseline: fmt.Sprintf("round robin %.0f ms (%.0f%% cached)", r.RRTTFT, 100*r.RRCached),
			Ratio:    r.TTFTRatio, Note: note},
		{Name: "aggregate tokens/s, 3 replicas behind HAProxy / 1 replica",
			Value: fmt.Sprintf("%.1f t/s", r.ThreeTPS), Baseline: fmt.Sprintf("%.1f t/s", r.OneTPS),
			Ratio: r.TPSRatio, Note: "the replicas share this machine's cores; on N machines each has its own"},
	}
}

// soak reads the verdict of raw/soak.txt.
func soak(raw string) (*Soak, bool) {
	t, ok := readText(raw, "soak.txt")
	if !ok {
		return nil, false
	}
	var sk Soak
	if err := json.Unmarshal(lastLine([]byte(t)), &sk); err != nil || len(sk.Runs) != 2 {
		return nil, false
	}
	return &sk, true
}

// soakPairs are the soak's figures: the well-behaved clients' p99 beside
// the hostile ones against the baseline's, and the server's RSS growth.
func soakPairs(sk *Soak) []Pair {
	base, hostile := sk.Runs[0], sk.Runs[1]
	yes := map[bool]string{true: "yes", false: "no"}
	return []Pair{{
		Name: fmt.Sprintf("soak (%.0f s after %.0f s warm-up), p99 latency of %d streaming clients beside %d hostile ones",
			hostile.Seconds, hostile.WarmupSeconds, hostile.Clients, hostile.Hostile),
		Value:    fmt.Sprintf("%.0f ms (%d requests, %d failed)", hostile.P99Millis, hostile.Requests, hostile.Failures),
		Baseline: fmt.Sprintf("no hostile clients %.0f ms (%d requests, %d failed)", base.P99Millis, base.Requests, base.Failures),
		Ratio:    sk.P99Ratio, Target: "<= 1.5",
		Note: fmt.Sprintf("server alive at the end: %s; load average %s / %s; model: %s",
			yes[sk.Alive], base.LoadAvg, hostile.LoadAvg, sk.Model),
	}, {
		Name:     "soak, server RSS at the end / at the end of the warm-up (hostile run)",
		Value:    fmt.Sprintf("%.1f MiB", float64(hostile.RSSEndKiB)/1024),
		Baseline: fmt.Sprintf("%.1f MiB", float64(hostile.RSSWarmKiB)/1024),
		Ratio:    1 + sk.RSSGrowth, Target: "< 1.10",
		Note: fmt.Sprintf("peak %.1f MiB; baseline run %.1f -> %.1f MiB",
			float64(hostile.RSSPeakKiB)/1024, float64(base.RSSWarmKiB)/1024, float64(base.RSSEndKiB)/1024),
	}}
}

// lastLine returns the last non-empty line that starts with '{'.
func lastLine(b []byte) []byte {
	var last []byte
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "{") {
			last = []byte(l)
		}
	}
	return last
}

func gib(b uint64) string { return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30)) }

func markdown(r *Report) string {
	var b strings.Builder
	b.WriteString("# chatglm benchmark\n\n")
	keys := make([]string, 0, len(r.Info))
	for k := range r.Info {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "- %s: %s\n", k, r.Info[k])
	}
	if len(r.MemBW) > 0 {
		var ts []int
		for t := range r.MemBW {
			ts = append(ts, t)
		}
		sort.Ints(ts)
		var parts []string
		for _, t := range ts {
			parts = append(parts, fmt.Sprintf("%d thread(s) %.1f GB/s", t, r.MemBW[t]))
		}
		fmt.Fprintf(&b, "- memory bandwidth bound (read-only STREAM-like kernel, best measurement per thread count in this run): %s\n", strings.Join(parts, ", "))
	}
	if len(r.Models) > 0 {
		b.WriteString("\n## Model speed (synthetic full-size ChatGLM3-6B, CPU)\n\n")
		b.WriteString("| model | size | load s | peak RSS | threads | pp t/s | tg t/s | tg GB/s | bound GB/s | tg / bound |\n")
		b.WriteString("| ----- | ---: | -----: | -------: | ------: | -----: | -----: | ------: | ---------: | ---------: |\n")
		for _, m := range r.Models {
			pp, tg := "", ""
			if m.NPrompt > 0 {
				pp = fmt.Sprintf("pp%d %.2f ± %.2f", m.NPrompt, m.PPTS, m.PPStddev)
			}
			if m.NGen > 0 {
				tg = fmt.Sprintf("tg%d %.2f ± %.2f", m.NGen, m.TGTS, m.TGStddev)
			}
			frac := ""
			if m.BWFraction > 0 {
				frac = fmt.Sprintf("%.0f%%", 100*m.BWFraction)
			}
			fmt.Fprintf(&b, "| %s | %s | %.1f | %s | %d | %s | %s | %.1f | %.1f | %s |\n",
				m.ModelType, gib(m.SizeBytes), m.LoadSeconds, gib(m.PeakRSSBytes), m.Threads, pp, tg, m.TGGBs, m.MemBWGBs, frac)
		}
		b.WriteString("\ntg GB/s = tg t/s x bytes read per token (every weight but the embedding table);" +
			" bound = read bandwidth with the same threads, best measurement of this run.\n")
	}
	if len(r.Variants) > 0 {
		b.WriteString("\n## Generation under other load settings (compare with the rows above: mmap, 4 KiB pages)\n\n")
		b.WriteString("| settings | threads | tg t/s | tg GB/s | bound GB/s | tg / bound | load s | peak RSS |\n")
		b.WriteString("| -------- | ------: | -----: | ------: | ---------: | ---------: | -----: | -------: |\n")
		for _, v := range r.Variants {
			fmt.Fprintf(&b, "| %s | %d | tg%d %.2f ± %.2f | %.1f | %.1f | %.0f%% | %.1f | %s |\n",
				v.Settings, v.Threads, v.NGen, v.TGTS, v.TGStddev, v.TGGBs, v.MemBWGBs, 100*v.BWFraction, v.LoadS, gib(v.PeakRSS))
		}
	}
	if len(r.Kernels) > 0 {
		b.WriteString("\n## The matrix-vector kernel alone (internal/measure/kernelbench: ggml's CPU kernel, repacked as llama.cpp does)\n\n")
		b.WriteString("| type | weights | threads | pages | GB/s | bound GB/s | kernel / bound |\n")
		b.WriteString("| ---- | ------- | ------: | ----- | ---: | ---------: | -------------: |\n")
		for _, k := range r.Kernels {
			where := fmt.Sprintf("%.1f MB x128, in cache", k.WeightMB)
			if k.Where == "memory" {
				where = fmt.Sprintf("%.0f MB, from memory", k.WeightMB)
			}
			pages := "4 KiB"
			if k.HugePages {
				pages = "huge"
			}
			fmt.Fprintf(&b, "| %s | %s | %d | %s | %.1f | %.1f | %.0f%% |\n", k.Type, where, k.Threads, pages, k.GBps, k.MemBWGBs, 100*k.BWFraction)
		}
		b.WriteString("\nThe kernel's rate from memory is the ceiling of generation with this llama.cpp:" +
			" a model adds attention, norms and the output layer around it.\n")
	}
	if len(r.Figures) > 0 {
		b.WriteString("\n## Figures against their baselines (same run)\n\n")
		b.WriteString("| figure | value | baseline | ratio | target | note |\n")
		b.WriteString("| ------ | ----: | -------: | ----: | -----: | ---- |\n")
		for _, p := range r.Figures {
			fmt.Fprintf(&b, "| %s | %s | %s | %.2f | %s | %s |\n", p.Name, p.Value, p.Baseline, p.Ratio, p.Target, p.Note)
		}
	}
	if sk := r.Soak; sk != nil {
		verdict := "all targets met"
		if !sk.Pass {
			verdict = "missed: " + strings.Join(sk.Misses, "; ")
		}
		fmt.Fprintf(&b, "\n## Soak: what the server did to each hostile client (scripts/bench-soak.sh)\n\nVerdict: %s.\n\n", verdict)
		b.WriteString("| hostile kind | connections | outcomes | longest a slow connection was kept |\n")
		b.WriteString("| ------------ | ----------: | -------- | ---------------------------------: |\n")
		for _, k := range sk.Runs[1].HostileKinds {
			names := make([]string, 0, len(k.Outcomes))
			for o := range k.Outcomes {
				names = append(names, o)
			}
			sort.Slice(names, func(i, j int) bool {
				a, b := k.Outcomes[names[i]], k.Outcomes[names[j]]
				return a > b || a == b && names[i] < names[j]
			})
			var parts []string
			for _, o := range names {
				parts = append(parts, fmt.Sprintf("%s x%d", o, k.Outcomes[o]))
			}
			held := ""
			if k.MaxHeldSeconds > 0 {
				held = fmt.Sprintf("%.1f s", k.MaxHeldSeconds)
			}
			fmt.Fprintf(&b, "| %s | %d | %s | %s |\n", k.Kind, k.Connections, strings.Join(parts, ", "), held)
		}
	}
	return b.String()
}
