// Package soakresult defines the results of the server soak run in make bench:
// tools/loadgen -soak writes them as JSON and tools/benchreport reads them
// into the bench table, one definition for both.
package soakresult

// Run is one soak run: what the well-behaved clients saw, the
// server's memory and liveness, and what each hostile kind met.
type Run struct {
	Label         string      `json:"label,omitempty"`
	Clients       int         `json:"clients"`
	Hostile       int         `json:"hostile"`
	WarmupSeconds float64     `json:"warmup_s"`
	Seconds       float64     `json:"duration_s"`
	Requests      int         `json:"requests"`
	Failures      int         `json:"failures"`
	FirstError    string      `json:"first_error,omitempty"`
	LastError     string      `json:"last_error,omitempty"`
	Tokens        int         `json:"generated_tokens"`
	TokensPerSec  float64     `json:"tokens_per_s"`
	P50Millis     float64     `json:"p50_ms"`
	P99Millis     float64     `json:"p99_ms"`
	MaxMillis     float64     `json:"max_ms"`
	TTFTP50Millis float64     `json:"ttft_p50_ms"`
	TTFTP99Millis float64     `json:"ttft_p99_ms"`
	RSSWarmKiB    int64       `json:"rss_warm_kib,omitempty"` // at the end of the warm-up
	RSSEndKiB     int64       `json:"rss_end_kib,omitempty"`  // at the end of the measurement
	RSSPeakKiB    int64       `json:"rss_peak_kib,omitempty"` // highest of the 1 s samples
	RSSGrowth     float64     `json:"rss_growth"`             // end / warm - 1
	Alive         bool        `json:"alive"`                  // process running and /health 200 at the end
	AliveNote     string      `json:"alive_note,omitempty"`
	DiedAfterSecs float64     `json:"died_after_s,omitempty"`
	HostileKinds  []KindStats `json:"hostile_kinds,omitempty"`
	LoadAvg       string      `json:"loadavg_1m,omitempty"`
}

// Verdict is the comparison of a baseline soak run with one beside
// hostile clients, against the targets.
type Verdict struct {
	Bench           string   `json:"bench"`
	Model           string   `json:"model,omitempty"`
	Pass            bool     `json:"pass"`
	Misses          []string `json:"misses,omitempty"`
	Failures        int      `json:"failures"`
	P99Ratio        float64  `json:"p99_ratio"`
	TargetP99Ratio  float64  `json:"target_p99_ratio"`
	RSSGrowth       float64  `json:"rss_growth"`
	TargetRSSGrowth float64  `json:"target_rss_growth"`
	Alive           bool     `json:"alive"`
	Runs            []Run    `json:"runs"` // baseline, hostile
}

// KindStats is what one hostile kind met in a soak run.
type KindStats struct {
	Kind        string         `json:"kind"`
	Clients     int            `json:"clients"`
	Connections int            `json:"connections"`
	Outcomes    map[string]int `json:"outcomes"`
	// MaxHeldSeconds is the longest the server kept a slow sender's
	// connection before it answered or closed it.
	MaxHeldSeconds float64 `json:"max_held_s,omitempty"`
}
