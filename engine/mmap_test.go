package engine_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chatglm/chatglm/binding"
	"github.com/chatglm/chatglm/engine"
	"github.com/chatglm/chatglm/gguf"
	"github.com/chatglm/chatglm/internal/fixture/testmodel"
)

// TestResolveMmap: auto maps a file whose weights the CPU uses as they are
// (f16), reads one whose weights it repacks (q4_0 on an AVX2 build), and
// maps anything whose weights all go to a GPU; on and off are obeyed.
func TestResolveMmap(t *testing.T) {
	f16 := testmodel.TinyGGUF(t)
	q40 := filepath.Join(t.TempDir(), "tiny-q4_0.gguf")
	if err := binding.Quantize(f16, q40, "q4_0", 2); err != nil {
		t.Fatal(err)
	}
	repacks := binding.CPURepacks(uint32(gguf.Q4_0), 64)
	for _, c := range []struct {
		mode      engine.Mmap
		path      string
		gpuLayers int
		gpu       bool
		mapped    bool
	}{
		{engine.MmapAuto, f16, 0, false, true},
		{engine.MmapAuto, q40, 0, false, !repacks},
		{engine.MmapAuto, q40, -1, true, true},    // all layers on a GPU
		{engine.MmapAuto, q40, 1, true, !repacks}, // one of two layers on a GPU
		{engine.MmapAuto, q40, -1, false, !repacks},
		{engine.MmapOn, q40, 0, false, true},
		{engine.MmapOff, f16, 0, false, false},
	} {
		mapped, why, err := engine.ResolveMmap(c.mode, c.path, c.gpuLayers, c.gpu)
		if err != nil {
			t.Fatal(err)
		}
		if mapped != c.mapped || why == "" {
			t.Errorf("%s %s gpu layers %d gpu %v: mapped %v (%s), want %v", c.mode, filepath.Base(c.path), c.gpuLayers, c.gpu, mapped, why, c.mapped)
		}
	}
	if !repacks {
		t.Logf("this build does not repack q4_0 (%s): the read cases are not exercised", binding.CPUBuildInfo())
	}
	// The engine reports its choice for -v output.
	e, err := engine.Open(context.Background(), engine.Options{ModelPath: q40, ContextSize: 128, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if mapped, why := e.Mapped(); mapped == repacks || !strings.HasPrefix(why, "mmap auto") {
		t.Errorf("engine on q4_0: mapped %v (%s)", mapped, why)
	}
	if _, _, err := engine.ResolveMmap(engine.MmapAuto, filepath.Join(t.TempDir(), "none.gguf"), 0, false); err == nil {
		t.Error("a missing file resolved")
	}
	for _, s := range []string{"auto", "on", "off", ""} {
		if _, err := engine.ParseMmap(s); err != nil {
			t.Errorf("ParseMmap(%q): %v", s, err)
		}
	}
	if _, err := engine.ParseMmap("yes"); err == nil {
		t.Error("ParseMmap(yes) accepted")
	}
}
