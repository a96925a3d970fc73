package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// ErrShuttingDown is the cause of the cancellation of requests still
// running when a graceful shutdown's grace period ends.
var ErrShuttingDown = errShutdown

// Serve answers HTTP requests on ln until ctx ends, then shuts down
// gracefully: for Options.Drain it reports 503 on /health/ready while it
// still serves everything (see drain), then it stops accepting connections,
// reports 503 on /health and to new requests, lets requests in flight
// finish for up to grace, cancels those still running (streams get an
// error event) and returns once every handler has returned. It returns nil
// after a shutdown, or the error that stopped the listener.
func (s *Server) Serve(ctx context.Context, ln net.Listener, grace time.Duration) error {
	base, cancelBase := context.WithCancelCause(context.Background())
	defer cancelBase(nil)
	hs := &http.Server{
		Handler:     s.handler(ln.Addr()),
		IdleTimeout: 2 * time.Minute,
		BaseContext: func(net.Listener) context.Context { return base },
	}
	if s.opts.ReadTimeout > 0 {
		hs.ReadHeaderTimeout = s.opts.ReadTimeout
	}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	select {
	case err := <-served:
		// The listener failed: stop the handlers still running and wait
		// for them, as a shutdown does, before the caller closes the
		// backend.
		s.SetClosing()
		cancelBase(errShutdown)
		hs.Close()
		<-s.handlers.wait()
		return fmt.Errorf("serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	s.drain()
	s.SetClosing()
	s.log.Info("shutting down: waiting for requests in flight", "grace", grace)
	graceCtx, cancel := context.WithTimeout(context.Background(), grace)
	err := hs.Shutdown(graceCtx)
	cancel()
	if errors.Is(err, context.DeadlineExceeded) {
		s.log.Warn("shutdown grace period over: cancelling the requests still running")
		cancelBase(errShutdown)
		// Cancelled handlers return within a decode step; give them a
		// moment to send their error events, then cut the connections.
		drainCtx, cancel := context.WithTimeout(context.Background(), s.cancelWait)
		err = hs.Shutdown(drainCtx)
		cancel()
		if err != nil {
			hs.Close()
		}
	}
	<-served // http.ErrServerClosed
	// Close does not wait for handlers; their backend must outlive them.
	<-s.handlers.wait()
	return nil
}
