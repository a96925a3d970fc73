package progress

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/chatglm/chatglm/internal/fixture/vtscreen"
)

// clock is a settable time for the rate limits.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestPlainLinesAtInterval(t *testing.T) {
	var buf bytes.Buffer
	c := &clock{t: time.Unix(1000, 0)}
	d := New(&buf, false, 5*time.Second)
	d.now = c.now
	for i := range 100 { // 10 s of updates every 100ms
		d.Update([]string{"status " + string(rune('a'+i%26)), "second line"}, false)
		c.advance(100 * time.Millisecond)
	}
	d.Stage("stage")
	d.Done("done")
	got := buf.String()
	if want := "status a\nstatus y\nstage\ndone\n"; got != want {
		t.Fatalf("plain output %q, want %q", got, want)
	}
}

func TestTerminalRedrawsInPlace(t *testing.T) {
	scr := vtscreen.New(40, 10)
	scr.SetONLCR(true)
	c := &clock{t: time.Unix(1000, 0)}
	d := New(scr, true, 0)
	d.now, d.cols = c.now, func() int { return 40 }
	d.Stage("pulling x...")
	d.Update([]string{"total 1", "  file a 1"}, false)
	c.advance(50 * time.Millisecond)
	d.Update([]string{"total 2 (too soon)", "  file a 2"}, false)
	if got := scr.String(); got != "pulling x...\ntotal 1\n  file a 1" {
		t.Fatalf("screen:\n%s", got)
	}
	c.advance(100 * time.Millisecond)
	d.Update([]string{"total 3"}, false)
	if got := scr.String(); got != "pulling x...\ntotal 3" {
		t.Fatalf("screen:\n%s", got)
	}
	d.Stage("converting x...") // on its own line, above the block
	if got := scr.String(); got != "pulling x...\nconverting x..." {
		t.Fatalf("screen:\n%s", got)
	}
	d.Update([]string{strings.Repeat("长", 30)}, true) // cut to the width, not wrapped
	d.Done("converted")
	if got := scr.String(); got != "pulling x...\nconverting x...\nconverted" {
		t.Fatalf("screen:\n%s", got)
	}
}

func TestFormats(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{Pair(3_200_000_000, 12_500_000_000), "3.2 / 12.5 GB"},
		{Pair(512, 900), "512 / 900 B"},
		{Bytes(1_250_000), "1.2 MB"},
		{Bytes(999), "999 B"},
		{Rate(45_300_000), "45.3 MB/s"},
		{ETA(100_000_000, 1_000_000), "1m40s"},
		{ETA(5, 0), "?"},
		{Bar(1, 4, 8), "[==>     ]"},
		{Bar(4, 4, 8), "[========]"},
		{Bar(0, 0, 4), "[====]"},
		{truncate("ab长cd", 3), "ab"},
	} {
		if c.got != c.want {
			t.Errorf("%q, want %q", c.got, c.want)
		}
	}
	m := NewMeter(time.Second)
	t0 := time.Unix(0, 0)
	m.Observe(t0, 0)
	if v := m.Observe(t0.Add(500*time.Millisecond), 500); v != 1000 {
		t.Fatalf("speed %v", v)
	}
	for i := 1; i <= 30; i++ {
		m.Observe(t0.Add(time.Duration(500+100*i)*time.Millisecond), 500) // a stall
	}
	if v := m.Observe(t0.Add(4*time.Second), 500); v != 0 {
		t.Fatalf("speed after a stall %v, want 0", v)
	}
}
