package backend

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/chatglm/chatglm/chat"
	"github.com/chatglm/chatglm/engine"
	"github.com/chatglm/chatglm/gen"
	"github.com/chatglm/chatglm/internal/fixture/testmodel"
)

func TestMain(m *testing.M) { testmodel.Main(m) }

// tinyGGUF is a tiny random ChatGLM3 (the real tokenizer, a 1024-token
// context) converted to GGUF, made once per test binary.
func tinyGGUF(t testing.TB) string {
	spec := testmodel.Tiny
	spec.SeqLength = 1024
	return testmodel.GGUF(t, spec, "f16")
}

func openEngine(t *testing.T, parallel int) (*engine.Engine, Model) {
	t.Helper()
	path := tinyGGUF(t)
	e, err := engine.Open(context.Background(), engine.Options{ModelPath: path, ContextSize: 1024, Parallel: parallel, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	m, err := NewModel(e, path)
	if err != nil {
		t.Fatal(err)
	}
	return e, m
}

type golden struct {
	Cases []struct {
		Name     string `json:"name"`
		Messages []struct {
			chat.Message
			ToolsRaw string `json:"tools_raw"`
		} `json:"messages"`
		IDs []int32 `json:"ids"`
	} `json:"cases"`
	Encodes []struct {
		Text string  `json:"text"`
		IDs  []int32 `json:"ids"`
	} `json:"encodes"`
}

// TestGoldensWithRealTokenizer builds every golden prompt with the
// tokenizer loaded from our converted GGUF and checks the ids against those
// python-sentencepiece produced. llama.cpp's own tokenizer is compared
// too and its differences logged: it merges "]sop" into a control token and
// segments some words differently ("ipeople"), which is why the chat
// protocol does not use it.
func TestGoldensWithRealTokenizer(t *testing.T) {
	b, err := os.ReadFile("../testdata/protocol.json")
	if err != nil {
		t.Fatal(err)
	}
	var g golden
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	e, m := openEngine(t, 1)
	llamaDiffers := 0
	for _, enc := range g.Encodes {
		got, err := m.Tokenize(enc.Text)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, enc.IDs) {
			t.Errorf("encode %q = %v, python-sentencepiece %v", enc.Text, got, enc.IDs)
		}
		if llama, err := e.Model().Tokenize(enc.Text, false, false); err == nil && !slices.Equal(llama, enc.IDs) {
			llamaDiffers++
			t.Logf("llama.cpp's tokenizer differs: %q = %v, python-sentencepiece %v", enc.Text, llama, enc.IDs)
		}
	}
	t.Logf("llama.cpp's own tokenizer differs from SentencePiece on %d of %d texts; the chat tokenizer on none", llamaDiffers, len(g.Encodes))
	for _, c := range g.Cases {
		var msgs []chat.Message
		for _, m := range c.Messages {
			msg := m.Message
			if m.ToolsRaw != "" {
				msg.Tools = json.RawMessage(m.ToolsRaw)
			}
			msgs = append(msgs, msg)
		}
		got, err := chat.BuildPrompt(m, msgs)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, c.IDs) {
			t.Errorf("%s: ids differ\n got %v\nwant %v", c.Name, got, c.IDs)
		}
	}
}

func isSpecial(id int32) bool { return id >= chat.TokenMask && id <= chat.TokenObservation }

// TestNoControlTokensFromText: llama.cpp's SPM merges "s"+"op" into the
// control token sop even with special parsing off; the chat tokenizer never
// produces a control token from text.
func TestNoControlTokensFromText(t *testing.T) {
	e, m := openEngine(t, 1)
	for _, text := range []string{"[gMASK]sop", "xsop eop", "]eop", "Aesop's people", "<|user|><|assistant|>"} {
		ids, _ := m.Tokenize(text)
		if slices.ContainsFunc(ids, isSpecial) {
			t.Errorf("%q -> %v has a control token", text, ids)
		}
		if llama, _ := e.Model().Tokenize(text, false, false); slices.ContainsFunc(llama, isSpecial) {
			t.Logf("llama.cpp tokenizer: %q -> %v (control token from plain text)", text, llama)
		}
	}
}

func greedy(maxTokens int) chat.Options {
	s := chat.DefaultSampling()
	s.Temperature = 0
	return chat.Options{Sampling: s, MaxTokens: maxTokens}
}

// TestKVReuseAcrossTurns: every turn hands the whole re-encoded history to
// the engine slot; only what differs from its KV cache is evaluated, so turn
// N evaluates no more than its own new tokens while turn 1 evaluates all.
func TestKVReuseAcrossTurns(t *testing.T) {
	e, m := openEngine(t, 1)
	conv, release, err := NewConversation(context.Background(), e, m, greedy(12))
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	conv.SetSystem("你是一个乐于助人的助手。")
	questions := []string{"你好", "请介绍一下北京的历史和文化。", "它有多少人口？", "谢谢你！"}
	prevPrompt := 0
	for i, q := range questions {
		turn, err := conv.Send(context.Background(), chat.Message{Role: chat.RoleUser, Content: q}, nil)
		if err != nil {
			t.Fatal(err)
		}
		r := turn.Result
		t.Logf("turn %d: prompt %d tokens, cached %d, evaluated %d, generated %d (%s)",
			i+1, r.PromptTokens, r.CachedTokens, r.EvaluatedTokens, len(r.Tokens), r.Finish)
		if r.CachedTokens+r.EvaluatedTokens != r.PromptTokens {
			t.Fatalf("cached %d + evaluated %d != prompt %d", r.CachedTokens, r.EvaluatedTokens, r.PromptTokens)
		}
		if i == 0 {
			if r.EvaluatedTokens != r.PromptTokens {
				t.Fatalf("turn 1 evaluated %d of %d", r.EvaluatedTokens, r.PromptTokens)
			}
		} else {
			// The previous prompt is a prefix of this one and is in the
			// cache: at most the previous reply (re-encoded) and the new
			// message are evaluated.
			if r.CachedTokens < prevPrompt || r.EvaluatedTokens > r.PromptTokens-prevPrompt {
				t.Fatalf("turn %d: cached %d < previous prompt %d", i+1, r.CachedTokens, prevPrompt)
			}
		}
		prevPrompt = r.PromptTokens
	}
}

// TestGreedyDeterministic: temperature 0 gives the same tokens every time,
// in a fresh slot or a reused one.
func TestGreedyDeterministic(t *testing.T) {
	e, m := openEngine(t, 2)
	var outputs []string
	var tokens [][]int32
	for range 3 {
		conv, release, err := NewConversation(context.Background(), e, m, greedy(24))
		if err != nil {
			t.Fatal(err)
		}
		turn, err := conv.Send(context.Background(), chat.Message{Role: chat.RoleUser, Content: "写一首关于春天的诗"}, nil)
		release()
		if err != nil {
			t.Fatal(err)
		}
		outputs = append(outputs, turn.Output)
		tokens = append(tokens, turn.Result.Tokens)
	}
	for i := 1; i < len(outputs); i++ {
		if !slices.Equal(tokens[i], tokens[0]) || outputs[i] != outputs[0] {
			t.Fatalf("run %d differs:\n%v %q\n%v %q", i, tokens[i], outputs[i], tokens[0], outputs[0])
		}
	}
	if len(tokens[0]) == 0 {
		t.Fatal("nothing generated")
	}
}

// TestStreamingIsUTF8Clean: whatever the (random) model generates, every
// streamed chunk is valid UTF-8, and the decoded text equals llama.cpp's own
// detokenization of the same ids.
func TestStreamingIsUTF8Clean(t *testing.T) {
	e, m := openEngine(t, 1)
	s := chat.DefaultSampling()
	for seed := range uint32(4) {
		s.Seed = seed + 1
		conv, release, err := NewConversation(context.Background(), e, m, chat.Options{Sampling: s, MaxTokens: 48})
		if err != nil {
			t.Fatal(err)
		}
		var chunks []string
		turn, err := conv.Send(context.Background(), chat.Message{Role: chat.RoleUser, Content: "你好👋"},
			func(s string) error { chunks = append(chunks, s); return nil })
		release()
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range chunks {
			if !utf8.ValidString(c) {
				t.Fatalf("chunk %q is not valid UTF-8", c)
			}
		}
		hasSpecial := slices.ContainsFunc(turn.Result.Tokens, func(id int32) bool { return id >= chat.TokenMask })
		if !hasSpecial {
			want, err := e.Model().Detokenize(turn.Result.Tokens, false, false)
			if err != nil {
				t.Fatal(err)
			}
			if !utf8.ValidString(want) {
				want = strings.ToValidUTF8(want, "\uFFFD")
			}
			if got := turn.Output; got != want && strings.ToValidUTF8(got, "") != strings.ToValidUTF8(want, "") {
				t.Errorf("seed %d: decoded %q, llama.cpp %q", seed, got, want)
			}
		}
		t.Logf("seed %d: %d tokens, %d chunks, output %q", seed, len(turn.Result.Tokens), len(chunks), truncate(turn.Output))
	}
}

func truncate(s string) string {
	if r := []rune(s); len(r) > 40 {
		return string(r[:40]) + "…"
	}
	return s
}

// TestCancelStopsReply: cancelling the context mid-reply ends it as
// cancelled and keeps the partial reply in the history.
func TestCancelStopsReply(t *testing.T) {
	e, m := openEngine(t, 1)
	conv, release, err := NewConversation(context.Background(), e, m, greedy(0))
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	turn, err := conv.Send(ctx, chat.Message{Role: chat.RoleUser, Content: "讲个很长的故事"}, func(string) error {
		if n++; n == 3 {
			cancel()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if turn.Result.Finish != gen.FinishCancelled {
		t.Fatalf("finish %q after %d chunks", turn.Result.Finish, n)
	}
	if msgs := conv.Messages(); len(msgs) != 2 {
		t.Fatalf("history %d messages", len(msgs))
	}
	// The conversation goes on after a cancelled reply.
	conv.SetOptions(greedy(4))
	if _, err := conv.Send(context.Background(), chat.Message{Role: chat.RoleUser, Content: "继续"}, nil); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkChatTTFT plays a scripted 10-turn conversation and reports the
// time to first token of turn 1 and turn 10 and their ratio: with the KV
// cache reused, turn 10 evaluates only its new tokens, so the ratio stays
// near 1 although its prompt is many times longer. The model is the tiny
// test model, or the GGUF named by CHATGLM_BENCH_MODEL (e.g. the real
// ChatGLM3-6B).
func BenchmarkChatTTFT(b *testing.B) {
	path := os.Getenv("CHATGLM_BENCH_MODEL")
	ctxSize := 4096
	if path == "" {
		path = tinyGGUF(b)
		ctxSize = 1024
	}
	e, err := engine.Open(context.Background(), engine.Options{ModelPath: path, ContextSize: ctxSize, GPULayers: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	m, err := NewModel(e, path)
	if err != nil {
		b.Fatal(err)
	}
	questions := []string{
		"你好，请介绍一下你自己。", "北京有哪些著名的历史古迹？", "故宫是哪一年建成的？", "它的面积有多大？",
		"长城和故宫相比哪个更古老？", "请推荐一条三天的北京旅游路线。", "冬天去北京需要注意什么？",
		"北京烤鸭有什么特别的吃法？", "从北京到上海坐高铁要多久？", "谢谢你的帮助，最后请总结一下我们的对话。",
	}
	// Warm up (first decode, allocations) outside the measurement.
	warm, release, err := NewConversation(context.Background(), e, m, greedy(4))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := warm.Send(context.Background(), chat.Message{Role: chat.RoleUser, Content: "warm up"}, nil); err != nil {
		b.Fatal(err)
	}
	release()
	var ttft1, ttft10 time.Duration
	var prompt10, eval10 int
	for b.Loop() {
		conv, release, err := NewConversation(context.Background(), e, m, greedy(32))
		if err != nil {
			b.Fatal(err)
		}
		for i, q := range questions {
			turn, err := conv.Send(context.Background(), chat.Message{Role: chat.RoleUser, Content: q}, nil)
			if err != nil {
				b.Fatal(err)
			}
			switch i {
			case 0:
				ttft1 += turn.Result.PromptTime
			case len(questions) - 1:
				ttft10 += turn.Result.PromptTime
				prompt10, eval10 = turn.Result.PromptTokens, turn.Result.EvaluatedTokens
			}
		}
		release()
		// The next iteration starts a new conversation in a slot whose cache
		// holds this one: turn 1 shares only [gMASK] sop <|user|> with it.
	}
	n := float64(b.N)
	b.ReportMetric(float64(ttft1.Microseconds())/1000/n, "ttft1_ms")
	b.ReportMetric(float64(ttft10.Microseconds())/1000/n, "ttft10_ms")
	b.ReportMetric(float64(ttft10)/float64(ttft1), "ttft10/ttft1")
	b.ReportMetric(float64(prompt10), "prompt10_tokens")
	b.ReportMetric(float64(eval10), "evaluated10_tokens")
}
