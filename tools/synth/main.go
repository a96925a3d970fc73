// Command synth writes (once) the full-size synthetic ChatGLM3-6B
// checkpoint the conversion benchmark reads: real shapes and shard layout,
// random f16 values, about 12.5 GB.
//
//	go run ./tools/synth -o DIR
//
// DIR defaults to $CHATGLM_BENCH_DIR or ~/.cache/chatglm-bench/chatglm3-6b-synth.
// It prints the folder on stdout when done.
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/chatglm/chatglm/internal/fixture/shareddata"
	"github.com/chatglm/chatglm/internal/fixture/testmodel"
)

func main() {
	def := os.Getenv("CHATGLM_BENCH_DIR")
	if def == "" {
		home, _ := os.UserHomeDir()
		def = filepath.Join(home, ".cache", "chatglm-bench")
	}
	out := flag.String("o", filepath.Join(def, "chatglm3-6b-synth"), "folder to write the checkpoint into")
	tok := flag.String("testdata", filepath.Join(shareddata.Dir(), "chatglm3-6b"), "folder with the real config.json, tokenizer and index files")
	flag.Parse()
	err := testmodel.Synth(*out, *tok, func(format string, args ...any) {
		slog.Info(fmt.Sprintf(format, args...))
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "synth:", err)
		os.Exit(1)
	}
	fmt.Println(*out)
}
