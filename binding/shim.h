// C glue between Go and llama.h: callbacks into Go, and the few calls that
// need a C function pointer. Everything here is owned by the binding package.
#ifndef CHATGLM_SHIM_H
#define CHATGLM_SHIM_H

#include <stdbool.h>
#include <stdint.h>
#include "llama.h"
#include "ggml-backend.h"

// Log records at or above this ggml level reach Go; lower ones are dropped in C.
extern int chatglm_log_min_level;
void chatglm_log_install(void);

// Loads a model; progress is reported to the Go handle (0 = no Go callback,
// loading dots are still suppressed).
struct llama_model *chatglm_load_model(const char *path, struct llama_model_params p, uintptr_t handle);

// A per-context abort flag polled by ggml between graph nodes.
typedef struct chatglm_abort chatglm_abort;
chatglm_abort *chatglm_abort_new(void);
void chatglm_abort_set(chatglm_abort *a, int v);
void chatglm_abort_free(chatglm_abort *a);
struct llama_context *chatglm_init_context(struct llama_model *m, struct llama_context_params p, chatglm_abort *a);

// Transparent huge pages for ggml's large CPU buffers (hugepages.c).
void chatglm_set_hugepages(int on);

#endif
