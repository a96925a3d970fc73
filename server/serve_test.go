package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chatglm/chatglm/chat"
)

// startServe runs Serve on a loopback port and returns its URL, the
// function that triggers the shutdown and the channel of Serve's result.
func startServe(t *testing.T, fake *fakeBackend, grace time.Duration) (string, context.CancelFunc, chan error) {
	t.Helper()
	_, url, stop, done := startServeOpts(t, fake, grace, Options{})
	return url, stop, done
}

// startServeOpts is startServe with options (their logger and sampling
// replaced by the tests' own) and the server returned; a nil fake loads no
// model.
func startServeOpts(t *testing.T, fake *fakeBackend, grace time.Duration, opts Options) (*Server, string, context.CancelFunc, chan error) {
	t.Helper()
	opts.Logger, opts.Sampling = slog.New(slog.NewTextHandler(io.Discard, nil)), chat.DefaultSampling()
	s := New(opts)
	if fake != nil {
		s.SetBackend(fake)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln, grace) }()
	t.Cleanup(stop)
	return s, "http://" + ln.Addr().String(), stop, done
}

func TestGracefulShutdownFinishesInFlight(t *testing.T) {
	fake := newFake(1, 512)
	fake.hold = make(chan struct{})
	url, stop, done := startServe(t, fake, time.Minute)
	status := make(chan int, 1)
	go func() {
		resp, err := http.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(hello))
		if err != nil {
			status <- -1
			return
		}
		resp.Body.Close()
		status <- resp.StatusCode
	}()
	<-fake.started
	stop()
	// New connections are refused once the listener is closed.
	waitFor(t, func() bool {
		c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	select {
	case err := <-done:
		t.Fatalf("Serve returned with a request in flight: %v", err)
	default:
	}
	close(fake.hold)
	if code := <-status; code != http.StatusOK {
		t.Fatalf("in-flight request: %d", code)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestGracefulShutdownCancelsAfterGrace(t *testing.T) {
	fake := newFake(1, 512)
	fake.hold = make(chan struct{}) // never released
	url, stop, done := startServe(t, fake, 100*time.Millisecond)
	body := make(chan string, 1)
	go func() {
		resp, err := http.Post(url+"/v1/chat/completions", "application/json",
			strings.NewReader(`{"messages":[{"role":"user","content":"hi"}],"stream":true}`))
		if err != nil {
			body <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body <- string(b)
	}()
	<-fake.started
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if fake.cancelled.Load() != 1 || fake.released.Load() != 1 {
		t.Fatalf("cancelled %d released %d", fake.cancelled.Load(), fake.released.Load())
	}
	if b := <-body; !strings.Contains(b, `"code":"shutting_down"`) || strings.Contains(b, "[DONE]") {
		t.Fatalf("stream after the grace period: %q", b)
	}
}
