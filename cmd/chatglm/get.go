package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/chatglm/chatglm/binding"
	"github.com/chatglm/chatglm/convert"
	"github.com/chatglm/chatglm/gguf"
	"github.com/chatglm/chatglm/hub"
	"github.com/chatglm/chatglm/internal/config"
	"github.com/chatglm/chatglm/internal/progress"
	"github.com/chatglm/chatglm/quantize"
)

func init() { register(newGetCmd) }

const keyGetType = "get.type"

// newGetCmd builds `chatglm get`: pull, convert, verify, print.
func newGetCmd(cfg *config.Store) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "get <org/name>",
		Short: "Pull a model, convert it to GGUF in the store, check that it loads and print how to run it",
		Long: `One command from nothing to a chat-ready model: pull the repo (see ` + "`chatglm pull`" + `),
convert it to a GGUF file in the store next to the pulled files, read the GGUF back to
check it, then print its path and the command to chat with it. Running it again when
the model is ready only says so.`,
		Example: "  chatglm get THUDM/chatglm3-6b\n  chatglm get THUDM/chatglm3-6b --type q4_0",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runGet(cmd.Context(), cfg, args[0], cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	declarePullKeys(cfg, cmd)
	cfg.Declare(cmd.Flags(),
		config.Key{Name: keyGetType, Flag: "type", Default: "f16", Usage: "GGUF weight type: f16, bf16, f32, or a quantized type made from the f16 file (q8_0, q6_K, q5_K_M, q4_K_M, q4_0, ...)"})
	return cmd
}

func runGet(ctx context.Context, cfg *config.Store, repo string, stdout, stderr io.Writer) error {
	typ := cfg.String(keyGetType)
	quantized := false
	if _, err := convert.ParseType(typ); err != nil {
		if qerr := quantize.CheckType(typ); qerr != nil {
			return fmt.Errorf("--type %q: want f16, bf16, f32 or one of %v", typ, quantize.Types())
		}
		quantized = true
	}
	quiet := cfg.Bool(keyQuiet)
	opts := pullOptions(cfg, repo, stderr)
	st := hub.NewStore(opts.Dir)
	rev := opts.Revision
	if rev == "" {
		rev = "main"
		if opts.Source == "modelscope" || opts.Source == "ms" {
			rev = "master"
		}
	}
	// Already there: say so without touching the network.
	if p, err := st.FindGGUF(repo, rev, typ); err == nil {
		if err := checkGGUF(p); err == nil {
			ready(stdout, stderr, quiet, repo, p, "ready")
			return nil
		}
	}
	stage(stderr, quiet, "pulling %s...", repo)
	res, err := hub.Pull(ctx, opts)
	if err != nil {
		return err
	}
	out, err := st.GGUFPath(repo, res.ID, typ)
	if err != nil {
		return err
	}
	if _, err := os.Stat(out); err == nil && checkGGUF(out) == nil {
		ready(stdout, stderr, quiet, repo, out, "ready")
		return nil
	}
	// Quantized types are made from the f16 conversion, which is kept.
	convType, convOut := typ, out
	if quantized {
		convType = "f16"
		if convOut, err = st.GGUFPath(repo, res.ID, convType); err != nil {
			return err
		}
	}
	if _, err := os.Stat(convOut); err != nil || checkGGUF(convOut) != nil {
		if err := convertSnapshot(ctx, res.Dir, convOut, convType, quiet, repo, stderr); err != nil {
			return err
		}
	}
	if quantized {
		stage(stderr, quiet, "quantizing %s to %s...", repo, typ)
		qopts := quantize.Options{Force: true}
		end := func() {}
		if !quiet {
			j := newJobProgress(stderr)
			qopts.Progress = func(written, estimate int64) { j.show("quantizing (size estimated)", written, estimate) }
			end = j.end
		}
		err := quantize.File(ctx, convOut, out, typ, qopts)
		end()
		if err != nil {
			return fmt.Errorf("quantizing %s: %w", convOut, err)
		}
		stage(stderr, quiet, "checking %s...", out)
		if err := checkGGUF(out); err != nil {
			os.Remove(out)
			return fmt.Errorf("the quantized model does not load: %w", err)
		}
	}
	ready(stdout, stderr, quiet, repo, out, "converted")
	return nil
}

// convertSnapshot converts a pulled snapshot to a GGUF of type typ and
// checks that it loads.
func convertSnapshot(ctx context.Context, dir, out, typ string, quiet bool, repo string, stderr io.Writer) error {
	stage(stderr, quiet, "converting %s to %s GGUF...", repo, typ)
	copts := convert.Options{Input: dir, Output: out, Type: typ, Force: true}
	end := func() {}
	if !quiet {
		copts.Progress, end = convertProgress(stderr)
	}
	cres, err := convert.Convert(ctx, copts)
	end()
	if err != nil {
		return fmt.Errorf("converting %s: %w", dir, err)
	}
	stage(stderr, quiet, "converted %d tensors, %s in %s", cres.Tensors, progress.Bytes(cres.Bytes), cres.Duration.Round(100*time.Millisecond))
	stage(stderr, quiet, "checking %s...", cres.Output)
	if err := checkGGUF(cres.Output); err != nil {
		os.Remove(cres.Output)
		return fmt.Errorf("the converted model does not load: %w", err)
	}
	return nil
}

// checkGGUF checks that a model file is a complete chatglm GGUF that
// llama.cpp accepts: the header and tensor table read back, and llama.cpp
// loads its metadata and vocabulary.
func checkGGUF(path string) error {
	f, err := gguf.Open(path)
	if err != nil {
		return err
	}
	if a := f.String("general.architecture"); a != "chatglm" {
		return fmt.Errorf("%s: architecture %q, want chatglm", path, a)
	}
	if len(f.Tensors) == 0 {
		return fmt.Errorf("%s: no tensors", path)
	}
	m, err := binding.LoadModel(context.Background(), path, binding.ModelParams{VocabOnly: true})
	if err != nil {
		return err
	}
	return m.Close()
}

// stage prints a step of a multi-step command (pull, convert, check) on a
// line of its own on stderr.
func stage(stderr io.Writer, quiet bool, format string, args ...any) {
	if !quiet {
		fmt.Fprintf(stderr, format+"\n", args...)
	}
}

func ready(stdout, stderr io.Writer, quiet bool, repo, path, what string) {
	if !quiet {
		fmt.Fprintf(stderr, "%s is %s: %s\nnext: chatglm chat -m %s\n", repo, what, path, repo)
	}
	fmt.Fprintln(stdout, path)
}
