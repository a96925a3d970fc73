// Command fetch makes sure the shared test data folder (see package
// internal/fixture/shareddata) holds the real ChatGLM3-6B tokenizer and config files.
// When they are present it prints nothing and exits at once; otherwise it
// downloads the missing ones from the Hub (THUDM/chatglm3-6b; HF_ENDPOINT
// and HF_TOKEN apply) with package hub and checks tokenizer.model's sha256.
// `make testdata` runs it before the tests.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/chatglm/chatglm/hub"
	"github.com/chatglm/chatglm/internal/fixture/shareddata"
)

const (
	repo            = "THUDM/chatglm3-6b"
	tokenizerSHA256 = "e7dc4c393423b76e4373e5157ddc34803a0189ba96b21ddbb40269d31468a6f2"
)

var wanted = []string{"tokenizer.model", "config.json", "tokenizer_config.json"}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "testdata:", err)
		os.Exit(1)
	}
}

func run() error {
	dir := filepath.Join(shareddata.Dir(), "chatglm3-6b")
	var missing []string
	for _, f := range wanted {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			missing = append(missing, f)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(os.Stderr, "testdata: fetching %v of %s into %s\n", missing, repo, dir)
	if _, err := hub.Pull(ctx, hub.Options{Repo: repo, LocalDir: dir, Files: missing}); err != nil {
		return fmt.Errorf("fetching %s test files (set %s to a folder that has them): %w", repo, shareddata.Env, err)
	}
	sum, err := fileSHA256(filepath.Join(dir, "tokenizer.model"))
	if err != nil {
		return err
	}
	if sum != tokenizerSHA256 {
		return fmt.Errorf("%s: sha256 %s, want %s", filepath.Join(dir, "tokenizer.model"), sum, tokenizerSHA256)
	}
	_ = os.RemoveAll(filepath.Join(dir, ".chatglm-partial"))
	return nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
