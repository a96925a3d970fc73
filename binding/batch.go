package binding

/*
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"runtime"
	"unsafe"
)

func cpuCount() int { return runtime.NumCPU() }

// Batch is a set of tokens for one Decode call, each with its position,
// the sequences it belongs to and whether its logits are wanted. Its memory
// is allocated in C; Close frees it.
type Batch struct {
	c       C.struct_llama_batch
	cap     int
	nSeqMax int
}

// NewBatch allocates a batch for up to capacity tokens, each in at most
// nSeqMax sequences.
func NewBatch(capacity, nSeqMax int) (*Batch, error) {
	if capacity <= 0 || nSeqMax <= 0 {
		return nil, fmt.Errorf("new batch: capacity %d and sequences %d must be positive", capacity, nSeqMax)
	}
	b := &Batch{c: C.llama_batch_init(C.int32_t(capacity), 0, C.int32_t(nSeqMax)), cap: capacity, nSeqMax: nSeqMax}
	b.c.n_tokens = 0
	return b, nil
}

// Close frees the batch. Calling Close again is a no-op.
func (b *Batch) Close() {
	if b.cap == 0 {
		return
	}
	C.llama_batch_free(b.c)
	b.cap = 0
}

// Len is the number of tokens in the batch.
func (b *Batch) Len() int { return int(b.c.n_tokens) }

// Cap is the most tokens the batch holds.
func (b *Batch) Cap() int { return b.cap }

// Clear empties the batch.
func (b *Batch) Clear() { b.c.n_tokens = 0 }

// Add appends a token at position pos in the given sequences; with logits,
// its output row is kept. It returns the row's index in the batch.
func (b *Batch) Add(token int32, pos int, seqs []int, logits bool) (int, error) {
	i := b.Len()
	if i >= b.cap {
		return 0, fmt.Errorf("batch add: batch is full (%d tokens)", b.cap)
	}
	if len(seqs) == 0 || len(seqs) > b.nSeqMax {
		return 0, fmt.Errorf("batch add: %d sequence ids, want 1 to %d", len(seqs), b.nSeqMax)
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

// SetLogits changes whether row i's logits are kept.
func (b *Batch) SetLogits(i int, logits bool) {
	var l C.int8_t
	if logits {
		l = 1
	}
	unsafe.Slice(b.c.logits, b.cap)[i] = l
}

// tokens returns the token ids in the batch (a view of C memory).
func (b *Batch) tokens() []int32 {
	if b.Len() == 0 {
		return nil
	}
	return unsafe.Slice((*int32)(unsafe.Pointer(b.c.token)), b.Len())
}

// seqs returns every sequence id used in the batch.
func (b *Batch) seqs() []int32 {
	var out []int32
	n := b.Len()
	counts := unsafe.Slice(b.c.n_seq_id, b.cap)
	ids := unsafe.Slice(b.c.seq_id, b.cap)
	for i := 0; i < n; i++ {
		for _, s := range unsafe.Slice(ids[i], int(counts[i])) {
			out = append(out, int32(s))
		}
	}
	return out
}

// CountSeq counts the rows whose first sequence id is seq.
func (b *Batch) CountSeq(seq int) int {
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
