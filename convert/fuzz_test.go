package convert

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/chatglm/chatglm/spm"
)

// A hand-assembled torch.save pickle of {"w": HalfStorage tensor [2,3]}.
const tinyPickle = "\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01(X\x01\x00\x00\x00wq\x02ctorch._utils\n_rebuild_tensor_v2\nq\x03((X\x07\x00\x00\x00storageq\x04ctorch\nHalfStorage\nq\x05X\x01\x00\x00\x000q\x06X\x03\x00\x00\x00cpuq\x07K\x06tq\x08QK\x00K\x02K\x03\x86q\tK\x03K\x01\x86q\n\x89h\x00)Rq\x0btq\x0cRq\ru."

func TestUnpickleTiny(t *testing.T) {
	v, err := Unpickle([]byte(tinyPickle))
	if err != nil {
		t.Fatal(err)
	}
	ts, names, err := StateDictTensors(v)
	if err != nil {
		t.Fatal(err)
	}
	w := ts["w"]
	if len(names) != 1 || w.Storage.DType != "F16" || w.Storage.Key != "0" || w.Storage.Numel != 6 ||
		len(w.Shape) != 2 || w.Shape[1] != 3 || w.Stride[0] != 3 {
		t.Fatalf("%v %+v %+v", names, w, w.Storage)
	}
}

func TestUnpickleRefuses(t *testing.T) {
	cases := map[string]string{
		"os.system":       "\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85Rq\x02.",
		"builtins.eval":   "\x80\x02cbuiltins\neval\n.",
		"no stop":         "\x80\x02}q\x00",
		"bad memo":        "\x80\x02h\x05.",
		"odd setitems":    "\x80\x02}(K\x01u.",
		"unknown opcode":  "\x80\x02\xff.",
		"stack underflow": "\x80\x02R.",
		"list key":        "\x80\x02}]K\x01s.",
		"inst opcode":     "\x80\x02i__main__\nX\n.",
		"huge string":     "\x80\x02X\xff\xff\xff\x7f.",
	}
	for name, p := range cases {
		if _, err := Unpickle([]byte(p)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// One error style: where, which opcode, what.
	for p, want := range map[string]string{
		cases["os.system"]:                  "pickle at byte 13: GLOBAL: refusing global os.system",
		cases["bad memo"]:                   "pickle at byte 4: BINGET: memo entry 5 missing",
		cases["odd setitems"]:               "SETITEMS: an odd number of items",
		cases["stack underflow"]:            "REDUCE: stack underflow",
		"\x80\x02J\x01\x00":                 "BININT: truncated",
		"\x80\x02cbuil\x1b[2Jtins\neval\n.": `GLOBAL: refusing global "buil\x1b[2Jtins.eval"`,
		"\x80\x02)K\x01a.":                  "APPEND: append to convert.PickleTuple",
	} {
		_, err := Unpickle([]byte(p))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", p, err, want)
		}
	}
}

// TestUnpickleValueLimit: BINGET+APPEND makes a list entry out of 3 bytes;
// a 64 MiB pickle could fill a list of 21M entries. The reader stops at
// maxPickleValues.
func TestUnpickleValueLimit(t *testing.T) {
	p := "\x80\x02]q\x00" + strings.Repeat("h\x00a", maxPickleValues+1) + "."
	_, err := Unpickle([]byte(p))
	if err == nil || !strings.Contains(err.Error(), "values") {
		t.Fatalf("got %v", err)
	}
	// Just under the limit is fine.
	p = "\x80\x02]q\x00" + strings.Repeat("h\x00a", maxPickleValues-2) + "."
	if _, err := Unpickle([]byte(p)); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeLong(t *testing.T) {
	for in, want := range map[string]int64{"": 0, "\xff": -1, "\x7f": 127, "\x80\x00": 128, "\x00\x80": -32768, "\x00\x00\x00\x00\x01": 1 << 32} {
		if got, err := decodeLong([]byte(in)); err != nil || got != want {
			t.Errorf("decodeLong(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := decodeLong([]byte("\x00\x00\x00\x00\x00\x00\x00\x00\x01")); err == nil {
		t.Error("2^64 accepted")
	}
}

func TestSafetensorsHeader(t *testing.T) {
	good := `{"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}`
	es, meta, err := ParseSafetensorsHeader([]byte(good), 12)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 2 || es[0].Name != "a" || es[1].Begin != 4 || meta["format"] != "pt" {
		t.Fatalf("%+v %v", es, meta)
	}
	bad := map[string]string{
		"past end":    `{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`,
		"size":        `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`,
		"negative":    `{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`,
		"reversed":    `{"a":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}}`,
		"overlap":     `{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"F16","shape":[2],"data_offsets":[2,6]}}`,
		"dtype":       `{"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,4]}}`,
		"offsets len": `{"a":{"dtype":"F16","shape":[2],"data_offsets":[0]}}`,
		"overflow":    `{"a":{"dtype":"F16","shape":[4294967296,4294967296,4],"data_offsets":[0,4]}}`,
		"not json":    `{"a":`,
	}
	for name, h := range bad {
		if _, _, err := ParseSafetensorsHeader([]byte(h), 12); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzSafetensorsHeader(f *testing.F) {
	f.Add([]byte(`{"__metadata__":{"format":"pt"},"a":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,12]}}`), int64(12))
	f.Add([]byte(`{"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"b":{"dtype":"F16","shape":[0],"data_offsets":[4,4]}}`), int64(4))
	f.Fuzz(func(t *testing.T, hdr []byte, dataLen int64) {
		es, _, err := ParseSafetensorsHeader(hdr, dataLen)
		if err != nil {
			return
		}
		var end int64
		for _, e := range es {
			if e.Begin < end || e.End < e.Begin || e.End > dataLen {
				t.Fatalf("bad entry accepted: %+v (data %d)", e, dataLen)
			}
			end = e.End
		}
	})
}

func FuzzUnpickle(f *testing.F) {
	f.Add([]byte(tinyPickle))
	f.Add([]byte("\x80\x02}q\x00(X\x01\x00\x00\x00aK\x01X\x01\x00\x00\x00b]q\x01(K\x01G?\xf0\x00\x00\x00\x00\x00\x00eu."))
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := Unpickle(data)
		if err != nil {
			return
		}
		StateDictTensors(v) // must not panic either
	})
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"model_type":"chatglm","num_layers":28,"hidden_size":4096,"ffn_hidden_size":13696,"kv_channels":128,"num_attention_heads":32,"multi_query_attention":true,"multi_query_group_num":2,"padded_vocab_size":65024,"seq_length":8192,"layernorm_epsilon":1e-05,"rope_ratio":1,"add_qkv_bias":true,"rmsnorm":true,"post_layer_norm":true,"torch_dtype":"float16","eos_token_id":2,"pad_token_id":0}`))
	f.Add([]byte(`{"model_type":"chatglm","num_layers":1e400}`))
	f.Add([]byte(`[[[[[[[[[[[[[[[[[[[[`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			return
		}
		// What validate accepts must be usable without panics or overflow.
		if c.KVHeads() <= 0 || c.QKVRows() <= 0 || c.RopeDims() < 0 || c.PaddedVocabSize > spm.MaxPieces {
			t.Fatalf("accepted config with kv heads %d, qkv rows %d, rope dims %d, vocab %d", c.KVHeads(), c.QKVRows(), c.RopeDims(), c.PaddedVocabSize)
		}
	})
}

func FuzzParseTokenizerConfig(f *testing.F) {
	f.Add([]byte(`{"chat_template":"{% for message in messages %}{{ message.content }}{% endfor %}"}`))
	f.Add([]byte(`{"chat_template":[{"name":"default","template":"x"},{"name":"tool_use","template":"y"}]}`))
	f.Add([]byte(`{"chat_template":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ParseTokenizerConfig(data) // must not panic
	})
}

// FuzzBuildVocab: building the vocabulary from any tokenizer.model that
// spm accepts never panics and keeps every piece.
func FuzzBuildVocab(f *testing.F) {
	f.Add([]byte{0x0a, 0x00})
	f.Add([]byte{0x0a, 0x0b, 0x0a, 0x05, 0x3c, 0x75, 0x6e, 0x6b, 0x3e, 0x15, 0, 0, 0, 0, 0x18, 0x02})
	f.Fuzz(func(t *testing.T, data []byte) {
		pieces, err := spm.Parse(data)
		if err != nil {
			return
		}
		v, err := BuildVocab(pieces, len(pieces)+len(SpecialTokens))
		if err != nil || len(v.Tokens) != len(pieces)+len(SpecialTokens) {
			t.Fatalf("%d pieces: %d tokens, %v", len(pieces), len(v.Tokens), err)
		}
	})
}

// FuzzSafetensorsFile: the whole file, length prefix included. Every
// tensor accepted lies inside the file, after the header.
func FuzzSafetensorsFile(f *testing.F) {
	hdr := `{"__metadata__":{"format":"pt"},"a":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,12]}}`
	f.Add(append(append(binary.LittleEndian.AppendUint64(nil, uint64(len(hdr))), hdr...), make([]byte, 12)...))
	f.Add(binary.LittleEndian.AppendUint64(nil, 1<<63))
	f.Fuzz(func(t *testing.T, data []byte) {
		srcs, err := readSafetensorsFrom(bytes.NewReader(data), int64(len(data)), "fuzz.safetensors")
		if err != nil {
			return
		}
		for _, s := range srcs {
			if s.Offset < 8 || s.Size < 0 || s.Offset > int64(len(data)) || s.Size > int64(len(data))-s.Offset {
				t.Fatalf("tensor %s at [%d, +%d) outside the %d-byte file", s.Name, s.Offset, s.Size, len(data))
			}
		}
	})
}
