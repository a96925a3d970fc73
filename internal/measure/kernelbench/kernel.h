// One ggml matrix-vector product, timed: see kernelbench.go.
#ifndef CHATGLM_KERNELBENCH_H
#define CHATGLM_KERNELBENCH_H

#include <stdint.h>

// kb_matvec builds `copies` independent products y_i = W x (one weight
// matrix of rows x cols in ggml type `type`, placed in the CPU backend's
// repacking buffer when `repack` and the type allows it), computes the graph
// `reps` times with `threads` threads after one warm-up, and stores the best
// time in *best_ns and the weight bytes in *weight_bytes. It returns 0, or
// a negative code with a message in err (size errlen).
int kb_matvec(int type, int64_t rows, int64_t cols, int copies, int reps, int threads, int repack,
              int64_t *best_ns, int64_t *weight_bytes, int *repacked, char *err, int errlen);

#endif
