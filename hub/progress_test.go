package hub

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/chatglm/chatglm/internal/fixture/vtscreen"
)

// TestBarProgressOnTerminal: the totals line and a line per large file in
// flight with its own bytes, redrawn in place; the final line alone at the
// end.
func TestBarProgressOnTerminal(t *testing.T) {
	scr := vtscreen.New(120, 10)
	scr.SetONLCR(true)
	p := NewBarProgress(scr, true, 0)
	now := time.Unix(1000, 0)
	p.now = func() time.Time { return now }
	p.Start(3, 3_000_000_000, 500_000_000)
	p.FileStarted("model-00001-of-00002.safetensors", 2_000_000_000)
	p.FileStarted("config.json", 1_000)
	p.FileStarted("model-00002-of-00002.safetensors", 500_000_000)
	now = now.Add(2 * time.Second)
	p.AddFile("model-00001-of-00002.safetensors", 1_000_000_000)
	p.Add(1_000)
	p.FileDone("config.json", nil)
	p.mu.Lock()
	lines := p.lines()
	p.mu.Unlock()
	p.d.Update(lines, true)
	want := []string{
		"pulling  1.5 / 3.0 GB [============>           ]  50%  500.0 MB/s  ETA 3s  1/3 files",
		"  model-00001-of-00002.safetensors  1.0 / 2.0 GB  50%  500.0 MB/s  ETA 2s",
		"  model-00002-of-00002.safetensors  500.0 MB",
	}
	if got := scr.String(); got != strings.Join(want, "\n") {
		t.Fatalf("screen:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	p.FileDone("model-00001-of-00002.safetensors", nil)
	p.FileDone("model-00002-of-00002.safetensors", errors.New("boom"))
	p.Finish()
	if got := scr.String(); got != "pulled 1.0 GB of 3.0 GB in 2s (500.0 MB/s); 1 files failed" {
		t.Fatalf("screen after Finish:\n%s", got)
	}
}

// TestBarProgressPlain: off a terminal, a header, plain lines at the
// interval and the totals; nothing when all bytes are already there.
func TestBarProgressPlain(t *testing.T) {
	var buf bytes.Buffer
	p := NewBarProgress(&buf, false, 20*time.Millisecond)
	p.Start(2, 2_000_000, 0)
	p.FileStarted("a.bin", 1_000_000)
	p.Add(1_000_000)
	time.Sleep(70 * time.Millisecond)
	p.FileDone("a.bin", nil)
	p.Finish()
	out := buf.String()
	if !strings.HasPrefix(out, "pull: 2 files, 2.0 MB to fetch (0 B already here)\n") || !strings.Contains(out, "pulling  1.0 / 2.0 MB  50%") ||
		!strings.Contains(out, "in flight: a.bin") || !strings.Contains(out, "pulled 1.0 MB of 2.0 MB in ") || strings.ContainsAny(out, "\r\x1b") {
		t.Fatalf("plain output:\n%s", out)
	}
	buf.Reset()
	p = NewBarProgress(&buf, false, 0)
	p.Start(2, 100, 100)
	p.Finish()
	if buf.Len() != 0 {
		t.Fatalf("output for a complete pull: %q", buf.String())
	}
}
