package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/chatglm/chatglm/convert"
	"github.com/chatglm/chatglm/internal/config"
)

func init() { register(newConvertCmd) }

// Config keys of the convert command.
const (
	convOutput  = "convert.output"
	convType    = "convert.type"
	convForce   = "convert.force"
	convThreads = "convert.threads"
)

// newConvertCmd builds `chatglm convert <hf-dir> -o <model.gguf>`.
func newConvertCmd(cfg *config.Store) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "convert <hf-dir> -o <model.gguf>",
		Short: "Convert a ChatGLM3 HuggingFace checkpoint (safetensors or .bin) to GGUF",
		Long: `Convert a ChatGLM3 HuggingFace checkpoint folder (config.json, safetensors or
PyTorch .bin weights, tokenizer.model, tokenizer_config.json) into a GGUF file
for llama.cpp's chatglm architecture. 2-D weights take --type (default f16);
norms and biases stay f32. The output is written to a temporary file beside the
target and renamed into place when complete.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cfg.String(convOutput)
			if out == "" {
				return fmt.Errorf("convert: -o/--output is required")
			}
			prog, finish := convertProgress(cmd.ErrOrStderr())
			res, err := convert.Convert(cmd.Context(), convert.Options{
				Input: args[0], Output: out, Type: cfg.String(convType),
				Force: cfg.Bool(convForce), Threads: cfg.Int(convThreads), Progress: prog,
			})
			finish()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: %d tensors, %s, %d parameters from %s, %.2f GB in %s\n",
				res.Output, res.Tensors, res.Type, res.Params, res.Format, float64(res.Bytes)/1e9, res.Duration.Round(time.Millisecond))
			return nil
		},
	}
	cfg.Declare(cmd.Flags(),
		config.Key{Name: convOutput, Flag: "output", Short: "o", Default: "", Usage: "GGUF file to write"},
		config.Key{Name: convType, Flag: "type", Default: "f16", Usage: "type of 2-D weights: f16, bf16 or f32"},
		config.Key{Name: convForce, Flag: "force", Default: false, Usage: "overwrite an existing output file"},
		config.Key{Name: convThreads, Flag: "threads", Default: 0, Usage: "conversion threads (0 = all cores)"},
	)
	return cmd
}

// convertProgress shows a byte progress bar on a terminal, or a plain line
// per 10% otherwise. The returned func ends the display.
func convertProgress(w io.Writer) (func(convert.Progress), func()) {
	f, isFile := w.(*os.File)
	if isFile && term.IsTerminal(int(f.Fd())) {
		var bar *progressbar.ProgressBar
		return func(p convert.Progress) {
				if bar == nil {
					bar = progressbar.NewOptions64(p.TotalBytes, progressbar.OptionSetWriter(w),
						progressbar.OptionShowBytes(true), progressbar.OptionSetWidth(30),
						progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionShowCount(),
						progressbar.OptionClearOnFinish())
				}
				bar.Describe(fmt.Sprintf("tensor %d/%d %-28s", p.TensorIndex, p.Tensors, p.Tensor))
				bar.Set64(p.Bytes)
			}, func() {
				if bar != nil {
					bar.Finish()
				}
			}
	}
	last := -1
	return func(p convert.Progress) {
		pct := 0
		if p.TotalBytes > 0 {
			pct = int(100 * p.Bytes / p.TotalBytes)
		}
		if pct/10 != last/10 || last < 0 {
			last = pct
			fmt.Fprintf(w, "convert: %3d%%  tensor %d/%d %s  %.2f/%.2f GB\n", pct, p.TensorIndex, p.Tensors, p.Tensor, float64(p.Bytes)/1e9, float64(p.TotalBytes)/1e9)
		}
	}, func() {}
}
