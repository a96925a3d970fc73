// Transparent huge pages for ggml's CPU buffers.
//
// Token generation streams every weight once per token. With 4 KiB pages a
// 3.4 GB q4_0 model is 850,000 pages, and their TLB misses cost about a
// tenth of the generation time; with 2 MiB pages they almost vanish. Where
// the kernel hands out huge pages only on request (THP "madvise", the
// default of Debian and most distributions), nobody requests them: ggml
// allocates its buffers (the weights when they are read or repacked into
// memory, the KV cache, the compute buffers) with posix_memalign.
//
// The binding links with -Wl,--wrap=ggml_aligned_malloc, so ggml's calls to
// it from other files (the CPU buffer type among them) come here first: while
// chatglm_set_hugepages(1) is in force, large blocks get madvise(MADV_HUGEPAGE)
// before anything touches them. With THP "never" the call does nothing; with
// "always" it changes nothing. It is off by default: the kernel compacts
// memory to find huge pages as they are first touched, which makes loading
// several seconds slower on a machine whose memory is full of page cache.
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

void *__real_ggml_aligned_malloc(size_t size);

// Blocks smaller than this are left alone (graph metadata, small tensors).
#define CHATGLM_HUGEPAGE_MIN ((size_t)4 << 20)

static int chatglm_hugepages;

void chatglm_set_hugepages(int on) { __atomic_store_n(&chatglm_hugepages, on, __ATOMIC_RELAXED); }

void *__wrap_ggml_aligned_malloc(size_t size) {
	void *p = __real_ggml_aligned_malloc(size);
	if (p == NULL || !__atomic_load_n(&chatglm_hugepages, __ATOMIC_RELAXED) || size < CHATGLM_HUGEPAGE_MIN) {
		return p;
	}
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t start = ((uintptr_t)p + page - 1) & ~(page - 1);
	uintptr_t end = ((uintptr_t)p + size) & ~(page - 1);
	if (end > start) {
		(void)madvise((void *)start, end - start, MADV_HUGEPAGE);
	}
	return p;
}
