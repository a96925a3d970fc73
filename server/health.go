package server

import (
	"net/http"
	"time"
)

// Health endpoints, for load balancers and orchestrators:
//
//	GET /health/live   200 while the process answers HTTP at all (loading,
//	                   serving or draining): a failing liveness probe means
//	                   the process is stuck and should be restarted.
//	GET /health/ready  200 when the model is loaded and the server is not
//	                   draining or stopping: a failing readiness probe takes
//	                   the replica out of rotation without restarting it.
//	GET /health        the same answer as /health/ready (the original route).
//
// PathLive, PathReady and PathHealth are their paths.
const (
	PathLive   = "/health/live"
	PathReady  = "/health/ready"
	PathHealth = "/health"
)

// SessionHeader is the request header that keeps a conversation on one
// replica behind a load balancer: clients send the same value with every
// turn of a conversation and the balancer hashes it (HAProxy
// `balance hdr(X-Session-Id)`, nginx `hash $http_x_session_id consistent`;
// docs/scaling.md). The server itself ignores it, apart from allowing it in
// CORS preflights.
const SessionHeader = "X-Session-Id"

// isHealthPath reports whether path is one of the health routes, which need
// no API key.
func isHealthPath(path string) bool {
	return path == PathHealth || path == PathLive || path == PathReady
}

// readiness returns the server's state as /health/ready reports it: ok is
// true when it takes new work; status says why not.
func (s *Server) readiness() (ok bool, status string) {
	switch {
	case s.closing.Load():
		return false, "shutting down"
	case s.draining.Load():
		return false, "draining"
	case s.state.Load() == nil:
		return false, "loading model"
	}
	return true, "ok"
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	ok, status := s.readiness()
	code := http.StatusOK
	if !ok {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]string{"status": status})
}

func (s *Server) handleLive(w http.ResponseWriter, r *http.Request) {
	_, status := s.readiness()
	writeJSON(w, http.StatusOK, map[string]string{"status": status})
}

// drain is the first step of a graceful shutdown: /health/ready answers 503
// for Options.Drain while every request, new ones included, is still
// served, so that a load balancer's health check or Kubernetes' endpoint
// removal takes the replica out of rotation before its listener closes. It
// returns at once when no drain period is set or no model was loaded yet
// (no balancer sends work to a replica that never became ready).
func (s *Server) drain() {
	s.draining.Store(true)
	if s.opts.Drain <= 0 || s.state.Load() == nil {
		return
	}
	s.log.Info("draining: /health/ready answers 503, requests are still served", "drain", s.opts.Drain)
	time.Sleep(s.opts.Drain)
}
