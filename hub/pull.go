package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Options configure a Pull. Zero values take the defaults noted.
type Options struct {
	Repo     string // org/name, e.g. THUDM/chatglm3-6b
	Revision string // branch, tag or commit; "main" (Hub) or "master" (ModelScope)

	Source   string // "huggingface" (default; also "hf") or "modelscope" (also "ms")
	Endpoint string // API endpoint; default HF_ENDPOINT or DefaultEndpoint (Hub), DefaultModelScopeEndpoint
	Token    string // Hub token, sent only to the endpoint host; default HF_TOKEN or $HF_HOME/token

	Dir      string // the store; default DefaultDir()
	LocalDir string // if set, files go to LocalDir/<path> instead of the store (no refs, no manifest)

	Files   []string // exact paths to fetch instead of the default selection
	All     bool     // fetch every file
	Include []string // globs of extra files to fetch
	Offline bool     // use only what the store has

	Connections   int           // parallel HTTP connections, default 8
	ChunkSize     int64         // bytes per ranged GET, default 64 MiB
	SplitBelow    int64         // a file gets more streams while each of its streams receives less than this many bytes/s, default 64 MiB/s
	SplitEvery    time.Duration // how often that rate is checked, default 500ms
	Retries       int           // failures in a row without progress before giving up, default 8
	Backoff       time.Duration // first retry delay, default 1s
	MaxBackoff    time.Duration // longest retry delay, default 30s
	MaxRetryAfter time.Duration // cap on a server's Retry-After, default 2m
	StallTimeout  time.Duration // no byte for this long aborts a request (then retried), default 30s
	MinRate       int64         // bytes/s a body must average over each StallTimeout window, else it is aborted (then retried), default 1 KiB/s
	APITimeout    time.Duration // limit on one metadata request (refs, a tree page, a file list, a resolve), body included, default 60s
	SaveInterval  time.Duration // how often chunk progress is saved, default 1s
	LockPoll      time.Duration // how often a waiting pull retries the repo lock, default 250ms

	Progress   Progress     // default NoProgress
	HTTPClient *http.Client // its Transport is used when set (tests, proxies)
	UserAgent  string       // default "chatglm"
}

func (o *Options) defaults() {
	if o.Connections <= 0 {
		o.Connections = 8
	}
	if o.ChunkSize <= 0 {
		o.ChunkSize = 64 << 20
	}
	if o.SplitBelow <= 0 {
		o.SplitBelow = 64 << 20
	}
	if o.SplitEvery <= 0 {
		o.SplitEvery = 500 * time.Millisecond
	}
	if o.Retries <= 0 {
		o.Retries = 8
	}
	if o.Backoff <= 0 {
		o.Backoff = time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	if o.MaxRetryAfter <= 0 {
		o.MaxRetryAfter = 2 * time.Minute
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = 30 * time.Second
	}
	if o.MinRate <= 0 {
		o.MinRate = 1 << 10
	}
	if o.APITimeout <= 0 {
		o.APITimeout = 60 * time.Second
	}
	if o.SaveInterval <= 0 {
		o.SaveInterval = time.Second
	}
	if o.LockPoll <= 0 {
		o.LockPoll = 250 * time.Millisecond
	}
	if o.Progress == nil {
		o.Progress = NoProgress{}
	}
	if o.UserAgent == "" {
		o.UserAgent = "chatglm"
	}
	switch strings.ToLower(o.Source) {
	case "", "hf", "huggingface", "hugging-face":
		o.Source = "huggingface"
		if o.Revision == "" {
			o.Revision = "main"
		}
	case "ms", "modelscope":
		o.Source = "modelscope"
		if o.Revision == "" {
			o.Revision = "master"
		}
	}
}

// Result says what a Pull produced.
type Result struct {
	Repo     string
	Revision string
	ID       string // snapshot id (commit sha for the Hub)
	Dir      string // folder with the files
	Files    []File // the selected files, all present in Dir
	Fetched  int64  // bytes received over the network by this pull
	Offline  bool   // answered from the store without the network
}

// Token returns the Hub token from HF_TOKEN, else the file
// $HF_TOKEN_PATH or $HF_HOME/token (HF_HOME default ~/.cache/huggingface).
func Token() string {
	if t := strings.TrimSpace(os.Getenv("HF_TOKEN")); t != "" {
		return t
	}
	p := os.Getenv("HF_TOKEN_PATH")
	if p == "" {
		home := os.Getenv("HF_HOME")
		if home == "" {
			if d, err := os.UserCacheDir(); err == nil {
				home = filepath.Join(d, "huggingface")
			}
		}
		if home != "" {
			p = filepath.Join(home, "token")
		}
	}
	if p == "" {
		return ""
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// NewSource builds the Source named by opts (after defaults: Source,
// Endpoint, Token, HTTPClient, UserAgent).
func NewSource(opts Options) (Source, error) {
	opts.defaults()
	switch opts.Source {
	case "huggingface":
		ep := opts.Endpoint
		if ep == "" {
			ep = os.Getenv("HF_ENDPOINT")
		}
		tok := opts.Token
		if tok == "" {
			tok = Token()
		}
		h, err := NewHF(ep, tok, opts.UserAgent, opts.HTTPClient)
		if err != nil {
			return nil, err
		}
		h.api.configure(&opts)
		return h, nil
	case "modelscope":
		ep := opts.Endpoint
		if ep == "" {
			if d := os.Getenv("MODELSCOPE_DOMAIN"); d != "" {
				ep = d
				if !strings.Contains(ep, "://") {
					ep = "https://" + ep
				}
			}
		}
		m, err := NewModelScope(ep, opts.UserAgent, opts.HTTPClient)
		if err != nil {
			return nil, err
		}
		m.api.configure(&opts)
		return m, nil
	default:
		return nil, fmt.Errorf("unknown source %q: want huggingface or modelscope", opts.Source)
	}
}

// Pull makes the selected files of a repo revision present and verified in
// the store (or LocalDir) and returns where they are. It resumes what an
// earlier pull left, holds the repo lock while it works, and with Offline
// (or when the source cannot be reached) answers from the store alone.
func Pull(ctx context.Context, opts Options) (*Result, error) {
	opts.defaults()
	if _, _, err := splitRepo(opts.Repo); err != nil {
		return nil, err
	}
	if err := CheckRevision(opts.Revision); err != nil {
		return nil, err
	}
	for _, p := range opts.Files {
		if err := checkRepoPath(p); err != nil {
			return nil, fmt.Errorf("requested file: %w", err)
		}
	}
	store := NewStore(opts.Dir)
	if opts.Offline {
		return pullLocal(store, &opts)
	}
	src, err := NewSource(opts)
	if err != nil {
		return nil, err
	}
	snap, err := src.List(ctx, opts.Repo, opts.Revision)
	if err != nil {
		if ctx.Err() == nil && isNetworkError(err) {
			if res, lerr := pullLocal(store, &opts); lerr == nil {
				slog.Warn("source unreachable; using the local copy", "repo", opts.Repo, "snapshot", res.ID, "err", err)
				return res, nil
			}
		}
		return nil, err
	}
	// Every Source's listing is checked here, before any work: the
	// sources check their own too, but a Source is an interface.
	if err := checkSnapshot(snap); err != nil {
		return nil, err
	}
	var sel []File
	if len(opts.Files) > 0 {
		byPath := map[string]File{}
		for _, f := range snap.Files {
			byPath[f.Path] = f
		}
		for _, p := range opts.Files {
			f, ok := byPath[p]
			if !ok {
				return nil, fmt.Errorf("%s@%s has no file %s", opts.Repo, snap.ID, p)
			}
			sel = append(sel, f)
		}
	} else if sel, err = Select(snap.Files, opts.All, opts.Include); err != nil {
		return nil, err
	}
	if len(sel) == 0 {
		return nil, fmt.Errorf("%s@%s: nothing to download (no config, tokenizer or weight files; try --all)", opts.Repo, snap.ID)
	}

	var dir, partDir, lockPath string
	if opts.LocalDir != "" {
		dir = opts.LocalDir
		partDir = filepath.Join(dir, ".chatglm-partial")
		lockPath = filepath.Join(partDir, ".lock")
	} else {
		if dir, err = store.SnapshotDir(opts.Repo, snap.ID); err != nil {
			return nil, err
		}
		rd, _ := store.RepoDir(opts.Repo)
		partDir = filepath.Join(rd, ".partial")
		lockPath, _ = store.lockPath(opts.Repo)
	}
	if err := os.MkdirAll(partDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", partDir, err)
	}
	lk, err := lock(ctx, lockPath, opts.LockPoll, func() {
		slog.Warn("another chatglm process is pulling this repo; waiting for it", "repo", opts.Repo, "lock", lockPath)
	})
	if err != nil {
		return nil, err
	}
	defer lk.Unlock()

	d := &downloader{opts: &opts, src: src, snap: snap, client: sourceClient(src), progress: opts.Progress,
		retry: newRetryPolicy(&opts), sem: make(chan struct{}, opts.Connections)}
	var jobs []*fileJob
	var total, have, need int64
	dupes := map[string]string{}
	recorded := map[File]bool{} // files the snapshot's manifest vouches for
	if opts.LocalDir == "" {
		dupes = store.knownContents(opts.Repo, snap.ID)
		if m, err := store.ReadManifest(opts.Repo, snap.ID); err == nil {
			for _, f := range m.Files {
				recorded[f] = true
			}
		}
	}
	for _, f := range sel {
		total += f.Size
		dest := filepath.Join(dir, filepath.FromSlash(f.Path))
		if ok, err := present(dest, f, recorded[f]); err != nil {
			return nil, err
		} else if ok {
			have += f.Size
			continue
		}
		if src := dupes[contentKey(f)]; src != "" {
			if err := linkOrCopy(src, dest); err == nil {
				slog.Debug("reused from another snapshot", "file", f.Path, "from", src)
				have += f.Size
				continue
			}
		}
		j, err := d.newJob(f, partDir, dest)
		if err != nil {
			return nil, err
		}
		h := j.load()
		have += h
		need += f.Size - h
		jobs = append(jobs, j)
	}
	if need > 0 {
		free, err := freeSpace(partDir)
		if err == nil && free < need+need/100+(64<<20) {
			return nil, fmt.Errorf("not enough disk space in %s: %s still to download, %s free", partDir, fmtBytes(need), fmtBytes(free))
		}
	}

	opts.Progress.Start(len(sel), total, have)
	err = d.runJobs(ctx, jobs)
	opts.Progress.Finish()
	if err != nil {
		return nil, err
	}
	res := &Result{Repo: opts.Repo, Revision: opts.Revision, ID: snap.ID, Dir: dir, Files: sel, Fetched: d.fetched.Load()}
	if opts.LocalDir == "" {
		if err := store.writeManifest(&Manifest{Source: snap.Source, Repo: opts.Repo, Revision: opts.Revision, ID: snap.ID,
			Files: append([]File(nil), sel...), PulledAt: time.Now().UTC()}); err != nil {
			return nil, fmt.Errorf("writing manifest of %s: %w", opts.Repo, err)
		}
		if err := store.writeRef(opts.Repo, opts.Revision, snap.ID); err != nil {
			return nil, fmt.Errorf("writing ref %s of %s: %w", opts.Revision, opts.Repo, err)
		}
	}
	return res, nil
}

// present says whether dest already holds f. A file the snapshot's
// manifest records was verified, synced and renamed into place before the
// manifest was written, so its size is enough; any other file there (left
// by a pull that crashed before its manifest, or a LocalDir) is hashed
// again, and removed when it does not match.
func present(dest string, f File, recorded bool) (bool, error) {
	st, err := os.Lstat(dest)
	if err != nil || !st.Mode().IsRegular() || st.Size() != f.Size {
		return false, nil
	}
	if recorded {
		return true, nil
	}
	sum, err := hashFile(dest, f)
	if err != nil {
		return false, err
	}
	if verify(f, sum) == nil {
		return true, nil
	}
	slog.Warn("a file in the store does not match the listing; fetching it again", "file", f.Path)
	if err := os.Remove(dest); err != nil {
		return false, fmt.Errorf("removing unverified %s: %w", dest, err)
	}
	return false, nil
}

// runJobs runs the file jobs, up to Connections files at once; the first
// error stops the rest.
func (d *downloader) runJobs(ctx context.Context, jobs []*fileJob) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	files := make(chan struct{}, d.opts.Connections)
	for _, j := range jobs {
		select {
		case files <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-files }()
			err := j.run(ctx)
			d.progress.FileDone(j.f.Path, err)
			if err != nil {
				mu.Lock()
				if ctx.Err() == nil || !errors.Is(err, context.Canceled) {
					errs = append(errs, err)
				}
				mu.Unlock()
				cancel()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return errs[0]
	}
	return ctx.Err()
}

func sourceClient(s Source) *http.Client {
	switch s := s.(type) {
	case *HF:
		return s.Client()
	case *ModelScope:
		return s.Client()
	}
	return http.DefaultClient
}

func contentKey(f File) string {
	switch {
	case f.SHA256 != "":
		return fmt.Sprintf("sha256:%s:%d", f.SHA256, f.Size)
	case f.BlobID != "":
		return fmt.Sprintf("blob:%s:%d", f.BlobID, f.Size)
	}
	return ""
}

// knownContents maps content keys to files already in other snapshots of
// the repo.
func (s *Store) knownContents(repo, except string) map[string]string {
	out := map[string]string{}
	rd, err := s.RepoDir(repo)
	if err != nil {
		return out
	}
	metas, _ := filepath.Glob(filepath.Join(rd, ".meta", "*.json"))
	for _, m := range metas {
		id := strings.TrimSuffix(filepath.Base(m), ".json")
		if id == except {
			continue
		}
		man, err := s.ReadManifest(repo, id)
		if err != nil {
			continue
		}
		for _, f := range man.Files {
			k := contentKey(f)
			if k == "" {
				continue
			}
			p := filepath.Join(rd, id, filepath.FromSlash(f.Path))
			if st, err := os.Stat(p); err == nil && st.Size() == f.Size {
				out[k] = p
			}
		}
	}
	return out
}

// pullLocal answers a pull from the store (or LocalDir) alone.
func pullLocal(store *Store, opts *Options) (*Result, error) {
	if opts.LocalDir != "" {
		if len(opts.Files) == 0 {
			return nil, fmt.Errorf("offline: %s: only explicit files can be checked in a local dir", opts.LocalDir)
		}
		for _, p := range opts.Files {
			if _, err := os.Stat(filepath.Join(opts.LocalDir, filepath.FromSlash(p))); err != nil {
				return nil, fmt.Errorf("offline: %w", err)
			}
		}
		return &Result{Repo: opts.Repo, Revision: opts.Revision, Dir: opts.LocalDir, Offline: true}, nil
	}
	m, dir, err := store.Local(opts.Repo, opts.Revision)
	if err != nil {
		return nil, fmt.Errorf("offline: %w", err)
	}
	for _, p := range opts.Files {
		if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(p))); err != nil {
			return nil, fmt.Errorf("offline: %s@%s has no %s in the store", opts.Repo, opts.Revision, p)
		}
	}
	return &Result{Repo: opts.Repo, Revision: opts.Revision, ID: m.ID, Dir: dir, Files: m.Files, Offline: true}, nil
}
