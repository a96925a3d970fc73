package chat

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/chatglm/chatglm/chat/python"
	"github.com/chatglm/chatglm/gen"
)

// runeModel is a toy tokenizer: the dummy prefix ▁ (30910), then one id per
// rune (newline = 13, as in ChatGLM3). Its pieces are the runes, so a reply
// generated as these tokens re-encodes to the same ids.
type runeModel struct{ ctx int }

func runeID(r rune) int32 {
	if r == '\n' {
		return 13
	}
	return 1000 + int32(r)%20000
}

func (m runeModel) Tokenize(text string) ([]int32, error) {
	ids := []int32{30910}
	for _, r := range text {
		ids = append(ids, runeID(r))
	}
	return ids, nil
}

func (m runeModel) ContextSize() int { return m.ctx }

// replyTokens is what the model generates for an ordinary reply: the
// metadata line "▁\n", then the content as its own encode would give it.
func replyTokens(content string) []gen.Token {
	toks := []gen.Token{{ID: 30910, Piece: []byte(" ")}, {ID: 13, Piece: []byte("\n")}, {ID: 30910, Piece: []byte(" ")}}
	for _, r := range content {
		toks = append(toks, gen.Token{ID: runeID(r), Piece: []byte(string(r))})
	}
	return toks
}

// fakeSlot imitates an engine slot: it keeps what its KV cache holds and
// evaluates only the part of a prompt after the common prefix.
type fakeSlot struct {
	cache   []int32
	replies [][]gen.Token
	reqs    []gen.Request
	results []gen.Result
	stopTok int32 // passed to onToken before finishing, like a careless engine
	fail    error
	cancel  func() // called after the first token
}

func (s *fakeSlot) Generate(ctx context.Context, req gen.Request, onToken func(gen.Token) error) (gen.Result, error) {
	s.reqs = append(s.reqs, req)
	if s.fail != nil {
		return gen.Result{}, s.fail
	}
	n := 0
	for n < len(s.cache) && n < len(req.Prompt) && s.cache[n] == req.Prompt[n] {
		n++
	}
	res := gen.Result{PromptTokens: len(req.Prompt), CachedTokens: n, EvaluatedTokens: len(req.Prompt) - n, StopToken: -1}
	s.cache = slices.Clone(req.Prompt)
	reply := s.replies[0]
	s.replies = s.replies[1:]
	res.Finish = gen.FinishStop
	for i, t := range reply {
		if ctx.Err() != nil {
			res.Finish = gen.FinishCancelled
			break
		}
		if len(res.Tokens) == req.MaxTokens {
			res.Finish = gen.FinishLength
			break
		}
		if err := onToken(t); err != nil {
			return res, err
		}
		res.Tokens = append(res.Tokens, t.ID)
		s.cache = append(s.cache, t.ID)
		if i == 0 && s.cancel != nil {
			s.cancel()
		}
	}
	if res.Finish == gen.FinishStop {
		res.StopToken = TokenUser
		if s.stopTok != 0 {
			_ = onToken(gen.Token{ID: s.stopTok})
		}
	}
	s.results = append(s.results, res)
	return res, nil
}

func user(s string) Message { return Message{Role: RoleUser, Content: s} }

func TestConversationKVReuse(t *testing.T) {
	m := runeModel{ctx: 4096}
	slot := &fakeSlot{}
	c := NewConversation(m, slot, Options{Sampling: DefaultSampling()})
	c.SetSystem("你是一个乐于助人的助手。")
	questions := []string{"你好", "介绍一下北京", "它有多少人口？", "谢谢"}
	for _, q := range questions {
		slot.replies = append(slot.replies, replyTokens("这是关于"+q+"的回答。"))
	}
	var shown []string
	for i, q := range questions {
		var sb strings.Builder
		turn, err := c.Send(context.Background(), user(q), func(s string) error { sb.WriteString(s); return nil })
		if err != nil {
			t.Fatal(err)
		}
		shown = append(shown, sb.String())
		if turn.Response.Content != "这是关于"+q+"的回答。" || sb.String() != turn.Response.Content {
			t.Fatalf("turn %d: content %q shown %q", i, turn.Response.Content, sb.String())
		}
		r := turn.Result
		qIDs, _ := EncodeMessage(m, user(q))
		if i == 0 {
			if r.EvaluatedTokens != r.PromptTokens {
				t.Fatalf("turn 1 evaluated %d of %d", r.EvaluatedTokens, r.PromptTokens)
			}
			continue
		}
		// Only the new message and <|assistant|> are evaluated.
		if r.EvaluatedTokens != len(qIDs)+1 {
			t.Fatalf("turn %d: evaluated %d of %d prompt tokens, want %d", i+1, r.EvaluatedTokens, r.PromptTokens, len(qIDs)+1)
		}
		t.Logf("turn %d: prompt %d tokens, evaluated %d, cached %d", i+1, r.PromptTokens, r.EvaluatedTokens, r.CachedTokens)
	}
	// The history is what the official code keeps.
	msgs := c.Messages()
	if len(msgs) != 1+2*len(questions) || msgs[0].Role != RoleSystem || msgs[2].Role != RoleAssistant {
		t.Fatalf("history %+v", msgs)
	}
	// Every request carried the stop tokens and the full prompt as the
	// official build_chat_input builds it.
	for i, req := range slot.reqs {
		if !slices.Equal(req.Stop, []int32{2, 64795, 64797}) {
			t.Fatalf("stop ids %v", req.Stop)
		}
		want, _ := BuildPrompt(m, append(msgs[:1+2*i:1+2*i], user(questions[i])))
		if !slices.Equal(req.Prompt, want) {
			t.Fatalf("turn %d prompt differs from BuildPrompt", i+1)
		}
	}
}

func TestConversationTrimsOldestTurns(t *testing.T) {
	m := runeModel{ctx: 120}
	slot := &fakeSlot{}
	c := NewConversation(m, slot, Options{MaxTokens: 20})
	c.SetSystem("SYSTEM")
	notices := 0
	for i := range 12 {
		slot.replies = append(slot.replies, replyTokens(strings.Repeat("r", 10)))
		turn, err := c.Send(context.Background(), user(strings.Repeat("q", 10)), nil)
		if err != nil {
			t.Fatalf("turn %d: %v", i, err)
		}
		if turn.TrimNotice {
			notices++
			if turn.Dropped == 0 {
				t.Fatal("notice without dropping")
			}
		}
		req := slot.reqs[len(slot.reqs)-1]
		if len(req.Prompt)+20 > m.ctx || req.MaxTokens != 20 {
			t.Fatalf("turn %d: prompt %d + reply 20 exceeds context %d", i, len(req.Prompt), m.ctx)
		}
		msgs := c.Messages()
		if msgs[0].Role != RoleSystem || msgs[0].Content != "SYSTEM" || msgs[1].Role != RoleUser {
			t.Fatalf("turn %d: history starts %+v", i, msgs[:2])
		}
		// The system prompt is always in the prompt.
		sys, _ := EncodeMessage(m, msgs[0])
		if !slices.Equal(req.Prompt[2:2+len(sys)], sys) {
			t.Fatal("system prompt not at the start of the prompt")
		}
	}
	if notices != 1 {
		t.Fatalf("trim notice given %d times, want once", notices)
	}
	if n := len(c.Messages()); n >= 1+2*12 {
		t.Fatalf("nothing dropped: %d messages", n)
	}
}

func TestConversationPromptTooLong(t *testing.T) {
	m := runeModel{ctx: 50}
	slot := &fakeSlot{replies: [][]gen.Token{replyTokens("ok")}}
	c := NewConversation(m, slot, Options{})
	c.SetSystem("sys")
	if _, err := c.Send(context.Background(), user("hi"), nil); err != nil {
		t.Fatal(err)
	}
	before := c.Messages()
	_, err := c.Send(context.Background(), user(strings.Repeat("长", 60)), nil)
	if !errors.Is(err, ErrContextFull) || !strings.Contains(err.Error(), "context holds 50") {
		t.Fatalf("err = %v", err)
	}
	if !reflect.DeepEqual(before, c.Messages()) || len(slot.reqs) != 1 {
		t.Fatal("a failed send changed the conversation or generated")
	}
	// A prompt that fits but leaves less than the reserve keeps going with
	// the room that is left.
	slot.replies = append(slot.replies, replyTokens("好"))
	turn, err := c.Send(context.Background(), user(strings.Repeat("长", 30)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if turn.Dropped != 2 || slot.reqs[1].MaxTokens != 50-len(slot.reqs[1].Prompt) {
		t.Fatalf("dropped %d, max tokens %d", turn.Dropped, slot.reqs[1].MaxTokens)
	}
}

func TestConversationGenerateErrorLeavesHistory(t *testing.T) {
	slot := &fakeSlot{fail: errors.New("boom")}
	c := NewConversation(runeModel{ctx: 100}, slot, Options{})
	if _, err := c.Send(context.Background(), user("hi"), nil); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("err = %v", err)
	}
	if len(c.Messages()) != 0 {
		t.Fatal("history changed")
	}
}

func TestConversationStopTokenNeverShown(t *testing.T) {
	for _, stop := range []int32{TokenEOS, TokenUser, TokenObservation} {
		slot := &fakeSlot{replies: [][]gen.Token{replyTokens("hi")}, stopTok: stop}
		c := NewConversation(runeModel{ctx: 100}, slot, Options{})
		var sb strings.Builder
		turn, err := c.Send(context.Background(), user("x"), func(s string) error { sb.WriteString(s); return nil })
		if err != nil {
			t.Fatal(err)
		}
		if sb.String() != "hi" || turn.Output != "\n hi" || strings.Contains(turn.Output, "<|") {
			t.Fatalf("stop %d: shown %q output %q", stop, sb.String(), turn.Output)
		}
	}
}

func TestConversationCancelKeepsPartialReply(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	toks := replyTokens("一二三四五")
	slot := &fakeSlot{replies: [][]gen.Token{toks}}
	slot.cancel = cancel
	c := NewConversation(runeModel{ctx: 100}, slot, Options{})
	turn, err := c.Send(ctx, user("数数"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if turn.Result.Finish != gen.FinishCancelled {
		t.Fatalf("finish %q", turn.Result.Finish)
	}
	msgs := c.Messages()
	if len(msgs) != 2 || msgs[1].Role != RoleAssistant {
		t.Fatalf("history %+v", msgs)
	}
}

func TestConversationToolCallAndObservation(t *testing.T) {
	m := runeModel{ctx: 4096}
	call := "get_current_weather\n```python\ntool_call(location=\"beijing\", unit=\"celsius\")\n```"
	var callToks []gen.Token
	callToks = append(callToks, gen.Token{ID: 30910, Piece: []byte(" ")})
	for _, r := range call {
		callToks = append(callToks, gen.Token{ID: runeID(r), Piece: []byte(string(r))})
	}
	slot := &fakeSlot{replies: [][]gen.Token{callToks, replyTokens("北京今天 22 度，晴。")}}
	c := NewConversation(m, slot, Options{})
	sys := Message{Role: RoleSystem, Content: "Answer the following questions as best as you can. You have access to the following tools:",
		Tools: []byte(`[{"name": "get_current_weather", "parameters": {"type": "object"}}]`)}
	if err := c.SetMessages([]Message{sys}); err != nil {
		t.Fatal(err)
	}
	var shown strings.Builder
	turn, err := c.Send(context.Background(), user("北京天气怎么样"), func(s string) error { shown.WriteString(s); return nil })
	if err != nil {
		t.Fatal(err)
	}
	tc := turn.Response.ToolCall
	if tc == nil || tc.Name != "get_current_weather" || tc.Err != nil ||
		!reflect.DeepEqual(tc.Arguments, python.Kwargs{{Name: "location", Value: "beijing"}, {Name: "unit", Value: "celsius"}}) {
		t.Fatalf("tool call %+v", tc)
	}
	if shown.Len() != 0 {
		t.Fatalf("tool call shown as text: %q", shown.String())
	}
	turn, err = c.Send(context.Background(), Message{Role: RoleObservation, Content: `{"temperature": 22}`}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if turn.Response.Content != "北京今天 22 度，晴。" {
		t.Fatalf("answer %q", turn.Response.Content)
	}
	roles := []Role{}
	for _, m := range c.Messages() {
		roles = append(roles, m.Role)
	}
	if !reflect.DeepEqual(roles, []Role{RoleSystem, RoleUser, RoleAssistant, RoleObservation, RoleAssistant}) {
		t.Fatalf("roles %v", roles)
	}
	if c.Messages()[2].Metadata != "get_current_weather" {
		t.Fatalf("tool call metadata %q", c.Messages()[2].Metadata)
	}
	// The observation turn reuses the cache up to the call's content: the
	// official encoding gives the content its own dummy-prefix ▁, which the
	// model did not generate after the tool name's newline, so the content is
	// evaluated again, then the observation and <|assistant|>.
	obs, _ := EncodeMessage(m, Message{Role: RoleObservation, Content: `{"temperature": 22}`})
	content, _ := m.Tokenize(c.Messages()[2].Content)
	if got := slot.results[1].EvaluatedTokens; got != len(content)+len(obs)+1 {
		t.Fatalf("observation turn evaluated %d, want %d", got, len(content)+len(obs)+1)
	}
}

func TestConversationObservationKeepsItsTurn(t *testing.T) {
	m := runeModel{ctx: 100}
	c := NewConversation(m, &fakeSlot{}, Options{ReplyReserve: 10})
	old := strings.Repeat("o", 20)
	_ = c.SetMessages([]Message{user(old), {Role: RoleAssistant, Content: old},
		user("q"), {Role: RoleAssistant, Metadata: "tool", Content: strings.Repeat("c", 30)}})
	p, err := c.Plan(Message{Role: RoleObservation, Content: strings.Repeat("r", 20)})
	if err != nil {
		t.Fatal(err)
	}
	if p.Dropped != 2 {
		t.Fatalf("dropped %d, want the old turn (2 messages)", p.Dropped)
	}
	// Too big with the current turn kept: an error, not a dropped tool call.
	if _, err := c.Plan(Message{Role: RoleObservation, Content: strings.Repeat("r", 60)}); !errors.Is(err, ErrContextFull) {
		t.Fatalf("err = %v", err)
	}
	if _, err := c.Plan(Message{Role: RoleAssistant, Content: "x"}); err == nil {
		t.Fatal("assistant message accepted as a query")
	}
}

func TestConversationSystemAndClear(t *testing.T) {
	c := NewConversation(runeModel{ctx: 100}, &fakeSlot{replies: [][]gen.Token{replyTokens("a")}}, Options{})
	if c.System() != "" {
		t.Fatal("system set")
	}
	c.SetSystem("one")
	c.SetSystem("two")
	if _, err := c.Send(context.Background(), user("hi"), nil); err != nil {
		t.Fatal(err)
	}
	if c.System() != "two" || len(c.Messages()) != 3 {
		t.Fatalf("%+v", c.Messages())
	}
	c.Clear()
	if !reflect.DeepEqual(c.Messages(), []Message{{Role: RoleSystem, Content: "two"}}) {
		t.Fatalf("%+v", c.Messages())
	}
	c.SetSystem("")
	if len(c.Messages()) != 0 {
		t.Fatalf("%+v", c.Messages())
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	m := runeModel{ctx: 4096}
	slot := &fakeSlot{replies: [][]gen.Token{replyTokens("答案 <b>&</b> \"引号\"\n第二行 🙂")}}
	c := NewConversation(m, slot, Options{})
	sys := Message{Role: RoleSystem, Content: "tools:", Tools: []byte(`[{"z": 1, "a": 0.50, "h": "<&>"}]`)}
	_ = c.SetMessages([]Message{sys})
	if _, err := c.Send(context.Background(), user("问题 <|user|>"), nil); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "conv.json")
	if err := SaveMessagesFile(path, c.Messages()); err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadMessagesFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(loaded) != 3 {
		t.Fatalf("%+v", loaded)
	}
	for i := range loaded {
		a, b := loaded[i], c.Messages()[i]
		if a.Role != b.Role || a.Content != b.Content || a.Metadata != b.Metadata {
			t.Fatalf("message %d: %+v != %+v", i, a, b)
		}
	}
	// The tools keep their key order and number spelling.
	if !strings.Contains(string(loaded[0].Tools), `"z":1,"a":0.50`) && !strings.Contains(string(loaded[0].Tools), `"z": 1`) {
		t.Fatalf("tools %s", loaded[0].Tools)
	}
	c2 := NewConversation(m, &fakeSlot{}, Options{})
	if err := c2.SetMessages(loaded); err != nil {
		t.Fatal(err)
	}
	p1, err1 := c.Plan(user("next"))
	p2, err2 := c2.Plan(user("next"))
	if err1 != nil || err2 != nil || !slices.Equal(p1.IDs, p2.IDs) {
		t.Fatalf("prompts differ after load: %v %v", err1, err2)
	}
}

func TestReadMessagesRejects(t *testing.T) {
	for _, in := range []string{`{}`, `[{"role": "bot", "content": "x"}]`, `[] []`,
		`[{"role": "user", "content": "x", "tools": [1]}]`} {
		if _, err := ReadMessages(strings.NewReader(in)); err == nil {
			t.Errorf("%s accepted", in)
		}
	}
	msgs, err := ReadMessages(strings.NewReader(`[{"role": "user", "content": "x"}, {"role": "assistant", "metadata": "f", "content": "y"}]`))
	if err != nil || len(msgs) != 2 || msgs[1].Metadata != "f" {
		t.Fatalf("%+v %v", msgs, err)
	}
}
