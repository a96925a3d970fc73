package reference

import (
	"math"
	"testing"

	"github.com/chatglm/chatglm/internal/testmodel"
)

func TestRopeRotatesAdjacentPairsOfFirstHalf(t *testing.T) {
	x := []float32{1, 0, 0, 1, 5, 6, 7, 8} // head dim 8: rotary dims 0..3, pairs (0,1), (2,3)
	rope(x, 0, 10000)
	if x[0] != 1 || x[1] != 0 || x[3] != 1 {
		t.Fatalf("position 0 changed the vector: %v", x)
	}
	rope(x, 3, 10000)
	// pair 0 rotates by 3 rad, pair 1 by 3·10000^(-1/2) rad; dims 4..7 pass through.
	if math.Abs(float64(x[0])-math.Cos(3)) > 1e-6 || math.Abs(float64(x[1])-math.Sin(3)) > 1e-6 {
		t.Errorf("pair 0: %v %v", x[0], x[1])
	}
	a := 3 / math.Sqrt(10000)
	if math.Abs(float64(x[2])+math.Sin(a)) > 1e-6 || math.Abs(float64(x[3])-math.Cos(a)) > 1e-6 {
		t.Errorf("pair 1: %v %v", x[2], x[3])
	}
	if x[4] != 5 || x[7] != 8 {
		t.Errorf("second half touched: %v", x)
	}
}

func TestRMSNorm(t *testing.T) {
	out := rmsNorm([]float32{3, 4}, []float32{1, 2}, 0)
	// rms = sqrt(12.5)
	r := math.Sqrt(12.5)
	if math.Abs(float64(out[0])-3/r) > 1e-6 || math.Abs(float64(out[1])-8/r) > 1e-6 {
		t.Errorf("%v", out)
	}
	big := rmsNorm([]float32{3, 4}, []float32{1, 1}, 100)
	if math.Abs(float64(big[0])-3/math.Sqrt(112.5)) > 1e-6 {
		t.Errorf("eps not applied: %v", big)
	}
}

func TestForwardCausalAndDeterministic(t *testing.T) {
	dir := testmodel.Write(t, testmodel.Spec{Layers: 1, Hidden: 32, Heads: 2, KVGroups: 1, FFN: 48, DType: "F32", RopeRatio: 3})
	m, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, err := m.Forward([]int32{64790, 64792, 100, 200, 300})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := m.Forward([]int32{64790, 64792, 100, 999, 5})
	for t2 := 0; t2 < 3; t2++ {
		for i := range a[t2] {
			if a[t2][i] != b[t2][i] {
				t.Fatalf("position %d depends on later tokens", t2)
			}
		}
	}
	same := true
	for i := range a[3] {
		if a[3][i] != b[3][i] {
			same = false
		}
	}
	if same {
		t.Error("position 3 ignores its own token")
	}
	// The rotary base matters from position 1 on: the same weights with
	// rope_ratio 1 give the same first position and a different second one.
	m1, err := Load(testmodel.Write(t, testmodel.Spec{Layers: 1, Hidden: 32, Heads: 2, KVGroups: 1, FFN: 48, DType: "F32"}))
	if err != nil {
		t.Fatal(err)
	}
	c3, _ := m.Forward([]int32{200, 100})
	c1, _ := m1.Forward([]int32{200, 100})
	d0, d1 := 0.0, 0.0
	for i := range c3[0] {
		d0 = math.Max(d0, math.Abs(float64(c3[0][i]-c1[0][i])))
		d1 = math.Max(d1, math.Abs(float64(c3[1][i]-c1[1][i])))
	}
	if d0 != 0 || d1 == 0 {
		t.Errorf("rope_ratio effect: position 0 diff %g (want 0), position 1 diff %g (want > 0)", d0, d1)
	}
	if _, err := m.Forward([]int32{70000}); err == nil {
		t.Error("out-of-range token accepted")
	}
}
