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

// An error sink collects the error lines llama.cpp logs on one thread while
// it is installed there (chatglm_errbuf_begin .. chatglm_errbuf_end), so an
// error is reported to the call, and the context, that caused it. The Go side
// locks the calling goroutine to its thread around such a call.
typedef struct chatglm_errbuf chatglm_errbuf;
chatglm_errbuf *chatglm_errbuf_new(void);
void chatglm_errbuf_free(chatglm_errbuf *e);
void chatglm_errbuf_begin(chatglm_errbuf *e);
void chatglm_errbuf_end(void);
// The error records captured, in order, joined by "; " (NUL-terminated,
// truncated to the buffer).
const char *chatglm_errbuf_text(chatglm_errbuf *e);

// A per-context abort flag polled by ggml between graph nodes.
typedef struct chatglm_abort chatglm_abort;
chatglm_abort *chatglm_abort_new(void);
void chatglm_abort_set(chatglm_abort *a, int v);
void chatglm_abort_free(chatglm_abort *a);
struct llama_context *chatglm_init_context(struct llama_model *m, struct llama_context_params p, chatglm_abort *a);

// Transparent huge pages for ggml's large CPU buffers (hugepages.c).
void chatglm_set_hugepages(int on);

#endif
