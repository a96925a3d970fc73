package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// declare makes a store and a flag set with a few keys of each type.
func declare(t *testing.T) (*Store, *pflag.FlagSet) {
	t.Helper()
	s := New()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	s.Declare(fs,
		Key{Name: "gpu.layers", Flag: "gpu-layers", Default: -1, Usage: "layers"},
		Key{Name: "sampling.temperature", Flag: "temperature", Default: 0.8, Usage: "temp"},
		Key{Name: "model", Flag: "model", Short: "m", Default: "", Usage: "model"},
		Key{Name: "models.dir", Default: "/default/models", Usage: "store (file/env only)"},
	)
	return s, fs
}

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPrecedenceFlagEnvFileDefault(t *testing.T) {
	file := writeFile(t, "c.yaml", "gpu:\n  layers: 10\nsampling:\n  temperature: 0.5\nmodel: from-file\nmodels:\n  dir: /file/models\n")
	t.Setenv("CHATGLM_SAMPLING_TEMPERATURE", "0.3")
	t.Setenv("CHATGLM_MODEL", "from-env")
	s, fs := declare(t)
	if err := fs.Parse([]string{"--model", "from-flag"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Load(file); err != nil {
		t.Fatal(err)
	}
	if err := s.Bind(fs); err != nil {
		t.Fatal(err)
	}
	if got := s.String("model"); got != "from-flag" {
		t.Errorf("model = %q, want the flag's value", got)
	}
	if got := s.Float("sampling.temperature"); got != 0.3 {
		t.Errorf("temperature = %v, want the env value 0.3", got)
	}
	if got := s.Int("gpu.layers"); got != 10 {
		t.Errorf("gpu.layers = %v, want the file's 10", got)
	}
	if got := s.String("models.dir"); got != "/file/models" {
		t.Errorf("models.dir = %q, want the file's value", got)
	}
	if s.FileUsed() != file {
		t.Errorf("FileUsed = %q", s.FileUsed())
	}
}

func TestDefaultsWithoutFile(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir()) // no default file there
	s, fs := declare(t)
	if err := s.Load(""); err != nil {
		t.Fatal(err)
	}
	if err := s.Bind(fs); err != nil {
		t.Fatal(err)
	}
	if s.Int("gpu.layers") != -1 || s.Float("sampling.temperature") != 0.8 || s.String("models.dir") != "/default/models" {
		t.Errorf("defaults not applied: %v %v %v", s.Int("gpu.layers"), s.Float("sampling.temperature"), s.String("models.dir"))
	}
}

func TestDefaultFileIsRead(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	if err := os.MkdirAll(filepath.Join(dir, "chatglm"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "chatglm", "config.yaml"), []byte("gpu:\n  layers: 7\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, fs := declare(t)
	if err := s.Load(""); err != nil {
		t.Fatal(err)
	}
	_ = s.Bind(fs)
	if s.Int("gpu.layers") != 7 {
		t.Errorf("gpu.layers = %d, want 7 from %s", s.Int("gpu.layers"), DefaultPath())
	}
}

func TestBadFiles(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{"unknown.yaml", "gpu:\n  layrs: 3\n", `unknown key "gpu.layrs"`},
		{"broken.yaml", "gpu: [\n", "broken.yaml"},
	} {
		s, _ := declare(t)
		p := writeFile(t, tc.name, tc.body)
		err := s.Load(p)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: err = %v, want it to name the file and %q", tc.name, err, tc.want)
		}
	}
	s, _ := declare(t)
	if err := s.Load("/no/such/config.yaml"); err == nil || !strings.Contains(err.Error(), "/no/such/config.yaml") {
		t.Errorf("missing explicit file: err = %v", err)
	}
}

func TestSameKeyOnTwoCommands(t *testing.T) {
	s := New()
	chat := pflag.NewFlagSet("chat", pflag.ContinueOnError)
	serve := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	k := Key{Name: "model", Flag: "model", Default: "", Usage: "model"}
	s.Declare(chat, k)
	s.Declare(serve, k)
	if err := chat.Parse([]string{"--model", "a.gguf"}); err != nil {
		t.Fatal(err)
	}
	// Only the running command's flags are bound.
	if err := s.Bind(chat); err != nil {
		t.Fatal(err)
	}
	if s.String("model") != "a.gguf" {
		t.Errorf("model = %q, want the chat flag's value", s.String("model"))
	}
}

func TestEnvName(t *testing.T) {
	if got := EnvName("server.api-key"); got != "CHATGLM_SERVER_API_KEY" {
		t.Errorf("EnvName = %q", got)
	}
}

func TestKeySpelling(t *testing.T) {
	for _, name := range []string{"server.read_timeout", "threads", "gpu.layers"} {
		if !validKeyName(name) {
			t.Errorf("%q refused", name)
		}
	}
	for _, name := range []string{"hub.min-rate", "Server.web", "", ".a", "a.", "a..b", "a b"} {
		if validKeyName(name) {
			t.Errorf("%q accepted", name)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("Declare accepted a key with a dash")
		}
	}()
	New().Declare(nil, Key{Name: "hub.min-rate", Default: 1})
}
