package binding

/*
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
)

// errSink receives the error lines llama.cpp logs while one call runs, so
// that the error is reported to that call: every Context has its own, and
// calls without a context (load, quantize) make one for the call. The C
// buffer is owned by the errSink and freed by free.
type errSink struct {
	c *C.chatglm_errbuf
}

func newErrSink() *errSink { return &errSink{c: C.chatglm_errbuf_new()} }

func (s *errSink) free() {
	if s.c != nil {
		C.chatglm_errbuf_free(s.c)
		s.c = nil
	}
}

// capture runs f, which calls into llama.cpp, with the sink installed on
// the calling thread, and returns the error records logged meanwhile,
// joined in one line ("" if none). Callers serialise captures on one sink.
func (s *errSink) capture(f func()) string {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	C.chatglm_errbuf_begin(s.c)
	f()
	C.chatglm_errbuf_end()
	return oneLine(C.GoString(C.chatglm_errbuf_text(s.c)))
}

// oneLine joins a multi-line log record into one line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// llamaError is msg, with llama.cpp's logged reason appended when it gave one.
func llamaError(msg, logged string) error {
	if logged != "" {
		return fmt.Errorf("%s: %s", msg, logged)
	}
	return errors.New(msg)
}

// captureOnce runs f with a sink made for this call.
func captureOnce(f func()) string {
	s := newErrSink()
	defer s.free()
	return s.capture(f)
}
