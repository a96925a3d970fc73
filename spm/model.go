// Package spm owns ChatGLM3's SentencePiece tokenizer model: it reads the
// pieces of a tokenizer.model (for the converter) or of a GGUF vocabulary
// (for the chat layer), and encodes text exactly as SentencePiece's BPE
// encoder does for ChatGLM3.
package spm

import (
	"fmt"
	"io"
	"math"
	"os"

	"google.golang.org/protobuf/encoding/protowire"
)

// Type is a piece's type (sentencepiece_model.proto's
// ModelProto.SentencePiece.Type); GGUF's tokenizer.ggml.token_type uses the
// same numbers.
type Type int

// Piece types.
const (
	Normal      Type = 1
	Unknown     Type = 2
	Control     Type = 3
	UserDefined Type = 4
	Unused      Type = 5
	Byte        Type = 6
)

// Limits on what is read: ChatGLM3 has 64794 pieces (padded to 65024) in a
// 1 MB file; the largest vocabularies in use have about 256K pieces.
const (
	MaxPieces    = 1 << 20
	MaxModelFile = 64 << 20
)

// Piece is one entry of a SentencePiece vocabulary: its text (with ▁ for
// spaces), score and type.
type Piece struct {
	Text  string
	Score float32
	Type  Type
}

// Load reads the pieces of a SentencePiece tokenizer.model (at most
// MaxModelFile bytes).
func Load(path string) ([]Piece, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxModelFile+1))
	if err == nil && len(data) > MaxModelFile {
		err = fmt.Errorf("larger than %d bytes", MaxModelFile)
	}
	if err != nil {
		return nil, fmt.Errorf("tokenizer %s: %w", path, err)
	}
	p, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("tokenizer %s: %w", path, err)
	}
	return p, nil
}

// Parse decodes the pieces (field 1) of a serialized
// sentencepiece ModelProto; other fields are skipped.
func Parse(data []byte) ([]Piece, error) {
	var pieces []Piece
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return nil, fmt.Errorf("ModelProto: %w", protowire.ParseError(n))
		}
		data = data[n:]
		if num == 1 && typ == protowire.BytesType {
			msg, m := protowire.ConsumeBytes(data)
			if m < 0 {
				return nil, fmt.Errorf("piece %d: %w", len(pieces), protowire.ParseError(m))
			}
			data = data[m:]
			if len(pieces) >= MaxPieces {
				return nil, fmt.Errorf("more than %d pieces", MaxPieces)
			}
			p, err := parsePiece(msg)
			if err != nil {
				return nil, fmt.Errorf("piece %d: %w", len(pieces), err)
			}
			pieces = append(pieces, p)
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, data)
		if m < 0 {
			return nil, fmt.Errorf("ModelProto field %d: %w", num, protowire.ParseError(m))
		}
		data = data[m:]
	}
	if len(pieces) == 0 {
		return nil, fmt.Errorf("no pieces: not a SentencePiece model")
	}
	return pieces, nil
}

func parsePiece(b []byte) (Piece, error) {
	p := Piece{Type: Normal}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return p, protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return p, protowire.ParseError(m)
			}
			p.Text = string(v)
			b = b[m:]
		case num == 2 && typ == protowire.Fixed32Type:
			v, m := protowire.ConsumeFixed32(b)
			if m < 0 {
				return p, protowire.ParseError(m)
			}
			p.Score = math.Float32frombits(v)
			b = b[m:]
		case num == 3 && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return p, protowire.ParseError(m)
			}
			if v < 1 || v > 6 {
				return p, fmt.Errorf("piece type %d", v)
			}
			p.Type = Type(v)
			b = b[m:]
		default:
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return p, protowire.ParseError(m)
			}
			b = b[m:]
		}
	}
	return p, nil
}
