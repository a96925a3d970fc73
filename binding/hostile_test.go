package binding_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatglm/chatglm/binding"
	"github.com/chatglm/chatglm/internal/fixture/testmodel"
)

// Every method of a closed Model, Context, Batch and Sampler returns
// ErrClosed or a zero value; none touches freed C memory.
func TestEveryMethodAfterClose(t *testing.T) {
	m, err := binding.LoadModel(context.Background(), testmodel.TinyGGUF(t), binding.ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := m.NewContext(binding.ContextParams{NCtx: 256, NSeqMax: 2, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	b, err := binding.NewBatch(8, 1)
	if err != nil {
		t.Fatal(err)
	}
	for i, tok := range prompt {
		b.Add(tok, i, []int{0}, i == len(prompt)-1)
	}
	if err := c.Decode(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	s, err := binding.NewSampler(binding.SamplerParams{})
	if err != nil {
		t.Fatal(err)
	}
	wantVocab, wantCtx := m.VocabSize(), c.Size()
	for range 2 {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		b.Close()
		s.Close()
	}
	closed := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, binding.ErrClosed) {
			t.Errorf("%s after Close: err = %v, want ErrClosed", what, err)
		}
	}

	// Model: facts read at load stay; lookups return zero values.
	if m.VocabSize() != wantVocab || m.ContextLength() != 256 || m.Layers() != 2 || m.Heads() != 4 || m.HeadsKV() != 2 ||
		m.EmbeddingLength() != 64 || m.Size() == 0 || m.NParams() == 0 || m.Description() == "" || m.EOS() != 2 || m.AddBOS() {
		t.Errorf("facts after Close: vocab %d ctx %d desc %q", m.VocabSize(), m.ContextLength(), m.Description())
	}
	if v, ok := m.Meta("general.architecture"); ok || v != "" {
		t.Errorf("Meta after Close = %q, %v", v, ok)
	}
	if md := m.Metadata(); len(md) != 0 {
		t.Errorf("Metadata after Close has %d keys", len(md))
	}
	if m.ChatTemplate() != "" || m.TokenText(100) != "" || m.IsEOG(2) || m.IsControl(64795) || m.Name() != "" || m.Architecture() != "" {
		t.Error("a lookup after Close returned a value")
	}
	_, err = m.Tokenize("hi", false, false)
	closed("Tokenize", err)
	_, err = m.TokenPiece(100, false)
	closed("TokenPiece", err)
	_, err = m.Detokenize([]int32{100}, false, false)
	closed("Detokenize", err)
	_, err = m.Detokenize(nil, false, false)
	closed("Detokenize(nil)", err)
	_, err = m.NewContext(binding.ContextParams{})
	closed("NewContext", err)

	// Context.
	if c.Size() != wantCtx || c.SeqSize() == 0 || c.MaxSeqs() != 2 || c.BatchSize() == 0 {
		t.Errorf("context sizes after Close: %d %d %d %d", c.Size(), c.SeqSize(), c.MaxSeqs(), c.BatchSize())
	}
	closed("SetThreads", c.SetThreads(1, 1))
	closed("ClearMemory", c.ClearMemory(true))
	closed("SeqRemove", c.SeqRemove(0, 0, -1))
	closed("SeqCopy", c.SeqCopy(0, 1, -1, -1))
	closed("SeqKeep", c.SeqKeep(0))
	closed("SeqShift", c.SeqShift(0, 0, -1, 1))
	_, err = c.SeqPosMax(0)
	closed("SeqPosMax", err)
	_, err = c.SeqPosMin(0)
	closed("SeqPosMin", err)
	_, err = c.SeqState(0)
	closed("SeqState", err)
	closed("SetSeqState", c.SetSeqState(0, []byte("x")))
	dir := t.TempDir()
	closed("SaveSeqState", c.SaveSeqState(filepath.Join(dir, "s"), 0, prompt))
	_, err = c.LoadSeqState(filepath.Join(dir, "s"), 0)
	closed("LoadSeqState", err)
	_, err = c.Logits(-1)
	closed("Logits", err)
	_, err = c.Perf()
	closed("Perf", err)
	closed("ResetPerf", c.ResetPerf())
	c.Synchronize()
	b2, _ := binding.NewBatch(1, 1)
	defer b2.Close()
	b2.Add(1, 0, []int{0}, true)
	closed("Decode", c.Decode(context.Background(), b2))

	// Batch: empty, no pointers left to write through.
	if b.Len() != 0 || b.Cap() != 0 || b.CountSeq(0) != 0 {
		t.Errorf("closed batch: len %d cap %d", b.Len(), b.Cap())
	}
	_, err = b.Add(1, 0, []int{0}, true)
	closed("Batch.Add", err)
	if err := b.SetLogits(0, true); err == nil {
		t.Error("SetLogits on a closed batch accepted")
	}
	b.Clear()

	// Sampler.
	_, err = s.Sample(c, -1)
	closed("Sample", err)
	closed("Accept", s.Accept(5))
	closed("Reset", s.Reset())
}

// Bad sequence ids, positions, rows and sizes are refused with an error;
// none reaches one of llama.cpp's GGML_ASSERTs (which abort the process).
func TestBadIDsAreErrorsNotAborts(t *testing.T) {
	m := loadTiny(t)
	c := newCtx(t, m, binding.ContextParams{NSeqMax: 2, KVUnified: true})
	decode(t, c, 0, 0, prompt)
	dir := t.TempDir()
	for _, seq := range []int{2, 7, -2, 1 << 20} {
		check := func(what string, err error) {
			t.Helper()
			if err == nil || !strings.Contains(err.Error(), fmt.Sprint("sequence ", seq)) {
				t.Errorf("%s(seq %d): err = %v, want it to name the sequence", what, seq, err)
			}
		}
		if seq != -2 { // any negative id means "every sequence" to SeqRemove
			check("SeqRemove", c.SeqRemove(seq, 0, -1))
		}
		check("SeqCopy src", c.SeqCopy(seq, 0, -1, -1))
		check("SeqCopy dst", c.SeqCopy(0, seq, -1, -1))
		check("SeqKeep", c.SeqKeep(seq))
		check("SeqShift", c.SeqShift(seq, 0, -1, 1))
		_, err := c.SeqPosMax(seq)
		check("SeqPosMax", err)
		_, err = c.SeqPosMin(seq)
		check("SeqPosMin", err)
		_, err = c.SeqState(seq)
		check("SeqState", err)
		check("SetSeqState", c.SetSeqState(seq, []byte("state")))
		check("SaveSeqState", c.SaveSeqState(filepath.Join(dir, "s"), seq, prompt))
		_, err = c.LoadSeqState(filepath.Join(dir, "s"), seq)
		check("LoadSeqState", err)
	}
	b, _ := binding.NewBatch(4, 2)
	defer b.Close()
	if _, err := b.Add(5, -1, []int{0}, true); err == nil {
		t.Error("negative position accepted")
	}
	if _, err := b.Add(5, 0, []int{-1}, true); err == nil {
		t.Error("negative sequence id accepted")
	}
	if _, err := b.Add(5, 0, []int{0, 1, 1}, true); err == nil {
		t.Error("more sequence ids than the batch holds accepted")
	}
	if err := b.SetLogits(3, true); err == nil {
		t.Error("SetLogits of a row that is not there accepted")
	}
	if _, err := binding.NewBatch(1<<30, 1); err == nil {
		t.Error("batch of 2^30 tokens accepted")
	}
	if _, err := binding.NewBatch(4, 100000); err == nil {
		t.Error("batch with 100000 sequences per token accepted")
	}
	for _, row := range []int{-2, 1 << 20} {
		if _, err := c.Logits(row); err == nil {
			t.Errorf("Logits(%d) accepted", row)
		}
		s, _ := binding.NewSampler(binding.SamplerParams{})
		if _, err := s.Sample(c, row); err == nil {
			t.Errorf("Sample(%d) accepted", row)
		}
		s.Close()
	}
	nan := float32(math.NaN())
	for _, p := range []binding.SamplerParams{
		{Temperature: 1, TopP: nan}, {Temperature: 1, MinP: nan}, {Temperature: nan},
		{RepeatPenalty: float32(math.Inf(1))}, {PresencePenalty: nan}, {FrequencyPenalty: nan},
		{RepeatPenalty: 1.1, RepeatLastN: math.MaxInt32}, {RepeatPenalty: 1.1, RepeatLastN: -5},
	} {
		if s, err := binding.NewSampler(p); err == nil {
			s.Close()
			t.Errorf("sampler %+v accepted", p)
		}
	}
	if err := c.SetThreads(0, 4); err == nil {
		t.Error("zero threads accepted")
	}
	if err := c.SeqShift(0, 0, -1, 1<<40); err == nil {
		t.Error("shift beyond int32 accepted")
	}
	// The context still works.
	decode(t, c, 1, 0, prompt)
}

// An error llama.cpp logs for one context's decode is reported by that
// decode, not by another context's that fails at the same time. Each
// decode below skips ahead of its sequence's cache to a position of its
// own, which llama.cpp rejects with a message naming that position.
func TestDecodeErrorsStayWithTheirContext(t *testing.T) {
	m := loadTiny(t)
	var wg sync.WaitGroup
	for k := range 2 {
		c := newCtx(t, m, binding.ContextParams{NCtx: 64, Threads: 1})
		decode(t, c, 0, 0, prompt)
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, _ := binding.NewBatch(1, 1)
			defer b.Close()
			for i := range 200 {
				pos := 20 + 2*(i%10) + k // even for one context, odd for the other
				b.Clear()
				b.Add(100, pos, []int{0}, true)
				err := c.Decode(context.Background(), b)
				if want := fmt.Sprintf("Y = %d", pos); err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("context %d, decode at %d: err = %v, want llama.cpp's reason with %q", k, pos, err, want)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// A cancellation that arrives as a decode ends never aborts the next
// decode of the context.
func TestCancelAtDecodeEndDoesNotAbortNextDecode(t *testing.T) {
	m := loadTiny(t)
	c := newCtx(t, m, binding.ContextParams{NCtx: 64, Threads: 1})
	b, _ := binding.NewBatch(len(prompt), 1)
	defer b.Close()
	fill := func() {
		b.Clear()
		for i, tok := range prompt {
			b.Add(tok, i, []int{0}, i == len(prompt)-1)
		}
	}
	// How long one decode takes, to aim the cancellations at its end.
	fill()
	start := time.Now()
	for range 5 {
		c.ClearMemory(false)
		if err := c.Decode(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
	d := time.Since(start) / 5
	for i := range 100 {
		c.ClearMemory(false)
		ctx, cancel := context.WithCancel(context.Background())
		// From well inside the decode to just after it.
		timer := time.AfterFunc(d*time.Duration(50+i%60)/100, cancel)
		err := c.Decode(ctx, b)
		timer.Stop()
		cancel()
		if err != nil && !errors.Is(err, binding.ErrAborted) && !errors.Is(err, context.Canceled) {
			t.Fatalf("try %d: cancelled decode: %v", i, err)
		}
		c.ClearMemory(false)
		if err := c.Decode(context.Background(), b); err != nil {
			t.Fatalf("try %d: the decode after a cancelled one failed: %v", i, err)
		}
	}
}

// A Model or Context that is garbage-collected without Close is reported.
func TestLeakIsLogged(t *testing.T) {
	buf := captureWarnings(t)
	func() {
		m, err := binding.LoadModel(context.Background(), testmodel.TinyGGUF(t), binding.ModelParams{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.NewContext(binding.ContextParams{NCtx: 64}); err != nil {
			t.Fatal(err)
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		runtime.GC()
		if out := buf.String(); strings.Contains(out, "object=\"model ") && strings.Contains(out, "object=\"context of ") {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no leak reported for an unclosed model and context; log:\n%s", buf.String())
}

// A closed object is not reported.
func TestNoLeakLoggedAfterClose(t *testing.T) {
	buf := captureWarnings(t)
	func() {
		m := loadTiny(t)
		c := newCtx(t, m, binding.ContextParams{NCtx: 64})
		c.Close()
		m.Close()
	}()
	for range 5 {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if strings.Contains(buf.String(), "without Close") {
		t.Errorf("leak reported for closed objects:\n%s", buf.String())
	}
}

// captureWarnings sends slog's warnings and errors to a buffer for the rest
// of the test.
func captureWarnings(t *testing.T) *syncBuffer {
	buf := &syncBuffer{}
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelWarn})))
	t.Cleanup(func() { slog.SetDefault(old) })
	return buf
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Metadata agrees with Meta for every key (both read values through one
// helper that grows its buffer, so neither cuts a value at 4 KiB).
func TestMetadataValuesAreWhole(t *testing.T) {
	m := loadTiny(t)
	md := m.Metadata()
	if len(md) < 10 {
		t.Fatalf("Metadata has %d keys", len(md))
	}
	for k, v := range md {
		if want, ok := m.Meta(k); !ok || v != want {
			t.Errorf("Metadata()[%q] has %d bytes, Meta has %d (%v)", k, len(v), len(want), ok)
		}
	}
	if tmpl := m.ChatTemplate(); md["tokenizer.chat_template"] != tmpl {
		t.Errorf("chat template: %d bytes in Metadata, %d from ChatTemplate", len(md["tokenizer.chat_template"]), len(tmpl))
	} else {
		t.Logf("chat template: %d bytes", len(tmpl))
	}
}

// Close may race with readers of the model and users of the context: each
// call either works or returns ErrClosed.
func TestCloseRacesWithUse(t *testing.T) {
	m, err := binding.LoadModel(context.Background(), testmodel.TinyGGUF(t), binding.ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := m.NewContext(binding.ContextParams{NCtx: 64, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := m.Tokenize("你好 world", false, true); err != nil && !errors.Is(err, binding.ErrClosed) {
					t.Error(err)
				}
				if _, err := m.TokenPiece(64795, true); err != nil && !errors.Is(err, binding.ErrClosed) {
					t.Error(err)
				}
				m.Metadata()
				m.IsEOG(2)
				if _, err := c.SeqPosMax(0); err != nil && !errors.Is(err, binding.ErrClosed) {
					t.Error(err)
				}
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	if err := c.Close(); err != nil {
		t.Error(err)
	}
	if err := m.Close(); err != nil {
		t.Error(err)
	}
	time.Sleep(20 * time.Millisecond)
	close(stop)
	wg.Wait()
}
