package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chatglm/chatglm/hub/hubtest"
	"github.com/chatglm/chatglm/internal/fixture/shareddata"
	"github.com/chatglm/chatglm/internal/fixture/testmodel"
)

// fakeHubWithTinyModel serves a tiny ChatGLM3 checkpoint (safetensors and
// the real tokenizer) as the repo test/tiny-chatglm3 on a local fake Hub.
func fakeHubWithTinyModel(t *testing.T) *hubtest.Server {
	t.Helper()
	dir := t.TempDir()
	spec := testmodel.Tiny
	spec.Format = testmodel.SafetensorsSharded
	if err := testmodel.WriteDir(dir, spec, shareddata.ChatGLM3(t)); err != nil {
		t.Fatal(err)
	}
	files := map[string]*hubtest.File{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		lfs := strings.HasSuffix(e.Name(), ".safetensors") || e.Name() == "tokenizer.model"
		files[e.Name()] = &hubtest.File{Data: data, LFS: lfs}
	}
	files["README.md"] = &hubtest.File{Data: []byte("# tiny\n")}
	srv := hubtest.New()
	t.Cleanup(srv.Close)
	if _, err := srv.SetRepo("test/tiny-chatglm3", files); err != nil {
		t.Fatal(err)
	}
	return srv
}

// TestGetListRunRm is the user's path from nothing to an answer: get pulls
// and converts, a second get only says it is ready, run finds the model by
// name, list shows it and rm removes it.
func TestGetListRunRm(t *testing.T) {
	srv := fakeHubWithTinyModel(t)
	store := t.TempDir()
	common := []string{"--models-dir", store, "--endpoint", srv.URL()}
	stdout, stderr, err := runProgram(t, append([]string{"get", "test/tiny-chatglm3"}, common...)...)
	if err != nil {
		t.Fatalf("get: %v\n%s", err, stderr)
	}
	path := strings.TrimSpace(stdout)
	if !strings.HasPrefix(path, store) || !strings.HasSuffix(path, ".gguf") {
		t.Fatalf("get printed %q, want a GGUF path in the store", path)
	}
	if !strings.Contains(stderr, "chatglm chat -m test/tiny-chatglm3") {
		t.Errorf("get does not say what to run next:\n%s", stderr)
	}
	if srv.Requests("README.md") != 0 {
		t.Error("get downloaded README.md, which the converter does not need")
	}
	served := srv.TotalBytes()
	stdout, stderr, err = runProgram(t, append([]string{"get", "test/tiny-chatglm3"}, common...)...)
	if err != nil || strings.TrimSpace(stdout) != path || !strings.Contains(stderr, "ready") {
		t.Errorf("second get: err %v, stdout %q, stderr %q", err, stdout, stderr)
	}
	if srv.TotalBytes() != served {
		t.Errorf("second get downloaded %d more bytes", srv.TotalBytes()-served)
	}
	// A quantized type is made from the f16 file, which stays.
	stdout, stderr, err = runProgram(t, append([]string{"get", "test/tiny-chatglm3", "--type", "q8_0"}, common...)...)
	if q := strings.TrimSpace(stdout); err != nil || !strings.HasSuffix(q, "-q8_0.gguf") {
		t.Fatalf("get --type q8_0: err %v, stdout %q, stderr %q", err, stdout, stderr)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("the f16 file is gone after quantizing: %v", err)
	}
	if _, stderr, err := runProgram(t, append([]string{"get", "test/tiny-chatglm3", "--type", "q7_x"}, common...)...); err == nil || !strings.Contains(stderr, "q7_x") {
		t.Errorf("get --type q7_x: err %v, stderr %q", err, stderr)
	}
	stdout, stderr, err = runProgram(t, "run", "-m", "test/tiny-chatglm3", "--models-dir", store, "-p", "你好", "--temperature", "0", "--max-tokens", "4")
	if err != nil || strings.TrimSpace(stdout) == "" {
		t.Errorf("run by name: err %v, stdout %q, stderr %q", err, stdout, stderr)
	}
	stdout, _, err = runProgram(t, "list", "--models-dir", store)
	if err != nil || !strings.Contains(stdout, "test/tiny-chatglm3") {
		t.Errorf("list: err %v\n%s", err, stdout)
	}
	if _, stderr, err := runProgram(t, "rm", "test/tiny-chatglm3", "--models-dir", store); err != nil {
		t.Fatalf("rm: %v\n%s", err, stderr)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("rm left %s", path)
	}
	stdout, _, _ = runProgram(t, "list", "--models-dir", store)
	if strings.Contains(stdout, "test/tiny-chatglm3") {
		t.Errorf("list after rm still shows the model:\n%s", stdout)
	}
	if _, stderr, err := runProgram(t, "get", "no/such-repo", "--models-dir", store, "--endpoint", srv.URL()); err == nil || !strings.Contains(stderr, "no/such-repo") {
		t.Errorf("get of a missing repo: err %v, stderr %q", err, stderr)
	}
}
