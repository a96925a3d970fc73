// Package kernelbench times ggml's CPU matrix-vector product, the kernel
// that token generation spends most of its time in, on weights that stay in
// the caches and on weights that must come from memory.
//
// Generation reads every weight once per token, so its ceiling is the
// smaller of two rates: the memory bandwidth (internal/measure/membw) and the rate
// at which the kernel can consume weight bytes when memory is not in the way.
// The second is measured here with the weights in cache: a matrix small
// enough for the L2 caches, multiplied by a vector many times in one graph.
// When that rate is below the memory bandwidth, generation is compute-bound
// and no load setting brings it to the bandwidth bound.
package kernelbench

/*
#cgo CPPFLAGS: -I${SRCDIR}/../../../third_party/llamacpp/include
#include <stdlib.h>
#include "kernel.h"
*/
import "C"

import (
	"fmt"
	"time"
	"unsafe"

	"github.com/chatglm/chatglm/binding" // links llama.cpp and ggml; SetHugePages
)

// Type is a ggml tensor type (the values of enum ggml_type).
type Type int

// The weight types of the benchmark suite.
const (
	F16  Type = 1
	Q4_0 Type = 2
	Q8_0 Type = 8
)

func (t Type) String() string {
	switch t {
	case F16:
		return "f16"
	case Q4_0:
		return "q4_0"
	case Q8_0:
		return "q8_0"
	}
	return fmt.Sprintf("type%d", int(t))
}

// Spec is one measurement: Copies products of the same Rows x Cols weight
// matrix with one vector, in one graph, computed Reps times (best counts).
type Spec struct {
	Type       Type
	Rows, Cols int64
	Copies     int
	Reps       int
	Threads    int
	Repack     bool // place the weights in the CPU backend's repacking buffer, as llama.cpp does
	HugePages  bool // binding.SetHugePages while the buffers are made (chatglm --hugepages)
}

// Result is a measured rate.
type Result struct {
	Spec
	WeightBytes int64         // bytes of the weight matrix as stored (repacking keeps the size)
	Repacked    bool          // whether the weights were repacked
	Best        time.Duration // best time for the whole graph
}

// GBps is the weight bytes consumed per second (1e9 bytes).
func (r Result) GBps() float64 {
	return float64(r.WeightBytes) * float64(r.Copies) / r.Best.Seconds() / 1e9
}

// MatVec runs one measurement.
func MatVec(s Spec) (Result, error) {
	if s.Rows <= 0 || s.Cols <= 0 || s.Copies <= 0 || s.Reps <= 0 || s.Threads <= 0 {
		return Result{}, fmt.Errorf("kernelbench: bad spec %+v", s)
	}
	var best, bytes C.int64_t
	var repacked C.int
	errbuf := (*C.char)(C.malloc(256))
	defer C.free(unsafe.Pointer(errbuf))
	binding.SetHugePages(s.HugePages)
	defer binding.SetHugePages(false)
	rc := C.kb_matvec(C.int(s.Type), C.int64_t(s.Rows), C.int64_t(s.Cols), C.int(s.Copies), C.int(s.Reps),
		C.int(s.Threads), boolInt(s.Repack), &best, &bytes, &repacked, errbuf, 256)
	if rc != 0 {
		return Result{}, fmt.Errorf("kernelbench %s %dx%d: %s", s.Type, s.Rows, s.Cols, C.GoString(errbuf))
	}
	return Result{Spec: s, WeightBytes: int64(bytes), Repacked: repacked != 0, Best: time.Duration(best)}, nil
}

func boolInt(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// Where tells whether a spec's weights stay in the caches or stream from
// memory.
func (s Spec) Where() string {
	if s.Copies > 1 {
		return "cache"
	}
	return "memory"
}

// Suite is the benchmark suite's set for one type: per thread count, a
// 1.2 MB matrix (q4_0; each core's half fits its L2) multiplied 128 times,
// and a 302 MB matrix (far beyond the L3) streamed from memory with 4 KiB
// pages and with huge pages.
func Suite(t Type, threads []int, reps int) []Spec {
	var specs []Spec
	for _, n := range threads {
		specs = append(specs,
			Spec{Type: t, Rows: 2048, Cols: 1024, Copies: 128, Reps: reps, Threads: n, Repack: true},
			Spec{Type: t, Rows: 65536, Cols: 8192, Copies: 1, Reps: reps, Threads: n, Repack: true},
			Spec{Type: t, Rows: 65536, Cols: 8192, Copies: 1, Reps: reps, Threads: n, Repack: true, HugePages: true})
	}
	return specs
}
