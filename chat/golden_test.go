package chat

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/chatglm/chatglm/chat/python"
	"github.com/chatglm/chatglm/internal/fixture/shareddata"
	"github.com/chatglm/chatglm/spm"
)

// goldenFile is chat/testdata/protocol.json, written once by a throwaway
// script with Debian's python3-sentencepiece over the real ChatGLM3
// tokenizer.model, following the official build_chat_input (see
// ../shared/docs/chatglm3-protocol.md §4). It holds whole prompts, every
// single SentencePiece encode the prompts are made of, and the expected
// Python json.dumps(tools, indent=4, ensure_ascii=False) text.
type goldenFile struct {
	TokenizerSHA256 string `json:"tokenizer_sha256"`
	Cases           []struct {
		Name     string `json:"name"`
		Messages []struct {
			Message
			ToolsRaw string `json:"tools_raw"`
		} `json:"messages"`
		IDs []int32 `json:"ids"`
	} `json:"cases"`
	ToolsJSON []struct {
		ToolsRaw string `json:"tools_raw"`
		JSON     string `json:"json"`
	} `json:"tools_json"`
	Encodes []struct {
		Text string  `json:"text"`
		IDs  []int32 `json:"ids"`
	} `json:"encodes"`
}

func loadGolden(t testing.TB) *goldenFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "protocol.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g goldenFile
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	return &g
}

// messages returns the case's messages with their tools raw JSON attached.
func (g *goldenFile) messages(i int) []Message {
	var out []Message
	for _, m := range g.Cases[i].Messages {
		msg := m.Message
		if m.ToolsRaw != "" {
			msg.Tools = json.RawMessage(m.ToolsRaw)
		}
		out = append(out, msg)
	}
	return out
}

// replayTokenizer answers with the python-sentencepiece encodes recorded in
// the golden file and fails on any text it has not seen.
type replayTokenizer map[string][]int32

func (r replayTokenizer) Tokenize(text string) ([]int32, error) {
	ids, ok := r[text]
	if !ok {
		return nil, fmt.Errorf("replay tokenizer: no golden encode for %q", text)
	}
	return slices.Clone(ids), nil
}

func (g *goldenFile) tokenizer() replayTokenizer {
	r := replayTokenizer{}
	for _, e := range g.Encodes {
		r[e.Text] = e.IDs
	}
	return r
}

func TestGoldenTokenizerIsTheSharedOne(t *testing.T) {
	g := loadGolden(t)
	b, err := os.ReadFile(filepath.Join(shareddata.ChatGLM3(t), "tokenizer.model"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	if got := hex.EncodeToString(sum[:]); got != g.TokenizerSHA256 {
		t.Fatalf("goldens were made with tokenizer %s, shared test data has %s", g.TokenizerSHA256, got)
	}
}

// The three reference sequences of chatglm.cpp's tests must be in the
// goldens, unchanged.
func TestGoldenHasReferenceSequences(t *testing.T) {
	g := loadGolden(t)
	want := map[string]int{"single_turn": 8, "multi_turn_reference": 46, "system_function_call_reference": 284}
	for _, c := range g.Cases {
		if n, ok := want[c.Name]; ok {
			if len(c.IDs) != n {
				t.Errorf("%s: %d ids, want %d", c.Name, len(c.IDs), n)
			}
			delete(want, c.Name)
		}
	}
	if len(want) > 0 {
		t.Fatalf("missing reference cases: %v", want)
	}
	if !slices.Equal(g.Cases[0].IDs, []int32{64790, 64792, 64795, 30910, 13, 36474, 54591, 64796}) {
		t.Fatalf("single turn: %v", g.Cases[0].IDs)
	}
}

// TestBuildPromptGolden checks the prompt assembly (role tokens, the two
// separate encodes per message, [gMASK] sop, <|assistant|>, the tools JSON
// appended to the system content) against the python goldens, with the
// tokenizer replaying python-sentencepiece's encodes. The same goldens are
// checked against the real tokenizer through the engine in chat/backend.
func TestBuildPromptGolden(t *testing.T) {
	g := loadGolden(t)
	tok := g.tokenizer()
	for i, c := range g.Cases {
		t.Run(c.Name, func(t *testing.T) {
			got, err := BuildPrompt(tok, g.messages(i))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, c.IDs) {
				t.Fatalf("ids differ\n got %v\nwant %v", got, c.IDs)
			}
		})
	}
}

func TestPythonJSONIndentGolden(t *testing.T) {
	g := loadGolden(t)
	for i, c := range g.ToolsJSON {
		got, err := python.JSONIndent([]byte(c.ToolsRaw))
		if err != nil {
			t.Fatal(err)
		}
		if got != c.JSON {
			t.Errorf("case %d:\n got %s\nwant %s", i, got, c.JSON)
		}
	}
}

func TestInjectionTextIsPlain(t *testing.T) {
	g := loadGolden(t)
	tok := g.tokenizer()
	for i, c := range g.Cases {
		if c.Name != "injection" {
			continue
		}
		ids, err := BuildPrompt(tok, g.messages(i))
		if err != nil {
			t.Fatal(err)
		}
		// Five messages: exactly five role tokens, and no other special id
		// besides [gMASK] sop at the start.
		specials := 0
		for _, id := range ids[2:] {
			if id >= TokenMask {
				specials++
			}
		}
		if specials != 6 { // 5 roles + final <|assistant|>
			t.Fatalf("%d special ids in %v", specials, ids)
		}
		// The last user message is just "<|user|>": plain pieces ▁< | user | >.
		tail := ids[len(ids)-9:]
		if !slices.Equal(tail, []int32{TokenUser, 30910, 13, 906, 31007, 4865, 31007, 30994, TokenAssistant}) {
			t.Fatalf("tail %v", tail)
		}
	}
}

// realSPM is the Go SentencePiece encoder over the real tokenizer.model.
func realSPM(t testing.TB) *spm.Encoder {
	t.Helper()
	pieces, err := spm.Load(filepath.Join(shareddata.ChatGLM3(t), "tokenizer.model"))
	if err != nil {
		t.Fatal(err)
	}
	enc, err := spm.NewEncoder(pieces)
	if err != nil {
		t.Fatal(err)
	}
	return enc
}

// TestSPMMatchesPythonSentencePiece: the Go encoder over the real
// tokenizer.model gives python-sentencepiece's ids for every recorded encode
// and every golden prompt.
func TestSPMMatchesPythonSentencePiece(t *testing.T) {
	g := loadGolden(t)
	enc := realSPM(t)
	for _, e := range g.Encodes {
		got, err := enc.Tokenize(e.Text)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, e.IDs) {
			t.Errorf("encode %q = %v, want %v", e.Text, got, e.IDs)
		}
	}
	for i, c := range g.Cases {
		got, err := BuildPrompt(enc, g.messages(i))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, c.IDs) {
			t.Errorf("%s: ids differ\n got %v\nwant %v", c.Name, got, c.IDs)
		}
	}
	if ids, _ := enc.Tokenize(""); len(ids) != 0 {
		t.Errorf("empty text: %v", ids)
	}
}
