package engine

import (
	"fmt"

	"github.com/chatglm/chatglm/binding"
	"github.com/chatglm/chatglm/gguf"
)

// Mmap says how a model's weights are brought into memory.
type Mmap string

// Mmap settings. MmapAuto reads the weights into memory when ggml's CPU
// backend repacks them (q4_0 and friends on an AVX2 CPU): a mapped file's
// pages of repacked weights would be held twice, once in the page cache and
// once repacked. Otherwise it maps the file.
const (
	MmapAuto Mmap = "auto"
	MmapOn   Mmap = "on"
	MmapOff  Mmap = "off"
)

// ParseMmap reads a --mmap value.
func ParseMmap(s string) (Mmap, error) {
	switch m := Mmap(s); m {
	case MmapAuto, MmapOn, MmapOff:
		return m, nil
	case "":
		return MmapAuto, nil
	}
	return "", fmt.Errorf("mmap %q: want auto, on or off", s)
}

// ResolveMmap decides whether the model at path is mapped with setting m,
// when gpuLayers layers are offloaded (negative: all) and a GPU is present
// or not. It returns the choice and a short reason for -v output.
func ResolveMmap(m Mmap, path string, gpuLayers int, gpu bool) (mapped bool, why string, err error) {
	switch m {
	case MmapOn:
		return true, "mmap on", nil
	case MmapOff:
		return false, "mmap off", nil
	}
	f, err := gguf.Open(path)
	if err != nil {
		return false, "", fmt.Errorf("mmap auto: %w", err)
	}
	if gpu && gpuLayers != 0 {
		layers, _ := f.Uint(f.String("general.architecture") + ".block_count")
		if gpuLayers < 0 || layers > 0 && uint64(gpuLayers) >= layers {
			return true, "mmap auto: the weights are offloaded to the GPU", nil
		}
	}
	for _, t := range f.Tensors {
		if len(t.Dims) >= 2 && binding.CPURepacks(uint32(t.Type), t.Dims[1]) {
			return false, fmt.Sprintf("mmap auto: %s weights are repacked for the CPU, so they are read rather than mapped (a mapped copy would be held twice)", t.Type), nil
		}
	}
	return true, "mmap auto: no weights are repacked for the CPU", nil
}
