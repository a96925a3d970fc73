package convert

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// torchZip builds a torch.save-style archive: archive/data.pkl (deflated)
// and the storages archive/data/<key> (stored, as torch writes them).
func torchZip(t testing.TB, pkl []byte, storages map[string][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.Create("archive/data.pkl")
	if err != nil {
		t.Fatal(err)
	}
	w.Write(pkl)
	for key, data := range storages {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: "archive/data/" + key, Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// long1 is the pickle LONG1 encoding of v (8 bytes, two's complement).
func long1(v int64) string {
	return "\x8a\x08" + string(binary.LittleEndian.AppendUint64(nil, uint64(v)))
}

// statePickle is the pickle of {"w": a FloatStorage tensor}, with the
// storage's element count, the tensor's storage offset and its 1-D size
// given as pickle integers.
func statePickle(numel, offset, size string) []byte {
	return []byte("\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n" +
		"((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu" + numel + "tQ" +
		offset + size + "\x85K\x01\x85tRs.")
}

func TestTorchZip(t *testing.T) {
	data := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	z := torchZip(t, statePickle("K\x04", "K\x01", "K\x02"), map[string][]byte{"0": data})
	srcs, err := readTorchZip(bytes.NewReader(z), int64(len(z)), "m.bin")
	if err != nil {
		t.Fatal(err)
	}
	s := srcs[0]
	if len(srcs) != 1 || s.Name != "w" || s.DType != "F32" || s.Size != 8 || !bytes.Equal(z[s.Offset:s.Offset+s.Size], data[4:12]) {
		t.Fatalf("%+v", srcs)
	}
}

// TestTorchZipOverflow is the regression test for a storage of 2^62 F32
// elements with a tensor at element offset 2^62-1: the byte sizes wrapped
// around int64 and the tensor was placed 4 bytes before its storage.
func TestTorchZipOverflow(t *testing.T) {
	cases := map[string][]byte{
		"numel 2^62, offset 2^62-1": statePickle(long1(1<<62), long1(1<<62-1), "K\x01"),
		"numel 2^61, offset 2^61":   statePickle(long1(1<<61), long1(1<<61), "K\x00"),
		"size 2^62":                 statePickle(long1(1<<62), "K\x00", long1(1<<62)),
		"negative size":             statePickle("K\x04", "K\x00", long1(-1)),
		"offset past storage":       statePickle("K\x04", "K\x05", "K\x00"),
	}
	for name, pkl := range cases {
		z := torchZip(t, pkl, map[string][]byte{"0": make([]byte, 16)})
		srcs, err := readTorchZip(bytes.NewReader(z), int64(len(z)), "m.bin")
		if err == nil {
			t.Errorf("%s: accepted: %+v", name, srcs)
			continue
		}
		if !strings.Contains(err.Error(), "tensor w") {
			t.Errorf("%s: error does not name the tensor: %v", name, err)
		}
	}
}

// FuzzTorchZip: whatever the archive, every tensor it yields lies inside
// the file and inside its own storage member.
func FuzzTorchZip(f *testing.F) {
	f.Add(torchZip(f, statePickle("K\x04", "K\x01", "K\x02"), map[string][]byte{"0": make([]byte, 16)}))
	f.Add(torchZip(f, []byte(tinyPickle), map[string][]byte{"0": make([]byte, 12)}))
	f.Add(torchZip(f, statePickle(long1(1<<62), long1(1<<62-1), "K\x01"), map[string][]byte{"0": make([]byte, 16)}))
	f.Fuzz(func(t *testing.T, data []byte) {
		srcs, err := readTorchZip(bytes.NewReader(data), int64(len(data)), "fuzz.bin")
		if err != nil {
			return
		}
		for _, s := range srcs {
			if s.Offset < 0 || s.Size < 0 || s.Offset > int64(len(data)) || s.Size > int64(len(data))-s.Offset {
				t.Fatalf("tensor %s at [%d, +%d) outside the %d-byte file", s.Name, s.Offset, s.Size, len(data))
			}
			n, err := numel(s.Shape)
			if err != nil {
				t.Fatalf("tensor %s: shape %v: %v", s.Name, s.Shape, err)
			}
			if want, _ := tensorBytes(n, s.DType); want != s.Size {
				t.Fatalf("tensor %s: %d bytes for %d %s elements", s.Name, s.Size, n, s.DType)
			}
		}
	})
}
