// Package testdata finds the shared test data (the real ChatGLM3 tokenizer and
// config files) for tests. The folder is named by CHATGLM_TESTDATA, default
// ../shared/testdata relative to the repository root. `make testdata` fetches
// the files when the folder is absent.
package testdata

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// Env is the environment variable that names the test data folder.
const Env = "CHATGLM_TESTDATA"

// Root returns the repository root (the folder holding go.mod).
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Dir returns the test data folder, from CHATGLM_TESTDATA or the default.
func Dir() string {
	if d := os.Getenv(Env); d != "" {
		return d
	}
	return filepath.Join(Root(), "..", "shared", "testdata")
}

// ChatGLM3 returns the folder with the real ChatGLM3-6B tokenizer and config
// files, failing the test (not skipping it) when the files are missing.
func ChatGLM3(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(Dir(), "chatglm3-6b")
	for _, f := range []string{"tokenizer.model", "config.json", "tokenizer_config.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("test data missing: %v (set %s or run `make testdata`)", err, Env)
		}
	}
	return dir
}
