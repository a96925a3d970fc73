package hub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// fetchAll fetches every chunk that misses bytes. Each file starts with one
// stream that takes chunks in order from the front: its bytes extend the
// hashed prefix, so they are hashed as they arrive and never read back.
// While a connection is free and the file's streams each receive less than
// SplitBelow bytes/s (a slow link, a per-connection cap at the CDN), more
// streams join; they take chunks from the back, and the hasher reads their
// bytes back from the page cache when the prefix reaches them. On a fast
// link one stream per file is already as fast as the bytes can be written
// and hashed, and extra streams would only add that read-back.
func (j *fileJob) fetchAll(ctx context.Context) error {
	j.mu.Lock()
	j.claimed = make([]bool, len(j.st.Done))
	j.mu.Unlock()
	g, gctx := errgroup.WithContext(ctx)
	stream := func(front bool) error {
		for {
			select {
			case j.d.sem <- struct{}{}:
			case <-gctx.Done():
				return gctx.Err()
			}
			i := j.take(front)
			if i < 0 {
				<-j.d.sem
				return nil
			}
			err := j.fetchChunk(gctx, i)
			j.mu.Lock()
			j.streams--
			j.mu.Unlock()
			<-j.d.sem
			if err != nil {
				return err
			}
		}
	}
	headDone := make(chan struct{})
	g.Go(func() error { defer close(headDone); return stream(true) })
	g.Go(func() error { return j.split(gctx, headDone, g, stream) })
	err := g.Wait()
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// split adds back streams to the file while that pays (see fetchAll): every
// SplitEvery it compares the bytes each stream received with SplitBelow and
// starts one more stream when a connection is free. It returns once the
// front stream has ended (every chunk is taken then).
func (j *fileJob) split(ctx context.Context, headDone <-chan struct{}, g *errgroup.Group, stream func(front bool) error) error {
	t := time.NewTicker(j.d.opts.SplitEvery)
	defer t.Stop()
	var last int64 // fetchedHere at lastT
	lastT := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-headDone:
			return nil
		case now := <-t.C:
			got := j.fetchedHere.Load()
			j.mu.Lock()
			open, streams := j.unclaimed(), j.streams
			j.mu.Unlock()
			if open == 0 {
				return nil
			}
			if got == 0 || last == 0 {
				// The window starts with the first byte, not with the
				// request: connecting and redirects are no measure of the link.
				last, lastT = got, now
				continue
			}
			perStream := float64(got-last) / now.Sub(lastT).Seconds() / float64(max(streams, 1))
			last, lastT = got, now
			if perStream >= float64(j.d.opts.SplitBelow) || len(j.d.sem) >= cap(j.d.sem) || open < 2 {
				continue
			}
			g.Go(func() error { return stream(false) })
		}
	}
}

// unclaimed counts the chunks no stream has taken that still miss bytes.
func (j *fileJob) unclaimed() (n int) {
	for i, c := range j.claimed {
		if _, size := j.st.chunk(i); !c && j.st.Done[i] < size {
			n++
		}
	}
	return n
}

// take hands out the first (front) or last chunk that still misses bytes
// and that no stream has taken, or -1.
func (j *fileJob) take(front bool) int {
	j.mu.Lock()
	defer j.mu.Unlock()
	n := len(j.st.Done)
	for k := 0; k < n; k++ {
		i := k
		if !front {
			i = n - 1 - k
		}
		if _, size := j.st.chunk(i); j.claimed[i] || j.st.Done[i] >= size {
			continue
		}
		j.claimed[i] = true
		j.streams++
		if !j.started {
			j.started = true
			j.d.progress.FileStarted(j.f.Path, j.f.Size)
		}
		return i
	}
	return -1
}

// location returns the current URL of the file, resolving it (with
// retries) when there is none.
func (j *fileJob) location(ctx context.Context) (*Location, int, error) {
	j.locMu.Lock()
	defer j.locMu.Unlock()
	if j.loc != nil {
		return j.loc, j.locGen, nil
	}
	var loc *Location
	err := j.d.retry.do(ctx, j.f.Path, func() (int64, error) {
		var err error
		loc, err = j.d.src.Locate(ctx, j.d.snap, j.f)
		return 0, clientError(err)
	})
	if err != nil {
		return nil, 0, err
	}
	j.loc = loc
	j.locGen++
	return loc, j.locGen, nil
}

// relocate drops the URL of generation gen (expired presigned URL).
func (j *fileJob) relocate(gen int) {
	j.locMu.Lock()
	if j.locGen == gen {
		j.loc = nil
	}
	j.locMu.Unlock()
}

// fetchChunk fetches the missing bytes of chunk i, retrying transient
// failures from the byte where they stopped.
func (j *fileJob) fetchChunk(ctx context.Context, i int) error {
	return j.d.retry.do(ctx, j.f.Path, func() (int64, error) {
		loc, gen, err := j.location(ctx)
		if err != nil {
			return 0, err
		}
		n, err := j.get(ctx, loc.URL, i)
		var he *HTTPError
		if errors.As(err, &he) && he.StatusCode == http.StatusForbidden {
			// An expired presigned URL: resolve again, once per generation.
			j.relocate(gen)
			if gen > 3 {
				return n, permanent(err)
			}
		}
		return n, err
	})
}

// get issues one GET for the rest of chunk i and writes what arrives; it
// returns the bytes written.
func (j *fileJob) get(ctx context.Context, u string, i int) (int64, error) {
	start, end, epoch, err := j.remaining(i)
	if err != nil || start >= end {
		return 0, err
	}
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stall := newRateWatch(j.d.opts.StallTimeout, j.d.opts.MinRate, func() { cancel(errStall) })
	defer stall.stop()
	resp, err := j.request(rctx, u, start, end)
	if err != nil {
		if context.Cause(rctx) == errStall {
			return 0, fmt.Errorf("GET %s: no response for %s: %w", j.f.Path, j.d.opts.StallTimeout, errStall)
		}
		return 0, err
	}
	defer resp.Body.Close()
	w := chunkWriter{j: j, i: i, epoch: epoch, pos: start}
	err = w.copyFrom(resp.Body, end, stall)
	if errors.Is(err, errBody) && context.Cause(rctx) == errStall {
		err = fmt.Errorf("GET %s: fewer than %d bytes in %s at byte %d: %w", j.f.Path, stall.need, j.d.opts.StallTimeout, w.pos, errStall)
	}
	return w.wrote, err
}

// remaining is the byte range [start, end) of chunk i still missing, and
// the epoch of the partial file it belongs to. Without Range support the
// only way on is from the start of the file, so a chunk begun is reset.
func (j *fileJob) remaining(i int) (start, end int64, epoch int, err error) {
	j.mu.Lock()
	off, clen := j.st.chunk(i)
	done, noRange := j.st.Done[i], j.st.NoRange
	epoch = j.epoch
	j.mu.Unlock()
	if noRange && done > 0 {
		if err := j.reset(true); err != nil {
			return 0, 0, 0, permanent(err)
		}
		j.mu.Lock()
		epoch, done = j.epoch, 0
		j.mu.Unlock()
	}
	return off + done, off + clen, epoch, nil
}

// request sends the GET for bytes [start, end) and checks the answer's
// status and range against the listing; the caller closes the body.
func (j *fileJob) request(ctx context.Context, u string, start, end int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, permanent(redactErr(err))
	}
	req.Header.Set("Accept-Encoding", "identity")
	ranged := !(start == 0 && end == j.f.Size)
	if ranged {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", start, end-1))
	}
	resp, err := j.d.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", j.f.Path, redactErr(err))
	}
	if err := j.checkResponse(resp, ranged, start); err != nil {
		resp.Body.Close()
		return nil, err
	}
	return resp, nil
}

// checkResponse accepts a 206 with the asked range or, for a request
// without Range, a 200 of the listed size.
func (j *fileJob) checkResponse(resp *http.Response, ranged bool, start int64) error {
	switch resp.StatusCode {
	case http.StatusPartialContent:
		if !ranged {
			return permanent(fmt.Errorf("GET %s: 206 to a request without Range", redact(resp.Request.URL)))
		}
		cr := resp.Header.Get("Content-Range")
		first, _, total, err := parseContentRange(cr)
		if err != nil {
			return fmt.Errorf("GET %s: %w", redact(resp.Request.URL), err)
		}
		if total >= 0 && total != j.f.Size {
			return permanent(fmt.Errorf("%s: the server has %d bytes, the listing says %d (file changed?)", j.f.Path, total, j.f.Size))
		}
		if first != start {
			return fmt.Errorf("GET %s: asked for bytes from %d, got Content-Range %q", redact(resp.Request.URL), start, cr)
		}
	case http.StatusOK:
		if ranged {
			return errNoRange
		}
		if resp.ContentLength >= 0 && resp.ContentLength != j.f.Size {
			return permanent(fmt.Errorf("%s: the server sends %d bytes, the listing says %d (file changed?)", j.f.Path, resp.ContentLength, j.f.Size))
		}
	default:
		return newHTTPError(resp)
	}
	return nil
}

// errBody marks a body that ended or failed before its last byte.
var errBody = errors.New("body ended early")

// chunkWriter writes the bytes of one response into chunk i of the
// partial file, extending the streaming hash when they continue it.
type chunkWriter struct {
	j     *fileJob
	i     int
	epoch int   // of the partial file when the request began
	pos   int64 // next byte of the file to write
	wrote int64
}

// copyFrom reads body up to byte end of the file, in pieces of one pooled
// buffer, counting what arrives on stall.
func (w *chunkWriter) copyFrom(body io.Reader, end int64, stall *rateWatch) error {
	bufp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bufp)
	buf := *bufp
	fill := 0
	for w.pos+int64(fill) < end {
		want := min(int64(len(buf)-fill), end-w.pos-int64(fill))
		n, rerr := body.Read(buf[fill : fill+int(want)])
		if n > 0 {
			stall.add(n)
			fill += n
		}
		if fill == len(buf) || (rerr != nil && fill > 0) || w.pos+int64(fill) == end {
			if err := w.write(buf[:fill]); err != nil {
				return err
			}
			fill = 0
		}
		if rerr != nil && w.pos < end {
			if rerr == io.EOF {
				rerr = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("GET %s: %w at byte %d of %d: %w", w.j.f.Path, errBody, w.pos, w.j.f.Size, rerr)
		}
	}
	return nil
}

// write puts b at pos, records it in the chunk's progress, and hashes it
// inline when it extends the hashed prefix.
func (w *chunkWriter) write(b []byte) error {
	j, n := w.j, int64(len(b))
	if _, err := j.fh.WriteAt(b, w.pos); err != nil {
		return permanent(fmt.Errorf("writing %s: %w", j.part, err))
	}
	j.mu.Lock()
	if j.epoch != w.epoch {
		j.mu.Unlock()
		return permanent(fmt.Errorf("%s: partial file reset during a write", j.f.Path))
	}
	j.st.Done[w.i] += n
	j.mu.Unlock()
	j.hmu.Lock()
	if j.hepoch == w.epoch && j.hashed == w.pos {
		j.h.Write(b)
		j.hashed += n
	}
	j.hmu.Unlock()
	w.pos += n
	w.wrote += n
	j.d.fetched.Add(n)
	j.fetchedHere.Add(n)
	addProgress(j.d.progress, j.f.Path, n)
	j.poke()
	return nil
}

// rateWatch aborts a request whose bytes, counted over each window, fall
// short of a minimum rate (and at least one byte): a server that sends
// nothing, or a byte now and then to keep a stall timer quiet, is dropped
// and the request retried.
type rateWatch struct {
	window time.Duration
	need   int64 // bytes each window must bring
	got    atomic.Int64
	timer  *time.Timer
}

func newRateWatch(window time.Duration, minRate int64, abort func()) *rateWatch {
	w := &rateWatch{window: window, need: max(1, int64(float64(minRate)*window.Seconds()))}
	w.timer = time.AfterFunc(window, func() {
		if w.got.Swap(0) < w.need {
			abort()
			return
		}
		w.timer.Reset(window)
	})
	return w
}

// add counts n bytes received.
func (w *rateWatch) add(n int) { w.got.Add(int64(n)) }

// stop ends the watch.
func (w *rateWatch) stop() { w.timer.Stop() }

// bufPool holds the receive buffers. 32 KiB fits a core's L1 data cache, so
// each piece is received, hashed and written while it stays there: on the
// benchmark machine (48 KiB L1d) 32 KiB pulled 3.2 GB in 3.04-3.05 s where
// 64 KiB took 3.8-4.2 s and 16 KiB 3.5-3.7 s (curl: 2.96-3.06 s).
var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// parseContentRange parses "bytes first-last/total" (total -1 for "*").
func parseContentRange(s string) (first, last, total int64, err error) {
	rest, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, 0, 0, fmt.Errorf("bad Content-Range %q", s)
	}
	rng, tot, ok := strings.Cut(rest, "/")
	a, b, ok2 := strings.Cut(rng, "-")
	if !ok || !ok2 {
		return 0, 0, 0, fmt.Errorf("bad Content-Range %q", s)
	}
	if first, err = strconv.ParseInt(a, 10, 64); err != nil {
		return 0, 0, 0, fmt.Errorf("bad Content-Range %q", s)
	}
	if last, err = strconv.ParseInt(b, 10, 64); err != nil || last < first {
		return 0, 0, 0, fmt.Errorf("bad Content-Range %q", s)
	}
	if first < 0 {
		return 0, 0, 0, fmt.Errorf("bad Content-Range %q", s)
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil || total <= last {
			return 0, 0, 0, fmt.Errorf("bad Content-Range %q", s)
		}
	}
	return first, last, total, nil
}
