package testmodel

import (
	"archive/zip"
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"strconv"
)

type writerTo interface{ Write([]byte) (int, error) }

// writeSafetensors writes a safetensors file: u64 header length, a JSON
// header padded with spaces to 8 bytes, then each tensor's data in order,
// produced by fill.
func writeSafetensors(path string, defs []TensorDef, dtype string, fill func(TensorDef, writerTo) error) error {
	var hdr bytes.Buffer
	hdr.WriteString(`{"__metadata__":{"format":"pt"}`)
	var off int64
	for _, d := range defs {
		size := numel(d.Shape) * dtypeSize(dtype)
		shape, _ := json.Marshal(d.Shape)
		name, _ := json.Marshal(d.Name)
		fmt.Fprintf(&hdr, `,%s:{"dtype":%q,"shape":%s,"data_offsets":[%d,%d]}`, name, dtype, shape, off, off+size)
		off += size
	}
	hdr.WriteByte('}')
	for hdr.Len()%8 != 0 {
		hdr.WriteByte(' ')
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("testmodel: %w", err)
	}
	bw := bufio.NewWriterSize(f, 4<<20)
	bw.Write(binary.LittleEndian.AppendUint64(nil, uint64(hdr.Len())))
	bw.Write(hdr.Bytes())
	for _, d := range defs {
		cw := &countWriter{w: bw}
		if err := fill(d, cw); err != nil {
			f.Close()
			return fmt.Errorf("testmodel: %s: %w", path, err)
		}
		if want := numel(d.Shape) * dtypeSize(dtype); cw.n != want {
			f.Close()
			return fmt.Errorf("testmodel: %s: tensor %s got %d bytes, want %d", path, d.Name, cw.n, want)
		}
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("testmodel: %w", err)
	}
	return f.Close()
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

var storageClass = map[string]string{"BF16": "BFloat16Storage", "F16": "HalfStorage", "F32": "FloatStorage"}

// writeTorchBin writes a torch.save zip archive: archive/data.pkl,
// archive/byteorder, archive/data/<i> (stored, 64-byte aligned like
// torch's writer) and archive/version.
func writeTorchBin(path string, defs []TensorDef, dtype string, ordered bool, data func(TensorDef) []byte) error {
	var pts []pickleTensor
	for i, d := range defs {
		pts = append(pts, pickleTensor{name: d.Name, storage: storageClass[dtype], key: strconv.Itoa(i), numel: numel(d.Shape), shape: d.Shape})
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("testmodel: %w", err)
	}
	cw := &countWriter{w: f}
	zw := zip.NewWriter(cw)
	add := func(name string, body []byte) error {
		// Pad the local header's extra field so the data starts on a 64-byte boundary.
		const align = 64
		start := cw.n + 30 + int64(len(name)) + 4
		pad := (align - start%align) % align
		extra := make([]byte, 4+pad)
		copy(extra, "FB")
		binary.LittleEndian.PutUint16(extra[2:], uint16(pad))
		w, err := zw.CreateRaw(&zip.FileHeader{
			Name: name, Method: zip.Store, Extra: extra,
			CRC32: crc32.ChecksumIEEE(body), CompressedSize64: uint64(len(body)), UncompressedSize64: uint64(len(body)),
		})
		if err != nil {
			return err
		}
		if _, err := w.Write(body); err != nil {
			return err
		}
		return zw.Flush()
	}
	err = add("archive/data.pkl", stateDict(pts, ordered))
	if err == nil {
		err = add("archive/byteorder", []byte("little"))
	}
	for i, d := range defs {
		if err != nil {
			break
		}
		err = add("archive/data/"+strconv.Itoa(i), data(d))
	}
	if err == nil {
		err = add("archive/version", []byte("3\n"))
	}
	if err == nil {
		err = zw.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("testmodel: %s: %w", path, err)
	}
	return nil
}
