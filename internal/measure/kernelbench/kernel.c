#include "kernel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"

static int64_t now_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

// The CPU device's extra buffer type that repacks weights, or NULL.
static ggml_backend_buffer_type_t repack_buft(ggml_backend_t backend) {
	ggml_backend_dev_t dev = ggml_backend_get_device(backend);
	ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
	ggml_backend_dev_get_extra_bufts_t get =
		(ggml_backend_dev_get_extra_bufts_t)ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts");
	if (get == NULL) {
		return NULL;
	}
	for (ggml_backend_buffer_type_t *b = get(dev); b != NULL && *b != NULL; b++) {
		if (strcmp(ggml_backend_buft_name(*b), "CPU_REPACK") == 0) {
			return *b;
		}
	}
	return NULL;
}

int kb_matvec(int type, int64_t rows, int64_t cols, int copies, int reps, int threads, int repack,
              int64_t *best_ns, int64_t *weight_bytes, int *repacked, char *err, int errlen) {
	int rc = 0;
	ggml_backend_t backend = NULL;
	struct ggml_context *wctx = NULL, *gctx = NULL;
	ggml_backend_buffer_t wbuf = NULL, gbuf = NULL;
	float *src = NULL;
	void *q = NULL;

	backend = ggml_backend_cpu_init();
	if (backend == NULL) {
		snprintf(err, errlen, "no CPU backend");
		return -1;
	}
	ggml_backend_cpu_set_n_threads(backend, threads);

	struct ggml_init_params wp = {ggml_tensor_overhead() * 2, NULL, true};
	wctx = ggml_init(wp);
	struct ggml_tensor *w = ggml_new_tensor_2d(wctx, (enum ggml_type)type, cols, rows);
	ggml_backend_buffer_type_t buft = repack ? repack_buft(backend) : NULL;
	*repacked = 0;
	if (buft != NULL) {
		wbuf = ggml_backend_alloc_ctx_tensors_from_buft(wctx, buft);
		if (wbuf != NULL && w->extra == NULL) {
			// No repacked layout for this type on this CPU: llama.cpp
			// would keep it in a plain CPU buffer.
			ggml_backend_buffer_free(wbuf);
			wbuf = NULL;
			ggml_free(wctx);
			wctx = ggml_init(wp);
			w = ggml_new_tensor_2d(wctx, (enum ggml_type)type, cols, rows);
		}
		*repacked = wbuf != NULL;
	}
	if (wbuf == NULL) {
		wbuf = ggml_backend_alloc_ctx_tensors(wctx, backend);
	}
	if (wbuf == NULL) {
		snprintf(err, errlen, "cannot allocate a %lld x %lld weight", (long long)rows, (long long)cols);
		rc = -2;
		goto out;
	}

	// Random weights in [-1, 1), quantized row by row.
	src = malloc(sizeof(float) * cols * 64);
	q = malloc(ggml_nbytes(w));
	if (src == NULL || q == NULL) {
		snprintf(err, errlen, "out of memory");
		rc = -3;
		goto out;
	}
	uint64_t s = 0x9e3779b97f4a7c15ull;
	size_t row_bytes = ggml_row_size(w->type, cols);
	for (int64_t r = 0; r < rows; r += 64) {
		int64_t n = rows - r < 64 ? rows - r : 64;
		for (int64_t i = 0; i < n * cols; i++) {
			s ^= s << 13, s ^= s >> 7, s ^= s << 17;
			src[i] = (float)((s >> 40) & 0xffff) / 32768.0f - 1.0f;
		}
		ggml_quantize_chunk(w->type, src, (char *)q + r * row_bytes, 0, n, cols, NULL);
	}
	ggml_backend_tensor_set(w, q, 0, ggml_nbytes(w)); // repacks, for the repacking buffer
	*weight_bytes = (int64_t)ggml_nbytes(w);

	struct ggml_init_params gp = {ggml_tensor_overhead() * (copies * 2 + 8) + ggml_graph_overhead_custom(copies * 2 + 8, false), NULL, true};
	gctx = ggml_init(gp);
	struct ggml_tensor *x = ggml_new_tensor_1d(gctx, GGML_TYPE_F32, cols);
	struct ggml_cgraph *gf = ggml_new_graph_custom(gctx, copies * 2 + 8, false);
	for (int i = 0; i < copies; i++) {
		ggml_build_forward_expand(gf, ggml_mul_mat(gctx, w, x));
	}
	gbuf = ggml_backend_alloc_ctx_tensors(gctx, backend);
	if (gbuf == NULL) {
		snprintf(err, errlen, "cannot allocate the graph");
		rc = -4;
		goto out;
	}
	for (int64_t i = 0; i < cols; i++) {
		src[i] = (float)(i % 7) / 7.0f;
	}
	ggml_backend_tensor_set(x, src, 0, sizeof(float) * cols);

	*best_ns = INT64_MAX;
	for (int r = -1; r < reps; r++) {
		int64_t t0 = now_ns();
		if (ggml_backend_graph_compute(backend, gf) != GGML_STATUS_SUCCESS) {
			snprintf(err, errlen, "graph compute failed");
			rc = -5;
			goto out;
		}
		int64_t dt = now_ns() - t0;
		if (r >= 0 && dt < *best_ns) {
			*best_ns = dt;
		}
	}
out:
	free(src);
	free(q);
	if (gbuf) ggml_backend_buffer_free(gbuf);
	if (gctx) ggml_free(gctx);
	if (wbuf) ggml_backend_buffer_free(wbuf);
	if (wctx) ggml_free(wctx);
	ggml_backend_free(backend);
	return rc;
}
