package spm

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// modelProto serializes a ModelProto with the given pieces.
func modelProto(pieces ...Piece) []byte {
	var out []byte
	for _, p := range pieces {
		var m []byte
		m = protowire.AppendTag(m, 1, protowire.BytesType)
		m = protowire.AppendString(m, p.Text)
		m = protowire.AppendTag(m, 2, protowire.Fixed32Type)
		m = protowire.AppendFixed32(m, math.Float32bits(p.Score))
		m = protowire.AppendTag(m, 3, protowire.VarintType)
		m = protowire.AppendVarint(m, uint64(p.Type))
		out = protowire.AppendTag(out, 1, protowire.BytesType)
		out = protowire.AppendBytes(out, m)
	}
	// A trainer_spec-like field the reader skips.
	out = protowire.AppendTag(out, 2, protowire.BytesType)
	out = protowire.AppendBytes(out, []byte{0x08, 0x01})
	return out
}

func TestParseLimits(t *testing.T) {
	pieces, err := Parse(modelProto(Piece{"<unk>", 0, Unknown}, Piece{"▁你", -3.5, Normal}))
	if err != nil || len(pieces) != 2 || pieces[1].Text != "▁你" || pieces[1].Score != -3.5 {
		t.Fatalf("%+v %v", pieces, err)
	}
	// Two bytes per empty piece became a 40-byte Piece: 64 MiB of them
	// would have been 1.3 GB. The count is capped.
	many := bytes.Repeat([]byte{0x0a, 0x00}, MaxPieces+1)
	if _, err := Parse(many); err == nil || !strings.Contains(err.Error(), "pieces") {
		t.Fatalf("%d pieces: %v", MaxPieces+1, err)
	}
	for name, b := range map[string][]byte{
		"bad type":  modelProto(Piece{"a", 0, 7}),
		"truncated": modelProto(Piece{"abc", 0, 1})[:5],
		"empty":     nil,
		"garbage":   []byte("not a protobuf \xff\xff"),
	} {
		if _, err := Parse(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(modelProto(Piece{"<unk>", 0, Unknown}, Piece{"<s>", 0, Control}, Piece{"<0x0A>", 0, Byte}, Piece{"▁你", -3.5, Normal}))
	f.Add([]byte{0x0a, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		pieces, err := Parse(data)
		if err != nil {
			return
		}
		if len(pieces) > MaxPieces {
			t.Fatalf("%d pieces accepted", len(pieces))
		}
		for i, p := range pieces {
			if p.Type < Normal || p.Type > Byte {
				t.Fatalf("piece %d has type %d", i, p.Type)
			}
		}
		// An encoder over any accepted vocabulary either refuses it or
		// encodes text into ids of that vocabulary.
		enc, err := NewEncoder(pieces)
		if err != nil {
			return
		}
		ids, err := enc.Tokenize("a b\x00你")
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			if id < 0 || int(id) >= len(pieces) {
				t.Fatalf("id %d outside a vocabulary of %d", id, len(pieces))
			}
		}
	})
}
