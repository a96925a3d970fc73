package hub

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
)

// Progress receives download events. Methods are called from several
// goroutines at once; implementations must be safe for that.
type Progress interface {
	// Start is called once with the number of files and bytes of the
	// selection and the bytes already present (complete or partial).
	Start(files int, total, have int64)
	// FileStarted is called when the first chunk of a file is fetched.
	FileStarted(path string, size int64)
	// Add reports n more bytes written; n is negative when bytes already
	// counted are thrown away (a restart from scratch or a bad hash).
	Add(n int64)
	// FileDone is called when a file is verified and in place, or failed.
	FileDone(path string, err error)
	// Finish is called once at the end of the pull.
	Finish()
}

// NoProgress discards every event.
type NoProgress struct{}

// Start implements Progress.
func (NoProgress) Start(int, int64, int64) {}

// FileStarted implements Progress.
func (NoProgress) FileStarted(string, int64) {}

// Add implements Progress.
func (NoProgress) Add(int64) {}

// FileDone implements Progress.
func (NoProgress) FileDone(string, error) {}

// Finish implements Progress.
func (NoProgress) Finish() {}

// BarProgress renders progress to w: a progressbar (bytes, speed, ETA and
// the file in flight) when w is a terminal, else one plain line every
// Interval.
type BarProgress struct {
	w        io.Writer
	tty      bool
	interval time.Duration

	mu       sync.Mutex
	bar      *progressbar.ProgressBar
	total    int64
	done     int64
	start    time.Time
	inFlight map[string]bool
	stop     chan struct{}
	wg       sync.WaitGroup
	lastDone int64
	lastAt   time.Time
	plain    bool // printing plain lines
}

// NewBarProgress returns a renderer writing to w (normally os.Stderr); tty
// says whether w is a terminal; interval is the period of plain lines
// (10s when zero).
func NewBarProgress(w io.Writer, tty bool, interval time.Duration) *BarProgress {
	if interval <= 0 {
		interval = 10 * time.Second
	}
	return &BarProgress{w: w, tty: tty, interval: interval, inFlight: map[string]bool{}}
}

// Start implements Progress.
func (p *BarProgress) Start(files int, total, have int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total, p.done, p.start = total, have, time.Now()
	p.lastDone, p.lastAt = have, p.start
	if have >= total {
		return
	}
	if p.tty {
		p.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(p.w),
			progressbar.OptionShowBytes(true),
			progressbar.OptionShowTotalBytes(true),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionSetWidth(20),
			progressbar.OptionShowDescriptionAtLineEnd(),
			progressbar.OptionUseIECUnits(true),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(p.w) }),
		)
		_ = p.bar.Set64(have)
		return
	}
	fmt.Fprintf(p.w, "pull: %d files, %s to fetch (%s already here)\n", files, fmtBytes(total-have), fmtBytes(have))
	p.plain = true
	p.stop = make(chan struct{})
	p.wg.Add(1)
	go p.ticker()
}

func (p *BarProgress) ticker() {
	defer p.wg.Done()
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.mu.Lock()
			p.plainLine()
			p.mu.Unlock()
		}
	}
}

// plainLine prints one status line; p.mu is held.
func (p *BarProgress) plainLine() {
	now := time.Now()
	dt := now.Sub(p.lastAt).Seconds()
	speed := 0.0
	if dt > 0 {
		speed = float64(p.done-p.lastDone) / dt
	}
	p.lastDone, p.lastAt = p.done, now
	eta := "?"
	if speed > 0 {
		eta = (time.Duration(float64(p.total-p.done)/speed) * time.Second / time.Second).Round(time.Second).String()
	}
	pct := 100.0
	if p.total > 0 {
		pct = 100 * float64(p.done) / float64(p.total)
	}
	fmt.Fprintf(p.w, "pull: %s / %s (%.1f%%), %s/s, ETA %s, in flight: %s\n",
		fmtBytes(p.done), fmtBytes(p.total), pct, fmtBytes(int64(speed)), eta, p.flightDesc())
}

func (p *BarProgress) flightDesc() string {
	names := make([]string, 0, len(p.inFlight))
	for n := range p.inFlight {
		names = append(names, n)
	}
	sort.Strings(names)
	switch len(names) {
	case 0:
		return "-"
	case 1:
		return names[0]
	default:
		return fmt.Sprintf("%s +%d", names[0], len(names)-1)
	}
}

// FileStarted implements Progress.
func (p *BarProgress) FileStarted(path string, size int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inFlight[path] = true
	if p.bar != nil {
		p.bar.Describe(p.flightDesc())
	}
}

// Add implements Progress.
func (p *BarProgress) Add(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
	if p.bar != nil {
		_ = p.bar.Set64(p.done)
	}
}

// FileDone implements Progress.
func (p *BarProgress) FileDone(path string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.inFlight, path)
	if p.bar != nil {
		p.bar.Describe(p.flightDesc())
	}
}

// Finish implements Progress.
func (p *BarProgress) Finish() {
	p.mu.Lock()
	if p.stop != nil {
		close(p.stop)
		p.stop = nil
	}
	p.mu.Unlock()
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		if p.done >= p.total {
			_ = p.bar.Finish()
		} else {
			fmt.Fprintln(p.w)
		}
		p.bar = nil
		return
	}
	if p.plain {
		el := time.Since(p.start)
		fmt.Fprintf(p.w, "pull: %s / %s in %s\n", fmtBytes(p.done), fmtBytes(p.total), el.Round(100*time.Millisecond))
	}
}

func fmtBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %siB", float64(n)/float64(div), strings.Split("K,M,G,T,P,E", ",")[exp])
}
