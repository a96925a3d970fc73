package chat

import (
	"container/heap"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Piece types of a SentencePiece vocabulary; GGUF's tokenizer.ggml.token_type
// uses the same numbers.
const (
	PieceNormal      = 1
	PieceUnknown     = 2
	PieceControl     = 3
	PieceUserDefined = 4
	PieceUnused      = 5
	PieceByte        = 6
)

// VocabPiece is one vocabulary entry: its text (with ▁ for spaces), score and
// type.
type VocabPiece struct {
	Text  string
	Score float32
	Type  int
}

// SPM is a SentencePiece BPE encoder for ChatGLM3's tokenizer (identity
// normalizer, dummy prefix, whitespace kept, byte fallback), written after
// SentencePiece's bpe_model.cc. Only normal (and user-defined) pieces take
// part in merges, so control tokens can never come out of text.
//
// It exists because llama.cpp's SPM tokenizer also merges into control
// tokens: with special-token parsing off it still turns the text "]sop"
// into [..., sop(64792)], a control token, where SentencePiece gives
// "s" "op". The chat protocol encodes all text with SPM.
type SPM struct {
	pieces map[string]int32
	scores []float32
	bytes  [256]int32
	unk    int32
}

// NewSPM builds an encoder over a vocabulary indexed by token id (a
// SentencePiece model's pieces, or a GGUF's tokenizer.ggml.* arrays).
func NewSPM(vocab []VocabPiece) (*SPM, error) {
	s := &SPM{pieces: make(map[string]int32, len(vocab)), scores: make([]float32, len(vocab)), unk: -1}
	for i := range s.bytes {
		s.bytes[i] = -1
	}
	for i, p := range vocab {
		id := int32(i)
		s.scores[i] = p.Score
		switch p.Type {
		case PieceNormal, PieceUserDefined:
			if _, dup := s.pieces[p.Text]; !dup {
				s.pieces[p.Text] = id
			}
		case PieceUnknown:
			if s.unk < 0 {
				s.unk = id
			}
		case PieceByte:
			var b int
			if _, err := fmt.Sscanf(p.Text, "<0x%02X>", &b); err != nil || b > 255 {
				return nil, fmt.Errorf("spm: byte piece %d has text %q", i, p.Text)
			}
			s.bytes[b] = id
		}
	}
	for b, id := range s.bytes {
		if id < 0 {
			return nil, fmt.Errorf("spm: no byte-fallback piece for <0x%02X>", b)
		}
	}
	if s.unk < 0 {
		return nil, fmt.Errorf("spm: no unknown piece")
	}
	return s, nil
}

type spmSymbol struct {
	prev, next int
	text       string // empty once merged into its left neighbour
}

type spmPair struct {
	left, right int
	score       float32
	size        int
}

type spmQueue []spmPair

func (q spmQueue) Len() int { return len(q) }
func (q spmQueue) Less(i, j int) bool {
	if q[i].score != q[j].score {
		return q[i].score > q[j].score
	}
	return q[i].left < q[j].left
}
func (q spmQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *spmQueue) Push(x any)   { *q = append(*q, x.(spmPair)) }
func (q *spmQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// Tokenize encodes text as one call of SentencePiece's encoder does for
// ChatGLM3: a dummy-prefix ▁, spaces as ▁, BPE merges by score, and bytes
// for what the vocabulary lacks. Special-token names in text are plain text.
func (s *SPM) Tokenize(text string) ([]int32, error) {
	if text == "" {
		return []int32{}, nil
	}
	norm := "▁" + strings.ReplaceAll(text, " ", "▁")
	// One symbol per character (a malformed byte is a symbol of its own).
	syms := make([]spmSymbol, 0, len(norm))
	for i := 0; i < len(norm); {
		_, n := utf8.DecodeRuneInString(norm[i:])
		syms = append(syms, spmSymbol{prev: len(syms) - 1, next: len(syms) + 1, text: norm[i : i+n]})
		i += n
	}
	syms[len(syms)-1].next = -1
	var q spmQueue
	add := func(l, r int) {
		if l < 0 || r < 0 {
			return
		}
		merged := syms[l].text + syms[r].text
		if id, ok := s.pieces[merged]; ok {
			heap.Push(&q, spmPair{left: l, right: r, score: s.scores[id], size: len(merged)})
		}
	}
	for i := 1; i < len(syms); i++ {
		add(i-1, i)
	}
	for q.Len() > 0 {
		p := heap.Pop(&q).(spmPair)
		l, r := &syms[p.left], &syms[p.right]
		if l.text == "" || r.text == "" || len(l.text)+len(r.text) != p.size {
			continue // stale: one side was merged since
		}
		l.text += r.text
		r.text = ""
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = p.left
		}
		add(l.prev, p.left)
		add(p.left, l.next)
	}
	ids := make([]int32, 0, len(syms))
	for i := 0; i >= 0; i = syms[i].next {
		if id, ok := s.pieces[syms[i].text]; ok {
			ids = append(ids, id)
			continue
		}
		for _, b := range []byte(syms[i].text) {
			ids = append(ids, s.bytes[b])
		}
	}
	return ids, nil
}
