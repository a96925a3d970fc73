package convert

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"

	"github.com/chatglm/chatglm/internal/safetext"
)

// Source is one tensor of a checkpoint: its dtype, shape and where its
// little-endian row-major bytes lie.
type Source struct {
	Name   string
	DType  string // safetensors spelling: F16, BF16, F32, ...
	Shape  []int64
	File   string
	Offset int64 // absolute offset in File
	Size   int64 // bytes
}

// Checkpoint is the tensor table of a HuggingFace checkpoint folder.
type Checkpoint struct {
	Dir     string
	Format  string // "safetensors" or "pytorch"
	Files   []string
	Tensors map[string]Source
}

// Names lists the tensor names in file order, then offset order.
func (c *Checkpoint) Names() []string {
	names := make([]string, 0, len(c.Tensors))
	for n := range c.Tensors {
		names = append(names, n)
	}
	fileIdx := map[string]int{}
	for i, f := range c.Files {
		fileIdx[f] = i
	}
	sort.Slice(names, func(i, j int) bool {
		a, b := c.Tensors[names[i]], c.Tensors[names[j]]
		if fileIdx[a.File] != fileIdx[b.File] {
			return fileIdx[a.File] < fileIdx[b.File]
		}
		if a.Offset != b.Offset {
			return a.Offset < b.Offset
		}
		return a.Name < b.Name
	})
	return names
}

// The weight file layouts, in order of preference.
var layouts = []struct {
	format, index, single string
	read                  func(string) ([]Source, error)
}{
	{"safetensors", "model.safetensors.index.json", "model.safetensors", readSafetensors},
	{"pytorch", "pytorch_model.bin.index.json", "pytorch_model.bin", readTorchBin},
}

// OpenCheckpoint reads the tensor tables of the weights in dir: safetensors
// (single file or shards with model.safetensors.index.json) when present,
// else PyTorch .bin (single or sharded). No tensor data is read.
func OpenCheckpoint(dir string) (*Checkpoint, error) {
	for _, l := range layouts {
		idx := filepath.Join(dir, l.index)
		if exists(idx) {
			return openIndexed(dir, idx, l.format, l.read)
		}
		single := filepath.Join(dir, l.single)
		if exists(single) {
			srcs, err := l.read(single)
			if err != nil {
				return nil, err
			}
			c := &Checkpoint{Dir: dir, Format: l.format, Files: []string{single}, Tensors: map[string]Source{}}
			for _, s := range srcs {
				c.Tensors[s.Name] = s
			}
			return c, nil
		}
	}
	return nil, fmt.Errorf("checkpoint %s: no weights (model.safetensors[.index.json] or pytorch_model.bin[.index.json])", dir)
}

// maxJSONFile bounds the JSON files a checkpoint folder holds (config.json,
// the index, tokenizer_config.json): ChatGLM3's are a few KB. spm.Load
// bounds tokenizer.model.
const maxJSONFile = 16 << 20

// readFileLimited reads a file of at most limit bytes.
func readFileLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return data, nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func openIndexed(dir, idx, format string, read func(string) ([]Source, error)) (*Checkpoint, error) {
	data, err := readFileLimited(idx, maxJSONFile)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	var index struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(data, &index); err != nil {
		return nil, fmt.Errorf("index %s: %w", idx, err)
	}
	if len(index.WeightMap) == 0 {
		return nil, fmt.Errorf("index %s: empty weight_map", idx)
	}
	byFile := map[string][]string{}
	for tensor, file := range index.WeightMap {
		if file == "" || filepath.Base(file) != file {
			return nil, fmt.Errorf("index %s: tensor %s maps to file %q outside the folder", idx, safetext.Quote(tensor), file)
		}
		byFile[file] = append(byFile[file], tensor)
	}
	files := make([]string, 0, len(byFile))
	for f := range byFile {
		files = append(files, f)
	}
	sort.Strings(files)
	c := &Checkpoint{Dir: dir, Format: format, Tensors: map[string]Source{}}
	for _, name := range files {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				sort.Strings(byFile[name])
				return nil, fmt.Errorf("index %s names missing file %s (for tensor %s and %d more)", idx, safetext.Quote(name), safetext.Quote(byFile[name][0]), len(byFile[name])-1)
			}
			return nil, fmt.Errorf("checkpoint: %w", err)
		}
	}
	for _, name := range files {
		p := filepath.Join(dir, name)
		srcs, err := read(p)
		if err != nil {
			return nil, err
		}
		c.Files = append(c.Files, p)
		have := map[string]bool{}
		for _, s := range srcs {
			if prev, dup := c.Tensors[s.Name]; dup {
				return nil, fmt.Errorf("tensor %s is in both %s and %s", safetext.Quote(s.Name), prev.File, p)
			}
			if want, ok := index.WeightMap[s.Name]; ok && want != name {
				return nil, fmt.Errorf("tensor %s: index %s places it in %s but it is in %s", safetext.Quote(s.Name), idx, safetext.Quote(want), p)
			}
			c.Tensors[s.Name] = s
			have[s.Name] = true
		}
		for _, t := range byFile[name] {
			if !have[t] {
				return nil, fmt.Errorf("tensor %s: index %s places it in %s, which does not contain it", safetext.Quote(t), idx, p)
			}
		}
	}
	return c, nil
}

// ReadF32 reads a whole tensor and decodes it to float32 (F16, BF16 and F32
// sources). It is meant for small tensors and tests; Convert streams instead.
func (c *Checkpoint) ReadF32(name string) ([]float32, error) {
	s, ok := c.Tensors[name]
	if !ok {
		return nil, fmt.Errorf("tensor %s not in checkpoint %s", name, c.Dir)
	}
	f, err := os.Open(s.File)
	if err != nil {
		return nil, fmt.Errorf("tensor %s: %w", name, err)
	}
	defer f.Close()
	raw := make([]byte, s.Size)
	if _, err := f.ReadAt(raw, s.Offset); err != nil {
		return nil, fmt.Errorf("tensor %s in %s: %w", name, s.File, err)
	}
	var size int
	switch s.DType {
	case "F32":
		size = 4
	case "F16", "BF16":
		size = 2
	default:
		return nil, fmt.Errorf("tensor %s in %s: unsupported dtype %s", name, s.File, s.DType)
	}
	n := len(raw) / size
	out := make([]float32, n)
	for i := range out {
		switch s.DType {
		case "F32":
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		case "F16":
			out[i] = F16ToF32(binary.LittleEndian.Uint16(raw[2*i:]))
		case "BF16":
			out[i] = BF16ToF32(binary.LittleEndian.Uint16(raw[2*i:]))
		}
	}
	return out, nil
}
