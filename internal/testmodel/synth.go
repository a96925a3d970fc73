package testmodel

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// SynthDone is the marker file Synth writes last; its presence means the
// cached checkpoint is complete.
const SynthDone = ".synth-complete"

// Synth writes a full-size synthetic ChatGLM3-6B checkpoint into dir: the
// real config.json, tokenizer files and shapes (28 layers, hidden 4096,
// 65024 vocab), random f16 values, laid out in the real seven safetensors
// shards as the real model.safetensors.index.json assigns them (about
// 12.5 GB). When dir already holds a complete checkpoint it does nothing.
// logf, if not nil, reports progress.
func Synth(dir, tokDir string, logf func(format string, args ...any)) error {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if _, err := os.Stat(filepath.Join(dir, SynthDone)); err == nil {
		logf("synth: %s is complete (cached)", dir)
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	if err := writeConfig(dir, tokDir, func(map[string]any) {}); err != nil {
		return err
	}
	raw, err := os.ReadFile(filepath.Join(tokDir, "model.safetensors.index.json"))
	if err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	var index struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(raw, &index); err != nil {
		return fmt.Errorf("synth: index: %w", err)
	}
	defs := Tensors(28, 4096, 32, 2, 13696, Vocab)
	byFile := map[string][]TensorDef{}
	var total int64
	for _, d := range defs {
		f, ok := index.WeightMap[d.Name]
		if !ok {
			return fmt.Errorf("synth: tensor %s not in the real index", d.Name)
		}
		byFile[f] = append(byFile[f], d)
		total += numel(d.Shape) * 2
	}
	if len(index.WeightMap) != len(defs) {
		return fmt.Errorf("synth: the real index has %d tensors, the synthetic model %d", len(index.WeightMap), len(defs))
	}
	files := make([]string, 0, len(byFile))
	for f := range byFile {
		files = append(files, f)
	}
	sort.Strings(files)
	for i, f := range files {
		logf("synth: writing %s (%d/%d)", f, i+1, len(files))
		var seed uint64 = 0x9e3779b97f4a7c15 ^ uint64(i+1)
		err := writeSafetensors(filepath.Join(dir, f), byFile[f], "F16", func(d TensorDef, w writerTo) error {
			norm := d.kind == kindNorm || d.kind == kindInvFreq
			buf := make([]byte, 4<<20)
			left := numel(d.Shape) * 2
			for left > 0 {
				n := min(int64(len(buf)), left)
				fillF16(buf[:n], &seed, norm)
				if _, err := w.Write(buf[:n]); err != nil {
					return err
				}
				left -= n
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if err := writeIndex(filepath.Join(dir, "model.safetensors.index.json"), total, index.WeightMap); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, SynthDone), []byte(strings.Join(files, "\n")+"\n"), 0o644)
}

// fillF16 fills b with random half floats of magnitude 2^-6..2^-2 (or
// near 1 for norms), from a xorshift generator.
func fillF16(b []byte, s *uint64, norm bool) {
	x := *s
	for i := 0; i+8 <= len(b); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		var v uint64
		for k := 0; k < 4; k++ {
			r := uint16(x >> (16 * k))
			var h uint16
			if norm {
				h = 0x3c00 | r&0x00ff
			} else {
				h = r&0x83ff | (9+(r>>10)&3)<<10
			}
			v |= uint64(h) << (16 * k)
		}
		binary.LittleEndian.PutUint64(b[i:], v)
	}
	*s = x
}
