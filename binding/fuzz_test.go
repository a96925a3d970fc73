package binding_test

import (
	"context"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/chatglm/chatglm/binding"
	"github.com/chatglm/chatglm/internal/fixture/testmodel"
)

// FuzzDecodeBatch decodes batches of arbitrary rows (token, position,
// sequence ids, logits flag) and then reads logits and edits the KV memory
// with arbitrary ids: every call returns, with an error or without, and
// the process never aborts in llama.cpp.
func FuzzDecodeBatch(f *testing.F) {
	m, err := binding.LoadModel(context.Background(), testmodel.TinyGGUF(f), binding.ModelParams{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { m.Close() })
	c, err := m.NewContext(binding.ContextParams{NCtx: 64, NBatch: 16, NUBatch: 16, NSeqMax: 2, KVUnified: true, Threads: 1})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { c.Close() })
	// Each row is 8 bytes: token (u16, scaled past the vocabulary), position
	// (i8), two sequence ids (i8, i8, the second used when >= 0), logits.
	f.Add([]byte{1, 0, 0, 0, 0xff, 1, 2, 0, 2, 0, 1, 0, 0xff, 1, 0, 0})
	f.Add([]byte{0xff, 0xff, 0x80, 5, 1, 1, 7, 7})
	f.Add([]byte{10, 0, 3, 0, 1, 0, 0, 0, 11, 0, 3, 1, 0, 1, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := c.ClearMemory(false); err != nil {
			t.Fatal(err)
		}
		b, err := binding.NewBatch(24, 2)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		var ops []int
		for len(data) >= 8 {
			row := data[:8]
			data = data[8:]
			tok := int32(binary.LittleEndian.Uint16(row)) * 2
			pos := int(int8(row[2]))
			seqs := []int{int(int8(row[3]))}
			if s := int(int8(row[4])); s >= 0 {
				seqs = append(seqs, s)
			}
			b.Add(tok, pos, seqs, row[5]&1 == 1) // errors are the point
			ops = append(ops, int(int8(row[6])), int(int8(row[7])))
		}
		err = c.Decode(context.Background(), b)
		if errors.Is(err, binding.ErrClosed) {
			t.Fatal(err)
		}
		for i, v := range ops {
			c.Logits(v)
			c.SeqRemove(v, i, -1)
			c.SeqPosMax(v)
			c.SeqCopy(v, i%3, -1, -1)
			c.SeqShift(v, 0, -1, 1)
			if err := c.SetThreads(1+i%2, 1); err != nil {
				t.Fatal(err)
			}
		}
	})
}
