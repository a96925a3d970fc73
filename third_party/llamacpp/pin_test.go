package llamacpp

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// headers maps each header kept in include/ to its path inside the pinned
// module. The binding compiles against the copies, so that plain `go build`,
// `go vet` and gopls work without the Makefile's environment; these tests
// keep the copies equal to the module's.
var headers = map[string]string{
	"llama.h":        "llama/llama.cpp/include/llama.h",
	"ggml.h":         "ml/backend/ggml/ggml/include/ggml.h",
	"ggml-alloc.h":   "ml/backend/ggml/ggml/include/ggml-alloc.h",
	"ggml-backend.h": "ml/backend/ggml/ggml/include/ggml-backend.h",
	"ggml-cpu.h":     "ml/backend/ggml/ggml/include/ggml-cpu.h",
	"ggml-opt.h":     "ml/backend/ggml/ggml/include/ggml-opt.h",
}

// moduleDir returns the pinned module's folder in the module cache.
func moduleDir(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", Module).Output()
	if err != nil {
		t.Fatalf("go list -m %s: %v", Module, err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		t.Fatalf("go list -m %s: the module is not downloaded (go mod download %s)", Module, Module)
	}
	return dir
}

func TestHeadersEqualPinnedModule(t *testing.T) {
	dir := moduleDir(t)
	entries, err := os.ReadDir("include")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".h") && headers[e.Name()] == "" {
			t.Errorf("include/%s is not one of the pinned headers this test checks", e.Name())
		}
	}
	for name, rel := range headers {
		ours, err := os.ReadFile(filepath.Join("include", name))
		if err != nil {
			t.Errorf("%v (copy it from the module: %s)", err, rel)
			continue
		}
		theirs, err := os.ReadFile(filepath.Join(dir, rel))
		if err != nil {
			t.Errorf("pinned module %s@%s: %v", Module, Version, err)
			continue
		}
		if !bytes.Equal(ours, theirs) {
			t.Errorf("include/%s differs from %s in %s@%s: copy it again after a pin bump", name, rel, Module, Version)
		}
	}
}

func TestVersionMatchesGoMod(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", Module).Output()
	if err != nil {
		t.Fatalf("go list -m %s: %v", Module, err)
	}
	if got := strings.TrimSpace(string(out)); got != Version {
		t.Errorf("go.mod requires %s %s, but llamacpp.Version is %s", Module, got, Version)
	}
}
