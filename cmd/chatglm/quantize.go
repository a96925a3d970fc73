package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/chatglm/chatglm/internal/config"
	"github.com/chatglm/chatglm/quantize"
)

func init() { register(newQuantizeCmd) }

// keyQuantizeForce lets quantize replace an existing output file.
const keyQuantizeForce = "quantize.force"

// newQuantizeCmd builds `chatglm quantize`.
func newQuantizeCmd(cfg *config.Store) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "quantize <in.gguf> <out.gguf> <type>",
		Short: "Quantize a GGUF model (q8_0, q6_K, q5_K_M, q4_K_M, q4_0, ...) with llama.cpp's quantizer",
		Long: `Quantize a GGUF model with llama.cpp's quantizer.

Types: ` + strings.Join(quantize.Types(), ", ") + `.
ChatGLM3's ffn_down rows (13696) are not a multiple of 256, so the k-quant
types (q6_K, q5_K_M, q4_K_M, ...) store those 28 tensors in a legacy
fallback type, as llama.cpp does; q8_0 and q4_0 apply everywhere. The output
head is kept at q6_K or better.

The output is written to <out.gguf>.tmp-* beside the target, fsynced and
renamed; on error or Ctrl-C the target is untouched and the temporary file
removed. An existing <out.gguf> is only replaced with --force. The progress
bar compares the bytes written with an estimate of the final size.`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			in, out, typ := args[0], args[1], args[2]
			if err := quantize.CheckType(typ); err != nil {
				return err
			}
			j := newJobProgress(cmd.ErrOrStderr())
			start := time.Now()
			err := quantize.File(cmd.Context(), in, out, typ, quantize.Options{
				Threads: cfg.Int(keyThreads),
				Force:   cfg.Bool(keyQuantizeForce),
				Progress: func(written, estimate int64) {
					j.show("quantizing to "+typ+" (size estimated)", written, estimate)
				},
			})
			j.end()
			if err != nil {
				return withForceHint(err)
			}
			size := int64(0)
			if st, err := os.Stat(out); err == nil {
				size = st.Size()
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (%s, %.2f GiB) in %s\n", out, typ, float64(size)/(1<<30), time.Since(start).Round(100*time.Millisecond))
			return nil
		},
	}
	cfg.Declare(cmd.Flags(),
		config.Key{Name: keyThreads, Flag: "threads", Short: "t", Default: 0, Usage: "CPU threads (0 = all cores)"},
		config.Key{Name: keyQuantizeForce, Flag: "force", Default: false, Usage: "replace the output file if it exists"},
	)
	return cmd
}
