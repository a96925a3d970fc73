#define _GNU_SOURCE
#include "membw.h"

#include <pthread.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

typedef struct {
	double *a, *b, *c;
	size_t n;
	int threads, reps;
	pthread_barrier_t bar;
	double t0;
	double best[MEMBW_KERNELS];
	volatile uint64_t sink;
} shared_t;

typedef struct {
	shared_t *s;
	int id;
} worker_t;

static double now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// Sums the 64-bit words of a range: a read-only stream. With AVX-512 it
// keeps eight independent 64-byte loads in flight per iteration; otherwise
// the compiler vectorizes the four-accumulator loop (integer adds need no
// -ffast-math).
static uint64_t kernel_read(const double *restrict x, size_t lo, size_t hi) {
	const uint64_t *restrict p = (const uint64_t *)x;
	uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
	size_t i = lo;
#ifdef __AVX512F__
	// Align the start to 64 bytes (the arrays are 2 MiB aligned).
	for (; i < hi && (i & 7) != 0; i++) {
		s0 += p[i];
	}
	__m512i v0 = _mm512_setzero_si512(), v1 = v0, v2 = v0, v3 = v0, v4 = v0, v5 = v0, v6 = v0, v7 = v0;
	for (; i + 64 <= hi; i += 64) {
		v0 = _mm512_add_epi64(v0, _mm512_load_si512((const void *)(p + i)));
		v1 = _mm512_add_epi64(v1, _mm512_load_si512((const void *)(p + i + 8)));
		v2 = _mm512_add_epi64(v2, _mm512_load_si512((const void *)(p + i + 16)));
		v3 = _mm512_add_epi64(v3, _mm512_load_si512((const void *)(p + i + 24)));
		v4 = _mm512_add_epi64(v4, _mm512_load_si512((const void *)(p + i + 32)));
		v5 = _mm512_add_epi64(v5, _mm512_load_si512((const void *)(p + i + 40)));
		v6 = _mm512_add_epi64(v6, _mm512_load_si512((const void *)(p + i + 48)));
		v7 = _mm512_add_epi64(v7, _mm512_load_si512((const void *)(p + i + 56)));
	}
	v0 = _mm512_add_epi64(_mm512_add_epi64(_mm512_add_epi64(v0, v1), _mm512_add_epi64(v2, v3)),
	                      _mm512_add_epi64(_mm512_add_epi64(v4, v5), _mm512_add_epi64(v6, v7)));
	s1 += (uint64_t)_mm512_reduce_add_epi64(v0);
#endif
	for (; i + 4 <= hi; i += 4) {
		s0 += p[i];
		s1 += p[i + 1];
		s2 += p[i + 2];
		s3 += p[i + 3];
	}
	for (; i < hi; i++) {
		s0 += p[i];
	}
	return s0 + s1 + s2 + s3;
}

static void kernel_copy(double *restrict dst, const double *restrict src, size_t lo, size_t hi) {
	for (size_t i = lo; i < hi; i++) {
		dst[i] = src[i];
	}
}

static void kernel_triad(double *restrict a, const double *restrict b, const double *restrict c, double q, size_t lo, size_t hi) {
	for (size_t i = lo; i < hi; i++) {
		a[i] = b[i] + q * c[i];
	}
}

static void *worker(void *arg) {
	worker_t *w = arg;
	shared_t *s = w->s;
	size_t lo = s->n * (size_t)w->id / (size_t)s->threads;
	size_t hi = s->n * (size_t)(w->id + 1) / (size_t)s->threads;
	// First touch by the thread that will use the range.
	for (size_t i = lo; i < hi; i++) {
		s->a[i] = 1.0;
		s->b[i] = 2.0;
		s->c[i] = 0.5;
	}
	uint64_t acc = 0;
	for (int r = 0; r < s->reps; r++) {
		for (int k = 0; k < MEMBW_KERNELS; k++) {
			pthread_barrier_wait(&s->bar);
			if (w->id == 0) {
				s->t0 = now();
			}
			pthread_barrier_wait(&s->bar);
			switch (k) {
			case MEMBW_READ:
				acc += kernel_read(s->a, lo, hi);
				break;
			case MEMBW_COPY:
				kernel_copy(s->c, s->a, lo, hi);
				break;
			case MEMBW_TRIAD:
				kernel_triad(s->a, s->b, s->c, 3.0, lo, hi);
				break;
			}
			pthread_barrier_wait(&s->bar);
			if (w->id == 0) {
				double t = now() - s->t0;
				if (r == 0 || t < s->best[k]) {
					s->best[k] = t;
				}
			}
		}
	}
	s->sink += acc;
	return NULL;
}

static double *alloc_array(size_t n) {
	void *p = NULL;
	size_t bytes = n * sizeof(double);
	if (posix_memalign(&p, 2u << 20, bytes) != 0) {
		return NULL;
	}
#ifdef MADV_HUGEPAGE
	madvise(p, bytes, MADV_HUGEPAGE);
#endif
	return p;
}

int membw_run(size_t n, int threads, int reps, double best[MEMBW_KERNELS]) {
	if (threads < 1 || reps < 1 || n < (size_t)threads) {
		return -1;
	}
	shared_t s;
	memset(&s, 0, sizeof s);
	s.n = n;
	s.threads = threads;
	s.reps = reps;
	s.a = alloc_array(n);
	s.b = alloc_array(n);
	s.c = alloc_array(n);
	int rc = -1;
	pthread_t *tids = calloc((size_t)threads, sizeof *tids);
	worker_t *ws = calloc((size_t)threads, sizeof *ws);
	int started = 0;
	if (!s.a || !s.b || !s.c || !tids || !ws) {
		goto out;
	}
	if (pthread_barrier_init(&s.bar, NULL, (unsigned)threads) != 0) {
		goto out;
	}
	for (int i = 0; i < threads; i++) {
		ws[i].s = &s;
		ws[i].id = i;
	}
	// Thread 0 is a new thread too, so every worker is alike.
	for (; started < threads; started++) {
		if (pthread_create(&tids[started], NULL, worker, &ws[started]) != 0) {
			break;
		}
	}
	if (started != threads) {
		// Cannot proceed: the barrier would never open. Detach what started
		// would deadlock, so this is only reached before any wait matters.
		for (int i = 0; i < started; i++) {
			pthread_cancel(tids[i]);
			pthread_join(tids[i], NULL);
		}
		pthread_barrier_destroy(&s.bar);
		goto out;
	}
	for (int i = 0; i < threads; i++) {
		pthread_join(tids[i], NULL);
	}
	pthread_barrier_destroy(&s.bar);
	memcpy(best, s.best, sizeof s.best);
	rc = 0;
out:
	free(s.a);
	free(s.b);
	free(s.c);
	free(tids);
	free(ws);
	return rc;
}
