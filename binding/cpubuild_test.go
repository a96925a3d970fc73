package binding

import (
	"os"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/cpu"
)

// TestCPUBuildInfo checks the build description against the flags this test
// binary was compiled with: `make test` exports -march=native (nothing the
// CPU has is left unused), a plain `go test` compiles ggml for generic
// x86-64 (AVX2 unused on a CPU that has it).
func TestCPUBuildInfo(t *testing.T) {
	b := CPUBuildInfo()
	t.Logf("cpu build: %s; unused: %v", b, b.Unused)
	for _, c := range b.Compiled {
		for _, u := range b.Unused {
			if c == u {
				t.Errorf("%s is listed both as compiled and unused", c)
			}
		}
	}
	if (b.Note() != "") != b.Generic() {
		t.Errorf("Note() = %q but Generic() = %v", b.Note(), b.Generic())
	}
	if runtime.GOARCH != "amd64" {
		return
	}
	flags := os.Getenv("CGO_CFLAGS")
	switch {
	case strings.Contains(flags, "-march=native"):
		if b.Generic() {
			t.Errorf("compiled with %q but %v reported unused", flags, b.Unused)
		}
		if cpu.X86.HasAVX2 && !strings.Contains(b.String(), "AVX2") {
			t.Errorf("native build on an AVX2 CPU: %s", b)
		}
	case flags == "" && cpu.X86.HasAVX2:
		if !b.Generic() || !strings.Contains(b.Note(), "go build") {
			t.Errorf("plain build on an AVX2 CPU: generic %v, note %q", b.Generic(), b.Note())
		}
	}
}

func TestCPURepacks(t *testing.T) {
	const q40, f16, q8 = 2, 1, 8
	native := runtime.GOARCH == "amd64" && CPUBuildInfo().Repack && strings.Contains(CPUBuildInfo().String(), "AVX2")
	if got := CPURepacks(q40, 4096); got != native {
		t.Errorf("q4_0 x 4096 rows: %v, want %v (%s)", got, native, CPUBuildInfo())
	}
	if CPURepacks(q40, 12) {
		t.Error("q4_0 with rows not a multiple of 8 repacked")
	}
	if CPURepacks(f16, 4096) || CPURepacks(q8, 4096) {
		t.Error("f16 or q8_0 repacked")
	}
}
