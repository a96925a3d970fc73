package binding

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/cgo"
	"sync"
	"unsafe"
)

// ModelParams controls how a model is loaded.
type ModelParams struct {
	// GPULayers is the number of layers to offload to GPUs: 0 keeps the
	// model on the CPU, a negative value offloads every layer.
	GPULayers int
	// NoMmap reads the weights into memory instead of mapping the file.
	NoMmap bool
	// Mlock locks the weights in RAM.
	Mlock bool
	// VocabOnly loads only the vocabulary and metadata.
	VocabOnly bool
	// CheckTensors validates tensor data while loading.
	CheckTensors bool
	// Progress, if set, is called with values from 0 to 1 while loading.
	Progress func(fraction float32)
}

// Model is a loaded GGUF model. Its methods are safe for concurrent use,
// Close included: after Close, methods that return an error return
// ErrClosed, lookups that need the weights or vocabulary return zero values,
// and the facts read at load (sizes, special tokens, description) stay.
type Model struct {
	mu       sync.RWMutex // held for reading by every use of c and vocab
	c        *C.struct_llama_model
	vocab    *C.struct_llama_vocab
	path     string
	contexts int
	leak     runtime.Cleanup

	// Read at load; they never change.
	desc                                   string
	size, nParams                          uint64
	ctxTrain, embd, layers, heads, headsKV int
	nVocab                                 int
	eos, bos                               int32
	addBOS                                 bool
}

// warnLeak is the cleanup of an object garbage-collected without Close:
// its C memory cannot be freed safely any more, so it is reported.
func warnLeak(what string) {
	slog.Warn("binding: garbage-collected without Close; its C memory is leaked", "object", what)
}

// progressState travels through a cgo.Handle to the progress callback.
type progressState struct {
	ctx context.Context
	fn  func(float32)
}

//export chatglmGoProgress
func chatglmGoProgress(progress C.float, h C.uintptr_t) C.bool {
	st := cgo.Handle(h).Value().(*progressState)
	if st.ctx.Err() != nil {
		return false
	}
	if st.fn != nil {
		st.fn(float32(progress))
	}
	return true
}

// ggufMagic is the first four bytes of every GGUF file.
var ggufMagic = []byte("GGUF")

// checkGGUF gives a clear error for a missing or non-GGUF file before
// llama.cpp sees it.
func checkGGUF(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	head := make([]byte, 4)
	if _, err := io.ReadFull(f, head); err != nil {
		return fmt.Errorf("not a GGUF file (too short): %w", err)
	}
	if string(head) != string(ggufMagic) {
		return fmt.Errorf("not a GGUF file (magic %q)", head)
	}
	return nil
}

// LoadModel loads the GGUF model at path. Cancelling ctx aborts the load.
func LoadModel(ctx context.Context, path string, p ModelParams) (*Model, error) {
	Init()
	if err := checkGGUF(path); err != nil {
		return nil, fmt.Errorf("load model %s: %w", path, err)
	}
	mp := C.llama_model_default_params()
	if p.GPULayers < 0 {
		mp.n_gpu_layers = C.int32_t(1 << 30)
	} else {
		mp.n_gpu_layers = C.int32_t(p.GPULayers)
	}
	mp.use_mmap = C.bool(!p.NoMmap)
	mp.use_mlock = C.bool(p.Mlock)
	mp.vocab_only = C.bool(p.VocabOnly)
	mp.check_tensors = C.bool(p.CheckTensors)

	h := cgo.NewHandle(&progressState{ctx: ctx, fn: p.Progress})
	defer h.Delete()
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var m *C.struct_llama_model
	logged := captureOnce(func() { m = C.chatglm_load_model(cpath, mp, C.uintptr_t(h)) })
	if m == nil {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("load model %s: %w", path, err)
		}
		return nil, llamaError(fmt.Sprintf("load model %s: llama.cpp could not load it", path), logged)
	}
	v := C.llama_model_get_vocab(m)
	model := &Model{
		c: m, vocab: v, path: path,
		size:     uint64(C.llama_model_size(m)),
		nParams:  uint64(C.llama_model_n_params(m)),
		ctxTrain: int(C.llama_model_n_ctx_train(m)),
		embd:     int(C.llama_model_n_embd(m)),
		layers:   int(C.llama_model_n_layer(m)),
		nVocab:   int(C.llama_vocab_n_tokens(v)),
		eos:      int32(C.llama_vocab_eos(v)),
		bos:      int32(C.llama_vocab_bos(v)),
		addBOS:   bool(C.llama_vocab_get_add_bos(v)),
	}
	// Head counts are per layer in llama.cpp (layer 0 is read), which
	// aborts when there are none: a vocab-only load has no layers.
	if model.layers > 0 {
		model.heads = int(C.llama_model_n_head(m))
		model.headsKV = int(C.llama_model_n_head_kv(m))
	}
	buf := make([]byte, 256)
	if n := C.llama_model_desc(m, (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf))); n >= 0 {
		model.desc = string(buf[:min(int(n), len(buf)-1)])
	}
	model.leak = runtime.AddCleanup(model, warnLeak, "model "+path)
	return model, nil
}

// ErrClosed is returned by methods of a closed Model, Context or Sampler.
var ErrClosed = errors.New("binding: use of closed object")

// Close frees the model. It fails while contexts made from the model are
// still open. Calling Close again is a no-op.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.c == nil {
		return nil
	}
	if m.contexts > 0 {
		return fmt.Errorf("close model %s: %d context(s) still open", m.path, m.contexts)
	}
	C.llama_model_free(m.c)
	m.c = nil
	m.vocab = nil
	m.leak.Stop()
	return nil
}

// use runs f with the C model and vocabulary held open (Close waits for
// it), or returns ErrClosed.
func (m *Model) use(f func(c *C.struct_llama_model, v *C.struct_llama_vocab)) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.c == nil {
		return ErrClosed
	}
	f(m.c, m.vocab)
	return nil
}

// Path is the file the model was loaded from.
func (m *Model) Path() string { return m.path }

// Description is llama.cpp's one-line description, e.g. "chatglm 6B F16".
func (m *Model) Description() string { return m.desc }

// Size is the total size of the weights in bytes.
func (m *Model) Size() uint64 { return m.size }

// NParams is the number of weights.
func (m *Model) NParams() uint64 { return m.nParams }

// ContextLength is the context the model was trained with.
func (m *Model) ContextLength() int { return m.ctxTrain }

// EmbeddingLength is the hidden size.
func (m *Model) EmbeddingLength() int { return m.embd }

// Layers is the number of transformer blocks.
func (m *Model) Layers() int { return m.layers }

// Heads is the number of attention heads.
func (m *Model) Heads() int { return m.heads }

// HeadsKV is the number of key/value heads.
func (m *Model) HeadsKV() int { return m.headsKV }

// VocabSize is the number of tokens in the vocabulary.
func (m *Model) VocabSize() int { return m.nVocab }

// Meta returns the metadata value of key as a string, and whether it exists.
func (m *Model) Meta(key string) (string, bool) {
	ckey := C.CString(key)
	defer C.free(unsafe.Pointer(ckey))
	var val string
	var ok bool
	m.use(func(c *C.struct_llama_model, _ *C.struct_llama_vocab) {
		val, ok = metaString(func(buf *C.char, n C.size_t) C.int32_t { return C.llama_model_meta_val_str(c, ckey, buf, n) })
	})
	return val, ok
}

// metaString reads a string from one of llama.cpp's snprintf-style metadata
// getters, growing the buffer until the whole value fits.
func metaString(get func(buf *C.char, n C.size_t) C.int32_t) (string, bool) {
	buf := make([]byte, 1024)
	for {
		n := int(get((*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf))))
		if n < 0 {
			return "", false
		}
		if n < len(buf) {
			return string(buf[:n]), true
		}
		buf = make([]byte, n+1)
	}
}

// Metadata returns every metadata key and value as strings (arrays are
// summarised by llama.cpp).
func (m *Model) Metadata() map[string]string {
	out := map[string]string{}
	m.use(func(c *C.struct_llama_model, _ *C.struct_llama_vocab) {
		n := int(C.llama_model_meta_count(c))
		for i := 0; i < n; i++ {
			k, ok1 := metaString(func(buf *C.char, n C.size_t) C.int32_t {
				return C.llama_model_meta_key_by_index(c, C.int32_t(i), buf, n)
			})
			v, ok2 := metaString(func(buf *C.char, n C.size_t) C.int32_t {
				return C.llama_model_meta_val_str_by_index(c, C.int32_t(i), buf, n)
			})
			if ok1 && ok2 {
				out[k] = v
			}
		}
	})
	return out
}

// Architecture is general.architecture, e.g. "chatglm".
func (m *Model) Architecture() string {
	s, _ := m.Meta("general.architecture")
	return s
}

// Name is general.name, if the file has one.
func (m *Model) Name() string {
	s, _ := m.Meta("general.name")
	return s
}

// ChatTemplate returns the model's chat template (tokenizer.chat_template),
// or "" if it has none.
func (m *Model) ChatTemplate() string {
	var out string
	m.use(func(c *C.struct_llama_model, _ *C.struct_llama_vocab) {
		if t := C.llama_model_chat_template(c, nil); t != nil {
			out = C.GoString(t)
		}
	})
	return out
}

// Tokenize converts text to token ids. addSpecial lets the model add its
// BOS/EOS tokens; parseSpecial lets text such as "<|user|>" become control
// tokens (leave it false for user input).
func (m *Model) Tokenize(text string, addSpecial, parseSpecial bool) ([]int32, error) {
	if len(text) > 1<<30 {
		return nil, fmt.Errorf("tokenize: text of %d bytes is too long", len(text))
	}
	ctext := C.CString(text)
	defer C.free(unsafe.Pointer(ctext))
	toks := make([]int32, len(text)+8)
	var out []int32
	var err error
	if cerr := m.use(func(_ *C.struct_llama_model, v *C.struct_llama_vocab) {
		for {
			n := int(C.llama_tokenize(v, ctext, C.int32_t(len(text)),
				(*C.llama_token)(unsafe.Pointer(&toks[0])), C.int32_t(len(toks)), C.bool(addSpecial), C.bool(parseSpecial)))
			switch {
			case n >= 0:
				out = toks[:n]
				return
			case n == -(1 << 31):
				err = fmt.Errorf("tokenize: result overflows")
				return
			default:
				toks = make([]int32, -n)
			}
		}
	}); cerr != nil {
		return nil, fmt.Errorf("tokenize: %w", cerr)
	}
	return out, err
}

// ValidToken reports whether id is in the vocabulary.
func (m *Model) ValidToken(id int32) bool { return id >= 0 && int(id) < m.nVocab }

// TokenPiece returns the raw bytes of one token, which may be part of a
// UTF-8 character. With special, control tokens are rendered by name.
func (m *Model) TokenPiece(id int32, special bool) ([]byte, error) {
	if !m.ValidToken(id) {
		return nil, fmt.Errorf("token %d out of range [0, %d)", id, m.nVocab)
	}
	buf := make([]byte, 64)
	if err := m.use(func(_ *C.struct_llama_model, v *C.struct_llama_vocab) {
		for {
			n := int(C.llama_token_to_piece(v, C.llama_token(id), (*C.char)(unsafe.Pointer(&buf[0])), C.int32_t(len(buf)), 0, C.bool(special)))
			if n >= 0 {
				buf = buf[:n]
				return
			}
			buf = make([]byte, -n)
		}
	}); err != nil {
		return nil, fmt.Errorf("token %d: %w", id, err)
	}
	return buf, nil
}

// Detokenize converts token ids back to text. removeSpecial drops BOS/EOS
// where the model adds them; unparseSpecial renders control tokens by name.
func (m *Model) Detokenize(ids []int32, removeSpecial, unparseSpecial bool) (string, error) {
	for i, id := range ids {
		if !m.ValidToken(id) {
			return "", fmt.Errorf("detokenize: token %d (at %d) out of range [0, %d)", id, i, m.nVocab)
		}
	}
	if len(ids) == 0 {
		if m.use(func(*C.struct_llama_model, *C.struct_llama_vocab) {}) != nil {
			return "", fmt.Errorf("detokenize: %w", ErrClosed)
		}
		return "", nil
	}
	buf := make([]byte, len(ids)*8+16)
	if err := m.use(func(_ *C.struct_llama_model, v *C.struct_llama_vocab) {
		for {
			n := int(C.llama_detokenize(v, (*C.llama_token)(unsafe.Pointer(&ids[0])), C.int32_t(len(ids)),
				(*C.char)(unsafe.Pointer(&buf[0])), C.int32_t(len(buf)), C.bool(removeSpecial), C.bool(unparseSpecial)))
			if n >= 0 {
				buf = buf[:n]
				return
			}
			buf = make([]byte, -n)
		}
	}); err != nil {
		return "", fmt.Errorf("detokenize: %w", err)
	}
	return string(buf), nil
}

// TokenText is the vocabulary entry of a token (SentencePiece's "▁" kept),
// or "" for an id out of range or after Close.
func (m *Model) TokenText(id int32) string {
	var s string
	if m.ValidToken(id) {
		m.use(func(_ *C.struct_llama_model, v *C.struct_llama_vocab) {
			s = C.GoString(C.llama_vocab_get_text(v, C.llama_token(id)))
		})
	}
	return s
}

// IsEOG reports whether llama.cpp treats the token as end of generation
// (false for an id out of range or after Close).
func (m *Model) IsEOG(id int32) bool {
	return m.tokenIs(id, func(v *C.struct_llama_vocab, t C.llama_token) C.bool { return C.llama_vocab_is_eog(v, t) })
}

// IsControl reports whether the token is a control token (false for an id
// out of range or after Close).
func (m *Model) IsControl(id int32) bool {
	return m.tokenIs(id, func(v *C.struct_llama_vocab, t C.llama_token) C.bool { return C.llama_vocab_is_control(v, t) })
}

// tokenIs asks the vocabulary a yes/no question about a valid token.
func (m *Model) tokenIs(id int32, ask func(*C.struct_llama_vocab, C.llama_token) C.bool) bool {
	var ok bool
	if m.ValidToken(id) {
		m.use(func(_ *C.struct_llama_model, v *C.struct_llama_vocab) { ok = bool(ask(v, C.llama_token(id))) })
	}
	return ok
}

// EOS is the end-of-sequence token id.
func (m *Model) EOS() int32 { return m.eos }

// BOS is the beginning-of-sequence token id.
func (m *Model) BOS() int32 { return m.bos }

// Quantization types accepted by Quantize, by llama.cpp's names.
var quantTypes = map[string]C.enum_llama_ftype{
	"f32":    C.LLAMA_FTYPE_ALL_F32,
	"f16":    C.LLAMA_FTYPE_MOSTLY_F16,
	"bf16":   C.LLAMA_FTYPE_MOSTLY_BF16,
	"q8_0":   C.LLAMA_FTYPE_MOSTLY_Q8_0,
	"q6_K":   C.LLAMA_FTYPE_MOSTLY_Q6_K,
	"q5_K_M": C.LLAMA_FTYPE_MOSTLY_Q5_K_M,
	"q5_K_S": C.LLAMA_FTYPE_MOSTLY_Q5_K_S,
	"q5_0":   C.LLAMA_FTYPE_MOSTLY_Q5_0,
	"q5_1":   C.LLAMA_FTYPE_MOSTLY_Q5_1,
	"q4_K_M": C.LLAMA_FTYPE_MOSTLY_Q4_K_M,
	"q4_K_S": C.LLAMA_FTYPE_MOSTLY_Q4_K_S,
	"q4_0":   C.LLAMA_FTYPE_MOSTLY_Q4_0,
	"q4_1":   C.LLAMA_FTYPE_MOSTLY_Q4_1,
	"q3_K_M": C.LLAMA_FTYPE_MOSTLY_Q3_K_M,
	"q2_K":   C.LLAMA_FTYPE_MOSTLY_Q2_K,
}

// QuantTypes lists the type names Quantize accepts.
func QuantTypes() []string {
	return []string{"q8_0", "q6_K", "q5_K_M", "q5_K_S", "q5_0", "q5_1", "q4_K_M", "q4_K_S", "q4_0", "q4_1", "q3_K_M", "q2_K", "f16", "bf16", "f32"}
}

// Quantize writes a copy of the GGUF model in to out with the weights in
// the named type (see QuantTypes). It writes straight to out; callers that
// need atomic replacement write to a temporary name and rename.
func Quantize(in, out, typ string, threads int) error {
	Init()
	ft, ok := quantTypes[typ]
	if !ok {
		return fmt.Errorf("quantize: unknown type %q (want one of %v)", typ, QuantTypes())
	}
	if err := checkGGUF(in); err != nil {
		return fmt.Errorf("quantize %s: %w", in, err)
	}
	p := C.llama_model_quantize_default_params()
	p.ftype = ft
	p.nthread = C.int32_t(threads)
	cin, cout := C.CString(in), C.CString(out)
	defer C.free(unsafe.Pointer(cin))
	defer C.free(unsafe.Pointer(cout))
	var rc C.uint32_t
	logged := captureOnce(func() { rc = C.llama_model_quantize(cin, cout, &p) })
	if rc != 0 {
		return llamaError(fmt.Sprintf("quantize %s to %s", in, typ), logged)
	}
	return nil
}
