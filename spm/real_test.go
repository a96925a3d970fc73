package spm_test

import (
	"path/filepath"
	"testing"

	"github.com/chatglm/chatglm/internal/fixture/shareddata"
	"github.com/chatglm/chatglm/internal/fixture/testmodel"
	"github.com/chatglm/chatglm/spm"
)

func TestMain(m *testing.M) { testmodel.Main(m) }

func TestLoadRealTokenizer(t *testing.T) {
	p, err := spm.Load(filepath.Join(shareddata.ChatGLM3(t), "tokenizer.model"))
	if err != nil {
		t.Fatal(err)
	}
	if len(p) != 64789 || p[0].Type != spm.Unknown || p[1].Text != "<s>" || p[1].Type != spm.Control ||
		p[3].Text != "<0x00>" || p[3].Type != spm.Byte || p[30910].Text != "▁" || p[36474].Text != "▁你" {
		t.Errorf("pieces: %d %+v %+v %+v", len(p), p[0], p[1], p[3])
	}
}

// TestLoadGGUF reads the vocabulary of a converted model, which adds
// ChatGLM3's special tokens as control tokens: text that spells them stays
// plain text. ("]sop" is the case llama.cpp's tokenizer gets wrong: it
// merges it into the control token sop, 64792.)
func TestLoadGGUF(t *testing.T) {
	enc, err := spm.LoadGGUF(testmodel.TinyGGUF(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{"]sop", "<|user|>", "[gMASK]", "eop sop"} {
		ids, err := enc.Tokenize(text)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			if id >= 64789 {
				t.Errorf("%q = %v: special token %d from plain text", text, ids, id)
			}
		}
	}
}

func TestLoadRefuses(t *testing.T) {
	if _, err := spm.Load(filepath.Join(t.TempDir(), "missing.model")); err == nil {
		t.Error("a missing file was accepted")
	}
	if _, err := spm.LoadGGUF(filepath.Join(t.TempDir(), "missing.gguf")); err == nil {
		t.Error("a missing GGUF was accepted")
	}
}
