package convert

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/chatglm/chatglm/gguf"
	"github.com/chatglm/chatglm/internal/atomicfile"
	"github.com/chatglm/chatglm/spm"
)

// Options configures Convert.
type Options struct {
	Input   string // checkpoint folder
	Output  string // GGUF file to write
	Type    string // output type of 2-D weights: "f16" (default), "bf16" or "f32"
	Force   bool   // overwrite an existing Output (else Convert fails with an error wrapping fs.ErrExist)
	Threads int    // conversion workers; 0 means all cores
	Name    string // general.name; default: the model name from config.json or the folder
	// Progress, if set, is called from one goroutine after each chunk of
	// tensor data is written.
	Progress func(Progress)
	// ChunkBytes is the size of the pieces tensors are converted in (input
	// bytes); 0 means 4 MiB. Memory use is about 3 × (Threads+2) × ChunkBytes.
	ChunkBytes int
}

// Progress reports how far a conversion is.
type Progress struct {
	Tensor      string // GGUF name of the tensor being written
	TensorIndex int    // 1-based index of that tensor
	Tensors     int    // number of tensors
	Bytes       int64  // tensor data bytes written so far
	TotalBytes  int64  // tensor data bytes in all
}

// Result describes a finished conversion.
type Result struct {
	Output   string
	Type     gguf.GGMLType
	Format   string // source weight format: "safetensors" or "pytorch"
	Tensors  int
	Params   int64
	Bytes    int64 // size of the GGUF file
	Duration time.Duration
}

// ParseType maps the --type names to ggml types.
func ParseType(s string) (gguf.GGMLType, error) {
	switch strings.ToLower(s) {
	case "", "f16":
		return gguf.F16, nil
	case "bf16":
		return gguf.BF16, nil
	case "f32":
		return gguf.F32, nil
	}
	return 0, fmt.Errorf("unsupported output type %q (want f16, bf16 or f32)", s)
}

// Convert reads the ChatGLM3 checkpoint in opts.Input and writes a GGUF to
// opts.Output. The file is written as a temporary file beside the target,
// synced and renamed into place; on any error or cancellation the target is
// left as it was and the temporary file is removed.
func Convert(ctx context.Context, opts Options) (*Result, error) {
	start := time.Now()
	want, err := ParseType(opts.Type)
	if err != nil {
		return nil, err
	}
	if opts.Output == "" {
		return nil, errors.New("convert: no output file")
	}
	if !opts.Force {
		if _, err := os.Stat(opts.Output); err == nil {
			return nil, fmt.Errorf("convert: %s: %w", opts.Output, fs.ErrExist)
		}
	}
	cfg, err := LoadConfig(opts.Input)
	if err != nil {
		return nil, err
	}
	pieces, err := spm.Load(filepath.Join(opts.Input, "tokenizer.model"))
	if err != nil {
		return nil, err
	}
	vocab, err := BuildVocab(pieces, cfg.PaddedVocabSize)
	if err != nil {
		return nil, fmt.Errorf("tokenizer %s: %w", filepath.Join(opts.Input, "tokenizer.model"), err)
	}
	tc, err := LoadTokenizerConfig(opts.Input)
	if err != nil {
		return nil, err
	}
	ck, err := OpenCheckpoint(opts.Input)
	if err != nil {
		return nil, err
	}
	maps, err := MapTensors(cfg, ck, want)
	if err != nil {
		return nil, err
	}
	var params int64
	for _, m := range maps {
		n, _ := numel(m.Src.Shape)
		params += n
	}
	name := opts.Name
	if name == "" {
		name = filepath.Base(strings.TrimRight(cfg.NameOrPath, "/"))
		if cfg.NameOrPath == "" || name == "." {
			name = filepath.Base(filepath.Clean(opts.Input))
		}
	}
	w := gguf.NewWriter()
	writeMetadata(w, cfg, name, params, want, vocab, tc)
	for _, m := range maps {
		w.AddTensor(m.Name, m.Type, m.Dims)
	}
	if _, err := w.Header(); err != nil {
		return nil, fmt.Errorf("convert: %w", err)
	}
	slog.Debug("convert plan", "input", opts.Input, "format", ck.Format, "tensors", len(maps), "type", want, "params", params)

	size, err := writeAtomically(ctx, opts.Output, opts.Force, func(f io.Writer) error {
		return writeGGUF(ctx, f, w, maps, opts)
	})
	if err != nil {
		return nil, err
	}
	return &Result{Output: opts.Output, Type: want, Format: ck.Format, Tensors: len(maps), Params: params, Bytes: size, Duration: time.Since(start)}, nil
}

// writeAtomically writes through fill into a temporary file beside path
// and moves it there when complete (see atomicfile); without force it never
// replaces a file that appeared meanwhile. It returns the bytes written.
func writeAtomically(ctx context.Context, path string, force bool, fill func(io.Writer) error) (int64, error) {
	var size int64
	write := atomicfile.Create
	if force {
		write = atomicfile.Write
	}
	err := write(path, 0o644, func(f *os.File) error {
		bw := bufio.NewWriterSize(f, 1<<20)
		if err := fill(bw); err != nil {
			return err
		}
		if err := bw.Flush(); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		st, err := f.Stat()
		if err != nil {
			return err
		}
		size = st.Size()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("convert: %w", err)
	}
	return size, nil
}

// chunk is one piece of one tensor's data moving through the pipeline.
type chunk struct {
	tensor int
	off    int64  // byte offset of the chunk within the source tensor
	in     []byte // read buffer (from the pool)
	out    []byte // converted bytes (from the pool, or in itself)
	outBuf []byte
	err    error
	done   chan struct{}
}

// converter returns the element conversion from a source dtype to a ggml type.
func converter(src string, dst gguf.GGMLType) (convertFunc, int, int, error) {
	switch {
	case src == "F16" && dst == gguf.F16:
		return nil, 2, 2, nil
	case src == "BF16" && dst == gguf.BF16:
		return nil, 2, 2, nil
	case src == "F32" && dst == gguf.F32:
		return nil, 4, 4, nil
	case src == "BF16" && dst == gguf.F16:
		return convBF16ToF16, 2, 2, nil
	case src == "F32" && dst == gguf.F16:
		return convF32ToF16, 4, 2, nil
	case src == "F16" && dst == gguf.F32:
		return convF16ToF32, 2, 4, nil
	case src == "BF16" && dst == gguf.F32:
		return convBF16ToF32, 2, 4, nil
	case src == "F32" && dst == gguf.BF16:
		return convF32ToBF16, 4, 2, nil
	case src == "F16" && dst == gguf.BF16:
		return convF16ToBF16, 2, 2, nil
	}
	return nil, 0, 0, fmt.Errorf("no conversion from %s to %s", src, dst)
}

// writeGGUF writes the header and streams every tensor: chunks are read and
// converted by Threads workers and written in order by this goroutine, with
// at most a fixed number of chunks in flight.
func writeGGUF(ctx context.Context, out io.Writer, w *gguf.Writer, maps []TensorMap, opts Options) error {
	threads := opts.Threads
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	chunkBytes := opts.ChunkBytes
	if chunkBytes <= 0 {
		chunkBytes = 4 << 20
	}
	chunkBytes = max(chunkBytes/4*4, 4)
	dw, err := w.WriteHeader(out)
	if err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	var total int64
	for _, t := range w.Tensors() {
		total += int64(t.Size)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	files := map[string]*os.File{}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, m := range maps {
		if files[m.Src.File] == nil {
			f, err := os.Open(m.Src.File)
			if err != nil {
				return fmt.Errorf("convert: tensor %s: %w", m.Src.Name, err)
			}
			files[m.Src.File] = f
		}
	}

	// At most inFlight chunks exist at once: each holds an input buffer of
	// chunkBytes and, when its data changes type, an output buffer of up to
	// 2 × chunkBytes. Buffers are allocated lazily and reused.
	inFlight := threads + 2
	inPool := newBufPool(inFlight, chunkBytes)
	outPool := newBufPool(inFlight, 2*chunkBytes)

	work := make(chan *chunk, inFlight)
	order := make(chan *chunk, inFlight)
	var wg sync.WaitGroup
	for i := 0; i < threads; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range work {
				c.err = process(ctx, c, maps[c.tensor], files[maps[c.tensor].Src.File])
				close(c.done)
			}
		}()
	}
	// Producer: cut every tensor into chunks of whole elements.
	prodErr := make(chan error, 1)
	go func() {
		defer close(order)
		defer close(work)
		for ti, m := range maps {
			conv, inSize, _, err := converter(m.Src.DType, m.Type)
			if err != nil {
				prodErr <- fmt.Errorf("convert: tensor %s in %s: %w", m.Src.Name, m.Src.File, err)
				return
			}
			per := int64(chunkBytes / inSize * inSize)
			for off := int64(0); off < m.Src.Size; off += per {
				n := min(per, m.Src.Size-off)
				c := &chunk{tensor: ti, off: off, done: make(chan struct{})}
				in, err := inPool.get(ctx)
				if err != nil {
					prodErr <- err
					return
				}
				c.in = in[:n]
				if conv != nil {
					if c.outBuf, err = outPool.get(ctx); err != nil {
						inPool.put(in)
						prodErr <- err
						return
					}
				}
				// order has the same capacity as the pools, so this never blocks
				// for long: the writer drains it.
				order <- c
				select {
				case work <- c:
				case <-ctx.Done():
					c.err = ctx.Err()
					close(c.done)
					prodErr <- ctx.Err()
					return
				}
			}
		}
		prodErr <- nil
	}()

	var written int64
	var werr error
	for c := range order {
		<-c.done
		if werr == nil && c.err != nil {
			werr = c.err
		}
		if werr == nil {
			if err := ctx.Err(); err != nil {
				werr = fmt.Errorf("convert: %w", err)
			}
		}
		if werr == nil {
			if _, err := dw.Write(c.out); err != nil {
				werr = fmt.Errorf("convert: write: %w", err)
			} else {
				written += int64(len(c.out))
				if opts.Progress != nil {
					opts.Progress(Progress{Tensor: maps[c.tensor].Name, TensorIndex: c.tensor + 1, Tensors: len(maps), Bytes: written, TotalBytes: total})
				}
			}
		}
		inPool.put(c.in)
		outPool.put(c.outBuf)
		if werr != nil {
			cancel()
		}
	}
	wg.Wait()
	if err := <-prodErr; werr == nil && err != nil {
		werr = err
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			werr = fmt.Errorf("convert: %w", err)
		}
	}
	if werr != nil {
		return werr
	}
	if err := dw.Close(); err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	return nil
}

// bufPool hands out at most n buffers of one size, allocating them lazily.
type bufPool struct {
	ch   chan []byte
	size int
}

func newBufPool(n, size int) *bufPool {
	p := &bufPool{ch: make(chan []byte, n), size: size}
	for i := 0; i < n; i++ {
		p.ch <- nil
	}
	return p
}

func (p *bufPool) get(ctx context.Context) ([]byte, error) {
	select {
	case b := <-p.ch:
		if b == nil {
			b = make([]byte, p.size)
		}
		return b, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *bufPool) put(b []byte) {
	if b != nil {
		p.ch <- b[:cap(b)]
	}
}

// process reads one chunk and converts it.
func process(ctx context.Context, c *chunk, m TensorMap, f *os.File) error {
	off := c.off
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	n, err := f.ReadAt(c.in, m.Src.Offset+off)
	if n < len(c.in) {
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("convert: tensor %s in %s: read %d bytes at %d: %w (truncated file?)", m.Src.Name, m.Src.File, len(c.in), m.Src.Offset+off, err)
	}
	conv, inSize, outSize, err := converter(m.Src.DType, m.Type)
	if err != nil {
		return fmt.Errorf("convert: tensor %s in %s: %w", m.Src.Name, m.Src.File, err)
	}
	if conv == nil {
		c.out = c.in
		return nil
	}
	elems := len(c.in) / inSize
	c.out = c.outBuf[:elems*outSize]
	conv(c.out, c.in, elems)
	return nil
}
