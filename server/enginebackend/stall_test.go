package enginebackend

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chatglm/chatglm/server"
)

// smallBuffers gives accepted connections small kernel send buffers, so
// that a client that stops reading blocks the server's writes soon.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(4 << 10)
	}
	return c, err
}

// Issue 11 item 13, end to end: once a streaming client stops reading, the
// engine keeps serving the other sequence: a second client's stream runs
// to its end while the first is still stalled (its write timeout is far
// away).
func TestStalledReaderDoesNotStallOthers(t *testing.T) {
	e, url := serveTinyOn(t, 2, 4096, server.Options{WriteTimeout: 10 * time.Minute},
		func(l net.Listener) net.Listener { return smallBuffers{l} })
	addr := strings.TrimPrefix(url, "http://")

	// A: a greedy completion of 3000 tokens on a connection never read.
	a, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	a.(*net.TCPConn).SetReadBuffer(4 << 10)
	body := `{"prompt":"Once upon a time","max_tokens":3000,"temperature":0,"stream":true}`
	fmt.Fprintf(a, "POST /v1/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", addr, len(body), body)

	// Wait until A's writes are blocked: more tokens than the socket
	// buffers and the engine's old 256-event queue hold, or no progress.
	last, since := int64(-1), time.Now()
	for deadline := time.Now().Add(60 * time.Second); ; {
		n := e.Stats().GeneratedTokens
		if n >= 1000 || (n > 0 && n == last && time.Since(since) > time.Second) {
			break
		}
		if n != last {
			last, since = n, time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("A made %d tokens in 60s", n)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// B: a short stream, served while A stays stalled.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions",
		strings.NewReader(`{"messages":[{"role":"user","content":"hi"}],"max_tokens":20,"stream":true}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("B got no answer while A is stalled (%d tokens generated): %v", e.Stats().GeneratedTokens, err)
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	done := false
	for !done {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("B's stream stopped while A is stalled: %v", err)
		}
		done = strings.TrimSpace(line) == "data: [DONE]"
	}
	if e.Stats().Active < 1 {
		t.Log("A's generation already finished; its handler still waits on the stalled client")
	}
}
