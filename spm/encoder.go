package spm

import (
	"container/heap"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Encoder is a SentencePiece BPE encoder for ChatGLM3's tokenizer (identity
// normalizer, dummy prefix, whitespace kept, byte fallback), written after
// SentencePiece's bpe_model.cc. Only normal (and user-defined) pieces take
// part in merges, so control tokens can never come out of text.
//
// It exists because llama.cpp's SPM tokenizer also merges into control
// tokens: with special-token parsing off it still turns the text "]sop"
// into [..., sop(64792)], a control token, where SentencePiece gives
// "s" "op". The chat protocol encodes all text with this encoder.
type Encoder struct {
	pieces map[string]int32
	scores []float32
	bytes  [256]int32
	unk    int32
}

// NewEncoder builds an encoder over a vocabulary indexed by token id (a
// SentencePiece model's pieces, or a GGUF's tokenizer.ggml.* arrays).
func NewEncoder(vocab []Piece) (*Encoder, error) {
	s := &Encoder{pieces: make(map[string]int32, len(vocab)), scores: make([]float32, len(vocab)), unk: -1}
	for i := range s.bytes {
		s.bytes[i] = -1
	}
	for i, p := range vocab {
		id := int32(i)
		s.scores[i] = p.Score
		switch p.Type {
		case Normal, UserDefined:
			if _, dup := s.pieces[p.Text]; !dup {
				s.pieces[p.Text] = id
			}
		case Unknown:
			if s.unk < 0 {
				s.unk = id
			}
		case Byte:
			var b int
			if _, err := fmt.Sscanf(p.Text, "<0x%02X>", &b); err != nil || b > 255 {
				return nil, fmt.Errorf("byte piece %d has text %q", i, p.Text)
			}
			s.bytes[b] = id
		}
	}
	for b, id := range s.bytes {
		if id < 0 {
			return nil, fmt.Errorf("no byte-fallback piece for <0x%02X>", b)
		}
	}
	if s.unk < 0 {
		return nil, fmt.Errorf("no unknown piece")
	}
	return s, nil
}

type symbol struct {
	prev, next int
	text       string // empty once merged into its left neighbour
}

type pair struct {
	left, right int
	score       float32
	size        int
}

type queue []pair

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, j int) bool {
	if q[i].score != q[j].score {
		return q[i].score > q[j].score
	}
	return q[i].left < q[j].left
}
func (q queue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)   { *q = append(*q, x.(pair)) }
func (q *queue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// Tokenize encodes text as one call of SentencePiece's encoder does for
// ChatGLM3: a dummy-prefix ▁, spaces as ▁, BPE merges by score, and bytes
// for what the vocabulary lacks. Special-token names in text are plain text.
func (s *Encoder) Tokenize(text string) ([]int32, error) {
	if text == "" {
		return []int32{}, nil
	}
	norm := "▁" + strings.ReplaceAll(text, " ", "▁")
	// One symbol per character (a malformed byte is a symbol of its own).
	syms := make([]symbol, 0, len(norm))
	for i := 0; i < len(norm); {
		_, n := utf8.DecodeRuneInString(norm[i:])
		syms = append(syms, symbol{prev: len(syms) - 1, next: len(syms) + 1, text: norm[i : i+n]})
		i += n
	}
	syms[len(syms)-1].next = -1
	var q queue
	add := func(l, r int) {
		if l < 0 || r < 0 {
			return
		}
		merged := syms[l].text + syms[r].text
		if id, ok := s.pieces[merged]; ok {
			heap.Push(&q, pair{left: l, right: r, score: s.scores[id], size: len(merged)})
		}
	}
	for i := 1; i < len(syms); i++ {
		add(i-1, i)
	}
	for q.Len() > 0 {
		p := heap.Pop(&q).(pair)
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
