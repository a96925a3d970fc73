package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/chatglm/chatglm/hub/hubtest"
	"github.com/chatglm/chatglm/internal/fixture/shareddata"
)

// TestFetchFromHub fetches the three files from a local Hub into an empty
// test data folder, then finds them present on a second run.
func TestFetchFromHub(t *testing.T) {
	src := shareddata.ChatGLM3(t)
	files := map[string]*hubtest.File{}
	for _, f := range wanted {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		files[f] = &hubtest.File{Data: b, LFS: f == "tokenizer.model"}
	}
	files["model-00001-of-00007.safetensors"] = &hubtest.File{Data: []byte("not fetched"), LFS: true}
	srv := hubtest.New()
	defer srv.Close()
	if _, err := srv.SetRepo(repo, files); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	t.Setenv(shareddata.Env, dst)
	t.Setenv("HF_ENDPOINT", srv.URL())
	t.Setenv("HF_TOKEN", "")
	if err := run(); err != nil {
		t.Fatal(err)
	}
	for _, f := range wanted {
		got, err := os.ReadFile(filepath.Join(dst, "chatglm3-6b", f))
		if err != nil || !bytes.Equal(got, files[f].Data) {
			t.Fatalf("%s: %v", f, err)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(dst, "chatglm3-6b"))
	if len(entries) != len(wanted) {
		t.Fatalf("folder has %d entries, want %d", len(entries), len(wanted))
	}
	srv.ResetCounters()
	if err := run(); err != nil || srv.TotalBytes() != 0 {
		t.Fatalf("second run: %v, %d bytes", err, srv.TotalBytes())
	}
}
