package binding

/*
#cgo CXXFLAGS: -std=c++17
#include <stdlib.h>
#include "llama.h"
#include "ggml-backend.h"
*/
import "C"

import (
	// The pinned llama.cpp + ggml sources, compiled through cgo by the ollama module.
	_ "github.com/ollama/ollama/llama/llama.cpp/src"
)

// SystemInfo returns ggml's description of the compiled CPU features.
func SystemInfo() string { return C.GoString(C.llama_print_system_info()) }
