// STREAM-like memory bandwidth kernels for package membw.
#ifndef CHATGLM_MEMBW_H
#define CHATGLM_MEMBW_H

#include <stddef.h>

enum { MEMBW_READ = 0, MEMBW_COPY = 1, MEMBW_TRIAD = 2, MEMBW_KERNELS = 3 };

// membw_run runs each kernel reps times over arrays of n doubles with the
// given number of threads and stores the best time (seconds) of each kernel
// in best[MEMBW_KERNELS]. It returns 0, or -1 if memory or threads could not
// be had.
int membw_run(size_t n, int threads, int reps, double best[MEMBW_KERNELS]);

#endif
