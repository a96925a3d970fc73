package engine

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chatglm/chatglm/binding"
	"github.com/chatglm/chatglm/gen"
	"github.com/chatglm/chatglm/internal/fixture/testmodel"
)

// fill puts the next token of every generating job first, then as much of
// each prompt as fits; logits are kept only for the rows that are sampled.
func TestFillPacksGeneratingJobsFirst(t *testing.T) {
	b, err := binding.NewBatch(8, 1)
	if err != nil {
		t.Fatal(err)
	}
	sc := &scheduler{batch: b}
	defer b.Close()
	genA := &job{slot: &Slot{id: 0, cached: make([]int32, 5)}, feedLast: true, last: 7}
	genB := &job{slot: &Slot{id: 1, cached: make([]int32, 2)}, feedLast: true, last: 9}
	long := &job{slot: &Slot{id: 2, cached: make([]int32, 3)}, pending: make([]int32, 10)}
	sc.fill([]*job{long, genA, genB})
	if b.Len() != 8 || genA.row != 0 || genB.row != 1 || genA.rows != 1 || genB.rows != 1 {
		t.Errorf("generating jobs: batch %d rows, A row %d, B row %d", b.Len(), genA.row, genB.row)
	}
	if long.rows != 6 || long.row != -1 || b.CountSeq(2) != 6 {
		t.Errorf("prompt chunk: %d rows (%d in the batch), sampled row %d; want 6 and none sampled", long.rows, b.CountSeq(2), long.row)
	}
	short := &job{slot: &Slot{id: 2}, pending: make([]int32, 4)}
	sc.fill([]*job{genA, short})
	if b.Len() != 5 || short.rows != 4 || short.row != 4 {
		t.Errorf("whole prompt: batch %d rows, job %d rows, sampled row %d", b.Len(), short.rows, short.row)
	}
	// With no room left, a generating job gets no row and keeps its token.
	small, _ := binding.NewBatch(1, 1)
	defer small.Close()
	sc.batch = small
	sc.fill([]*job{genA, genB})
	if genA.rows != 1 || genB.rows != 0 || genB.row != -1 {
		t.Errorf("full batch: A %d rows, B %d rows row %d", genA.rows, genB.rows, genB.row)
	}
}

var (
	prompt  = []int32{64790, 64792, 64795, 30910, 13, 36474, 54591, 64796}
	prompts = [][]int32{
		prompt,
		{64790, 64792, 64795, 30910, 13, 13755, 993, 64796},
		{64790, 64792, 64794, 30910, 13, 100, 200, 300, 400, 64795, 30910, 13, 36474, 54591, 64796},
	}
)

func options(t *testing.T, parallel int) Options {
	return Options{ModelPath: testmodel.TinyGGUF(t), Parallel: parallel, ContextSize: 256, BatchSize: 64, Threads: 2, FlashAttn: binding.FlashAttnOff}
}

// A decode that fails because of one job ends that job only: the step is
// split and retried, and the other jobs produce exactly what they produce
// alone.
func TestFailedDecodeFailsOnlyItsJob(t *testing.T) {
	alone, err := Open(context.Background(), options(t, 1))
	if err != nil {
		t.Fatal(err)
	}
	defer alone.Close()
	want := make([][]int32, len(prompts))
	for i, p := range prompts {
		s, _ := alone.Acquire(context.Background())
		res, err := s.Generate(context.Background(), gen.Request{Prompt: p, MaxTokens: 10}, func(gen.Token) error { return nil })
		s.Release()
		if err != nil {
			t.Fatal(err)
		}
		want[i] = res.Tokens
	}

	e, err := load(context.Background(), options(t, 3))
	if err != nil {
		t.Fatal(err)
	}
	injected := errors.New("injected fault")
	var mu sync.Mutex
	var sizes []int
	real := e.decode
	e.decode = func(b *binding.Batch) error {
		mu.Lock()
		sizes = append(sizes, b.Len())
		mu.Unlock()
		if b.CountSeq(1) > 0 {
			return injected // slot 1's rows cannot be decoded
		}
		return real(b)
	}
	defer e.Close()
	slots := make([]*Slot, len(prompts))
	for i := range slots {
		slots[i], _ = e.Acquire(context.Background())
		defer slots[i].Release()
	}
	// Queue all three before the scheduler starts, so that its first step
	// holds every prompt.
	e.jobs = make(chan *job, len(prompts))
	got := make([][]int32, len(prompts))
	errs := make([]error, len(prompts))
	var wg sync.WaitGroup
	for _, s := range slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := s.Generate(context.Background(), gen.Request{Prompt: prompts[s.ID()], MaxTokens: 10}, func(gen.Token) error { return nil })
			got[s.ID()], errs[s.ID()] = res.Tokens, err
		}()
	}
	for len(e.jobs) < len(prompts) {
		time.Sleep(time.Millisecond)
	}
	go e.loop()
	wg.Wait()
	for id := range prompts {
		if id == 1 {
			if !errors.Is(errs[id], injected) {
				t.Errorf("slot 1: err = %v, want the injected fault", errs[id])
			}
			continue
		}
		if errs[id] != nil || !slices.Equal(got[id], want[id]) {
			t.Errorf("slot %d: err %v, tokens %v, alone %v", id, errs[id], got[id], want[id])
		}
	}
	mu.Lock()
	if len(sizes) < 3 || sizes[0] != len(prompts[0])+len(prompts[1])+len(prompts[2]) {
		t.Errorf("decode sizes %v: want the first step to hold all three prompts, then a split", sizes)
	}
	mu.Unlock()
	// The failed job left nothing in its slot's cache.
	if c := slots[1].Cached(); len(c) != 0 {
		t.Errorf("slot 1 caches %d tokens after its failed request", len(c))
	}
	if p, err := e.lctx.SeqPosMax(1); err != nil || p != -1 {
		t.Errorf("slot 1 KV holds positions up to %d (%v), want none", p, err)
	}
	if st := e.Stats(); st.Active != 0 || st.Requests != 3 {
		t.Errorf("stats: %+v", st)
	}
}
