package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/chatglm/chatglm/chat"
	"github.com/chatglm/chatglm/gen"
)

// genSpec is one generation a request asks for.
type genSpec struct {
	prompt    []int32
	maxTokens int
	stopIDs   []int32
	sampling  gen.Sampling
	stops     []string // stop sequences in the reply text
	out       output
	// release gives back the request's place among the running and
	// queued ones (see admit) once generation ends, before the reply's
	// last events are written; it may be called more than once.
	release func()
}

// output turns generated tokens into the text the client receives.
type output interface {
	// add returns the text completed by one token.
	add(t gen.Token) string
	// finish returns the text still held at the end and, for a chat reply
	// that ends in a function call, the call.
	finish(stopped bool) (string, *chat.ToolCall)
}

// genResult is the outcome of a generation.
type genResult struct {
	text     string // everything sent to the client
	toolCall *chat.ToolCall
	finish   string // stop, length or tool_calls
	prompt   int
	cached   int
	tokens   int
}

// Errors behind request contexts' causes.
var (
	errTimeout  = errors.New("request timed out")
	errShutdown = errors.New("server shutting down")
)

// samplingParams applies a request's sampling fields to the defaults and
// validates them. maxTokens is 0 when the request gives none.
func (s *Server) samplingParams(f *samplingFields) (smp gen.Sampling, maxTokens int, stops []string, err error) {
	smp = s.opts.Sampling
	if f.N != nil && *f.N != 1 {
		return smp, 0, nil, badRequest("n", "n=%d is not supported: this server returns exactly one choice (n=1)", *f.N)
	}
	if f.Temperature != nil {
		if *f.Temperature < 0 || *f.Temperature > 2 || math.IsNaN(*f.Temperature) {
			return smp, 0, nil, badRequest("temperature", "temperature must be between 0 and 2, got %v", *f.Temperature)
		}
		smp.Temperature = float32(*f.Temperature)
	}
	if f.TopP != nil {
		if *f.TopP < 0 || *f.TopP > 1 || math.IsNaN(*f.TopP) {
			return smp, 0, nil, badRequest("top_p", "top_p must be between 0 and 1, got %v", *f.TopP)
		}
		smp.TopP = float32(*f.TopP)
		if smp.TopP == 0 {
			smp.Temperature = 0 // only the most likely token is left
		}
	}
	if f.TopK != nil {
		if *f.TopK < 0 {
			return smp, 0, nil, badRequest("top_k", "top_k must be >= 0, got %d", *f.TopK)
		}
		// Beyond the vocabulary top_k keeps every token; capped, it fits
		// the sampler's int32.
		smp.TopK = min(*f.TopK, math.MaxInt32)
	}
	if f.MinP != nil {
		if *f.MinP < 0 || *f.MinP > 1 {
			return smp, 0, nil, badRequest("min_p", "min_p must be between 0 and 1, got %v", *f.MinP)
		}
		smp.MinP = float32(*f.MinP)
	}
	if f.RepeatPenalty != nil {
		if *f.RepeatPenalty <= 0 {
			return smp, 0, nil, badRequest("repeat_penalty", "repeat_penalty must be > 0, got %v", *f.RepeatPenalty)
		}
		if smp.RepeatPenalty, err = float32Param("repeat_penalty", *f.RepeatPenalty); err != nil {
			return smp, 0, nil, err
		}
	}
	for _, p := range []struct {
		name string
		v    *float64
		dst  *float32
	}{{"presence_penalty", f.PresencePenalty, &smp.PresencePenalty}, {"frequency_penalty", f.FrequencyPenalty, &smp.FrequencyPenalty}} {
		if p.v == nil {
			continue
		}
		if *p.v < -2 || *p.v > 2 {
			return smp, 0, nil, badRequest(p.name, "%s must be between -2 and 2, got %v", p.name, *p.v)
		}
		*p.dst = float32(*p.v)
	}
	if f.Seed != nil {
		smp.Seed = uint32(uint64(*f.Seed))
		if smp.Seed == gen.RandomSeed {
			smp.Seed--
		}
	}
	if len(f.LogitBias) > 0 {
		return smp, 0, nil, badRequest("logit_bias", "logit_bias is not supported by this server")
	}
	mt := f.MaxTokens
	param := "max_tokens"
	if f.MaxCompletionTokens != nil {
		mt, param = f.MaxCompletionTokens, "max_completion_tokens"
	}
	if mt != nil {
		if *mt < 1 {
			return smp, 0, nil, badRequest(param, "%s must be at least 1, got %d", param, *mt)
		}
		maxTokens = *mt
	}
	stops, err = stopStrings(f.Stop)
	for _, stop := range stops {
		if len(stop) > maxStopBytes {
			return smp, 0, nil, badRequest("stop", "stop sequences may be at most %d bytes long, got one of %d", maxStopBytes, len(stop))
		}
	}
	return smp, maxTokens, stops, err
}

// fit checks the prompt against the context and returns the reply's token
// budget.
func (s *Server) fit(st *ready, prompt []int32, maxTokens int) (int, error) {
	limit := st.b.ContextSize()
	if len(prompt) >= limit || (maxTokens > 0 && maxTokens > limit-len(prompt)) {
		return 0, &gen.PromptTooLongError{PromptTokens: len(prompt), MaxTokens: maxTokens, Limit: limit}
	}
	room := limit - len(prompt)
	if maxTokens == 0 {
		maxTokens = room
		if s.opts.MaxTokens > 0 {
			maxTokens = min(room, s.opts.MaxTokens)
		}
	}
	return maxTokens, nil
}

// requestContext bounds a request by the configured timeout.
func (s *Server) requestContext(r *http.Request) (context.Context, context.CancelFunc) {
	if s.opts.Timeout <= 0 {
		return context.WithCancel(r.Context())
	}
	return context.WithTimeoutCause(r.Context(), s.opts.Timeout, errTimeout)
}

// admit takes one of the places of running and queued requests (building
// the prompt counts as queued), or returns a 429 when they are all taken.
// release gives the place back.
func (s *Server) admit(st *ready) (release func(), err error) {
	if st.admit == nil {
		return func() {}, nil
	}
	select {
	case st.admit <- struct{}{}:
		return func() { <-st.admit }, nil
	default:
		s.metrics.rejected.Add(1)
		return nil, newAPIError(http.StatusTooManyRequests, typeRateLimit, "queue_full", "",
			"the server is busy: %d requests are running and %d waiting, the most it queues; retry later",
			st.b.Parallel(), cap(st.admit)-st.b.Parallel())
	}
}

// generate waits for a sequence and generates, for a request prepare
// admitted. It calls onStart once a sequence is held (before any text) and
// onText with each piece of reply text; an error from onText (a client that
// stopped reading) cancels the generation at once. Errors before onStart are
// *APIError or the context's error (the client went away).
func (s *Server) generate(ctx context.Context, st *ready, spec *genSpec, onStart func() error, onText func(string) error) (genResult, error) {
	res := genResult{prompt: len(spec.prompt)}
	if spec.release != nil {
		defer spec.release()
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	st.waiting.Add(1)
	queued := time.Now()
	seq, err := st.b.Acquire(ctx, spec.prompt)
	st.waiting.Add(-1)
	s.metrics.queueWait(time.Since(queued))
	if err != nil {
		return res, contextError(ctx, err, "waiting for a free sequence")
	}
	defer seq.Release()
	if err := onStart(); err != nil {
		return res, err
	}
	sm := stopMatcher{stops: spec.stops}
	var sb strings.Builder
	send := func(text string) error {
		out, hit := sm.write(text)
		if out != "" {
			sb.WriteString(out)
			if err := onText(out); err != nil {
				return err
			}
		}
		if hit {
			return gen.ErrStop
		}
		return nil
	}
	req := gen.Request{Prompt: spec.prompt, MaxTokens: spec.maxTokens, Stop: spec.stopIDs, Sampling: spec.sampling}
	start := time.Now()
	first := true
	gr, err := seq.Generate(ctx, req, func(t gen.Token) error {
		if first {
			first = false
			s.metrics.firstToken(time.Since(queued))
		}
		s.metrics.token()
		err := send(spec.out.add(t))
		if err != nil && !errors.Is(err, gen.ErrStop) {
			cancel(err) // the engine frees the sequence without waiting for this callback's caller
		}
		return err
	})
	res.cached, res.tokens = gr.CachedTokens, len(gr.Tokens)
	s.metrics.generation(gr.EvaluatedTokens, gr.CachedTokens, time.Since(start))
	if err != nil {
		return res, contextError(ctx, err, "generating")
	}
	res.finish = gr.Finish
	if res.finish != gen.FinishLength {
		res.finish = "stop"
	}
	tail, tc := spec.out.finish(sm.hit)
	if !sm.hit {
		if err := send(tail); err != nil && !errors.Is(err, gen.ErrStop) {
			return res, err
		}
		if !sm.hit {
			if rest := sm.flush(); rest != "" {
				sb.WriteString(rest)
				if err := onText(rest); err != nil {
					return res, err
				}
			}
		}
	}
	if sm.hit {
		res.finish = "stop"
	} else if tc != nil {
		res.toolCall, res.finish = tc, "tool_calls"
	}
	res.text = sb.String()
	return res, nil
}

// contextError explains an error that may come from the request's context:
// the timeout, a shutdown, or a client that went away.
func contextError(ctx context.Context, err error, doing string) error {
	if ctx.Err() == nil {
		return err
	}
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errTimeout):
		if doing == "generating" {
			return newAPIError(http.StatusGatewayTimeout, typeTimeout, "timeout", "", "the request timed out while generating")
		}
		return newAPIError(http.StatusServiceUnavailable, typeServer, "queue_timeout", "", "the request timed out %s", doing)
	case errors.Is(cause, errShutdown):
		return newAPIError(http.StatusServiceUnavailable, typeServer, "shutting_down", "", "the server is shutting down")
	}
	return ctx.Err()
}

// newID returns prefix followed by 24 random hex digits.
func newID(prefix string) string {
	var b [12]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// chatOutput turns a ChatGLM3 reply into what an OpenAI client sees: the
// metadata lines are hidden, ordinary segments are shown as text (as
// chat.DisplayFilter shows them), and a final function call is returned as a
// tool call. A tool or interpreter segment that is not a parseable function
// call (no tools offered, or code that does not parse) is shown as text at
// the end, "name\ncontent", rather than lost.
type chatOutput struct {
	det      *chat.Detokenizer
	filter   chat.DisplayFilter
	hasTools bool
	shown    bool
}

func newChatOutput(hasTools bool, forcedPrefix string, forcedFirst int32) *chatOutput {
	o := &chatOutput{det: chat.NewDetokenizer(), hasTools: hasTools}
	if forcedPrefix != "" {
		// The forced tool name is part of the prompt; decode it as the
		// start of the reply so the metadata line is complete.
		o.filter.Write(o.det.Add(forcedFirst, []byte(forcedPrefix)))
	}
	return o
}

func (o *chatOutput) add(t gen.Token) string {
	if chat.IsStopToken(t.ID) {
		return ""
	}
	return o.note(o.filter.Write(o.det.Add(t.ID, t.Piece)))
}

func (o *chatOutput) note(s string) string {
	if s != "" {
		o.shown = true
	}
	return s
}

func (o *chatOutput) finish(stopped bool) (string, *chat.ToolCall) {
	text := o.note(o.filter.Write(o.det.Flush()))
	text += o.note(o.filter.Close())
	if stopped {
		return text, nil
	}
	resp, _ := chat.ProcessResponse(o.det.Text(), o.hasTools)
	tc := resp.ToolCall
	if tc == nil {
		return text, nil
	}
	if o.hasTools && tc.Err == nil && tc.Name != "" {
		return text, tc
	}
	raw := strings.TrimSpace(tc.Name + "\n" + strings.TrimSpace(tc.Content))
	if o.shown && raw != "" {
		raw = "\n" + raw
	}
	return text + raw, nil
}

// rawOutput decodes a raw completion: token bytes joined into whole UTF-8
// characters, special tokens by name, </s> and the other ids below 3 dropped.
type rawOutput struct {
	asm chat.UTF8Assembler
}

func (o *rawOutput) add(t gen.Token) string {
	if name, ok := chat.SpecialTokenName(t.ID); ok {
		return o.asm.Flush() + name
	}
	if t.ID >= 0 && t.ID <= chat.TokenEOS {
		return ""
	}
	return o.asm.Write(t.Piece)
}

func (o *rawOutput) finish(bool) (string, *chat.ToolCall) { return o.asm.Flush(), nil }

// prepare does what every generation request starts with: it checks that
// the model is loaded and is the one named, admits the request (see
// admit), builds the request's spec with build, and records the prompt
// size. On failure it has answered the client and returns ok == false;
// otherwise the caller must call release when the request is done.
func (s *Server) prepare(w http.ResponseWriter, ri *reqInfo, model string, stream bool, build func(*ready) (*genSpec, error)) (st *ready, spec *genSpec, release func(), ok bool) {
	ri.model, ri.stream = model, stream
	st, err := s.ready()
	if err == nil {
		err = s.checkModel(model)
	}
	if err == nil {
		release, err = s.admit(st)
	}
	if err == nil {
		release = sync.OnceFunc(release)
		spec, err = build(st)
		if err != nil {
			release()
		} else {
			spec.release = release
		}
	}
	if err != nil {
		s.fail(w, ri, err)
		return nil, nil, nil, false
	}
	ri.promptTokens = len(spec.prompt)
	return st, spec, release, true
}

func (r genResult) usage() *usage {
	return &usage{PromptTokens: r.prompt, CompletionTokens: r.tokens, TotalTokens: r.prompt + r.tokens,
		PromptTokensDetails: &promptTokenDetails{CachedTokens: r.cached}}
}

// account notes a finished generation in the request's log line.
func (s *Server) account(ri *reqInfo, res genResult) {
	ri.cachedTokens, ri.completionTokens, ri.finish = res.cached, res.tokens, res.finish
}

// fail sends err, unless the client is gone, and notes it for the log.
func (s *Server) fail(w http.ResponseWriter, ri *reqInfo, err error) {
	ri.errMsg = errorString(err)
	if err == context.Canceled {
		return
	}
	writeError(w, err)
}

// endpoint is how one generation route answers: the prefix of its reply
// ids, its whole reply, and its reply as a stream of events.
type endpoint struct {
	idPrefix string
	reply    func(replyMeta, genResult) (any, error)
	stream   func(replyMeta) streamFormat
}

// replyMeta is what every object of one reply carries.
type replyMeta struct {
	id      string
	created int64
	model   string
}

// serveGeneration answers a decoded generation request: prepare (model,
// admission, the spec from build), then the reply generated within the
// request's timeout, whole or streamed as ep writes it.
func (s *Server) serveGeneration(w http.ResponseWriter, r *http.Request, ri *reqInfo, model string, stream, includeUsage bool, build func(*ready) (*genSpec, error), ep endpoint) {
	st, spec, release, ok := s.prepare(w, ri, model, stream, build)
	if !ok {
		return
	}
	defer release()
	ctx, cancel := s.requestContext(r)
	defer cancel()
	m := replyMeta{id: newID(ep.idPrefix), created: time.Now().Unix(), model: s.opts.ModelID}
	if stream {
		s.streamReply(ctx, w, ri, st, spec, ep.stream(m), includeUsage)
		return
	}
	res, err := s.generate(ctx, st, spec, func() error { return nil }, func(string) error { return nil })
	s.account(ri, res)
	var reply any
	if err == nil {
		reply, err = ep.reply(m, res)
	}
	if err != nil {
		s.fail(w, ri, err)
		return
	}
	writeJSON(w, http.StatusOK, reply)
}
