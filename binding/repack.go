package binding

/*
#include "shim.h"
*/
import "C"

import "sync"

// CPURepacks reports whether ggml's CPU backend, as compiled into this
// binary, repacks a weight of ggml type typ with rows rows (ne[1]) into an
// interleaved layout when it loads it: the faster matrix-vector kernels
// read that copy, so a mapped file's pages of such weights are held a
// second time. The rule is the one in ggml-cpu's repack.cpp at the pinned
// version (ggml_repack_get_optimal_repack_type) for x86; on other CPUs it
// answers false.
func CPURepacks(typ uint32, rows uint64) bool {
	if !repackBuilt() {
		return false
	}
	avx2 := C.ggml_cpu_has_avx2() != 0
	switch typ {
	case C.GGML_TYPE_Q4_0, C.GGML_TYPE_Q4_K, C.GGML_TYPE_IQ4_NL:
		return avx2 && rows%8 == 0
	case C.GGML_TYPE_Q2_K:
		return C.ggml_cpu_has_avx512() != 0 && rows%8 == 0
	}
	return false
}

// repackBuilt reports, once, whether the CPU backend was built with weight
// repacking (callers ask for every tensor of a model).
var repackBuilt = sync.OnceValue(func() bool { return CPUBuildInfo().Repack })
