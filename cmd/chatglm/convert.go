package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/chatglm/chatglm/convert"
	"github.com/chatglm/chatglm/internal/config"
	"github.com/chatglm/chatglm/internal/progress"
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
				return withForceHint(err)
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

// convertProgress shows a conversion's progress on w: the tensor being
// written, tensors and bytes done of the total, speed and time left, as a
// bar redrawn in place on a terminal or a plain line every 5 seconds
// elsewhere. The returned func ends the display.
func convertProgress(w io.Writer) (func(convert.Progress), func()) {
	j := newJobProgress(w)
	return func(p convert.Progress) {
		j.show(fmt.Sprintf("converting: tensor %d/%d %s", p.TensorIndex, p.Tensors, p.Tensor), p.Bytes, p.TotalBytes)
	}, j.end
}

// jobProgress is the progress display of a convert or quantize job.
type jobProgress struct {
	d     *progress.Display
	meter *progress.Meter
	shown bool
}

func newJobProgress(w io.Writer) *jobProgress {
	return &jobProgress{d: progress.New(w, isTerminal(w), 5*time.Second), meter: progress.NewMeter(5 * time.Second)}
}

// show reports done of total bytes; the first and the last state are
// always shown, the rest as often as the display allows.
func (j *jobProgress) show(what string, done, total int64) {
	speed := j.meter.Observe(time.Now(), done)
	line := progress.Status(what, done, total, speed, j.d.Terminal())
	j.d.Update([]string{line}, !j.shown || done >= total)
	j.shown = true
}

// end removes the bar.
func (j *jobProgress) end() { j.d.Done("") }
