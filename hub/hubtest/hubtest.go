// Package hubtest is a local stand-in for the Hugging Face Hub and its CDN
// (and for ModelScope's file API), for tests and benchmarks of package hub.
// It serves the refs, tree (paginated with Link rel="next") and resolve
// routes with the headers the real Hub sends, redirects LFS files to a
// second server acting as the CDN (presigned URLs that can be expired),
// honours Range, counts bytes and requests per file, and injects faults
// chosen by a hook.
package hubtest

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// File is one file of a fake repo: Data in memory, or the file at Disk.
type File struct {
	Data []byte
	Disk string // path of a file on disk (large benchmark files)
	LFS  bool   // served through the CDN with X-Linked-* headers

	// ListedSHA256, when set, is the sha256 the listing claims instead of
	// the real one (a listing that disagrees with the bytes).
	ListedSHA256 string

	size   int64
	sha256 string
	blob   string
}

// Request describes one body request for the fault hook.
type Request struct {
	Path   string // repo file path
	N      int    // 1 for the first GET of this path, 2 for the next, ...
	Range  string // the Range header, "" if none
	Host   string // "hub", "cdn" or "modelscope"
	Header http.Header
}

// Fault is what the server does wrong with one request. The zero value
// serves the request correctly.
type Fault struct {
	Status      int           // answer with this status and no body
	Abort       bool          // close the connection before any header
	RetryAfter  string        // Retry-After header for Status
	IgnoreRange bool          // answer 200 with the whole file
	Body        []byte        // send these bytes instead of the file's (same length keeps headers right)
	DropAfter   int64         // abort the connection after this many body bytes (>0)
	Truncate    int64         // end the body cleanly after this many bytes, short of Content-Length (>0)
	StallAfter  int64         // after this many body bytes, send nothing for Stall
	Stall       time.Duration //
	Throttle    time.Duration // sleep this long after each 32 KiB
	Trickle     time.Duration // send one byte, then sleep this long, and so on (a stall timer never fires)
}

// Server is a fake Hub (and ModelScope) plus its CDN.
type Server struct {
	Hub *httptest.Server // API and resolve routes
	CDN *httptest.Server // LFS bytes

	// Token, if set, is required as "Bearer <Token>" by every Hub request.
	Token string
	// PageSize is the number of tree entries per page (default 1000).
	PageSize int
	inFlight atomic.Int64

	mu       sync.Mutex
	fault    func(Request) Fault
	apiHook  func(w http.ResponseWriter, r *http.Request) bool
	repos    map[string]*repo
	blobs    map[string]*File // sha256 -> LFS file, for the CDN
	sigGen   int
	bytes    map[string]int64
	byUA     map[string]int64 // path + "\x00" + User-Agent
	reqs     map[string]int
	open     map[string]int // body responses of a path being sent now
	peak     map[string]int // the most of them at once
	cdnAuth  int
	hubNoTok int
}

type repo struct {
	branches map[string]string           // name -> commit
	commits  map[string]map[string]*File // commit -> path -> file
	msRev    string                      // ModelScope revision name
}

// New starts the Hub and CDN servers.
func New() *Server {
	s := newServer()
	s.Hub = httptest.NewServer(http.HandlerFunc(s.serveHub))
	s.CDN = httptest.NewServer(http.HandlerFunc(s.serveCDN))
	return s
}

// NewOn serves on two given listeners (for a benchmark on fixed ports).
func NewOn(hub, cdn net.Listener) *Server {
	s := newServer()
	s.Hub = httptest.NewUnstartedServer(http.HandlerFunc(s.serveHub))
	s.Hub.Listener.Close()
	s.Hub.Listener = hub
	s.Hub.Start()
	s.CDN = httptest.NewUnstartedServer(http.HandlerFunc(s.serveCDN))
	s.CDN.Listener.Close()
	s.CDN.Listener = cdn
	s.CDN.Start()
	return s
}

func newServer() *Server {
	return &Server{repos: map[string]*repo{}, blobs: map[string]*File{}, bytes: map[string]int64{}, byUA: map[string]int64{}, reqs: map[string]int{},
		open: map[string]int{}, peak: map[string]int{}}
}

// Close stops both servers.
func (s *Server) Close() {
	s.Hub.CloseClientConnections()
	s.CDN.CloseClientConnections()
	s.Hub.Close()
	s.CDN.Close()
}

// URL is the Hub endpoint.
func (s *Server) URL() string { return s.Hub.URL }

// SetRepo makes files the new commit of branch "main" (and ModelScope's
// "master") of id, returning the commit sha. Earlier commits stay served.
func (s *Server) SetRepo(id string, files map[string]*File) (string, error) {
	h := sha1.New()
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		f := files[p]
		if err := f.measure(); err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %s %d\n", p, f.sha256, f.size)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[id]
	if r == nil {
		r = &repo{branches: map[string]string{}, commits: map[string]map[string]*File{}, msRev: "master"}
		s.repos[id] = r
	}
	fmt.Fprintf(h, "%d", len(r.commits))
	commit := hex.EncodeToString(h.Sum(nil))
	r.commits[commit] = files
	r.branches["main"] = commit
	for _, f := range files {
		if f.LFS {
			s.blobs[f.sha256] = f
		}
	}
	return commit, nil
}

func (f *File) measure() error {
	if f.sha256 != "" {
		return nil
	}
	if f.Disk != "" {
		fh, err := os.Open(f.Disk)
		if err != nil {
			return err
		}
		defer fh.Close()
		sum := sha256.New()
		n, err := io.Copy(sum, fh)
		if err != nil {
			return err
		}
		f.size, f.sha256 = n, hex.EncodeToString(sum.Sum(nil))
		// Large disk files are always LFS; no blob id needed.
		return nil
	}
	f.size = int64(len(f.Data))
	s := sha256.Sum256(f.Data)
	f.sha256 = hex.EncodeToString(s[:])
	b := sha1.New()
	fmt.Fprintf(b, "blob %d\x00", len(f.Data))
	b.Write(f.Data)
	f.blob = hex.EncodeToString(b.Sum(nil))
	return nil
}

// SetDiskSHA256 records a precomputed sha256 for a disk file, so SetRepo
// need not read it (benchmarks cache it).
func (f *File) SetDiskSHA256(sum string, size int64) { f.sha256, f.size = sum, size }

// SHA256 is the file's real sha256 (after SetRepo).
func (f *File) SHA256() string { return f.sha256 }

// BlobID is the file's git blob sha1 (after SetRepo; "" for disk files).
func (f *File) BlobID() string { return f.blob }

// SetFault sets the hook asked for every body request (nil for none).
func (s *Server) SetFault(f func(Request) Fault) {
	s.mu.Lock()
	s.fault = f
	s.mu.Unlock()
}

// SetAPIHook sets a hook asked first for every API request (refs, tree,
// ModelScope's file list and the resolve HEADs; not file bodies): when it
// returns true it has answered the request itself (a hostile or failing
// hub), else the request is served normally. nil removes it.
func (s *Server) SetAPIHook(h func(w http.ResponseWriter, r *http.Request) bool) {
	s.mu.Lock()
	s.apiHook = h
	s.mu.Unlock()
}

// ExpireURLs makes every CDN URL handed out so far answer 403.
func (s *Server) ExpireURLs() {
	s.mu.Lock()
	s.sigGen++
	s.mu.Unlock()
}

// settle waits (up to a second) for responses in flight to finish, so the
// counters include every byte a client has already seen.
func (s *Server) settle() {
	for i := 0; i < 1000 && s.inFlight.Load() > 0; i++ {
		time.Sleep(time.Millisecond)
	}
}

// BytesServed is the body bytes sent for path so far (after responses in
// flight finish).
func (s *Server) BytesServed(path string) int64 {
	s.settle()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes[path]
}

// BytesServedTo is the body bytes sent for path to clients with this
// User-Agent.
func (s *Server) BytesServedTo(path, userAgent string) int64 {
	s.settle()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byUA[path+"\x00"+userAgent]
}

// TotalBytes is the body bytes sent for every file so far (after
// responses in flight finish).
func (s *Server) TotalBytes() int64 {
	s.settle()
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, b := range s.bytes {
		n += b
	}
	return n
}

// Requests is the number of body requests for path so far.
func (s *Server) Requests(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reqs[path]
}

// PeakStreams is the most body responses for path that were sent at once.
func (s *Server) PeakStreams(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak[path]
}

// InFlight is the number of body responses being sent now.
func (s *Server) InFlight() int64 { return s.inFlight.Load() }

// ResetCounters zeroes the byte and request counters.
func (s *Server) ResetCounters() {
	s.settle()
	s.mu.Lock()
	s.bytes, s.byUA, s.reqs = map[string]int64{}, map[string]int64{}, map[string]int{}
	s.open, s.peak = map[string]int{}, map[string]int{}
	s.mu.Unlock()
}

// CDNAuthSeen is how many CDN requests carried an Authorization header
// (must stay 0).
func (s *Server) CDNAuthSeen() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cdnAuth
}

// HubRejected is how many Hub requests lacked the required token.
func (s *Server) HubRejected() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hubNoTok
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) lookup(id, rev string) (*repo, string, map[string]*File) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[id]
	if r == nil {
		return nil, "", nil
	}
	if c, ok := r.branches[rev]; ok {
		rev = c
	}
	if rev == r.msRev {
		rev = r.branches["main"]
	}
	return r, rev, r.commits[rev]
}

func (s *Server) serveHub(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	hook := s.apiHook
	s.mu.Unlock()
	if hook != nil && (strings.HasPrefix(r.URL.Path, "/api/") || r.Method == http.MethodHead) &&
		!(r.URL.Query().Get("FilePath") != "") && hook(w, r) {
		return
	}
	segs := strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), "/"), "/")
	for i, x := range segs {
		segs[i], _ = url.PathUnescape(x)
	}
	if len(segs) >= 6 && segs[0] == "api" && segs[1] == "v1" && segs[2] == "models" {
		s.serveModelScope(w, r, segs[3]+"/"+segs[4], segs[5:])
		return
	}
	if s.Token != "" && r.Header.Get("Authorization") != "Bearer "+s.Token {
		s.mu.Lock()
		s.hubNoTok++
		s.mu.Unlock()
		http.Error(w, `{"error":"Invalid credentials"}`, http.StatusUnauthorized)
		return
	}
	switch {
	case len(segs) == 5 && segs[0] == "api" && segs[1] == "models" && segs[4] == "refs":
		rp, _, _ := s.lookup(segs[2]+"/"+segs[3], "")
		if rp == nil {
			http.Error(w, `{"error":"Repository not found"}`, http.StatusNotFound)
			return
		}
		s.mu.Lock()
		var br []map[string]string
		for name, c := range rp.branches {
			br = append(br, map[string]string{"name": name, "ref": "refs/heads/" + name, "targetCommit": c})
		}
		s.mu.Unlock()
		writeJSON(w, map[string]any{"branches": br, "tags": []any{}, "converts": []any{}})
	case len(segs) >= 6 && segs[0] == "api" && segs[1] == "models" && segs[4] == "tree":
		s.serveTree(w, r, segs[2]+"/"+segs[3], segs[5])
	case len(segs) >= 5 && segs[2] == "resolve":
		s.serveResolve(w, r, segs[0]+"/"+segs[1], segs[3], strings.Join(segs[4:], "/"))
	default:
		http.NotFound(w, r)
	}
}

func (s *Server) serveTree(w http.ResponseWriter, r *http.Request, id, rev string) {
	_, commit, files := s.lookup(id, rev)
	if files == nil {
		http.Error(w, `{"error":"Revision not found"}`, http.StatusNotFound)
		return
	}
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	size := s.PageSize
	if size <= 0 {
		size = 1000
	}
	start, _ := strconv.Atoi(r.URL.Query().Get("cursor"))
	end := min(start+size, len(paths))
	var items []map[string]any
	for _, p := range paths[min(start, len(paths)):end] {
		f := files[p]
		it := map[string]any{"type": "file", "path": p, "size": f.size, "oid": f.blob}
		if f.LFS {
			sum := f.sha256
			if f.ListedSHA256 != "" {
				sum = f.ListedSHA256
			}
			it["oid"] = strings.Repeat("0", 40)
			it["size"] = 134
			it["lfs"] = map[string]any{"oid": sum, "size": f.size, "pointerSize": 134}
		}
		items = append(items, it)
	}
	if end < len(paths) {
		q := r.URL.Query()
		q.Set("cursor", strconv.Itoa(end))
		w.Header().Set("Link", fmt.Sprintf(`<%s/api/models/%s/tree/%s?%s>; rel="next"`, s.Hub.URL, id, url.PathEscape(commit), q.Encode()))
	}
	if items == nil {
		items = []map[string]any{}
	}
	writeJSON(w, items)
}

func (s *Server) serveResolve(w http.ResponseWriter, r *http.Request, id, rev, path string) {
	_, commit, files := s.lookup(id, rev)
	f := files[path]
	if f == nil {
		http.Error(w, `{"error":"Entry not found"}`, http.StatusNotFound)
		return
	}
	w.Header().Set("X-Repo-Commit", commit)
	if f.LFS {
		sum := f.sha256
		if f.ListedSHA256 != "" {
			sum = f.ListedSHA256
		}
		s.mu.Lock()
		gen := s.sigGen
		s.mu.Unlock()
		w.Header().Set("X-Linked-Etag", `"`+sum+`"`)
		w.Header().Set("X-Linked-Size", strconv.FormatInt(f.size, 10))
		w.Header().Set("ETag", `"`+sum+`"`)
		w.Header().Set("Location", fmt.Sprintf("%s/repos/%s?path=%s&sig=%d", s.CDN.URL, f.sha256, url.QueryEscape(path), gen))
		w.WriteHeader(http.StatusFound)
		return
	}
	w.Header().Set("ETag", `"`+f.blob+`"`)
	s.serveBody(w, r, "hub", path, f)
}

func (s *Server) serveCDN(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "" {
		s.mu.Lock()
		s.cdnAuth++
		s.mu.Unlock()
		http.Error(w, "Authorization must not reach the CDN", http.StatusBadRequest)
		return
	}
	sum := strings.TrimPrefix(r.URL.Path, "/repos/")
	s.mu.Lock()
	f := s.blobs[sum]
	gen := s.sigGen
	s.mu.Unlock()
	if f == nil {
		http.NotFound(w, r)
		return
	}
	if sig, _ := strconv.Atoi(r.URL.Query().Get("sig")); sig != gen {
		http.Error(w, "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>", http.StatusForbidden)
		return
	}
	w.Header().Set("ETag", `"`+sum+`"`)
	s.serveBody(w, r, "cdn", r.URL.Query().Get("path"), f)
}

// serveModelScope answers /api/v1/models/{id}/repo/files and /repo.
func (s *Server) serveModelScope(w http.ResponseWriter, r *http.Request, id string, rest []string) {
	q := r.URL.Query()
	_, _, files := s.lookup(id, q.Get("Revision"))
	if files == nil {
		writeJSON(w, map[string]any{"Code": 10010205, "Message": "model not found", "Success": false})
		return
	}
	switch {
	case len(rest) == 2 && rest[0] == "repo" && rest[1] == "files":
		var list []map[string]any
		for p, f := range files {
			name := p[strings.LastIndex(p, "/")+1:]
			list = append(list, map[string]any{"Name": name, "Path": p, "Type": "blob", "Size": f.size, "Sha256": f.sha256, "Revision": "abc"})
		}
		list = append(list, map[string]any{"Name": ".gitattributes", "Path": ".gitattributes", "Type": "blob", "Size": 10, "Sha256": ""})
		writeJSON(w, map[string]any{"Code": 200, "Data": map[string]any{"Files": list}, "Success": true})
	case len(rest) == 1 && rest[0] == "repo":
		p := q.Get("FilePath")
		f := files[p]
		if f == nil {
			http.NotFound(w, r)
			return
		}
		s.serveBody(w, r, "modelscope", p, f)
	default:
		http.NotFound(w, r)
	}
}

// serveBody sends f (or a range of it), applying the fault hook.
func (s *Server) serveBody(w http.ResponseWriter, r *http.Request, host, path string, f *File) {
	if r.Method == http.MethodHead {
		w.Header().Set("Content-Length", strconv.FormatInt(f.size, 10))
		w.Header().Set("Accept-Ranges", "bytes")
		return
	}
	s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	s.mu.Lock()
	s.reqs[path]++
	n := s.reqs[path]
	s.open[path]++
	s.peak[path] = max(s.peak[path], s.open[path])
	hook := s.fault
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.open[path]--
		s.mu.Unlock()
	}()
	var fault Fault
	if hook != nil {
		fault = hook(Request{Path: path, N: n, Range: r.Header.Get("Range"), Host: host, Header: r.Header})
	}
	if fault.Abort {
		panic(http.ErrAbortHandler)
	}
	if fault.Status != 0 {
		if fault.RetryAfter != "" {
			w.Header().Set("Retry-After", fault.RetryAfter)
		}
		http.Error(w, http.StatusText(fault.Status), fault.Status)
		return
	}
	var content io.ReaderAt
	if fault.Body != nil {
		content = strings.NewReader(string(fault.Body))
	} else if f.Disk != "" {
		fh, err := os.Open(f.Disk)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer fh.Close()
		if hook == nil {
			// Fast path for benchmarks: sendfile via ServeContent.
			http.ServeContent(w, r, "", time.Time{}, fh)
			return
		}
		content = fh
	} else {
		content = strings.NewReader(string(f.Data))
	}
	start, end := int64(0), f.size // [start, end)
	status := http.StatusOK
	if rg := r.Header.Get("Range"); rg != "" && !fault.IgnoreRange {
		a, b, ok := parseRange(rg, f.size)
		if !ok {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", f.size))
			http.Error(w, "bad range", http.StatusRequestedRangeNotSatisfiable)
			return
		}
		start, end, status = a, b, http.StatusPartialContent
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", a, b-1, f.size))
	}
	w.Header().Set("Accept-Ranges", "bytes")
	w.Header().Set("Content-Length", strconv.FormatInt(end-start, 10))
	w.WriteHeader(status)
	buf := make([]byte, 32<<10)
	var sent int64
	for pos := start; pos < end; {
		m := min(int64(len(buf)), end-pos)
		if fault.DropAfter > 0 {
			m = min(m, max(fault.DropAfter-sent, 1))
		}
		if fault.Truncate > 0 {
			m = min(m, fault.Truncate-sent)
		}
		if fault.StallAfter > 0 && sent < fault.StallAfter {
			m = min(m, fault.StallAfter-sent)
		}
		if fault.Trickle > 0 {
			m = 1
		}
		if _, err := content.ReadAt(buf[:m], pos); err != nil && err != io.EOF {
			return
		}
		k, err := w.Write(buf[:m])
		s.mu.Lock()
		s.bytes[path] += int64(k)
		s.byUA[path+"\x00"+r.UserAgent()] += int64(k)
		s.mu.Unlock()
		if err != nil {
			return
		}
		sent += int64(k)
		pos += int64(k)
		if fault.DropAfter > 0 && sent >= fault.DropAfter {
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		if fault.Truncate > 0 && sent >= fault.Truncate {
			return
		}
		if fault.StallAfter > 0 && sent == fault.StallAfter {
			w.(http.Flusher).Flush()
			select {
			case <-time.After(fault.Stall):
			case <-r.Context().Done():
				return
			}
		}
		if pause := max(fault.Throttle, fault.Trickle); pause > 0 {
			w.(http.Flusher).Flush()
			select {
			case <-time.After(pause):
			case <-r.Context().Done():
				return
			}
		}
	}
}

// parseRange parses one "bytes=a-b", "bytes=a-" or "bytes=-n" range.
func parseRange(h string, size int64) (int64, int64, bool) {
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return 0, 0, false
	}
	a, b, ok := strings.Cut(spec, "-")
	if !ok {
		return 0, 0, false
	}
	if a == "" {
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n <= 0 {
			return 0, 0, false
		}
		return max(size-n, 0), size, true
	}
	first, err := strconv.ParseInt(a, 10, 64)
	if err != nil || first >= size {
		return 0, 0, false
	}
	last := size - 1
	if b != "" {
		if last, err = strconv.ParseInt(b, 10, 64); err != nil || last < first {
			return 0, 0, false
		}
		last = min(last, size-1)
	}
	return first, last + 1, true
}
