package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReplicas folds the output of a real scripts/bench-replicas.sh run into
// the two figures: TTFT round robin / affinity, tokens/s 3 replicas / 1.
func TestReplicas(t *testing.T) {
	p := replicasPairs("testdata/replicas")
	if len(p) != 2 {
		t.Fatalf("figures %+v, want two", p)
	}
	ttft, tps := p[0], p[1]
	if ttft.Value != "affinity 2579 ms (83% of prompt tokens cached)" || ttft.Baseline != "round robin 14050 ms (31% cached)" ||
		ttft.Ratio < 5.44 || ttft.Ratio > 5.46 || !strings.Contains(ttft.Name, "6 conversations x 10 turns") {
		t.Errorf("TTFT figure %+v", ttft)
	}
	if tps.Value != "93.7 t/s" || tps.Baseline != "81.3 t/s" || tps.Ratio < 1.15 || tps.Ratio > 1.16 {
		t.Errorf("tokens/s figure %+v", tps)
	}
	if !strings.Contains(ttft.Note, "0 failures") || !strings.Contains(ttft.Note, "load average 13.98") {
		t.Errorf("note %q", ttft.Note)
	}
}

// TestReplicasMissing: no file, or one without the comparison line (the
// script failed early), gives no rows.
func TestReplicasMissing(t *testing.T) {
	if p := replicasPairs(t.TempDir()); p != nil {
		t.Errorf("empty folder: %+v", p)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "replicas.txt"), []byte("bench-replicas: replica 2 not ready\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if p := replicasPairs(dir); p != nil {
		t.Errorf("failed run: %+v", p)
	}
}
