package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSoak folds the output of a real scripts/bench-soak.sh run (a short
// one, with six of the seven hostile kinds) into the report.
func TestSoak(t *testing.T) {
	rep, err := build("testdata/soak/raw")
	if err != nil {
		t.Fatal(err)
	}
	if rep.Soak == nil || !rep.Soak.Pass || len(rep.Soak.Runs) != 2 || len(rep.Soak.Runs[1].HostileKinds) != 6 {
		t.Fatalf("soak %+v", rep.Soak)
	}
	if len(rep.Figures) != 2 {
		t.Fatalf("figures %+v, want the soak's two", rep.Figures)
	}
	p99, rss := rep.Figures[0], rep.Figures[1]
	if p99.Ratio != 1.05 || p99.Value != "3708 ms (116 requests, 0 failed)" || p99.Baseline != "no hostile clients 3532 ms (157 requests, 0 failed)" {
		t.Errorf("p99 figure %+v", p99)
	}
	if rss.Ratio != 1.0244 || rss.Value != "202.9 MiB" || rss.Baseline != "198.1 MiB" {
		t.Errorf("RSS figure %+v", rss)
	}
	md := markdown(rep)
	for _, want := range []string{
		"Verdict: all targets met.",
		"| malformed-json | 80 | status 400 x80 |  |",
		"| slow-headers | 8 | closed by server x4, open when the soak ended x4 | 30.0 s |",
		"| soak (30 s after 10 s warm-up), p99 latency of 8 streaming clients beside 6 hostile ones | 3708 ms",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}

	// A missed target is named in the verdict.
	rep.Soak.Pass, rep.Soak.Misses = false, []string{"server not alive at the end of the hostile run: process 7 is gone"}
	if md := markdown(rep); !strings.Contains(md, "Verdict: missed: server not alive") {
		t.Errorf("markdown does not name the miss:\n%s", md)
	}
}

// TestSoakMissing: without soak.txt, or with one that has no verdict line
// (the script failed before it), the report has no soak rows.
func TestSoakMissing(t *testing.T) {
	if sk, ok := soak(t.TempDir()); ok || sk != nil {
		t.Errorf("soak of an empty folder = %+v", sk)
	}
	if sk, ok := soak("testdata/nonexistent"); ok {
		t.Errorf("soak of a missing folder = %+v", sk)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "soak.txt"), []byte("bench-soak: serve exited\n{\"label\":\"baseline\"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if sk, ok := soak(dir); ok {
		t.Errorf("soak of a run without a verdict = %+v", sk)
	}
}
