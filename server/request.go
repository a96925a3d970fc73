package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"sync"
	"time"
)

// Defaults of Options.ReadTimeout and Options.WriteTimeout.
const (
	DefaultReadTimeout  = 15 * time.Second
	DefaultWriteTimeout = 30 * time.Second
)

// minBodyRate is the slowest upload a body's read deadline allows for on
// top of Options.ReadTimeout, in bytes per second: a 4 MiB body gets a
// minute more than a small one.
const minBodyRate = 64 << 10

// bodyReaders are the requests whose bodies are being read, so that a
// shutdown can cut them off instead of waiting for slow senders.
type bodyReaders struct {
	mu sync.Mutex
	rc map[*http.ResponseController]struct{}
}

// add registers rc and returns the function that removes it. When the
// server is already closing, rc's read deadline is set to now at once.
func (s *Server) addReader(rc *http.ResponseController) (remove func()) {
	br := &s.readers
	br.mu.Lock()
	if br.rc == nil {
		br.rc = map[*http.ResponseController]struct{}{}
	}
	br.rc[rc] = struct{}{}
	br.mu.Unlock()
	if s.closing.Load() {
		rc.SetReadDeadline(time.Now())
	}
	return func() {
		br.mu.Lock()
		delete(br.rc, rc)
		br.mu.Unlock()
	}
}

// cutReaders ends the body reads in progress: requests still sending their
// bodies when the server starts to close get 503 instead of holding the
// shutdown up.
func (s *Server) cutReaders() {
	br := &s.readers
	br.mu.Lock()
	defer br.mu.Unlock()
	for rc := range br.rc {
		rc.SetReadDeadline(time.Now())
	}
}

// readBody reads a request body within the size limit and the read
// deadline: Options.ReadTimeout, plus the time for Content-Length bytes at
// minBodyRate.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.ContentLength > s.opts.MaxBodyBytes {
		return nil, decodeError(&http.MaxBytesError{Limit: s.opts.MaxBodyBytes})
	}
	rc := http.NewResponseController(w)
	if s.opts.ReadTimeout > 0 {
		// At most a day more, whatever --max-body allows (no overflow).
		d := s.opts.ReadTimeout + time.Duration(min(max(r.ContentLength, 0)/minBodyRate, 86400))*time.Second
		rc.SetReadDeadline(time.Now().Add(d))
	}
	remove := s.addReader(rc)
	buf := bytes.NewBuffer(make([]byte, 0, min(max(r.ContentLength, 0)+1, 64<<10)))
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes))
	remove()
	if err != nil {
		// The rest of the body is not worth waiting for (the deadline
		// stays set for the server's own attempt to read it).
		w.Header().Set("Connection", "close")
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			return nil, decodeError(err)
		case s.closing.Load():
			return nil, newAPIError(http.StatusServiceUnavailable, typeServer, "shutting_down", "", "the server is shutting down")
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, newAPIError(http.StatusRequestTimeout, typeTimeout, "request_timeout", "",
				"the request body did not arrive within %v", s.opts.ReadTimeout)
		}
		return nil, badRequest("", "reading the request body: %v", err)
	}
	if s.opts.ReadTimeout > 0 {
		// The deadline covers the body only: a long reply must not be
		// cut by the server's background read of the connection.
		rc.SetReadDeadline(time.Time{})
	}
	return buf.Bytes(), nil
}

// decode reads a JSON request body into v. Unknown fields are ignored, as
// clients send extensions; known fields of the wrong type are a 400, and so
// is a body nested deeper than maxBodyDepth.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return decodeError(errEmptyBody)
	}
	if err := checkDepth(body, maxBodyDepth); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if dec.More() {
		return newAPIError(http.StatusBadRequest, typeInvalidRequest, "invalid_json", "", "extra data after the JSON body")
	}
	return nil
}
