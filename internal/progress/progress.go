// Package progress shows the progress of long jobs (downloads, conversion,
// quantization) on stderr. On a terminal a status block of one or more
// lines is redrawn in place, at most ten times a second, and stage lines
// ("converting ...") are printed above it on their own line; elsewhere (a
// log file, a pipe) the status goes out as plain lines at most once per
// interval, with no escape codes.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rivo/uniseg"
	"golang.org/x/term"
)

// redrawEvery is the least time between two redraws on a terminal.
const redrawEvery = 100 * time.Millisecond

// Display is one job's progress output. It is safe for concurrent use.
type Display struct {
	w        io.Writer
	tty      bool
	interval time.Duration

	mu        sync.Mutex
	drawn     int // rows of the status block on the screen (terminal)
	lastDraw  time.Time
	lastPlain time.Time
	now       func() time.Time
	cols      func() int // the terminal's width; 0 unknown
}

// New returns a display writing to w; tty says whether w is a terminal;
// interval is the period of plain lines off a terminal (5s when zero).
func New(w io.Writer, tty bool, interval time.Duration) *Display {
	if interval <= 0 {
		interval = 5 * time.Second
	}
	d := &Display{w: w, tty: tty, interval: interval, now: time.Now, cols: func() int { return 0 }}
	if f, ok := w.(*os.File); ok && tty {
		d.cols = func() int {
			c, _, _ := term.GetSize(int(f.Fd()))
			return c
		}
	}
	return d
}

// Terminal reports whether the display redraws in place.
func (d *Display) Terminal() bool { return d.tty }

// Stage prints a line of its own, above the status block on a terminal.
func (d *Display) Stage(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.clear()
	fmt.Fprintf(d.w, format+"\n", args...)
	d.lastDraw = time.Time{}
}

// Update shows the status lines: on a terminal it redraws the block unless
// the last redraw was under 100ms ago; off a terminal it prints the first
// line unless the last was printed under the interval ago. force skips the
// rate limits (for a first or last state).
func (d *Display) Update(lines []string, force bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	if !d.tty {
		if force || now.Sub(d.lastPlain) >= d.interval {
			d.lastPlain = now
			if len(lines) > 0 {
				fmt.Fprintln(d.w, lines[0])
			}
		}
		return
	}
	if !force && now.Sub(d.lastDraw) < redrawEvery {
		return
	}
	d.lastDraw = now
	var b strings.Builder
	d.clearTo(&b)
	cols := d.cols()
	for _, l := range lines {
		if cols > 1 {
			l = truncate(l, cols-1) // a wrapped line would throw off the redraw
		}
		b.WriteString(l)
		b.WriteString("\x1b[K\n")
	}
	d.drawn = len(lines)
	io.WriteString(d.w, b.String())
}

// Done removes the status block and prints final (when not empty) as a
// line of its own, on a terminal and off it.
func (d *Display) Done(final string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.clear()
	if final != "" {
		fmt.Fprintln(d.w, final)
	}
	d.lastDraw, d.lastPlain = time.Time{}, time.Time{}
}

// clear erases the status block; d.mu is held.
func (d *Display) clear() {
	var b strings.Builder
	d.clearTo(&b)
	io.WriteString(d.w, b.String())
}

// clearTo writes what moves the cursor to the first row of the status
// block and erases it to the end of the screen.
func (d *Display) clearTo(b *strings.Builder) {
	if !d.tty || d.drawn == 0 {
		return
	}
	fmt.Fprintf(b, "\r\x1b[%dA\x1b[J", d.drawn)
	d.drawn = 0
}

// truncate cuts s to at most width display cells.
func truncate(s string, width int) string {
	if uniseg.StringWidth(s) <= width {
		return s
	}
	var b strings.Builder
	w, state := 0, -1
	for s != "" {
		var c string
		var cw int
		c, s, cw, state = uniseg.FirstGraphemeClusterInString(s, state)
		if w+cw > width {
			break
		}
		b.WriteString(c)
		w += cw
	}
	return b.String()
}

// Status is a status line: what, then done / total, a bar (when bar is
// set, for a terminal), the percentage, the speed and the time left:
// "pulling  3.2 / 12.5 GB [=====>     ]  25%  45.3 MB/s  ETA 3m25s".
func Status(what string, done, total int64, speed float64, bar bool) string {
	var b strings.Builder
	b.WriteString(what)
	b.WriteString("  ")
	b.WriteString(Pair(done, total))
	if bar {
		b.WriteString(" " + Bar(done, total, 24))
	}
	fmt.Fprintf(&b, " %3.0f%%  %s  ETA %s", Percent(done, total), Rate(speed), ETA(total-done, speed))
	return b.String()
}

// Bar draws a bar width cells wide for done of total: [=====>    ].
func Bar(done, total int64, width int) string {
	fill := width
	if total > 0 {
		fill = int(int64(width) * min(max(done, 0), total) / total)
	}
	s := strings.Repeat("=", fill)
	if fill < width {
		s += ">" + strings.Repeat(" ", width-fill-1)
	}
	return "[" + s + "]"
}

// Percent is done as a percentage of total (100 when total is 0).
func Percent(done, total int64) float64 {
	if total <= 0 {
		return 100
	}
	return 100 * float64(done) / float64(total)
}

// units are decimal, as the Hub and most download tools show sizes.
var units = []string{"B", "kB", "MB", "GB", "TB", "PB", "EB"}

// unitOf returns the unit index and divisor that suit n.
func unitOf(n int64) (int, float64) {
	i, div := 0, 1.0
	for v := float64(max(n, 0)); v >= 1000 && i < len(units)-1; v /= 1000 {
		i++
		div *= 1000
	}
	return i, div
}

// Bytes formats a size: 512 B, 3.2 MB, 12.5 GB.
func Bytes(n int64) string {
	i, div := unitOf(n)
	if i == 0 {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.1f %s", float64(n)/div, units[i])
}

// Pair formats done of total in total's unit: "3.2 / 12.5 GB".
func Pair(done, total int64) string {
	i, div := unitOf(total)
	if i == 0 {
		return fmt.Sprintf("%d / %d B", done, total)
	}
	return fmt.Sprintf("%.1f / %.1f %s", float64(done)/div, float64(total)/div, units[i])
}

// Rate formats a speed in bytes per second: "45.3 MB/s".
func Rate(bytesPerSec float64) string {
	return Bytes(int64(bytesPerSec)) + "/s"
}

// ETA formats the time left at a speed: "3m25s", or "?" when unknown.
func ETA(left int64, bytesPerSec float64) string {
	if bytesPerSec <= 0 || left < 0 {
		return "?"
	}
	return time.Duration(float64(left) / bytesPerSec * float64(time.Second)).Round(time.Second).String()
}

// Meter measures a speed over the last few seconds.
type Meter struct {
	window  time.Duration
	samples []sample
}

type sample struct {
	at time.Time
	n  int64
}

// NewMeter returns a meter averaging over window (5s when zero).
func NewMeter(window time.Duration) *Meter {
	if window <= 0 {
		window = 5 * time.Second
	}
	return &Meter{window: window}
}

// Observe records the running total n at time at and returns the speed in
// units per second over the window (0 until two samples are apart).
func (m *Meter) Observe(at time.Time, n int64) float64 {
	m.samples = append(m.samples, sample{at, n})
	i := 0
	for i < len(m.samples)-2 && at.Sub(m.samples[i+1].at) >= m.window {
		i++
	}
	m.samples = m.samples[i:]
	first := m.samples[0]
	dt := at.Sub(first.at).Seconds()
	if dt <= 0 {
		return 0
	}
	return float64(n-first.n) / dt
}
