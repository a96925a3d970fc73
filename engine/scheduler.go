package engine

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/chatglm/chatglm/binding"
	"github.com/chatglm/chatglm/gen"
)

// job is a request in the scheduler.
type job struct {
	ctx     context.Context
	cancel  context.CancelFunc
	slot    *Slot
	req     gen.Request
	out     *outbox
	sampler *binding.Sampler
	stop    map[int32]bool

	pending  []int32 // prompt tokens still to evaluate
	last     int32   // token to feed next during generation
	feedLast bool
	res      gen.Result
	started  time.Time
	firstTok time.Time
	done     bool // finished; the scheduler drops it after the step

	// Set by fill for the current step.
	rows    int   // rows of this job in the batch
	row     int   // batch row whose logits to sample, or -1
	fillErr error // a row could not be added
}

// scheduler is the state of the engine's single decode goroutine, the only
// one that touches the llama.cpp context. Each step runs named stages:
// admit new jobs, drop cancelled ones, fill one batch, decode it (splitting
// the jobs and retrying when a decode fails), then for each job commit what
// was evaluated, sample and deliver.
type scheduler struct {
	e      *Engine
	batch  *binding.Batch
	active []*job
}

// loop runs the scheduler until Close.
func (e *Engine) loop() {
	defer close(e.loopDone)
	// llama.cpp lowers n_batch to n_ctx when the context is smaller.
	batch, err := binding.NewBatch(min(e.opts.BatchSize, e.lctx.BatchSize()), 1)
	if err != nil {
		slog.Error("engine: batch", "err", err)
		return
	}
	sc := &scheduler{e: e, batch: batch}
	defer sc.shutdown()
	for sc.admit() {
		sc.step()
	}
}

// shutdown ends the jobs still active as cancelled and frees the batch.
func (sc *scheduler) shutdown() {
	for _, j := range sc.active {
		sc.finish(j, gen.FinishCancelled, nil)
	}
	sc.active = nil
	sc.batch.Close()
}

// admit takes the jobs submitted since the last step, waiting for one when
// none is active. It returns false when the engine is closing.
func (sc *scheduler) admit() bool {
	e := sc.e
	if len(sc.active) == 0 {
		select {
		case j := <-e.jobs:
			sc.active = append(sc.active, e.start(j))
		case <-e.quit:
			return false
		}
	}
	for {
		select {
		case j := <-e.jobs:
			sc.active = append(sc.active, e.start(j))
		case <-e.quit:
			return false
		default:
			return true
		}
	}
}

// step runs one decode step over the active jobs.
func (sc *scheduler) step() {
	sc.dropCancelled()
	if len(sc.active) > 0 {
		sc.decodeStep(sc.active)
	}
	kept := sc.active[:0]
	for _, j := range sc.active {
		if !j.done {
			kept = append(kept, j)
		}
	}
	clear(sc.active[len(kept):])
	sc.active = kept
}

// dropCancelled finishes the jobs whose caller has gone.
func (sc *scheduler) dropCancelled() {
	kept := sc.active[:0]
	for _, j := range sc.active {
		if j.ctx.Err() != nil {
			sc.finish(j, gen.FinishCancelled, nil)
			continue
		}
		kept = append(kept, j)
	}
	clear(sc.active[len(kept):])
	sc.active = kept
}

// fill packs one batch for jobs: the next token of each generating job
// first, then as much of each prompt as fits. It records each job's rows.
func (sc *scheduler) fill(jobs []*job) {
	b := sc.batch
	b.Clear()
	budget := b.Cap()
	for _, j := range jobs {
		j.rows, j.row, j.fillErr = 0, -1, nil
	}
	for _, j := range jobs {
		if !j.feedLast || budget == 0 {
			continue
		}
		row, err := b.Add(j.last, len(j.slot.cached), []int{j.slot.id}, true)
		if err != nil {
			j.fillErr = err
			continue
		}
		j.row, j.rows = row, 1
		budget--
	}
	for _, j := range jobs {
		if j.feedLast || len(j.pending) == 0 || budget == 0 {
			continue
		}
		n := min(len(j.pending), budget)
		for k := 0; k < n; k++ {
			lastOfPrompt := k == n-1 && n == len(j.pending)
			row, err := b.Add(j.pending[k], len(j.slot.cached)+k, []int{j.slot.id}, lastOfPrompt)
			if err != nil {
				j.fillErr = err
				break
			}
			j.rows++
			if lastOfPrompt {
				j.row = row
			}
		}
		budget -= j.rows
	}
}

// decodeStep fills a batch for jobs, decodes it and advances each job. When
// the decode fails, every job's cells from that step are removed and the
// two halves of jobs are retried apart (as llama.cpp's server does), so a
// failure ends only the job that causes it.
func (sc *scheduler) decodeStep(jobs []*job) {
	sc.fill(jobs)
	for _, j := range jobs {
		if j.fillErr != nil && j.rows == 0 {
			sc.finish(j, "", fmt.Errorf("engine: %w", j.fillErr))
		}
	}
	if sc.batch.Len() == 0 {
		return
	}
	err := sc.e.decode(sc.batch)
	sc.e.addStats(func(s *gen.Stats) { s.DecodeSteps++ })
	if err != nil {
		for _, j := range jobs {
			sc.rollback(j)
		}
		if len(jobs) == 1 {
			sc.finish(jobs[0], "", fmt.Errorf("engine: %w", err))
			return
		}
		half := len(jobs) / 2
		sc.decodeStep(jobs[:half])
		sc.decodeStep(jobs[half:])
		return
	}
	for _, j := range jobs {
		sc.advance(j)
	}
}

// rollback removes the cells a failed step may have left for j beyond
// what its slot has committed, so the slot's cache stays exact.
func (sc *scheduler) rollback(j *job) {
	s := j.slot
	if sc.e.lctx.SeqRemove(s.id, len(s.cached), -1) != nil {
		sc.e.lctx.SeqRemove(s.id, -1, -1)
		sc.e.setCached(s, s.cached[:0])
	}
}

// advance commits the rows j had in the decoded batch, then samples its
// next token and delivers it, or finishes the job.
func (sc *scheduler) advance(j *job) {
	if j.done {
		return
	}
	e := sc.e
	if j.fillErr != nil {
		sc.rollback(j)
		sc.finish(j, "", fmt.Errorf("engine: %w", j.fillErr))
		return
	}
	switch {
	case j.rows == 0:
	case j.feedLast:
		e.setCached(j.slot, append(j.slot.cached, j.last))
		j.feedLast = false
	default:
		n := j.rows
		e.setCached(j.slot, append(j.slot.cached, j.pending[:n]...))
		j.pending = j.pending[n:]
		j.res.EvaluatedTokens += n
		e.addStats(func(s *gen.Stats) { s.EvaluatedPromptTokens += int64(n) })
	}
	if j.row < 0 {
		return // more prompt to evaluate, or no room in this step
	}
	tok, err := j.sampler.Sample(e.lctx, j.row)
	if err != nil {
		sc.finish(j, "", err)
		return
	}
	if j.firstTok.IsZero() {
		j.firstTok = time.Now()
	}
	if j.stop[tok] {
		j.res.StopToken = tok
		sc.finish(j, gen.FinishStop, nil)
		return
	}
	sc.deliver(j, tok)
	if (j.req.MaxTokens > 0 && len(j.res.Tokens) >= j.req.MaxTokens) || len(j.slot.cached)+1 >= e.ctxSize {
		sc.finish(j, gen.FinishLength, nil)
		return
	}
	j.last, j.feedLast = tok, true
}

// deliver records a generated token and hands it to the job's caller
// without waiting for it.
func (sc *scheduler) deliver(j *job, tok int32) {
	piece, _ := sc.e.model.TokenPiece(tok, false)
	j.res.Tokens = append(j.res.Tokens, tok)
	sc.e.addStats(func(s *gen.Stats) { s.GeneratedTokens++ })
	j.out.push(gen.Token{ID: tok, Piece: piece})
}

// finish ends a job with a reason, or with err, and tells its caller.
func (sc *scheduler) finish(j *job, reason string, err error) {
	if j.done {
		return
	}
	j.done = true
	j.sampler.Close()
	// Counted before the caller hears of the end, so that it sees the
	// stats without this job.
	sc.e.addStats(func(s *gen.Stats) { s.Active-- })
	if err != nil {
		j.out.end(nil, err)
	} else {
		j.res.Finish = reason
		if !j.firstTok.IsZero() {
			j.res.PromptTime = j.firstTok.Sub(j.started)
			j.res.GenTime = time.Since(j.firstTok)
		} else {
			j.res.PromptTime = time.Since(j.started)
		}
		r := j.res
		j.out.end(&r, nil)
	}
}

// setCached records what slot s's KV cache holds (under slotMu, which
// Cached and TryAcquireFor read it under).
func (e *Engine) setCached(s *Slot, cached []int32) {
	e.slotMu.Lock()
	s.cached = cached
	e.slotMu.Unlock()
}

// start prepares a job: it reuses the slot's cached prefix and removes the
// rest of the slot's KV cells.
func (e *Engine) start(j *job) *job {
	e.addStats(func(s *gen.Stats) { s.Requests++; s.Active++ })
	s := j.slot
	n := commonPrefix(s.cached, j.req.Prompt)
	if n == len(j.req.Prompt) {
		n-- // evaluate at least one token to get logits
	}
	if n < len(s.cached) {
		if e.lctx.SeqRemove(s.id, n, -1) != nil {
			e.lctx.SeqRemove(s.id, -1, -1)
			n = 0
		}
		e.setCached(s, s.cached[:n])
	}
	j.res.CachedTokens = n
	j.pending = append([]int32(nil), j.req.Prompt[n:]...)
	for _, t := range j.req.Prompt {
		j.sampler.Accept(t)
	}
	return j
}
