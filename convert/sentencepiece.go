package convert

import (
	"fmt"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// SentencePiece piece types (sentencepiece_model.proto ModelProto.SentencePiece.Type).
const (
	PieceNormal      = 1
	PieceUnknown     = 2
	PieceControl     = 3
	PieceUserDefined = 4
	PieceUnused      = 5
	PieceByte        = 6
)

// maxVocab bounds the pieces of a tokenizer.model and padded_vocab_size
// (ChatGLM3 has 64794 pieces, padded to 65024; the largest vocabularies in
// use have about 256K).
const maxVocab = 1 << 20

// Piece is one entry of a SentencePiece vocabulary.
type Piece struct {
	Text  string
	Score float32
	Type  int
}

// LoadSentencePiece reads the pieces of a SentencePiece tokenizer.model.
func LoadSentencePiece(path string) ([]Piece, error) {
	data, err := readFileLimited(path, maxTokenizerFile)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	p, err := ParseSentencePiece(data)
	if err != nil {
		return nil, fmt.Errorf("tokenizer %s: %w", path, err)
	}
	return p, nil
}

// ParseSentencePiece decodes the pieces (field 1) of a serialized
// sentencepiece ModelProto; other fields are skipped.
func ParseSentencePiece(data []byte) ([]Piece, error) {
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
			if len(pieces) >= maxVocab {
				return nil, fmt.Errorf("more than %d pieces", maxVocab)
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
	p := Piece{Type: PieceNormal}
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
			p.Type = int(v)
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
