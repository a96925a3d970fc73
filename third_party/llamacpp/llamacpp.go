// Package llamacpp pins the llama.cpp and ggml sources chatglm runs on.
//
// The sources are those carried by the Go module github.com/ollama/ollama at
// the version in go.mod (v0.17.4: llama.cpp base ec98e2002 with ggml). Its
// package llama/llama.cpp/src compiles llama.cpp, ggml and the ggml CPU
// backend through cgo; importing this package links them in. See README.md
// beside this file for the pin, the build flags and how to bump it.
package llamacpp

import (
	// llama.cpp + ggml + the CPU backend.
	_ "github.com/ollama/ollama/llama/llama.cpp/src"
)

// Module is the Go module that carries the pinned sources.
const Module = "github.com/ollama/ollama"

// Version is the pinned module version; go.mod must require the same.
const Version = "v0.17.4"

// Base is the upstream llama.cpp commit the sources are based on.
const Base = "ec98e2002"
