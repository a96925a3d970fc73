package binding

/*
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"math"
	"runtime"
	"unsafe"
)

func cpuCount() int { return runtime.NumCPU() }

// Batch is a set of tokens for one Decode call, each with its position,
// the sequences it belongs to and whether its logits are wanted. Its memory
// is allocated in C; Close frees it. A Batch is not safe for concurrent
// use; after Close it is empty and Add returns ErrClosed.
type Batch struct {
	c       C.struct_llama_batch
	cap     int
	nSeqMax int
}

// NewBatch allocates a batch for up to capacity tokens, each in at most
// nSeqMax sequences.
func NewBatch(capacity, nSeqMax int) (*Batch, error) {
	if capacity <= 0 || nSeqMax <= 0 || capacity > maxBatch || nSeqMax > maxSeqs {
		return nil, fmt.Errorf("new batch: capacity %d and sequences %d must be in [1, %d] and [1, %d]", capacity, nSeqMax, maxBatch, maxSeqs)
	}
	b := &Batch{c: C.llama_batch_init(C.int32_t(capacity), 0, C.int32_t(nSeqMax)), cap: capacity, nSeqMax: nSeqMax}
	b.c.n_tokens = 0
	return b, nil
}

// maxBatch bounds NewBatch's capacity.
const maxBatch = 1 << 24

// maxSeqs is the most sequences llama.cpp keeps (LLAMA_MAX_SEQ).
var maxSeqs = int(C.llama_max_parallel_sequences())

// Close frees the batch and leaves it empty. Calling Close again is a no-op.
func (b *Batch) Close() {
	if b.cap == 0 {
		return
	}
	C.llama_batch_free(b.c)
	b.c = C.struct_llama_batch{}
	b.cap = 0
}

func (b *Batch) closed() bool { return b.cap == 0 }

// Len is the number of tokens in the batch.
func (b *Batch) Len() int { return int(b.c.n_tokens) }

// Cap is the most tokens the batch holds.
func (b *Batch) Cap() int { return b.cap }

// Clear empties the batch.
func (b *Batch) Clear() { b.c.n_tokens = 0 }

// Add appends a token at position pos in the given sequences; with logits,
// its output row is kept. It returns the row's index in the batch.
func (b *Batch) Add(token int32, pos int, seqs []int, logits bool) (int, error) {
	if b.closed() {
		return 0, fmt.Errorf("batch add: %w", ErrClosed)
	}
	i := b.Len()
	if i >= b.cap {
		return 0, fmt.Errorf("batch add: batch is full (%d tokens)", b.cap)
	}
	if len(seqs) == 0 || len(seqs) > b.nSeqMax {
		return 0, fmt.Errorf("batch add: %d sequence ids, want 1 to %d", len(seqs), b.nSeqMax)
	}
	if pos < 0 || pos > math.MaxInt32 {
		return 0, fmt.Errorf("batch add: position %d out of range [0, %d]", pos, math.MaxInt32)
	}
	for _, s := range seqs {
		if s < 0 || s >= maxSeqs {
			return 0, fmt.Errorf("batch add: sequence %d out of range [0, %d)", s, maxSeqs)
		}
	}
	unsafe.Slice(b.c.token, b.cap)[i] = C.llama_token(token)
	unsafe.Slice(b.c.pos, b.cap)[i] = C.llama_pos(pos)
	unsafe.Slice(b.c.n_seq_id, b.cap)[i] = C.int32_t(len(seqs))
	ids := unsafe.Slice(unsafe.Slice(b.c.seq_id, b.cap)[i], b.nSeqMax)
	for k, s := range seqs {
		ids[k] = C.llama_seq_id(s)
	}
	var l C.int8_t
	if logits {
		l = 1
	}
	unsafe.Slice(b.c.logits, b.cap)[i] = l
	b.c.n_tokens++
	return i, nil
}

// SetLogits changes whether row i's logits are kept. It returns an error
// if the batch has no row i.
func (b *Batch) SetLogits(i int, logits bool) error {
	if i < 0 || i >= b.Len() {
		return fmt.Errorf("batch: row %d out of range [0, %d)", i, b.Len())
	}
	var l C.int8_t
	if logits {
		l = 1
	}
	unsafe.Slice(b.c.logits, b.cap)[i] = l
	return nil
}

// check validates every row against a context's vocabulary and sequence
// count before llama.cpp sees the batch: tokens in [0, nVocab), positions
// non-negative, 1 to nSeqMax sequence ids per row, each in [0, nSeq).
func (b *Batch) check(nVocab, nSeq int) error {
	n := b.Len()
	if n < 0 || n > b.cap {
		return fmt.Errorf("batch of %d rows, capacity %d", n, b.cap)
	}
	toks := unsafe.Slice(b.c.token, b.cap)
	pos := unsafe.Slice(b.c.pos, b.cap)
	counts := unsafe.Slice(b.c.n_seq_id, b.cap)
	ids := unsafe.Slice(b.c.seq_id, b.cap)
	for i := 0; i < n; i++ {
		if t := int(toks[i]); t < 0 || t >= nVocab {
			return fmt.Errorf("token %d at batch row %d out of range [0, %d)", t, i, nVocab)
		}
		if pos[i] < 0 {
			return fmt.Errorf("position %d at batch row %d is negative", int(pos[i]), i)
		}
		k := int(counts[i])
		if k < 1 || k > b.nSeqMax {
			return fmt.Errorf("%d sequence ids at batch row %d, want 1 to %d", k, i, b.nSeqMax)
		}
		for _, s := range unsafe.Slice(ids[i], k) {
			if s < 0 || int(s) >= nSeq {
				return fmt.Errorf("sequence %d at batch row %d out of range [0, %d)", int(s), i, nSeq)
			}
		}
	}
	return nil
}

// CountSeq counts the rows whose first sequence id is seq.
func (b *Batch) CountSeq(seq int) int {
	if b.closed() {
		return 0
	}
	n := 0
	counts := unsafe.Slice(b.c.n_seq_id, b.cap)
	ids := unsafe.Slice(b.c.seq_id, b.cap)
	for i := 0; i < b.Len(); i++ {
		if counts[i] > 0 && int(unsafe.Slice(ids[i], 1)[0]) == seq {
			n++
		}
	}
	return n
}
