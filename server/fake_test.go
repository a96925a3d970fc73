package server

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/chatglm/chatglm/chat"
	"github.com/chatglm/chatglm/gen"
)

// fakeBackend is a scripted Backend: a rune-per-token tokenizer and
// sequences that emit the tokens reply returns, then stop.
type fakeBackend struct {
	ctxSize  int
	parallel int
	free     chan *fakeSeq

	mu     sync.Mutex
	ids    map[string]int32
	pieces map[int32]string

	// reply returns the tokens a generation emits (default: "Hello!").
	reply func(req gen.Request) []gen.Token
	// hold, when not nil, makes a generation wait for it (or for its
	// context) after its tokens, before finishing.
	hold chan struct{}
	// started receives every request a sequence starts generating.
	started chan gen.Request
	// stubborn, when not nil, makes a generation wait for it after its
	// tokens, ignoring its context (a backend slow to notice a cancel).
	stubborn chan struct{}
	// blockTokenize, when not nil, makes Tokenize of a text holding
	// "BLOCK" wait for it (a slow prompt build).
	blockTokenize chan struct{}
	// tokenized counts the bytes given to Tokenize.
	tokenized atomic.Int64

	active    atomic.Int64
	cancelled atomic.Int64
	released  atomic.Int64
	generated atomic.Int64
}

func newFake(parallel, ctxSize int) *fakeBackend {
	f := &fakeBackend{ctxSize: ctxSize, parallel: parallel, free: make(chan *fakeSeq, parallel),
		ids: map[string]int32{}, pieces: map[int32]string{}, started: make(chan gen.Request, 100)}
	for i := 0; i < parallel; i++ {
		f.free <- &fakeSeq{f: f}
	}
	return f
}

// id returns the token id of a piece, assigning a new one (from 1000) on
// first use.
func (f *fakeBackend) id(piece string) int32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if id, ok := f.ids[piece]; ok {
		return id
	}
	id := int32(1000 + len(f.ids))
	f.ids[piece], f.pieces[id] = id, piece
	return id
}

// Tokenize gives the dummy-prefix space one token, then one token per rune.
func (f *fakeBackend) Tokenize(text string) ([]int32, error) {
	f.tokenized.Add(int64(len(text)))
	if f.blockTokenize != nil && strings.Contains(text, "BLOCK") {
		<-f.blockTokenize
	}
	ids := []int32{f.id(" ")}
	for _, r := range text {
		ids = append(ids, f.id(string(r)))
	}
	return ids, nil
}

// text tokens: one token per rune of each string; int32 values are special
// ids.
func (f *fakeBackend) toks(parts ...any) []gen.Token {
	var out []gen.Token
	for _, p := range parts {
		switch p := p.(type) {
		case string:
			for len(p) > 0 {
				_, n := utf8.DecodeRuneInString(p)
				out = append(out, gen.Token{ID: f.id(p[:n]), Piece: []byte(p[:n])})
				p = p[n:]
			}
		case int32:
			out = append(out, gen.Token{ID: p})
		case gen.Token:
			out = append(out, p)
		}
	}
	return out
}

func (f *fakeBackend) ContextSize() int { return f.ctxSize }
func (f *fakeBackend) Parallel() int    { return f.parallel }

func (f *fakeBackend) Acquire(ctx context.Context, prompt []int32) (Sequence, error) {
	select {
	case s := <-f.free:
		return s, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (f *fakeBackend) Stats() gen.Stats {
	return gen.Stats{GeneratedTokens: f.generated.Load(), Active: f.active.Load()}
}

type fakeSeq struct {
	f *fakeBackend
}

func (s *fakeSeq) Release() {
	s.f.released.Add(1)
	s.f.free <- s
}

func (s *fakeSeq) Generate(ctx context.Context, req gen.Request, onToken func(gen.Token) error) (gen.Result, error) {
	f := s.f
	f.active.Add(1)
	defer f.active.Add(-1)
	select {
	case f.started <- req:
	default:
	}
	res := gen.Result{PromptTokens: len(req.Prompt), EvaluatedTokens: len(req.Prompt), StopToken: -1}
	toks := f.toks("\n", "Hello!")
	if f.reply != nil {
		toks = f.reply(req)
	}
	for _, t := range toks {
		if ctx.Err() != nil {
			f.cancelled.Add(1)
			res.Finish = gen.FinishCancelled
			return res, ctx.Err()
		}
		res.Tokens = append(res.Tokens, t.ID)
		f.generated.Add(1)
		if err := onToken(t); err != nil {
			if err == gen.ErrStop {
				res.Finish = gen.FinishStop
				return res, nil
			}
			// A failed write to a client that went away ends the
			// generation as its context's cancellation would: which
			// comes first is a race.
			f.cancelled.Add(1)
			res.Finish = gen.FinishCancelled
			return res, err
		}
		if req.MaxTokens > 0 && len(res.Tokens) >= req.MaxTokens {
			res.Finish = gen.FinishLength
			return res, nil
		}
	}
	if f.stubborn != nil {
		<-f.stubborn
	}
	if f.hold != nil {
		select {
		case <-f.hold:
		case <-ctx.Done():
			f.cancelled.Add(1)
			res.Finish = gen.FinishCancelled
			return res, ctx.Err()
		}
	}
	res.Finish, res.StopToken = gen.FinishStop, chat.TokenUser
	return res, nil
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
