package hub

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/chatglm/chatglm/internal/progress"
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

// FileProgress is a Progress that also takes each file's share of the
// bytes, for a line per large file. The downloader calls AddFile instead
// of Add when its Progress has it.
type FileProgress interface {
	Progress
	// AddFile is Add for the bytes of one file.
	AddFile(path string, n int64)
}

// addProgress reports n bytes of path to p.
func addProgress(p Progress, path string, n int64) {
	if fp, ok := p.(FileProgress); ok {
		fp.AddFile(path, n)
		return
	}
	p.Add(n)
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

// LargeFile is the size from which a file in flight gets its own progress
// line on a terminal.
const LargeFile = 16 << 20

// maxFileLines bounds the per-file lines under the total.
const maxFileLines = 4

// BarProgress shows a pull's progress on a progress.Display: on a terminal
// a line with the bytes done and to do, a bar, the speed and the time left
// for the whole pull, and a line per large file in flight with its own
// bytes and speed, redrawn five times a second; elsewhere one plain line
// per interval. A line with the totals ends it.
type BarProgress struct {
	d        *progress.Display
	interval time.Duration
	now      func() time.Time

	mu        sync.Mutex
	files     int
	filesDone int
	total     int64
	done      int64
	have      int64 // present before the pull started
	start     time.Time
	meter     *progress.Meter
	inFlight  map[string]*fileState
	stop      chan struct{}
	wg        sync.WaitGroup
	active    bool
	failed    int
}

// fileState is one file in flight.
type fileState struct {
	size, done int64
	meter      *progress.Meter
	perFile    bool // AddFile reported its bytes
}

// NewBarProgress returns a renderer writing to w (normally os.Stderr); tty
// says whether w is a terminal; interval is the period of plain lines
// (5s when zero).
func NewBarProgress(w io.Writer, tty bool, interval time.Duration) *BarProgress {
	if interval <= 0 {
		interval = 5 * time.Second
	}
	return &BarProgress{d: progress.New(w, tty, interval), interval: interval, now: time.Now, inFlight: map[string]*fileState{}}
}

// Start implements Progress.
func (p *BarProgress) Start(files int, total, have int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.files, p.total, p.done, p.have, p.start = files, total, have, have, p.now()
	p.meter = progress.NewMeter(5 * time.Second)
	p.meter.Observe(p.start, have)
	if have >= total {
		return
	}
	p.active = true
	if !p.d.Terminal() {
		p.d.Stage("pull: %d files, %s to fetch (%s already here)", files, progress.Bytes(total-have), progress.Bytes(have))
	}
	p.stop = make(chan struct{})
	p.wg.Add(1)
	go p.ticker(p.stop)
}

// ticker redraws the status until stop is closed.
func (p *BarProgress) ticker(stop <-chan struct{}) {
	defer p.wg.Done()
	every := 200 * time.Millisecond
	if !p.d.Terminal() {
		every = p.interval
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			p.mu.Lock()
			lines := p.lines()
			p.mu.Unlock()
			p.d.Update(lines, true)
		}
	}
}

// lines renders the status; p.mu is held.
func (p *BarProgress) lines() []string {
	now := p.now()
	speed := p.meter.Observe(now, p.done)
	tty := p.d.Terminal()
	line := progress.Status("pulling", p.done, p.total, speed, tty) + fmt.Sprintf("  %d/%d files", p.filesDone, p.files)
	if !tty {
		return []string{line + ", in flight: " + p.flightDesc()}
	}
	out := []string{line}
	names := p.flightNames()
	shown := 0
	for _, n := range names {
		f := p.inFlight[n]
		if f.size < LargeFile {
			continue
		}
		if shown == maxFileLines {
			out = append(out, fmt.Sprintf("  ... and %d more", len(names)-shown))
			break
		}
		shown++
		if !f.perFile {
			out = append(out, fmt.Sprintf("  %s  %s", n, progress.Bytes(f.size)))
			continue
		}
		out = append(out, progress.Status("  "+n, f.done, f.size, f.meter.Observe(now, f.done), false))
	}
	return out
}

func (p *BarProgress) flightNames() []string {
	names := make([]string, 0, len(p.inFlight))
	for n := range p.inFlight {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (p *BarProgress) flightDesc() string {
	names := p.flightNames()
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
	if p.inFlight[path] == nil {
		p.inFlight[path] = p.newFile(size)
	}
}

// newFile starts tracking a file in flight; p.mu is held.
func (p *BarProgress) newFile(size int64) *fileState {
	f := &fileState{size: size, meter: progress.NewMeter(5 * time.Second)}
	f.meter.Observe(p.now(), 0)
	return f
}

// Add implements Progress.
func (p *BarProgress) Add(n int64) {
	p.mu.Lock()
	p.done += n
	p.mu.Unlock()
}

// AddFile implements FileProgress.
func (p *BarProgress) AddFile(path string, n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
	f := p.inFlight[path]
	if f == nil {
		f = p.newFile(0)
		p.inFlight[path] = f
	}
	f.done += n
	f.perFile = true
}

// FileDone implements Progress.
func (p *BarProgress) FileDone(path string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.inFlight, path)
	if err != nil {
		p.failed++
	} else {
		p.filesDone++
	}
}

// Finish implements Progress.
func (p *BarProgress) Finish() {
	p.mu.Lock()
	stop := p.stop
	p.stop = nil
	p.mu.Unlock()
	if stop != nil {
		close(stop)
	}
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.active {
		return
	}
	p.active = false
	el := p.now().Sub(p.start)
	fetched := p.done - p.have
	var b strings.Builder
	fmt.Fprintf(&b, "pulled %s of %s in %s", progress.Bytes(fetched), progress.Bytes(p.total), el.Round(100*time.Millisecond))
	if s := el.Seconds(); s > 0 {
		fmt.Fprintf(&b, " (%s)", progress.Rate(float64(fetched)/s))
	}
	if p.failed > 0 {
		fmt.Fprintf(&b, "; %d files failed", p.failed)
	}
	p.d.Done(b.String())
}

// fmtBytes formats a size for messages.
func fmtBytes(n int64) string { return progress.Bytes(n) }
