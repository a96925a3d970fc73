package binding

// #include "shim.h"
import "C"

// SetHugePages asks the kernel for transparent huge pages (madvise
// MADV_HUGEPAGE) for ggml's CPU buffers of 4 MiB or more allocated from now
// on: the weights when they are read or repacked into memory (repacking
// happens for q4_0 on x86 even with mmap), the KV cache and the compute
// buffers. Generation on the CPU streams every weight once per token, and
// with 4 KiB pages TLB misses cost about a tenth of that time. The price is
// a slower load: the kernel compacts memory to find huge pages. The setting
// is process-wide and off by default.
func SetHugePages(on bool) {
	v := C.int(0)
	if on {
		v = 1
	}
	C.chatglm_set_hugepages(v)
}
