package binding

/*
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"math"
	"sync"

	"github.com/chatglm/chatglm/gen"
)

// SamplerParams configures a sampler chain: the sampling settings of a
// generation request. Temperature <= 0 means greedy decoding (always the
// most likely token), which ignores the other fields except the penalties.
// A RepeatLastN of -1 turns the penalty window off (llama.cpp clamps it to 0).
type SamplerParams = gen.Sampling

// MaxPenaltyLastN bounds SamplerParams.RepeatLastN.
const MaxPenaltyLastN = 1 << 20

// RandomSeed asks for a fresh random seed.
const RandomSeed = gen.RandomSeed

// Sampler is a llama.cpp sampler chain. It is not safe for concurrent use.
type Sampler struct {
	mu sync.Mutex
	c  *C.struct_llama_sampler
}

// NewSampler builds the chain: penalties, then top-k, top-p, min-p,
// temperature and a seeded random pick (or greedy).
func NewSampler(p SamplerParams) (*Sampler, error) {
	Init()
	for name, v := range map[string]float32{"temperature": p.Temperature, "top_p": p.TopP, "min_p": p.MinP,
		"repeat penalty": p.RepeatPenalty, "frequency penalty": p.FrequencyPenalty, "presence penalty": p.PresencePenalty} {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, fmt.Errorf("sampler: %s is %v", name, v)
		}
	}
	if p.TopP < 0 || p.TopP > 1 || p.MinP < 0 || p.MinP > 1 || p.TopK < 0 || p.RepeatPenalty < 0 {
		return nil, fmt.Errorf("sampler: parameters out of range: %+v", p)
	}
	if p.RepeatLastN < -1 || p.RepeatLastN > MaxPenaltyLastN {
		// llama.cpp allocates a ring of this many tokens up front.
		return nil, fmt.Errorf("sampler: penalty window of %d tokens, want -1 to %d", p.RepeatLastN, MaxPenaltyLastN)
	}
	cp := C.llama_sampler_chain_default_params()
	chain := C.llama_sampler_chain_init(cp)
	add := func(s *C.struct_llama_sampler) { C.llama_sampler_chain_add(chain, s) }
	repeat := p.RepeatPenalty
	if repeat == 0 {
		repeat = 1
	}
	if repeat != 1 || p.FrequencyPenalty != 0 || p.PresencePenalty != 0 {
		lastN := p.RepeatLastN
		if lastN == 0 {
			lastN = 64
		}
		add(C.llama_sampler_init_penalties(C.int32_t(lastN), C.float(repeat), C.float(p.FrequencyPenalty), C.float(p.PresencePenalty)))
	}
	if p.Temperature <= 0 {
		add(C.llama_sampler_init_greedy())
		return &Sampler{c: chain}, nil
	}
	if p.TopK > 0 {
		add(C.llama_sampler_init_top_k(C.int32_t(p.TopK)))
	}
	if p.TopP > 0 && p.TopP < 1 {
		add(C.llama_sampler_init_top_p(C.float(p.TopP), 1))
	}
	if p.MinP > 0 {
		add(C.llama_sampler_init_min_p(C.float(p.MinP), 1))
	}
	add(C.llama_sampler_init_temp(C.float(p.Temperature)))
	add(C.llama_sampler_init_dist(C.uint32_t(p.Seed)))
	return &Sampler{c: chain}, nil
}

// Close frees the chain. Calling Close again is a no-op.
func (s *Sampler) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c != nil {
		C.llama_sampler_free(s.c)
		s.c = nil
	}
}

// Sample picks a token from batch row i of the context's last Decode
// (-1 = last row with logits) and records it for the penalties.
func (s *Sampler) Sample(c *Context, i int) (int32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == nil {
		return 0, ErrClosed
	}
	if i < -1 || i >= c.nBatch {
		return 0, fmt.Errorf("sample: batch row %d out of range [-1, %d)", i, c.nBatch)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.c == nil {
		return 0, fmt.Errorf("sample: context: %w", ErrClosed)
	}
	var tok C.llama_token
	logged := c.errs.capture(func() {
		if C.llama_get_logits_ith(c.c, C.int32_t(i)) != nil {
			tok = C.llama_sampler_sample(s.c, c.c, C.int32_t(i))
		} else {
			tok = -1
		}
	})
	if tok < 0 {
		return 0, llamaError(fmt.Sprintf("sample: no logits for batch row %d", i), logged)
	}
	return int32(tok), nil
}

// Accept records a token chosen elsewhere (e.g. a prompt token) for the
// penalties.
func (s *Sampler) Accept(token int32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == nil {
		return fmt.Errorf("sampler accept: %w", ErrClosed)
	}
	if token < 0 {
		return fmt.Errorf("sampler accept: negative token %d", token)
	}
	C.llama_sampler_accept(s.c, C.llama_token(token))
	return nil
}

// Reset forgets accepted tokens and restarts the random sequence state.
func (s *Sampler) Reset() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == nil {
		return fmt.Errorf("sampler reset: %w", ErrClosed)
	}
	C.llama_sampler_reset(s.c)
	return nil
}
