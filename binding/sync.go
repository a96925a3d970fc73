package binding

/*
#include "shim.h"
*/
import "C"

// Synchronize waits until every computation queued on the context has
// finished. On the CPU Decode is synchronous already; GPU backends may
// still be running when Decode returns, so timings call this first.
func (c *Context) Synchronize() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.c != nil {
		C.llama_synchronize(c.c)
	}
}

// AddBOS reports whether the model's tokenizer puts a BOS token first
// (tokenizer.ggml.add_bos_token; false for ChatGLM3).
func (m *Model) AddBOS() bool { return m.addBOS }
