package membw

import "testing"

// TestMeasure checks the plumbing on small arrays; no speed is asserted.
func TestMeasure(t *testing.T) {
	for _, threads := range []int{1, 2} {
		r, err := Measure(threads, 8<<20, 2)
		if err != nil {
			t.Fatal(err)
		}
		if r.Threads != threads || r.Reps != 2 || r.ArrayBytes != 8<<20 {
			t.Fatalf("result fields %+v", r)
		}
		if r.Read <= 0 || r.Copy <= 0 || r.Triad <= 0 || r.Bound() != r.Read {
			t.Fatalf("non-positive bandwidth %+v", r)
		}
		t.Logf("%+v", r)
	}
}

func TestBadArgs(t *testing.T) {
	if _, err := Measure(4, 1024, 1); err == nil {
		t.Fatal("tiny arrays accepted")
	}
}
