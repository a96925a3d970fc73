package testmodel

import (
	"archive/zip"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/chatglm/chatglm/convert"
)

func TestBinLayoutLikeTorch(t *testing.T) {
	dir := Write(t, Spec{Layers: 1, Format: Bin, DType: "F16"})
	zr, err := zip.OpenReader(filepath.Join(dir, "pytorch_model.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	if zr.File[0].Name != "archive/data.pkl" || zr.File[len(zr.File)-1].Name != "archive/version" {
		t.Errorf("entry order: first %s last %s", zr.File[0].Name, zr.File[len(zr.File)-1].Name)
	}
	for _, f := range zr.File {
		if f.Method != zip.Store {
			t.Errorf("%s compressed", f.Name)
		}
		off, _ := f.DataOffset()
		if filepath.Dir(f.Name) == "archive/data" && off%64 != 0 {
			t.Errorf("%s data at %d, not 64-byte aligned", f.Name, off)
		}
	}
}

func TestShardedIndexAndValues(t *testing.T) {
	dir := Write(t, Spec{Layers: 2, Format: SafetensorsSharded, Shards: 4, DType: "F32", Seed: 9})
	var idx struct {
		Metadata struct {
			TotalSize int64 `json:"total_size"`
		} `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}
	b, _ := os.ReadFile(filepath.Join(dir, "model.safetensors.index.json"))
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.WeightMap) != 3+1+2*7 || idx.WeightMap["transformer.output_layer.weight"] != "model-00004-of-00004.safetensors" {
		t.Errorf("weight map %v", idx.WeightMap)
	}
	ck, err := convert.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Values depend only on seed and name, not on the layout.
	single := Write(t, Spec{Layers: 2, Format: Bin, DType: "F32", Seed: 9})
	ck2, err := convert.OpenCheckpoint(single)
	if err != nil {
		t.Fatal(err)
	}
	name := "transformer.encoder.layers.1.mlp.dense_h_to_4h.weight"
	a, _ := ck.ReadF32(name)
	c, _ := ck2.ReadF32(name)
	var sum float64
	for i := range a {
		if a[i] != c[i] {
			t.Fatalf("%s differs between layouts at %d", name, i)
		}
		sum += float64(a[i]) * float64(a[i])
	}
	if rms := math.Sqrt(sum / float64(len(a))); rms < 0.05 || rms > 0.5 {
		t.Errorf("weights rms %g out of the tame range", rms)
	}
	norm, _ := ck.ReadF32("transformer.encoder.final_layernorm.weight")
	if norm[0] < 0.5 || norm[0] > 1.5 {
		t.Errorf("norm weight %g", norm[0])
	}
	inv, _ := ck.ReadF32("transformer.rotary_pos_emb.inv_freq")
	if len(inv) != 4 || inv[0] != 1 {
		t.Errorf("inv_freq %v", inv)
	}
}

func TestFillF16Range(t *testing.T) {
	b := make([]byte, 1<<16)
	s := uint64(1)
	fillF16(b, &s, false)
	for i := 0; i < len(b); i += 2 {
		v := math.Abs(float64(convert.F16ToF32(uint16(b[i]) | uint16(b[i+1])<<8)))
		if v < 1.0/64 || v >= 0.25 || math.IsNaN(v) {
			t.Fatalf("value %g out of range", v)
		}
	}
	fillF16(b, &s, true)
	if v := convert.F16ToF32(uint16(b[0]) | uint16(b[1])<<8); v < 1 || v > 1.2 {
		t.Errorf("norm value %g", v)
	}
}

func TestPickleInts(t *testing.T) {
	for _, v := range []int64{0, 255, 256, 65535, 65536, -1, 1 << 31, -(1 << 31) - 1, 1 << 40} {
		p := newPickler()
		p.int(v)
		p.b.WriteByte('.')
		got, err := convert.Unpickle(p.b.Bytes())
		if err != nil || got != v {
			t.Errorf("int %d: got %v, %v", v, got, err)
		}
	}
}
