package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"syscall"
	"time"
)

// permanentError wraps an error that retrying will not fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func permanent(err error) error { return &permanentError{err} }

// minProgress is the bytes an attempt must deliver to count as progress
// (a server that sends one byte per request must still fail).
const minProgress = 64 << 10

// retryPolicy is the one retry policy of every hub request: metadata
// (refs, tree, file lists, resolves) and file bodies alike.
type retryPolicy struct {
	retries       int           // failures in a row without progress before giving up
	backoff       time.Duration // first delay
	maxBackoff    time.Duration // longest delay
	maxRetryAfter time.Duration // cap on a server's Retry-After
}

// newRetryPolicy takes the policy from opts (after defaults).
func newRetryPolicy(o *Options) retryPolicy {
	return retryPolicy{retries: o.Retries, backoff: o.Backoff, maxBackoff: o.MaxBackoff, maxRetryAfter: o.MaxRetryAfter}
}

// do runs attempt until it succeeds, fails permanently, or fails retries
// times in a row without progress, sleeping with exponential backoff (or
// the server's Retry-After, capped) in between.
func (p retryPolicy) do(ctx context.Context, what string, attempt func() (progressed int64, err error)) error {
	failures := 0
	for {
		progressed, err := attempt()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait, ok := p.transient(err)
		if !ok {
			return err
		}
		if progressed >= minProgress {
			failures = 0
		}
		failures++
		if failures > p.retries {
			return fmt.Errorf("%s: giving up after %d attempts: %w", what, failures, err)
		}
		if wait == 0 {
			wait = p.delay(failures)
		}
		slog.Info("retrying", "what", what, "attempt", failures, "in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// delay is backoff·2^(n-1) with ±25% jitter, capped at maxBackoff.
func (p retryPolicy) delay(n int) time.Duration {
	b := p.backoff << min(n-1, 20)
	if b <= 0 || b > p.maxBackoff {
		b = p.maxBackoff
	}
	return time.Duration(float64(b) * (0.75 + 0.5*rand.Float64()))
}

// transient says whether err is worth retrying, and how long the server
// asked us to wait.
func (p retryPolicy) transient(err error) (time.Duration, bool) {
	var pe *permanentError
	if errors.As(err, &pe) || errors.Is(err, errNoRange) || errors.Is(err, errHashMismatch) {
		return 0, false
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, os.ErrPermission) {
		return 0, false
	}
	var he *HTTPError
	if errors.As(err, &he) {
		switch {
		case he.StatusCode == http.StatusTooManyRequests || he.StatusCode >= 500:
			return min(he.RetryAfter, p.maxRetryAfter), true
		case he.StatusCode == http.StatusRequestTimeout || he.StatusCode == http.StatusForbidden:
			return 0, true
		default:
			return 0, false
		}
	}
	// Network errors, resets, truncated bodies, stalls.
	return 0, true
}

// clientError marks 4xx answers other than 408 and 429 permanent: for
// metadata and resolves they mean the request itself is wrong (a CDN's
// expired-URL 403 is handled by the body fetch, not here).
func clientError(err error) error {
	var he *HTTPError
	if errors.As(err, &he) && he.StatusCode >= 400 && he.StatusCode < 500 &&
		he.StatusCode != http.StatusTooManyRequests && he.StatusCode != http.StatusRequestTimeout {
		return permanent(err)
	}
	return err
}
