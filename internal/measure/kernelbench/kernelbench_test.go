package kernelbench

import (
	"math"
	"strings"
	"testing"
)

func TestMatVecMeasuresEachType(t *testing.T) {
	for _, s := range []Spec{
		{Type: Q4_0, Rows: 256, Cols: 512, Copies: 8, Reps: 2, Threads: 2, Repack: true},
		{Type: Q4_0, Rows: 256, Cols: 512, Copies: 8, Reps: 2, Threads: 1, Repack: false, HugePages: true},
		{Type: Q8_0, Rows: 256, Cols: 512, Copies: 8, Reps: 2, Threads: 1, Repack: true},
		{Type: F16, Rows: 256, Cols: 512, Copies: 8, Reps: 2, Threads: 1},
	} {
		r, err := MatVec(s)
		if err != nil {
			t.Fatal(err)
		}
		want := map[Type]int64{Q4_0: 256 * 512 / 32 * 18, Q8_0: 256 * 512 / 32 * 34, F16: 256 * 512 * 2}[s.Type]
		if r.WeightBytes != want {
			t.Errorf("%s: %d weight bytes, want %d", s.Type, r.WeightBytes, want)
		}
		if g := r.GBps(); !(g > 0) || math.IsInf(g, 0) {
			t.Errorf("%s: %v GB/s", s.Type, g)
		}
		if r.Repacked && !s.Repack {
			t.Errorf("%s: repacked without asking", s.Type)
		}
		t.Logf("%s threads %d repacked %v: %.2f GB/s", s.Type, s.Threads, r.Repacked, r.GBps())
	}
}

func TestMatVecRejectsBadSpecs(t *testing.T) {
	for _, s := range []Spec{
		{Type: Q4_0, Rows: 0, Cols: 512, Copies: 1, Reps: 1, Threads: 1},
		{Type: Q4_0, Rows: 8, Cols: 512, Copies: 1, Reps: 0, Threads: 1},
		{Type: Q4_0, Rows: 8, Cols: 512, Copies: 1, Reps: 1, Threads: 0},
	} {
		if _, err := MatVec(s); err == nil || !strings.Contains(err.Error(), "bad spec") {
			t.Errorf("%+v: err %v, want a bad-spec error", s, err)
		}
	}
}

func TestSuite(t *testing.T) {
	specs := Suite(Q4_0, []int{1, 2}, 4)
	var cache, memory int
	for _, s := range specs {
		size := s.Rows * s.Cols / 32 * 18
		switch {
		case size <= 2<<20:
			cache++
		case size >= 256<<20:
			memory++
		default:
			t.Errorf("%+v: %d bytes is neither cache- nor memory-sized", s, size)
		}
	}
	if cache != 2 || memory != 4 {
		t.Errorf("suite has %d cache and %d memory specs, want 2 and 4", cache, memory)
	}
}
