package hub

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatglm/chatglm/internal/atomicfile"
)

// This file runs one file's download (fileJob.run). Its parts live apart:
// partial.go the partial file and its saved state, fetch.go the streams
// and ranged GETs, hash.go the streaming hash, retry.go the retry policy.

var (
	// errNoRange: the server answered 200 with the whole file to a ranged request.
	errNoRange = errors.New("server ignored the Range header (answered 200 instead of 206)")
	// errStall: fewer bytes than MinRate asks arrived in a StallTimeout window.
	errStall = errors.New("download stalled")
	// errHashMismatch marks a verification failure.
	errHashMismatch = errors.New("hash mismatch")
)

// downloader runs the file jobs of one pull with a shared connection pool.
type downloader struct {
	opts     *Options
	src      Source
	snap     *Snapshot
	client   *http.Client
	progress Progress
	retry    retryPolicy
	sem      chan struct{} // one slot per connection
	fetched  atomic.Int64  // bytes received by this process
}

// fileJob downloads, verifies and installs one file.
type fileJob struct {
	d     *downloader
	f     File
	part  string // partial data file
	state string // its JSON progress
	dest  string // final path

	mu      sync.Mutex
	st      partState
	fh      *os.File
	claimed []bool // chunks a stream has taken in this fetchAll pass
	streams int    // streams fetching now
	first   int    // first chunk not complete (for the hash prefix)
	epoch   int    // bumped when the partial file is reset
	kick    chan struct{}
	started bool

	// The streaming hash of the written prefix: fed inline by the worker
	// whose bytes extend it, else by hashLoop reading the file back.
	hmu    sync.Mutex
	h      hash.Hash
	hashed int64 // bytes fed to h
	hepoch int   // the epoch h belongs to

	fetchedHere atomic.Int64 // bytes this job received (the split decision)

	locMu  sync.Mutex
	loc    *Location
	locGen int
}

// run downloads, verifies and installs the file; a hash mismatch is fetched
// once more from scratch.
func (j *fileJob) run(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		sum, err := j.download(ctx)
		if err == nil {
			err = verify(j.f, sum)
		}
		if err == nil {
			return j.install()
		}
		if errors.Is(err, errHashMismatch) {
			j.discard()
			j.mu.Lock()
			lost := j.st.have()
			j.st = newState(j.f, j.d.opts.ChunkSize)
			j.mu.Unlock()
			addProgress(j.d.progress, j.f.Path, -lost)
			if attempt < 2 {
				slog.Warn("downloaded file failed verification; fetching it again", "file", j.f.Path, "err", err)
				continue
			}
			return fmt.Errorf("%s: %w (fetched twice; the source is serving bad data or the listing is stale)", j.f.Path, err)
		}
		if j.fh != nil {
			j.fh.Close()
			j.fh = nil
		}
		return err
	}
}

// install moves the verified partial file to its place durably: the data
// is synced before the rename and the folder after it, so a final name
// never points at bytes that did not reach the disk.
func (j *fileJob) install() error {
	err := j.fh.Close()
	j.fh = nil
	if err != nil {
		return fmt.Errorf("installing %s: closing %s: %w", j.f.Path, j.part, err)
	}
	if err := os.MkdirAll(filepath.Dir(j.dest), 0o755); err != nil {
		return fmt.Errorf("installing %s: %w", j.f.Path, err)
	}
	if err := atomicfile.Install(j.part, j.dest, true); err != nil {
		return fmt.Errorf("installing %s: %w", j.f.Path, err)
	}
	_ = os.Remove(j.state)
	return nil
}

// download fetches every missing byte and returns the content hash.
func (j *fileJob) download(ctx context.Context) (string, error) {
	if err := j.open(); err != nil {
		return "", err
	}
	j.kick = make(chan struct{}, 1)
	hctx, stopHash := context.WithCancel(ctx)
	hashc := make(chan hashResult, 1)
	go func() { hashc <- j.hashLoop(hctx) }()
	hashed := false
	defer func() {
		// The hasher reads j.fh: it must be gone before the caller closes it.
		stopHash()
		if !hashed {
			<-hashc
		}
	}()

	stopSave := make(chan struct{})
	saved := make(chan struct{})
	go func() {
		defer close(saved)
		t := time.NewTicker(j.d.opts.SaveInterval)
		defer t.Stop()
		for {
			select {
			case <-stopSave:
				return
			case <-t.C:
				if err := j.saveState(); err != nil {
					slog.Warn("saving download progress", "file", j.f.Path, "err", err)
				}
			}
		}
	}()
	err := j.fetchAll(ctx)
	if errors.Is(err, errNoRange) {
		slog.Warn("server ignores Range requests; fetching the whole file in one stream", "file", j.f.Path)
		if err = j.reset(true); err == nil {
			err = j.fetchAll(ctx)
		}
	}
	close(stopSave)
	<-saved
	if serr := j.saveState(); serr != nil && err == nil {
		err = fmt.Errorf("saving download progress of %s: %w", j.f.Path, serr)
	}
	if err != nil {
		return "", err
	}
	j.poke()
	r := <-hashc // ends on ctx cancellation too
	hashed = true
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	return r.sum, r.err
}
