package chat

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/chatglm/chatglm/gen"
)

// ErrContextFull is returned (wrapped) when a prompt cannot fit in the
// context even with all droppable history removed.
var ErrContextFull = errors.New("prompt does not fit in the context")

// Options tune a Conversation.
type Options struct {
	Sampling gen.Sampling
	// MaxTokens caps each reply; 0 lets a reply run to the end of the
	// context.
	MaxTokens int
	// ReplyReserve is how many tokens of the context are kept free for the
	// reply when deciding whether to drop old turns. 0 means MaxTokens
	// (at most half the context) when MaxTokens is set, else a quarter of
	// the context, at most 1024.
	ReplyReserve int
}

// Conversation is one ChatGLM3 chat: its history (a leading system prompt
// included) and the KV sequence it generates on. Every turn re-encodes the
// whole history exactly as the official code does and hands the full id
// sequence to the generator, which evaluates only what differs from its KV
// cache, so a new turn costs only its new tokens. When history, the new
// message and room for the reply exceed the context, the oldest turns are
// dropped (never the leading system messages, never the current turn).
// A Conversation is not safe for concurrent use.
type Conversation struct {
	model       Model
	generator   gen.Generator
	opts        Options
	msgs        []Message
	enc         [][]int32 // cached EncodeMessage of msgs[i]; nil = not yet
	trimNoticed bool
}

// NewConversation starts an empty conversation that tokenizes with model
// and generates with generator (one KV sequence, kept for the conversation's life).
func NewConversation(model Model, generator gen.Generator, opts Options) *Conversation {
	return &Conversation{model: model, generator: generator, opts: opts}
}

// Options returns the conversation's options.
func (c *Conversation) Options() Options { return c.opts }

// SetOptions replaces the conversation's options (e.g. after /set).
func (c *Conversation) SetOptions(o Options) { c.opts = o }

// Messages returns a copy of the history.
func (c *Conversation) Messages() []Message { return slices.Clone(c.msgs) }

// SetMessages replaces the history (e.g. a loaded conversation).
func (c *Conversation) SetMessages(msgs []Message) error {
	for i, m := range msgs {
		if err := m.Validate(); err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
	}
	c.msgs = slices.Clone(msgs)
	c.enc = make([][]int32, len(msgs))
	c.trimNoticed = false
	return nil
}

// leadingSystem returns how many messages at the start are system messages.
func (c *Conversation) leadingSystem() int {
	n := 0
	for n < len(c.msgs) && c.msgs[n].Role == RoleSystem {
		n++
	}
	return n
}

// System returns the content of the leading system message, or "".
func (c *Conversation) System() string {
	if len(c.msgs) > 0 && c.msgs[0].Role == RoleSystem {
		return c.msgs[0].Content
	}
	return ""
}

// SetSystem sets the content of the leading system message, adding one
// when there is none. An empty text removes a system message without tools.
func (c *Conversation) SetSystem(text string) {
	if len(c.msgs) > 0 && c.msgs[0].Role == RoleSystem {
		if text == "" && len(c.msgs[0].Tools) == 0 {
			c.msgs, c.enc = c.msgs[1:], c.enc[1:]
			return
		}
		c.msgs[0].Content = text
		c.enc[0] = nil
		return
	}
	if text == "" {
		return
	}
	c.msgs = append([]Message{{Role: RoleSystem, Content: text}}, c.msgs...)
	c.enc = append([][]int32{nil}, c.enc...)
}

// Clear forgets every turn but keeps the leading system messages.
func (c *Conversation) Clear() {
	n := c.leadingSystem()
	c.msgs, c.enc = c.msgs[:n:n], c.enc[:n:n]
	c.trimNoticed = false
}

func (c *Conversation) encoded(i int) ([]int32, error) {
	if c.enc[i] == nil {
		ids, err := EncodeMessage(c.model, c.msgs[i])
		if err != nil {
			return nil, fmt.Errorf("history message %d: %w", i, err)
		}
		c.enc[i] = ids
	}
	return c.enc[i], nil
}

// replyReserve is the room kept for the reply when trimming.
func (c *Conversation) replyReserve() int {
	n := c.model.ContextSize()
	switch {
	case c.opts.ReplyReserve > 0:
		return min(c.opts.ReplyReserve, n-1)
	case c.opts.MaxTokens > 0:
		return min(c.opts.MaxTokens, n/2)
	}
	return min(n/4, 1024)
}

// Plan is the prompt a message would be sent with.
type Plan struct {
	IDs     []int32 // the whole prompt
	Dropped int     // history messages dropped from the start to fit it
}

// Plan builds the prompt for sending q after the history, dropping the
// oldest turns if the context requires it, without changing the
// conversation. It fails with ErrContextFull when even the system prompt and
// q alone leave no room for a reply.
func (c *Conversation) Plan(q Message) (Plan, error) {
	if q.Role != RoleUser && q.Role != RoleObservation {
		return Plan{}, fmt.Errorf("send: role %q: a turn starts with a user or observation message", q.Role)
	}
	if err := q.Validate(); err != nil {
		return Plan{}, err
	}
	qIDs, err := EncodeMessage(c.model, q)
	if err != nil {
		return Plan{}, err
	}
	total := len(PromptPrefix()) + len(qIDs) + 1
	for i := range c.msgs {
		ids, err := c.encoded(i)
		if err != nil {
			return Plan{}, err
		}
		total += len(ids)
	}
	ctxSize := c.model.ContextSize()
	// Droppable: whole turns between the system prompt and the current turn
	// (for an observation, the turn of the user message it answers).
	sys := c.leadingSystem()
	keepFrom := len(c.msgs)
	if q.Role == RoleObservation {
		for keepFrom > sys && c.msgs[keepFrom-1].Role != RoleUser {
			keepFrom--
		}
		if keepFrom > sys {
			keepFrom--
		}
	}
	drop := sys
	for total+c.replyReserve() > ctxSize && drop < keepFrom {
		j := drop + 1
		for j < keepFrom && c.msgs[j].Role != RoleUser {
			j++
		}
		for i := drop; i < j; i++ {
			total -= len(c.enc[i])
		}
		drop = j
	}
	if total >= ctxSize {
		return Plan{}, fmt.Errorf("%w: it needs %d tokens (system prompt and current turn) and the context holds %d; shorten it or raise --ctx-size",
			ErrContextFull, total, ctxSize)
	}
	ids := make([]int32, 0, total)
	ids = append(ids, PromptPrefix()...)
	for i := range c.msgs {
		if i < sys || i >= drop {
			ids = append(ids, c.enc[i]...)
		}
	}
	ids = append(ids, qIDs...)
	ids = append(ids, TokenAssistant)
	return Plan{IDs: ids, Dropped: drop - sys}, nil
}

// Turn is the outcome of one Send.
type Turn struct {
	Response Response   // the parsed reply (ProcessResponse)
	Output   string     // the decoded output, special tokens by name
	Result   gen.Result // token counts and timings from the generator
	// Dropped is how many old messages were removed from the history to
	// make this turn fit; TrimNotice is true the first time that happens in
	// this conversation (since it was started, cleared or loaded), so the
	// caller says so once.
	Dropped    int
	TrimNotice bool
}

// Send adds q (a user message, or an observation with a tool's result) to
// the conversation and generates the reply, calling onText (when not nil)
// with each piece of text as it should be shown (see DisplayFilter). The
// reply's messages are added to the history. When ctx is cancelled the
// partial reply is kept and the Turn's Result.Finish is "cancelled". On any
// other error the conversation is left as it was.
func (c *Conversation) Send(ctx context.Context, q Message, onText func(string) error) (*Turn, error) {
	plan, err := c.Plan(q)
	if err != nil {
		return nil, err
	}
	ctxSize := c.model.ContextSize()
	maxTokens := ctxSize - len(plan.IDs)
	if c.opts.MaxTokens > 0 && c.opts.MaxTokens < maxTokens {
		maxTokens = c.opts.MaxTokens
	}
	det := NewDetokenizer()
	var filter DisplayFilter
	show := func(s string) error {
		if s == "" || onText == nil {
			return nil
		}
		if d := filter.Write(s); d != "" {
			return onText(d)
		}
		return nil
	}
	req := gen.Request{Prompt: plan.IDs, MaxTokens: maxTokens, Stop: StopTokens(), Sampling: c.opts.Sampling}
	res, err := c.generator.Generate(ctx, req, func(t gen.Token) error {
		if IsStopToken(t.ID) {
			return nil
		}
		return show(det.Add(t.ID, t.Piece))
	})
	if err != nil {
		cancelled := ctx.Err() != nil &&
			(errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded))
		if !cancelled {
			return nil, fmt.Errorf("generate: %w", err)
		}
		res.Finish = gen.FinishCancelled
	}
	if err := show(det.Flush()); err != nil {
		return nil, err
	}
	if onText != nil {
		if d := filter.Close(); d != "" {
			if err := onText(d); err != nil {
				return nil, err
			}
		}
	}
	turn := &Turn{Output: det.Text(), Result: res, Dropped: plan.Dropped}
	if plan.Dropped > 0 {
		sys := c.leadingSystem()
		c.msgs = slices.Delete(c.msgs, sys, sys+plan.Dropped)
		c.enc = slices.Delete(c.enc, sys, sys+plan.Dropped)
		turn.TrimNotice = !c.trimNoticed
		c.trimNoticed = true
	}
	resp, segs := ProcessResponse(turn.Output, HasTools(c.msgs))
	turn.Response = resp
	c.msgs = append(c.msgs, q)
	c.enc = append(c.enc, nil)
	for _, m := range segs {
		c.msgs = append(c.msgs, m)
		c.enc = append(c.enc, nil)
	}
	return turn, nil
}
