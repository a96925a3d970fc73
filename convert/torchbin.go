package convert

import (
	"archive/zip"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// maxPickleSize bounds data.pkl; a state dict's pickle is a few hundred KB.
const maxPickleSize = 64 << 20

// readTorchBin reads the tensor table of a torch.save zip archive
// (<root>/data.pkl, <root>/data/<key>, <root>/version). Storages must be
// stored uncompressed, as torch writes them, so tensors are read in place.
func readTorchBin(file string) ([]Source, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	zr, err := zip.NewReader(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("pytorch %s: not a readable zip archive (truncated, corrupt, or a legacy non-zip torch file): %w", file, err)
	}
	var pkl *zip.File
	members := map[string]*zip.File{}
	for _, m := range zr.File {
		members[m.Name] = m
		if path.Base(m.Name) == "data.pkl" && strings.Count(m.Name, "/") == 1 {
			pkl = m
		}
	}
	if pkl == nil {
		return nil, fmt.Errorf("pytorch %s: no <root>/data.pkl in the archive", file)
	}
	root := path.Dir(pkl.Name)
	if pkl.UncompressedSize64 > maxPickleSize {
		return nil, fmt.Errorf("pytorch %s: %s is %d bytes", file, pkl.Name, pkl.UncompressedSize64)
	}
	rc, err := pkl.Open()
	if err != nil {
		return nil, fmt.Errorf("pytorch %s: %s: %w", file, pkl.Name, err)
	}
	data, err := io.ReadAll(io.LimitReader(rc, maxPickleSize))
	rc.Close()
	if err != nil {
		return nil, fmt.Errorf("pytorch %s: %s: %w", file, pkl.Name, err)
	}
	obj, err := Unpickle(data)
	if err != nil {
		return nil, fmt.Errorf("pytorch %s: %s: %w", file, pkl.Name, err)
	}
	tensors, names, err := StateDictTensors(obj)
	if err != nil {
		return nil, fmt.Errorf("pytorch %s: %w", file, err)
	}
	out := make([]Source, 0, len(names))
	for _, name := range names {
		t := tensors[name]
		src, err := torchSource(file, root, members, name, t, st.Size())
		if err != nil {
			return nil, fmt.Errorf("pytorch %s: tensor %s: %w", file, name, err)
		}
		out = append(out, src)
	}
	return out, nil
}

func torchSource(file, root string, members map[string]*zip.File, name string, t *TorchTensor, fileSize int64) (Source, error) {
	size, ok := dtypeSize[t.Storage.DType]
	if !ok {
		return Source{}, fmt.Errorf("unknown storage dtype %s", t.Storage.DType)
	}
	n, err := numel(t.Shape)
	if err != nil {
		return Source{}, err
	}
	// Only C-contiguous tensors are supported (what state dicts hold).
	want := int64(1)
	for i := len(t.Shape) - 1; i >= 0; i-- {
		if t.Shape[i] != 1 && t.Stride[i] != want {
			return Source{}, fmt.Errorf("non-contiguous layout: size %v stride %v", t.Shape, t.Stride)
		}
		want *= t.Shape[i]
	}
	if t.StorageOffset > t.Storage.Numel || n > t.Storage.Numel-t.StorageOffset {
		return Source{}, fmt.Errorf("%d elements at offset %d exceed the storage's %d", n, t.StorageOffset, t.Storage.Numel)
	}
	mname := root + "/data/" + t.Storage.Key
	m, ok := members[mname]
	if !ok {
		return Source{}, fmt.Errorf("storage %s missing from the archive", mname)
	}
	if m.Method != zip.Store {
		return Source{}, fmt.Errorf("storage %s is compressed (method %d); torch stores storages uncompressed", mname, m.Method)
	}
	if m.UncompressedSize64 < uint64(t.Storage.Numel)*uint64(size) {
		return Source{}, fmt.Errorf("storage %s holds %d bytes, want %d", mname, m.UncompressedSize64, t.Storage.Numel*int64(size))
	}
	off, err := m.DataOffset()
	if err != nil {
		return Source{}, fmt.Errorf("storage %s: %w", mname, err)
	}
	start := off + t.StorageOffset*int64(size)
	if start+n*int64(size) > fileSize {
		return Source{}, fmt.Errorf("storage %s extends past the end of the file (truncated?)", mname)
	}
	return Source{Name: name, DType: t.Storage.DType, Shape: t.Shape, File: file, Offset: start, Size: n * int64(size)}, nil
}
