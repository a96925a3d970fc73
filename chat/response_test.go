package chat

import (
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/chatglm/chatglm/chat/python"
)

func TestProcessResponse(t *testing.T) {
	cases := []struct {
		name     string
		output   string
		hasTools bool
		want     Response
		history  []Message
	}{
		{"plain", "\n 你好👋！我是人工智能助手 ChatGLM3-6B。 \n", false,
			Response{Content: "你好👋！我是人工智能助手 ChatGLM3-6B。"},
			[]Message{{Role: RoleAssistant, Content: "你好👋！我是人工智能助手 ChatGLM3-6B。"}}},
		{"no newline", "  just text ", false, Response{Content: "just text"},
			[]Message{{Role: RoleAssistant, Content: "just text"}}},
		{"training time only in reply", "\n我的训练数据截止到[[训练时间]]。", false,
			Response{Content: "我的训练数据截止到2023年。"},
			[]Message{{Role: RoleAssistant, Content: "我的训练数据截止到[[训练时间]]。"}}},
		{"blank metadata kept raw", " \t\n x", false, Response{Content: "x"},
			[]Message{{Role: RoleAssistant, Metadata: " \t", Content: "x"}}},
		{"tool call", "get_current_weather\n```python\ntool_call(location=\"beijing\", unit=\"celsius\")\n```", true,
			Response{ToolCall: &ToolCall{Name: "get_current_weather",
				Content:   "```python\ntool_call(location=\"beijing\", unit=\"celsius\")\n```",
				Arguments: python.Kwargs{{Name: "location", Value: "beijing"}, {Name: "unit", Value: "celsius"}}}},
			[]Message{{Role: RoleAssistant, Metadata: "get_current_weather",
				Content: "```python\ntool_call(location=\"beijing\", unit=\"celsius\")\n```"}}},
		{"text then tool call", "\n 好的，我来查一下。<|assistant|> random_number_generator\n```python\ntool_call(seed=42, range=(0, 100))\n```", true,
			Response{ToolCall: &ToolCall{Name: "random_number_generator",
				Content:   "```python\ntool_call(seed=42, range=(0, 100))\n```",
				Arguments: python.Kwargs{{Name: "seed", Value: int64(42)}, {Name: "range", Value: python.Tuple{int64(0), int64(100)}}}}},
			[]Message{{Role: RoleAssistant, Content: "好的，我来查一下。"},
				{Role: RoleAssistant, Metadata: " random_number_generator", Content: "```python\ntool_call(seed=42, range=(0, 100))\n```"}}},
		{"interpreter without tools", "interpreter\n```python\nprint(1)\n```", false,
			Response{ToolCall: &ToolCall{Name: "interpreter", Content: "```python\nprint(1)\n```"}},
			[]Message{{Role: RoleAssistant, Metadata: "interpreter", Content: "```python\nprint(1)\n```"}}},
		{"tool call then answer", "f\n```python\ntool_call()\n```<|assistant|>\n done", true,
			Response{Content: "done"},
			[]Message{{Role: RoleAssistant, Metadata: "f", Content: "```python\ntool_call()\n```"},
				{Role: RoleAssistant, Content: "done"}}},
		{"empty", "", false, Response{}, []Message{{Role: RoleAssistant}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, hist := ProcessResponse(c.output, c.hasTools)
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("response\n got %#v\nwant %#v", got, c.want)
				if got.ToolCall != nil {
					t.Logf("tool call %#v", *got.ToolCall)
				}
			}
			if !reflect.DeepEqual(hist, c.history) {
				t.Errorf("history\n got %#v\nwant %#v", hist, c.history)
			}
		})
	}
}

func TestProcessResponseBadToolCall(t *testing.T) {
	got, _ := ProcessResponse("f\n```python\nos.system('rm -rf /')\n```", true)
	if got.ToolCall == nil || got.ToolCall.Err == nil || got.ToolCall.Arguments != nil {
		t.Fatalf("%#v", got.ToolCall)
	}
}

func TestUTF8AssemblerByteFallback(t *testing.T) {
	// 👋 is four byte-fallback pieces in ChatGLM3 (243 162 148 142 = F0 9F 91 8B).
	var a UTF8Assembler
	var out []string
	for _, p := range [][]byte{[]byte("你好"), {0xF0}, {0x9F}, {0x91}, {0x8B}, []byte("！")} {
		out = append(out, a.Write(p))
	}
	want := []string{"你好", "", "", "", "👋", "！"}
	if !reflect.DeepEqual(out, want) {
		t.Fatalf("got %q want %q", out, want)
	}
	if a.Pending() || a.Flush() != "" {
		t.Fatal("bytes left over")
	}
	// Invalid bytes become U+FFFD; a truncated character at the end too.
	if got := a.Write([]byte{'a', 0xFF, 'b', 0xE4, 0xBD}); got != "a\uFFFDb" {
		t.Fatalf("got %q", got)
	}
	if got := a.Flush(); got != "\uFFFD\uFFFD" {
		t.Fatalf("flush %q", got)
	}
	// A start byte followed by a non-continuation byte is not held.
	if got := a.Write([]byte{0xE4, 'x'}); got != "\uFFFDx" {
		t.Fatalf("got %q", got)
	}
}

func TestUTF8AssemblerRandomSplits(t *testing.T) {
	text := "混合 text, emoji 😀👋🏽, ünïcödé, 𝄞 and 中文字符。"
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		var a UTF8Assembler
		var sb strings.Builder
		b := []byte(text)
		for len(b) > 0 {
			n := 1 + r.IntN(min(len(b), 5))
			s := a.Write(b[:n])
			if !utf8.ValidString(s) || strings.ContainsRune(s, utf8.RuneError) {
				t.Fatalf("broken output %q", s)
			}
			sb.WriteString(s)
			b = b[n:]
		}
		sb.WriteString(a.Flush())
		if sb.String() != text {
			t.Fatalf("got %q", sb.String())
		}
	}
}

// pieces of a reply as the engine streams them: special tokens have an
// empty piece, byte-fallback tokens one byte.
type tok struct {
	id    int32
	piece string
}

func streamAll(toks []tok) (shown []string, text string) {
	d := NewDetokenizer()
	var f DisplayFilter
	for _, t := range toks {
		if s := f.Write(d.Add(t.id, []byte(t.piece))); s != "" {
			shown = append(shown, s)
		}
	}
	if s := f.Write(d.Flush()); s != "" {
		shown = append(shown, s)
	}
	if s := f.Close(); s != "" {
		shown = append(shown, s)
	}
	return shown, d.Text()
}

func TestDetokenizerAndDisplay(t *testing.T) {
	// "▁ \n ▁你 好 <F0><9F><91><8B> ！" as ChatGLM3 generates the reference reply.
	toks := []tok{{30910, " "}, {13, "\n"}, {36474, " 你"}, {54591, "好"},
		{243, "\xF0"}, {162, "\x9F"}, {148, "\x91"}, {142, "\x8B"}, {31404, "！"}, {30910, " "}, {13, "\n"}}
	shown, text := streamAll(toks)
	if text != "\n 你好👋！ \n" {
		t.Fatalf("decoded %q", text)
	}
	if want := []string{"你", "好", "👋", "！"}; !reflect.DeepEqual(shown, want) {
		t.Fatalf("shown %q, want %q", shown, want)
	}
	resp, _ := ProcessResponse(text, false)
	if strings.Join(shown, "") != resp.Content {
		t.Fatalf("shown %q != content %q", strings.Join(shown, ""), resp.Content)
	}
}

func TestDisplayMatchesProcessResponse(t *testing.T) {
	outputs := []string{
		"\n 你好",
		"\n 答案  是 \n\n 42 \n",
		"no newline at all",
		"\n 截止到[[训练时间]]为止[[训练",
		"\n [[训练时间]][[训练时间]]",
		"\n 先说明<|assistant|>get_weather\n```python\ntool_call(city_name=\"北京\")\n```",
		"\n 一<|assistant|>\n 二 <|assistant|>\n",
		"\n a <|assis b <|assistant|> meta \n ignored",
		"tool\n```python\ntool_call()\n```<|assistant|>\n 结果是 22。",
		"",
		"\n",
	}
	r := rand.New(rand.NewPCG(3, 4))
	for _, out := range outputs {
		_, segs := ProcessResponse(out, true)
		// Expected display: every plain segment's content, newline-joined.
		var want []string
		for _, m := range segs {
			if strings.TrimFunc(m.Metadata, python.IsSpace) == "" && m.Content != "" {
				want = append(want, strings.ReplaceAll(m.Content, TrainingTimePlaceholder, TrainingTimeText))
			}
		}
		for range 50 {
			var f DisplayFilter
			var sb strings.Builder
			rs := []rune(out)
			for len(rs) > 0 {
				n := 1 + r.IntN(min(len(rs), 4))
				sb.WriteString(f.Write(string(rs[:n])))
				rs = rs[n:]
			}
			sb.WriteString(f.Close())
			if sb.String() != strings.Join(want, "\n") {
				t.Fatalf("%q: shown %q, want %q", out, sb.String(), strings.Join(want, "\n"))
			}
		}
	}
}

func TestStreamNeverShowsPlaceholderHalf(t *testing.T) {
	var f DisplayFilter
	var all []string
	for _, s := range []string{"\n 截止", "[[", "训练", "时间", "]]", "。"} {
		all = append(all, f.Write(s))
	}
	all = append(all, f.Close())
	for _, s := range all {
		if strings.Contains(s, "[[") || strings.Contains(s, "训练") {
			t.Fatalf("placeholder shown: %q", all)
		}
	}
	if strings.Join(all, "") != "截止2023年。" {
		t.Fatalf("%q", all)
	}
}
