package engine_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chatglm/chatglm/binding"
	"github.com/chatglm/chatglm/engine"
	"github.com/chatglm/chatglm/gen"
	"github.com/chatglm/chatglm/internal/fixture/testmodel"
)

func TestMain(m *testing.M) { testmodel.Main(m) }

func open(t *testing.T, parallel int) *engine.Engine {
	t.Helper()
	return openSized(t, parallel, 256, 64)
}

// openSized opens the tiny model with ctx tokens per slot and batches of
// batch tokens.
func openSized(t *testing.T, parallel, ctx, batch int) *engine.Engine {
	t.Helper()
	e, err := engine.Open(context.Background(), engine.Options{
		ModelPath: testmodel.TinyGGUF(t), Parallel: parallel, ContextSize: ctx, BatchSize: batch, Threads: 2,
		FlashAttn: binding.FlashAttnOff,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

var prompt = []int32{64790, 64792, 64795, 30910, 13, 36474, 54591, 64796}

func greedy(n int) gen.Request {
	return gen.Request{Prompt: prompt, MaxTokens: n}
}

func generate(t *testing.T, e *engine.Engine, req gen.Request) (gen.Result, []gen.Token) {
	t.Helper()
	s, err := e.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	var toks []gen.Token
	res, err := s.Generate(context.Background(), req, func(tok gen.Token) error {
		toks = append(toks, tok)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return res, toks
}

func TestGreedyDeterministicAndStreamed(t *testing.T) {
	e := open(t, 1)
	a, streamed := generate(t, e, greedy(12))
	if len(a.Tokens) != 12 || a.Finish != gen.FinishLength {
		t.Fatalf("result: %d tokens, finish %q", len(a.Tokens), a.Finish)
	}
	for i, tok := range streamed {
		if tok.ID != a.Tokens[i] {
			t.Fatalf("streamed token %d = %d, result has %d", i, tok.ID, a.Tokens[i])
		}
	}
	// The second run reuses the prompt from the cache and must agree.
	b, _ := generate(t, e, greedy(12))
	if !slices.Equal(a.Tokens, b.Tokens) {
		t.Errorf("greedy runs differ: %v vs %v", a.Tokens, b.Tokens)
	}
	if b.CachedTokens != len(prompt)-1 || b.EvaluatedTokens != 1 {
		t.Errorf("second run: cached %d evaluated %d, want %d and 1", b.CachedTokens, b.EvaluatedTokens, len(prompt)-1)
	}
}

func TestKVReuseAcrossTurns(t *testing.T) {
	e := open(t, 1)
	s, err := e.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	ctx := context.Background()
	history := slices.Clone(prompt)
	for turn := 0; turn < 4; turn++ {
		res, err := s.Generate(ctx, gen.Request{Prompt: history, MaxTokens: 5}, func(gen.Token) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		if turn == 0 && res.EvaluatedTokens != len(prompt) {
			t.Errorf("turn 0 evaluated %d, want %d", res.EvaluatedTokens, len(prompt))
		}
		newTurn := []int32{64795, 30910, 13, 13755, 993, 64796}
		// The last reply token was sampled but never fed back, so a turn
		// evaluates it plus the new turn's tokens, nothing older.
		if turn > 0 && res.EvaluatedTokens != len(newTurn)+1 {
			t.Errorf("turn %d evaluated %d tokens of %d, want only the new %d+1", turn, res.EvaluatedTokens, res.PromptTokens, len(newTurn))
		}
		history = append(append(history, res.Tokens...), newTurn...)
	}
	// A different prompt throws away what no longer matches.
	res, err := s.Generate(ctx, gen.Request{Prompt: []int32{64790, 64792, 64795, 100, 200}, MaxTokens: 1}, func(gen.Token) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if res.CachedTokens != 3 || res.EvaluatedTokens != 2 {
		t.Errorf("diverging prompt: cached %d evaluated %d", res.CachedTokens, res.EvaluatedTokens)
	}
}

func TestParallelMatchesSerial(t *testing.T) {
	prompts := [][]int32{
		prompt,
		{64790, 64792, 64795, 30910, 13, 13755, 993, 64796},
		{64790, 64792, 64794, 30910, 13, 100, 200, 300, 400, 64795, 30910, 13, 36474, 54591, 64796},
	}
	serial := open(t, 1)
	var want [][]int32
	for _, p := range prompts {
		res, _ := generate(t, serial, gen.Request{Prompt: p, MaxTokens: 10})
		want = append(want, res.Tokens)
	}
	par := open(t, 3)
	got := make([][]int32, len(prompts))
	var wg sync.WaitGroup
	for i, p := range prompts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := par.Acquire(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			defer s.Release()
			res, err := s.Generate(context.Background(), gen.Request{Prompt: p, MaxTokens: 10}, func(gen.Token) error { return nil })
			if err != nil {
				t.Error(err)
				return
			}
			got[i] = res.Tokens
		}()
	}
	wg.Wait()
	for i := range prompts {
		if !slices.Equal(got[i], want[i]) {
			t.Errorf("prompt %d: batched %v, alone %v", i, got[i], want[i])
		}
	}
	if st := par.Stats(); st.Requests != 3 || st.GeneratedTokens != 30 || st.Active != 0 {
		t.Errorf("stats: %+v", st)
	}
}

func TestStopsAndLimits(t *testing.T) {
	e := open(t, 1)
	first, _ := generate(t, e, greedy(3))
	res, toks := generate(t, e, gen.Request{Prompt: prompt, MaxTokens: 10, Stop: []int32{first.Tokens[1]}})
	if res.Finish != gen.FinishStop || res.StopToken != first.Tokens[1] || len(res.Tokens) != 1 || len(toks) != 1 {
		t.Errorf("stop token: %+v, streamed %d", res, len(toks))
	}
	s, _ := e.Acquire(context.Background())
	n := 0
	res, err := s.Generate(context.Background(), greedy(50), func(gen.Token) error {
		n++
		if n == 4 {
			return gen.ErrStop
		}
		return nil
	})
	s.Release()
	if err != nil || res.Finish != gen.FinishStop || len(res.Tokens) < 4 {
		t.Errorf("ErrStop: err %v finish %q tokens %d", err, res.Finish, len(res.Tokens))
	}
	// Generation ends at the context limit, never past it.
	long := make([]int32, 240)
	for i := range long {
		long[i] = int32(100 + i)
	}
	res, _ = generate(t, e, gen.Request{Prompt: long})
	if res.Finish != gen.FinishLength || len(long)+len(res.Tokens) > e.ContextSize() {
		t.Errorf("context limit: finish %q, %d+%d tokens in %d", res.Finish, len(long), len(res.Tokens), e.ContextSize())
	}
}

func TestBadRequests(t *testing.T) {
	e := open(t, 1)
	s, _ := e.Acquire(context.Background())
	defer s.Release()
	noop := func(gen.Token) error { return nil }
	ctx := context.Background()
	var tooLong *gen.PromptTooLongError
	if _, err := s.Generate(ctx, gen.Request{Prompt: make([]int32, 300)}, noop); !errors.As(err, &tooLong) || tooLong.PromptTokens != 300 || tooLong.Limit != 256 {
		t.Errorf("prompt too long: %v", err)
	}
	if _, err := s.Generate(ctx, gen.Request{Prompt: []int32{1, 99999}}, noop); err == nil {
		t.Error("token out of range accepted")
	}
	if _, err := s.Generate(ctx, gen.Request{}, noop); err == nil {
		t.Error("empty prompt accepted")
	}
	if _, err := s.Generate(ctx, gen.Request{Prompt: prompt, Sampling: gen.Sampling{Temperature: 1, TopP: 3}}, noop); err == nil {
		t.Error("bad sampling accepted")
	}
	wantErr := errors.New("client went away")
	if _, err := s.Generate(ctx, greedy(20), func(gen.Token) error { return wantErr }); !errors.Is(err, wantErr) {
		t.Errorf("callback error: %v", err)
	}
}

func TestCancelFreesTheSlot(t *testing.T) {
	e := open(t, 1)
	s, _ := e.Acquire(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	res, err := s.Generate(ctx, gen.Request{Prompt: prompt}, func(gen.Token) error {
		n++
		if n == 3 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || res.Finish != gen.FinishCancelled {
		t.Errorf("cancel: err %v finish %q", err, res.Finish)
	}
	// A waiter gets the slot once it is released.
	got := make(chan *engine.Slot)
	go func() {
		s2, err := e.Acquire(context.Background())
		if err != nil {
			t.Error(err)
		}
		got <- s2
	}()
	select {
	case <-got:
		t.Fatal("acquired a slot that is in use")
	case <-time.After(50 * time.Millisecond):
	}
	s.Release()
	s2 := <-got
	res, err = s2.Generate(context.Background(), greedy(4), func(gen.Token) error { return nil })
	if err != nil || len(res.Tokens) != 4 {
		t.Errorf("after cancel: %v %+v", err, res)
	}
	s2.Release()
	s2.Release() // twice is harmless
	wctx, wcancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer wcancel()
	s3, _ := e.Acquire(context.Background())
	if _, err := e.Acquire(wctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("acquire with all slots busy: %v", err)
	}
	s3.Release()
}

func TestAcquirePrefersCachedPrefix(t *testing.T) {
	e := open(t, 2)
	other := []int32{64790, 64792, 64795, 30910, 13, 13755, 993, 64796}
	a, _ := e.Acquire(context.Background())
	b, _ := e.Acquire(context.Background())
	noop := func(gen.Token) error { return nil }
	a.Generate(context.Background(), gen.Request{Prompt: prompt, MaxTokens: 1}, noop)
	b.Generate(context.Background(), gen.Request{Prompt: other, MaxTokens: 1}, noop)
	a.Release()
	b.Release()
	s, _ := e.AcquireFor(context.Background(), append(slices.Clone(other), 5, 6))
	defer s.Release()
	if s.ID() != b.ID() {
		t.Errorf("got slot %d, want %d which holds the prefix", s.ID(), b.ID())
	}
}

func TestCloseEndsWork(t *testing.T) {
	e := open(t, 1)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Acquire(context.Background()); !errors.Is(err, engine.ErrClosed) {
		t.Errorf("acquire after close: %v", err)
	}
}

// A caller that stops reading its tokens does not stall the scheduler: the
// other slot's request runs to its end meanwhile, and the stalled caller
// still gets every token, in order, once it reads again. (Before, the
// scheduler blocked once 256 tokens waited for one caller.)
func TestStalledConsumerDoesNotStallOthers(t *testing.T) {
	e := openSized(t, 2, 1024, 64)
	stalled, _ := e.Acquire(context.Background())
	other, _ := e.Acquire(context.Background())
	defer stalled.Release()
	defer other.Release()

	unblock := make(chan struct{})
	type outcome struct {
		res      gen.Result
		streamed []int32
		err      error
	}
	stalledDone := make(chan outcome, 1)
	go func() {
		var got []int32
		res, err := stalled.Generate(context.Background(), gen.Request{Prompt: prompt, MaxTokens: 600}, func(tok gen.Token) error {
			if len(got) == 0 {
				<-unblock // stop reading after the first token
			}
			got = append(got, tok.ID)
			return nil
		})
		stalledDone <- outcome{res, got, err}
	}()
	// Let the stalled request run far past 256 queued tokens first.
	deadline := time.Now().Add(time.Minute)
	for e.Stats().GeneratedTokens < 400 {
		if time.Now().After(deadline) {
			close(unblock)
			t.Fatalf("the scheduler stalled behind a caller that does not read: %d tokens generated", e.Stats().GeneratedTokens)
		}
		time.Sleep(5 * time.Millisecond)
	}
	otherDone := make(chan outcome, 1)
	go func() {
		res, err := other.Generate(context.Background(), gen.Request{Prompt: prompt, MaxTokens: 300}, func(gen.Token) error { return nil })
		otherDone <- outcome{res: res, err: err}
	}()
	select {
	case o := <-otherDone:
		if o.err != nil || len(o.res.Tokens) != 300 {
			t.Errorf("other request: %d tokens, %v", len(o.res.Tokens), o.err)
		}
	case <-time.After(time.Minute):
		t.Error("a request waited behind a caller that does not read")
	}
	close(unblock)
	o := <-stalledDone
	if o.err != nil || len(o.res.Tokens) != 600 || !slices.Equal(o.streamed, o.res.Tokens) {
		t.Errorf("stalled request: err %v, %d tokens in the result, %d streamed", o.err, len(o.res.Tokens), len(o.streamed))
	}
}

// Generate on a slot acquired before Close returns ErrClosed.
func TestGenerateAfterClose(t *testing.T) {
	e := open(t, 1)
	s, err := e.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Generate(context.Background(), greedy(4), func(gen.Token) error { return nil }); !errors.Is(err, engine.ErrClosed) {
		t.Errorf("Generate after Close: %v", err)
	}
	if e.Model().VocabSize() != 65024 || e.ContextSize() != 256 {
		t.Errorf("sizes after Close: vocab %d context %d", e.Model().VocabSize(), e.ContextSize())
	}
	if _, err := e.Model().Tokenize("hi", false, false); !errors.Is(err, binding.ErrClosed) {
		t.Errorf("Tokenize after Close: %v", err)
	}
	s.Release()
}

// Close while requests are in flight ends them as cancelled.
func TestCloseDuringGenerate(t *testing.T) {
	e := open(t, 2)
	var wg sync.WaitGroup
	started := make(chan struct{}, 2)
	for range 2 {
		s, _ := e.Acquire(context.Background())
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			res, err := s.Generate(context.Background(), gen.Request{Prompt: prompt}, func(gen.Token) error {
				if n++; n == 1 {
					started <- struct{}{}
				}
				return nil
			})
			if err != nil && !errors.Is(err, engine.ErrClosed) {
				t.Errorf("generate during Close: %v", err)
			}
			if err == nil && res.Finish != gen.FinishCancelled && res.Finish != gen.FinishLength {
				t.Errorf("generate during Close: finish %q", res.Finish)
			}
		}()
	}
	<-started
	<-started
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
}

// With more slots than batch rows, prompts and next tokens share the few
// rows over more steps; every reply matches the reply alone.
func TestMoreSlotsThanBatchRows(t *testing.T) {
	serial := open(t, 1)
	want, _ := generate(t, serial, gen.Request{Prompt: prompt, MaxTokens: 6})
	e := openSized(t, 3, 256, 2)
	var wg sync.WaitGroup
	for range 3 {
		s, _ := e.Acquire(context.Background())
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.Release()
			res, err := s.Generate(context.Background(), gen.Request{Prompt: prompt, MaxTokens: 6}, func(gen.Token) error { return nil })
			if err != nil || !slices.Equal(res.Tokens, want.Tokens) {
				t.Errorf("slot %d: err %v, tokens %v, alone %v", s.ID(), err, res.Tokens, want.Tokens)
			}
		}()
	}
	wg.Wait()
}
