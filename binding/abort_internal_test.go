package binding

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// A cancellation whose callback starts before release but runs late must
// not leave the flag raised after release returns: that would abort the
// next decode. (The earlier code, stop() and then lower, failed this.)
func TestAbortOnWaitsForAStartedRaise(t *testing.T) {
	var flag atomic.Int32
	entered, gate, raisedDone := make(chan struct{}), make(chan struct{}), make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	release := abortOn(ctx,
		func() {
			close(entered)
			<-gate // the callback is slow to raise the flag
			flag.Store(1)
			close(raisedDone)
		},
		func() { flag.Store(0) })
	cancel()
	<-entered
	released := make(chan struct{})
	go func() {
		release()
		close(released)
	}()
	select {
	case <-released:
		// release returned while the raise is still to come.
	case <-time.After(100 * time.Millisecond):
	}
	close(gate)
	<-released
	<-raisedDone
	if flag.Load() != 0 {
		t.Fatal("the abort flag is raised after release returned")
	}
}

// Without a cancellation, release lowers the flag and raise never runs.
func TestAbortOnWithoutCancel(t *testing.T) {
	var raised, lowered atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	release := abortOn(ctx, func() { raised.Add(1) }, func() { lowered.Add(1) })
	release()
	cancel()
	if raised.Load() != 0 || lowered.Load() != 1 {
		t.Fatalf("raised %d lowered %d, want 0 and 1", raised.Load(), lowered.Load())
	}
}
