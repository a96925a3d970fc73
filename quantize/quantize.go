// Package quantize turns a GGUF model into a quantized GGUF file with
// llama.cpp's quantizer, writing the output atomically: the data goes to a
// temporary file beside the target (<target>.tmp-*), which is fsynced and
// then renamed into place. On error or cancellation the target is left
// untouched and the temporary file is removed. An existing target is only
// replaced with Options.Force.
//
// llama.cpp's quantizer has no progress callback and cannot be interrupted,
// so progress is the size of the temporary file against an estimate of the
// final size, and a cancelled quantization returns at once while llama.cpp
// finishes in the background into the already removed temporary file.
package quantize

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/chatglm/chatglm/binding"
	"github.com/chatglm/chatglm/gguf"
	"github.com/chatglm/chatglm/internal/atomicfile"
)

// Options control File.
type Options struct {
	// Threads for llama.cpp's quantizer (0 = one per CPU).
	Threads int
	// Force replaces an existing target; without it File fails with an
	// error wrapping fs.ErrExist.
	Force bool
	// Progress, if set, is called about every ProgressInterval (and once at
	// the end with written == estimate) with the bytes written so far and
	// the estimated final size. It runs on its own goroutine.
	Progress func(written, estimate int64)
	// ProgressInterval is how often Progress is called (default 250ms).
	ProgressInterval time.Duration
}

// Types lists the quantization types File accepts, by llama.cpp's names
// (q8_0, q6_K, q5_K_M, q4_K_M, q4_0, ...).
func Types() []string { return binding.QuantTypes() }

// CheckType returns an error unless typ is one of Types.
func CheckType(typ string) error {
	if !slices.Contains(Types(), typ) {
		return fmt.Errorf("unknown quantization type %q (want one of %s)", typ, strings.Join(Types(), ", "))
	}
	return nil
}

// File quantizes the GGUF model in to type typ and writes it to out
// atomically (see the package comment).
func File(ctx context.Context, in, out, typ string, o Options) (err error) {
	if err := CheckType(typ); err != nil {
		return fmt.Errorf("quantize: %w", err)
	}
	absIn, err1 := filepath.Abs(in)
	absOut, err2 := filepath.Abs(out)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("quantize: %w", err)
	}
	if absIn == absOut {
		return fmt.Errorf("quantize: input and output are the same file %s", in)
	}
	st, err := os.Stat(in)
	if err != nil {
		return fmt.Errorf("quantize: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("quantize: %s is not a regular file", in)
	}
	estimate, err := EstimateSize(in, typ)
	if err != nil {
		return fmt.Errorf("quantize: %w", err)
	}
	if err := checkTarget(out, o.Force); err != nil {
		return fmt.Errorf("quantize: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("quantize: %w", err)
	}

	tmpf, err := atomicfile.TempFile(absOut)
	if err != nil {
		return fmt.Errorf("quantize: %w", err)
	}
	tmp := tmpf.Name()
	// llama.cpp truncates and fills this file, keeping its mode: the
	// model is readable by all, as convert's output is.
	err = tmpf.Chmod(0o644)
	tmpf.Close()
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("quantize: %w", err)
	}
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()

	done := make(chan error, 1)
	go func() {
		qerr := binding.Quantize(in, tmp, typ, o.Threads)
		if ctx.Err() != nil {
			// The caller has gone; llama.cpp may have (re)created the file
			// after the caller removed it.
			os.Remove(tmp)
		}
		done <- qerr
	}()

	interval := o.ProgressInterval
	if interval <= 0 {
		interval = 250 * time.Millisecond
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	report := func() {
		if o.Progress == nil {
			return
		}
		if fi, err := os.Stat(tmp); err == nil {
			// Never report completion before it happens.
			o.Progress(min(fi.Size(), estimate*99/100), estimate)
		}
	}
wait:
	for {
		select {
		case qerr := <-done:
			if qerr != nil {
				return fmt.Errorf("quantize: %w", qerr)
			}
			break wait
		case <-ctx.Done():
			return fmt.Errorf("quantize %s: %w", in, ctx.Err())
		case <-tick.C:
			report()
		}
	}

	if err := ctx.Err(); err != nil {
		return fmt.Errorf("quantize %s: %w", in, err)
	}
	if err := atomicfile.Install(tmp, absOut, o.Force); err != nil {
		return fmt.Errorf("quantize: %w", err)
	}
	if o.Progress != nil {
		if fi, err := os.Stat(absOut); err == nil {
			o.Progress(fi.Size(), fi.Size())
		}
	}
	return nil
}

// checkTarget fails if out exists and force is off, or if out is not a
// regular file.
func checkTarget(out string, force bool) error {
	st, err := os.Stat(out)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case !st.Mode().IsRegular():
		return fmt.Errorf("%s exists and is not a regular file", out)
	case !force:
		return fmt.Errorf("%s: %w", out, fs.ErrExist)
	}
	return nil
}

// bitsPerWeight is the storage cost of each ggml type used by the
// quantization types, in bits per weight.
var bitsPerWeight = map[string]float64{
	"q8_0": 8.5, "q6_K": 6.5625, "q5_K_M": 5.69, "q5_K_S": 5.54, "q5_0": 5.5, "q5_1": 6,
	"q4_K_M": 4.89, "q4_K_S": 4.58, "q4_0": 4.5, "q4_1": 5, "q3_K_M": 3.91, "q2_K": 3.35,
	"f16": 16, "bf16": 16, "f32": 32,
}

// EstimateSize estimates the size of in quantized to typ: 2-D weight
// tensors at the type's average bits per weight (the output head at q6_K,
// as llama.cpp does for most types), everything else as it is. It is meant
// for progress bars, not for allocation.
func EstimateSize(in, typ string) (int64, error) {
	if err := CheckType(typ); err != nil {
		return 0, err
	}
	f, err := gguf.Open(in)
	if err != nil {
		return 0, err
	}
	size := int64(f.DataOffset)
	for _, t := range f.Tensors {
		quantized := strings.HasSuffix(t.Name, "weight") && len(t.Dims) >= 2
		if !quantized {
			size += int64(t.Size)
			continue
		}
		bpw := bitsPerWeight[typ]
		if t.Name == "output.weight" && bpw < 6.5625 {
			bpw = 6.5625
		}
		size += int64(float64(t.Elements()) * bpw / 8)
	}
	return size, nil
}
