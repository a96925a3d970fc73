// Package binding is chatglm's cgo binding over the llama.cpp C API
// (llama.h), as pinned in third_party/. It knows nothing of chat: it loads
// GGUF models, makes contexts, tokenizes, decodes batches, samples, edits the
// KV memory of sequences, saves and restores state, and quantizes.
//
// Ownership follows one rule: every C resource has exactly one Go owner
// (Model, Context, Batch, Sampler), and that owner's Close frees it; Close is
// safe to call more than once. C never keeps a Go pointer. Bad input returns
// an error; nothing here aborts the process on purpose.
//
// A Context is not safe for concurrent use; a Model may be shared by several
// contexts and goroutines for read-only calls (tokenize, metadata).
package binding

/*
#cgo CPPFLAGS: -I${SRCDIR}/../third_party/llamacpp/include
#cgo CXXFLAGS: -std=c++17
#cgo LDFLAGS: -Wl,--wrap=ggml_aligned_malloc
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	// The pinned llama.cpp + ggml sources (with the CPU backend), compiled by cgo.

	_ "github.com/chatglm/chatglm/third_party/llamacpp"
)

var initOnce sync.Once

// Init initialises the llama.cpp backend once per process: it routes
// llama.cpp's and ggml's logs into log/slog and loads dynamic backends (such
// as libggml-cuda.so) found beside the executable or in CHATGLM_LIB_PATH.
// Every other function calls it, so calling it yourself is optional.
func Init() {
	initOnce.Do(func() {
		setLogLevel()
		C.chatglm_log_install()
		C.llama_backend_init()
		loadDynamicBackends()
	})
}

// setLogLevel filters C log records below the level slog would drop.
func setLogLevel() {
	ctx := context.Background()
	level := C.GGML_LOG_LEVEL_ERROR
	switch {
	case slog.Default().Enabled(ctx, slog.LevelDebug):
		level = C.GGML_LOG_LEVEL_DEBUG
	case slog.Default().Enabled(ctx, slog.LevelInfo):
		level = C.GGML_LOG_LEVEL_INFO
	case slog.Default().Enabled(ctx, slog.LevelWarn):
		level = C.GGML_LOG_LEVEL_WARN
	}
	C.chatglm_log_min_level = C.int(level)
}

// LibPathEnv names extra folders (separated by the OS list separator) that
// are searched for ggml backend libraries such as libggml-cuda.so.
const LibPathEnv = "CHATGLM_LIB_PATH"

// loadDynamicBackends loads libggml-<name>.so backends from the executable's
// folder and from CHATGLM_LIB_PATH. A missing library is not an error: the
// CPU backend is always compiled in.
func loadDynamicBackends() {
	backendFiles = nil
	var dirs []string
	if exe, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Dir(exe))
	}
	dirs = append(dirs, filepath.SplitList(os.Getenv(LibPathEnv))...)
	seen := map[string]bool{}
	for _, d := range dirs {
		if d == "" || seen[d] {
			continue
		}
		seen[d] = true
		matches, _ := filepath.Glob(filepath.Join(d, "libggml-*.so"))
		if len(matches) == 0 {
			continue
		}
		backendFiles = append(backendFiles, matches...)
		slog.Debug("loading ggml backends", "dir", d, "files", matches)
		cdir := C.CString(d)
		C.ggml_backend_load_all_from_path(cdir)
		C.free(unsafe.Pointer(cdir))
	}
}

// backendFiles are the backend libraries found at Init.
var backendFiles []string

// GPUNote explains in one line why no GPU will be used, or returns "" when
// a GPU device is available.
func GPUNote() string {
	if HasGPU() {
		return ""
	}
	if len(backendFiles) == 0 {
		return "no GPU backend library (libggml-cuda.so) beside the binary or in " + LibPathEnv + " (build it with `make cuda`): running on the CPU"
	}
	logState.Lock()
	reason := gpuFailure
	logState.Unlock()
	if reason == "" {
		reason = "no NVIDIA driver, no device, or a driver too old"
	}
	return fmt.Sprintf("GPU backend %s loaded, but no usable GPU (%s): running on the CPU", strings.Join(backendFiles, ", "), reason)
}

// logState assembles llama.cpp's log fragments into lines. Errors reach
// the call that caused them through its errSink, not through here.
var logState struct {
	sync.Mutex
	buf strings.Builder
}

//export chatglmGoLog
func chatglmGoLog(level C.int, text *C.char) {
	s := C.GoString(text)
	logState.Lock()
	logState.buf.WriteString(s)
	if !strings.HasSuffix(s, "\n") {
		logState.Unlock()
		return
	}
	line := strings.TrimSpace(logState.buf.String())
	logState.buf.Reset()
	logState.Unlock()
	if line == "" {
		return
	}
	var l slog.Level
	switch level {
	case C.GGML_LOG_LEVEL_DEBUG:
		l = slog.LevelDebug
	case C.GGML_LOG_LEVEL_INFO:
		l = slog.LevelInfo
	case C.GGML_LOG_LEVEL_WARN:
		l = slog.LevelWarn
	default:
		l = slog.LevelError
	}
	if l > slog.LevelDebug && (isBenign(line) || sharedKVContexts.Load() > 0 && strings.Contains(line, "> n_ctx_train")) {
		l = slog.LevelDebug
	}
	if _, reason, ok := strings.Cut(line, cudaInitFailed); ok {
		// GPUNote reports this in its one line.
		logState.Lock()
		gpuFailure = strings.TrimSpace(reason)
		logState.Unlock()
		l = slog.LevelDebug
	}
	slog.Log(context.Background(), l, line, "source", "llama.cpp")
}

// benignWarnings are llama.cpp warnings that ChatGLM3 GGUFs or chatglm's
// own settings trigger and that need no action; they are logged at debug
// level.
var benignWarnings = []string{
	// ChatGLM3 ends turns with <|user|>/<|observation|>, which chatglm
	// stops on itself; llama.cpp adds eos to its end-of-generation set.
	"special_eos_id is not in special_eog_ids",
	// A context smaller than the training context (8192) is a choice:
	// --ctx-size, bench's n_prompt + n_gen, perplexity's windows.
	"< n_ctx_train",
}

// sharedKVContexts counts NewContext calls in progress for a KV buffer
// shared by sequences that are each bounded by the caller (see NewContext).
var sharedKVContexts atomic.Int32

// cudaInitFailed starts ggml's log line when a CUDA backend finds no GPU.
const cudaInitFailed = "failed to initialize CUDA:"

// gpuFailure is the reason the CUDA backend gave for finding no GPU.
var gpuFailure string

func isBenign(line string) bool {
	for _, w := range benignWarnings {
		if strings.Contains(line, w) {
			return true
		}
	}
	return false
}

// SystemInfo returns ggml's list of compiled-in CPU features, e.g.
// "CPU : SSE3 = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | ...".
func SystemInfo() string {
	Init()
	return strings.TrimSpace(C.GoString(C.llama_print_system_info()))
}

// SupportsGPUOffload reports whether a GPU backend is loaded.
func SupportsGPUOffload() bool {
	Init()
	return bool(C.llama_supports_gpu_offload())
}

// Device describes one ggml compute device.
type Device struct {
	Name        string // e.g. "CPU", "CUDA0"
	Description string // e.g. the CPU or GPU model
	Type        string // "cpu", "gpu", "igpu" or "accel"
	Backend     string // the backend registry name, e.g. "CPU", "CUDA"
	FreeBytes   uint64 // free memory the device reports
	TotalBytes  uint64 // total memory the device reports
}

// Devices lists the devices of every loaded backend.
func Devices() []Device {
	Init()
	n := int(C.ggml_backend_dev_count())
	out := make([]Device, 0, n)
	for i := 0; i < n; i++ {
		d := C.ggml_backend_dev_get(C.size_t(i))
		var free, total C.size_t
		C.ggml_backend_dev_memory(d, &free, &total)
		typ := "unknown"
		switch C.ggml_backend_dev_type(d) {
		case C.GGML_BACKEND_DEVICE_TYPE_CPU:
			typ = "cpu"
		case C.GGML_BACKEND_DEVICE_TYPE_GPU:
			typ = "gpu"
		case C.GGML_BACKEND_DEVICE_TYPE_IGPU:
			typ = "igpu"
		case C.GGML_BACKEND_DEVICE_TYPE_ACCEL:
			typ = "accel"
		}
		out = append(out, Device{
			Name:        C.GoString(C.ggml_backend_dev_name(d)),
			Description: C.GoString(C.ggml_backend_dev_description(d)),
			Type:        typ,
			Backend:     C.GoString(C.ggml_backend_reg_name(C.ggml_backend_dev_backend_reg(d))),
			FreeBytes:   uint64(free),
			TotalBytes:  uint64(total),
		})
	}
	return out
}

// HasGPU reports whether any GPU device is available.
func HasGPU() bool {
	for _, d := range Devices() {
		if d.Type == "gpu" || d.Type == "igpu" {
			return true
		}
	}
	return false
}
