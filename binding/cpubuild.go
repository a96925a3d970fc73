package binding

/*
#include "shim.h"
*/
import "C"

import (
	"runtime"
	"strings"

	"golang.org/x/sys/cpu"
)

// CPUBuild tells how ggml's CPU code in this binary was compiled, next to
// what the processor it runs on offers. A plain `go build` compiles ggml for
// generic x86-64 (no AVX, no weight repacking); `make` compiles it for the
// build machine's CPU, which generates several times faster.
type CPUBuild struct {
	// Compiled lists the vector extensions ggml's CPU code was compiled
	// with (AVX, AVX2, F16C, FMA, AVX512).
	Compiled []string
	// Unused lists extensions this processor has that the build leaves
	// unused.
	Unused []string
	// Repack reports that the CPU backend may repack weights (q4_0 and
	// friends) into an interleaved layout at load time.
	Repack bool
}

// CPUBuildInfo compares ggml's compiled-in CPU features with the running
// processor's.
func CPUBuildInfo() CPUBuild {
	var b CPUBuild
	if runtime.GOARCH == "amd64" {
		features := []struct {
			name     string
			compiled bool
			present  bool
		}{
			{"AVX", C.ggml_cpu_has_avx() != 0, cpu.X86.HasAVX},
			{"AVX2", C.ggml_cpu_has_avx2() != 0, cpu.X86.HasAVX2},
			{"F16C", C.ggml_cpu_has_f16c() != 0, cpu.X86.HasF16C},
			{"FMA", C.ggml_cpu_has_fma() != 0, cpu.X86.HasFMA},
			{"AVX512", C.ggml_cpu_has_avx512() != 0, cpu.X86.HasAVX512F},
		}
		for _, f := range features {
			switch {
			case f.compiled:
				b.Compiled = append(b.Compiled, f.name)
			case f.present:
				b.Unused = append(b.Unused, f.name)
			}
		}
	}
	b.Repack = strings.Contains(SystemInfo(), "REPACK = 1")
	return b
}

// Generic reports a build that leaves the processor's vector units unused,
// as a plain `go build` does.
func (b CPUBuild) Generic() bool { return len(b.Unused) > 0 }

// Note is one line for users of a generic build ("" for a native one).
func (b CPUBuild) Note() string {
	if !b.Generic() {
		return ""
	}
	return "this binary's llama.cpp was compiled for a generic CPU (a plain `go build`) and leaves " +
		strings.Join(b.Unused, ", ") + " unused; `make` builds it for this CPU, several times faster"
}

// String is a short description for `chatglm version`.
func (b CPUBuild) String() string {
	kind := "native"
	if b.Generic() {
		kind = "generic"
	}
	compiled := "no vector extensions"
	if len(b.Compiled) > 0 {
		compiled = strings.Join(b.Compiled, " ")
	}
	s := kind + " (" + compiled
	if b.Repack {
		s += ", weight repacking"
	}
	return s + ")"
}
