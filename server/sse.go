package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
)

// sse writes Server-Sent Events, one JSON object per data line, flushing
// each; the headers go out with the first event.
type sse struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	started bool
}

func newSSE(w http.ResponseWriter) *sse { return &sse{w: w, rc: http.NewResponseController(w)} }

func (s *sse) start() {
	if s.started {
		return
	}
	s.started = true
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no")
	s.w.WriteHeader(http.StatusOK)
	s.rc.Flush()
}

func (s *sse) write(data []byte) error {
	s.start()
	if _, err := s.w.Write(data); err != nil {
		return fmt.Errorf("write event: %w", err)
	}
	if err := s.rc.Flush(); err != nil {
		return fmt.Errorf("flush event: %w", err)
	}
	return nil
}

func (s *sse) send(v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	return s.write([]byte("data: " + string(data) + "\n\n"))
}

func (s *sse) done() error { return s.write([]byte("data: [DONE]\n\n")) }

// streamFormat is how one endpoint writes its reply as a stream of events.
type streamFormat struct {
	// start is the event sent once a sequence is held, before any text
	// (nil: only the headers go out then).
	start func() any
	// text is the event carrying a piece of reply text.
	text func(string) any
	// finish returns the events that end a reply, after its text.
	finish func(genResult) ([]any, error)
	// usage is the event with the token counts, sent last when the
	// request's stream_options ask for it.
	usage func(genResult) any
}

// streamReply generates spec's reply as Server-Sent Events in format f,
// then data: [DONE]. An error before the first event is an ordinary error
// response; after it, an error event ends the stream (nothing when the
// client went away).
func (s *Server) streamReply(ctx context.Context, w http.ResponseWriter, ri *reqInfo, st *ready, spec *genSpec, f streamFormat, includeUsage bool) {
	sse := newSSE(w)
	onStart := func() error {
		if f.start == nil {
			sse.start()
			return nil
		}
		return sse.send(f.start())
	}
	res, err := s.generate(ctx, st, spec, onStart, func(text string) error { return sse.send(f.text(text)) })
	s.account(ri, res)
	var events []any
	if err == nil {
		events, err = f.finish(res)
	}
	if err != nil {
		ri.errMsg = errorString(err)
		if !sse.started {
			s.fail(w, ri, err)
			return
		}
		if err != context.Canceled {
			sse.send(errorBody{Error: asAPIError(err)})
		}
		return
	}
	if includeUsage {
		events = append(events, f.usage(res))
	}
	for _, e := range events {
		if sse.send(e) != nil {
			return
		}
	}
	sse.done()
}
