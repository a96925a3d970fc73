// Package membw measures the machine's memory bandwidth with STREAM-like
// kernels written in C (read, copy, triad over arrays much larger than the
// caches), so benchmarks can express a bandwidth-bound workload, such as
// generating tokens with an LLM, as a fraction of the physical limit.
//
// Bytes are counted as STREAM does: read moves 8 bytes per element, copy 16
// (one read, one write), triad 24 (two reads, one write); write-allocate
// traffic is not counted. GB/s are 1e9 bytes per second.
package membw

/*
#cgo CFLAGS: -O3 -march=native -std=c11
#cgo LDFLAGS: -lpthread
#include "membw.h"
*/
import "C"

import (
	"fmt"
	"runtime"
)

// Result is one measurement.
type Result struct {
	Threads    int     // threads used
	ArrayBytes int64   // bytes per array (three arrays are allocated)
	Reps       int     // repetitions; the best time of each kernel counts
	Read       float64 // GB/s of the read-only kernel (sum of words)
	Copy       float64 // GB/s of c[i] = a[i]
	Triad      float64 // GB/s of a[i] = b[i] + q*c[i]
}

// Bound is the bandwidth a read-only stream reaches (the Read kernel): the
// physical limit of a workload that streams weights from memory, such as
// generating tokens. Copy and triad count their writes too (STREAM's
// convention), so their GB/s are not a bound for reading: on this kind of
// machine a core's copy moves about twice the bytes of its reads.
func (r Result) Bound() float64 { return r.Read }

// DefaultArrayBytes is the default size of each of the three arrays: far
// beyond any last-level cache.
const DefaultArrayBytes = 256 << 20

// Measure runs the kernels with the given number of threads (0 = one per
// CPU) over three arrays of arrayBytes each (0 = DefaultArrayBytes), reps
// times (0 = 5), and reports the best bandwidth of each kernel.
func Measure(threads int, arrayBytes int64, reps int) (Result, error) {
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	if arrayBytes <= 0 {
		arrayBytes = DefaultArrayBytes
	}
	if reps <= 0 {
		reps = 5
	}
	n := arrayBytes / 8
	if n < int64(threads)*1024 {
		return Result{}, fmt.Errorf("membw: arrays of %d bytes are too small for %d threads", arrayBytes, threads)
	}
	var best [C.MEMBW_KERNELS]C.double
	if rc := C.membw_run(C.size_t(n), C.int(threads), C.int(reps), &best[0]); rc != 0 {
		return Result{}, fmt.Errorf("membw: could not allocate 3 x %d bytes or start %d threads", arrayBytes, threads)
	}
	bytes := float64(n * 8)
	gbs := func(mult float64, sec C.double) float64 {
		if sec <= 0 {
			return 0
		}
		return mult * bytes / float64(sec) / 1e9
	}
	return Result{
		Threads:    threads,
		ArrayBytes: n * 8,
		Reps:       reps,
		Read:       gbs(1, best[C.MEMBW_READ]),
		Copy:       gbs(2, best[C.MEMBW_COPY]),
		Triad:      gbs(3, best[C.MEMBW_TRIAD]),
	}, nil
}
