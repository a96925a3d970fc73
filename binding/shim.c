#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "shim.h"
#include "_cgo_export.h"

int chatglm_log_min_level = GGML_LOG_LEVEL_WARN;
// Per thread: a CONT record continues the previous record of its own thread.
static _Thread_local int chatglm_last_level = GGML_LOG_LEVEL_INFO;

struct chatglm_errbuf {
	char text[1024];
	size_t len;
	int open; // the last record did not end its line yet
};

// The sink installed on this thread, if any.
static _Thread_local chatglm_errbuf *chatglm_tls_err;

chatglm_errbuf *chatglm_errbuf_new(void) { return calloc(1, sizeof(chatglm_errbuf)); }

void chatglm_errbuf_free(chatglm_errbuf *e) { free(e); }

void chatglm_errbuf_begin(chatglm_errbuf *e) {
	e->len = 0;
	e->open = 0;
	e->text[0] = 0;
	chatglm_tls_err = e;
}

void chatglm_errbuf_end(void) { chatglm_tls_err = NULL; }

const char *chatglm_errbuf_text(chatglm_errbuf *e) { return e->text; }

static void chatglm_errbuf_add(chatglm_errbuf *e, const char *text) {
	if (!e->open && e->len > 0 && e->len + 2 < sizeof e->text) {
		// Records are kept in order: the first usually names the cause.
		memcpy(e->text + e->len, "; ", 2);
		e->len += 2;
	}
	size_t n = strlen(text);
	size_t room = sizeof e->text - 1 - e->len;
	if (n > room) {
		n = room;
	}
	memcpy(e->text + e->len, text, n);
	e->len += n;
	e->text[e->len] = 0;
	size_t tl = strlen(text);
	e->open = tl == 0 || text[tl - 1] != '\n';
}

static void chatglm_log_cb(enum ggml_log_level level, const char *text, void *ud) {
	(void)ud;
	// CONT records continue the previous record at its level.
	int effective = level == GGML_LOG_LEVEL_CONT ? chatglm_last_level : (int)level;
	if (level != GGML_LOG_LEVEL_CONT) {
		chatglm_last_level = level;
	}
	if (effective >= GGML_LOG_LEVEL_ERROR && chatglm_tls_err != NULL && text != NULL) {
		chatglm_errbuf_add(chatglm_tls_err, text);
	}
	if (effective < chatglm_log_min_level) {
		return;
	}
	chatglmGoLog(effective, (char *)text);
}

void chatglm_log_install(void) { llama_log_set(chatglm_log_cb, NULL); }

static bool chatglm_progress_cb(float progress, void *ud) {
	uintptr_t h = (uintptr_t)ud;
	if (h == 0) {
		return true;
	}
	return chatglmGoProgress(progress, h);
}

struct llama_model *chatglm_load_model(const char *path, struct llama_model_params p, uintptr_t handle) {
	p.progress_callback = chatglm_progress_cb;
	p.progress_callback_user_data = (void *)handle;
	return llama_model_load_from_file(path, p);
}

struct chatglm_abort {
	atomic_int flag;
};

chatglm_abort *chatglm_abort_new(void) {
	chatglm_abort *a = calloc(1, sizeof *a);
	return a;
}

void chatglm_abort_set(chatglm_abort *a, int v) { atomic_store(&a->flag, v); }

void chatglm_abort_free(chatglm_abort *a) { free(a); }

static bool chatglm_abort_cb(void *data) { return atomic_load(&((chatglm_abort *)data)->flag) != 0; }

struct llama_context *chatglm_init_context(struct llama_model *m, struct llama_context_params p, chatglm_abort *a) {
	p.abort_callback = chatglm_abort_cb;
	p.abort_callback_data = a;
	return llama_init_from_model(m, p);
}
