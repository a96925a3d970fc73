// Command kbench prints, as JSON, the rate at which ggml's CPU matrix-vector
// kernel consumes weights in cache and from memory (internal/measure/kernelbench's
// Suite), for scripts/bench.sh:
//
//	go run ./tools/kbench [-type q4_0] [-threads 1,2] [-reps 5]
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/chatglm/chatglm/internal/measure/kernelbench"
)

// record is one line of the output.
type record struct {
	Type        string  `json:"type"`
	Where       string  `json:"where"` // cache or memory
	Rows        int64   `json:"rows"`
	Cols        int64   `json:"cols"`
	Copies      int     `json:"copies"`
	Threads     int     `json:"threads"`
	Repacked    bool    `json:"repacked"`
	HugePages   bool    `json:"hugepages"`
	WeightBytes int64   `json:"weight_bytes"`
	BestNS      int64   `json:"best_ns"`
	GBps        float64 `json:"gbs"`
}

func main() {
	typ := flag.String("type", "q4_0", "weight type: q4_0, q8_0 or f16")
	threads := flag.String("threads", "1,2", "thread counts")
	reps := flag.Int("reps", 5, "repetitions (the best counts)")
	flag.Parse()
	types := map[string]kernelbench.Type{"q4_0": kernelbench.Q4_0, "q8_0": kernelbench.Q8_0, "f16": kernelbench.F16}
	t, ok := types[*typ]
	if !ok {
		fail(fmt.Errorf("-type %q: want q4_0, q8_0 or f16", *typ))
	}
	var ns []int
	for _, f := range strings.Split(*threads, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fail(fmt.Errorf("-threads %q: want a list of positive numbers", *threads))
		}
		ns = append(ns, n)
	}
	var out []record
	for _, s := range kernelbench.Suite(t, ns, *reps) {
		r, err := kernelbench.MatVec(s)
		if err != nil {
			fail(err)
		}
		out = append(out, record{Type: s.Type.String(), Where: s.Where(), Rows: s.Rows, Cols: s.Cols, Copies: s.Copies,
			Threads: s.Threads, Repacked: r.Repacked, HugePages: s.HugePages, WeightBytes: r.WeightBytes,
			BestNS: r.Best.Nanoseconds(), GBps: r.GBps()})
		fmt.Fprintf(os.Stderr, "kbench: %s %s %d thread(s)%s: %.2f GB/s\n", s.Type, s.Where(), s.Threads,
			map[bool]string{true: " huge pages", false: ""}[s.HugePages], r.GBps())
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "kbench:", err)
	os.Exit(1)
}
