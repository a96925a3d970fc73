package convert

import (
	"archive/zip"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/chatglm/chatglm/internal/safetext"
)

// maxPickleSize bounds data.pkl; a state dict's pickle is a few hundred KB.
const maxPickleSize = 64 << 20

// readTorchBin reads the tensor table of a torch.save zip archive
// (<root>/data.pkl, <root>/data/<key>, <root>/version). Storages must be
// stored uncompressed, as torch writes them, so tensors are read in place.
func readTorchBin(file string) ([]Source, error) {
	return readSourcesAt(file, "pytorch", readTorchZip)
}

// readTorchZip reads the tensor table of the torch.save archive r, of the
// given size; file is recorded in each Source.
func readTorchZip(r io.ReaderAt, size int64, file string) ([]Source, error) {
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return nil, fmt.Errorf("not a readable zip archive (truncated, corrupt, or a legacy non-zip torch file): %w", err)
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
		return nil, fmt.Errorf("no <root>/data.pkl in the archive")
	}
	root := path.Dir(pkl.Name)
	pname := safetext.Quote(pkl.Name)
	if pkl.UncompressedSize64 > maxPickleSize {
		return nil, fmt.Errorf("%s is %d bytes (at most %d)", pname, pkl.UncompressedSize64, maxPickleSize)
	}
	rc, err := pkl.Open()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", pname, err)
	}
	data, err := io.ReadAll(io.LimitReader(rc, maxPickleSize))
	rc.Close()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", pname, err)
	}
	obj, err := Unpickle(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", pname, err)
	}
	tensors, names, err := StateDictTensors(obj)
	if err != nil {
		return nil, err
	}
	out := make([]Source, 0, len(names))
	for _, name := range names {
		src, err := torchSource(file, root, members, name, tensors[name], size)
		if err != nil {
			return nil, fmt.Errorf("tensor %s: %w", safetext.Quote(name), err)
		}
		out = append(out, src)
	}
	return out, nil
}

// torchSource locates tensor t's bytes in the archive. Every size is
// computed with overflow checks: a hostile pickle controls the storage's
// element count, the tensor's offset in it and its shape.
func torchSource(file, root string, members map[string]*zip.File, name string, t *TorchTensor, fileSize int64) (Source, error) {
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
		want *= t.Shape[i] // cannot overflow: numel succeeded
	}
	st := t.Storage
	if t.StorageOffset < 0 || t.StorageOffset > st.Numel || n > st.Numel-t.StorageOffset {
		return Source{}, fmt.Errorf("%d elements at offset %d exceed the storage's %d", n, t.StorageOffset, st.Numel)
	}
	storageBytes, err := tensorBytes(st.Numel, st.DType)
	if err != nil {
		return Source{}, fmt.Errorf("storage %s: %w", safetext.Quote(st.Key), err)
	}
	// Both are at most storageBytes, as the element ranges were checked above.
	size, _ := tensorBytes(n, st.DType)
	skip, _ := tensorBytes(t.StorageOffset, st.DType)
	mname := root + "/data/" + st.Key
	qname := safetext.Quote(mname)
	m, ok := members[mname]
	if !ok {
		return Source{}, fmt.Errorf("storage %s missing from the archive", qname)
	}
	if m.Method != zip.Store {
		return Source{}, fmt.Errorf("storage %s is compressed (method %d); torch stores storages uncompressed", qname, m.Method)
	}
	if m.UncompressedSize64 < uint64(storageBytes) {
		return Source{}, fmt.Errorf("storage %s holds %d bytes, want %d", qname, m.UncompressedSize64, storageBytes)
	}
	off, err := m.DataOffset()
	if err != nil {
		return Source{}, fmt.Errorf("storage %s: %w", qname, err)
	}
	if end, ok := addInt64(off, storageBytes); !ok || end > fileSize {
		return Source{}, fmt.Errorf("storage %s extends past the end of the file (truncated?)", qname)
	}
	return Source{Name: name, DType: st.DType, Shape: t.Shape, File: file, Offset: off + skip, Size: size}, nil
}
