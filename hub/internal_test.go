package hub

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// roundTripFunc is an http.RoundTripper made of a function.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// Issue 11 item 4: an https endpoint that redirects to plain http on the
// same host must not get the token over http.
func TestTokenNotSentOverPlainHTTPAfterRedirect(t *testing.T) {
	var mu sync.Mutex
	auth := map[string]string{} // scheme -> Authorization seen
	rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		mu.Lock()
		auth[r.URL.Scheme] = r.Header.Get("Authorization")
		mu.Unlock()
		resp := &http.Response{Request: r, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(""))}
		if r.URL.Scheme == "https" {
			u := *r.URL
			u.Scheme = "http"
			resp.StatusCode = http.StatusFound
			resp.Header.Set("Location", u.String())
			return resp, nil
		}
		resp.StatusCode = http.StatusOK
		resp.Body = io.NopCloser(strings.NewReader(`{"branches":[{"name":"main","targetCommit":"` + strings.Repeat("a", 40) + `"}]}`))
		return resp, nil
	})
	h, err := NewHF("https://hub.example", "hf_secret", "", &http.Client{Transport: rt})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Commit(context.Background(), "org/name", "main"); err != nil {
		t.Fatal(err)
	}
	if auth["https"] != "Bearer hf_secret" {
		t.Fatalf("the https endpoint got Authorization %q", auth["https"])
	}
	if auth["http"] != "" {
		t.Fatalf("the token went over plain http: %q", auth["http"])
	}
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{"https://h.example", "https://H.example:443/x", true},
		{"http://h.example", "http://h.example:80", true},
		{"https://h.example", "http://h.example", false},
		{"https://h.example", "https://h.example:8443", false},
		{"https://h.example", "https://cdn.h.example", false},
	} {
		a, _ := http.NewRequest("GET", tc.a, nil)
		b, _ := http.NewRequest("GET", tc.b, nil)
		if got := origin(a.URL) == origin(b.URL); got != tc.same {
			t.Errorf("same origin %s %s = %v, want %v", tc.a, tc.b, got, tc.same)
		}
	}
}

// Issue 11 item 7: rm must not move the lock. A pull waiting for the lock
// while rm holds it, and a pull started after rm, must contend for the
// same lock (before, rm renamed the repo folder with its .lock inside, and
// both could hold "the" lock at once).
func TestRemoveKeepsTheLockInPlace(t *testing.T) {
	s := NewStore(t.TempDir())
	const repo = "THUDM/chatglm3-6b"
	rd, _ := s.RepoDir(repo)
	if err := os.MkdirAll(filepath.Join(rd, "refs"), 0o755); err != nil {
		t.Fatal(err)
	}
	lp, err := s.lockPath(repo)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	waiting := make(chan struct{})
	held := make(chan *fileLock, 1)
	testHookRemoveLocked = func() {
		go func() {
			l, err := lock(ctx, lp, time.Millisecond, func() { close(waiting) })
			if err != nil {
				t.Error(err)
			}
			held <- l
		}()
		<-waiting
	}
	defer func() { testHookRemoveLocked = nil }()
	if err := s.Remove(repo); err != nil {
		t.Fatal(err)
	}
	b := <-held // the waiting pull has the lock now
	if b == nil {
		t.FailNow()
	}
	defer b.Unlock()
	if c, err := tryLock(lp); err == nil {
		c.Unlock()
		t.Fatal("a new pull took the lock the waiting pull holds")
	}
	if !strings.HasPrefix(lp, s.Dir) || strings.HasPrefix(lp, rd+string(filepath.Separator)) {
		t.Fatalf("lock %s inside the repo folder %s", lp, rd)
	}
}

// FuzzParseListing feeds hostile listings to the Hub tree and ModelScope
// parsers: no panic, and whatever they accept is safe to build local names
// from.
func FuzzParseListing(f *testing.F) {
	sha := strings.Repeat("ab", 32)
	f.Add(false, []byte(`[{"type":"file","path":"config.json","size":10,"oid":"`+strings.Repeat("a", 40)+`"},`+
		`{"type":"file","path":"model.safetensors","size":134,"oid":"`+strings.Repeat("0", 40)+`","lfs":{"oid":"`+sha+`","size":5}},`+
		`{"type":"directory","path":"sub","oid":"x","size":0}]`))
	f.Add(false, []byte(`[{"type":"file","path":"../x","size":-5,"lfs":{"oid":"x/../../y","size":-1}}]`))
	f.Add(true, []byte(`{"Code":200,"Success":true,"Data":{"Files":[{"Name":"config.json","Path":"config.json","Type":"blob","Size":3,"Sha256":"`+sha+`"}]}}`))
	f.Add(true, []byte(`{"Code":200,"Data":{"Files":[{"Path":"a","Size":1,"Sha256":"`+sha+`"},{"Path":"a","Size":1,"Sha256":"`+sha+`"}]}}`))
	f.Add(true, []byte(`{"Code":10010205,"Message":"\u001b[2Jnot found","Success":false}`))
	f.Fuzz(func(t *testing.T, modelscope bool, data []byte) {
		var files []File
		var err error
		if modelscope {
			files, err = parseMSFiles(data)
		} else {
			files, err = parseHFTree(data)
		}
		if err != nil {
			if strings.ContainsAny(err.Error(), "\x1b\x07") {
				t.Fatalf("raw control character in error %q", err)
			}
			return
		}
		root := filepath.Join(string(filepath.Separator)+"store", "snap")
		for _, fl := range files {
			if err := checkFile(fl); err != nil {
				t.Fatalf("accepted an invalid file: %v", err)
			}
			p := filepath.Join(root, filepath.FromSlash(fl.Path))
			if !strings.HasPrefix(p, root+string(filepath.Separator)) {
				t.Fatalf("path %q leaves the snapshot folder: %s", fl.Path, p)
			}
			key, err := partKey(fl)
			if err != nil || strings.ContainsAny(key, `/\.`) {
				t.Fatalf("partial key %q (%v) of %+v", key, err, fl)
			}
		}
		if modelscope {
			if err := checkFiles(files); err != nil {
				t.Fatalf("accepted a listing checkFiles refuses: %v", err)
			}
		}
	})
}

// A huge Retry-After used to overflow into a negative wait: retries with
// no pause at all.
func TestRetryAfterNeverNegative(t *testing.T) {
	for _, h := range []string{"99999999999", "9223372036854775807", "86401"} {
		d, ok := retryAfter(h, time.Now())
		if !ok || d <= 0 || d > 24*time.Hour {
			t.Errorf("Retry-After %s: %v, %v", h, d, ok)
		}
	}
	if d, ok := retryAfter("-5", time.Now()); ok && d < 0 {
		t.Errorf("Retry-After -5: %v", d)
	}
}

func TestParseContentRangeRefusesNonsense(t *testing.T) {
	for _, s := range []string{"bytes 0-9/-3", "bytes 0-9/5", "bytes 5-3/10", "bytes -1-3/10", "bytes 0-9", "0-9/10"} {
		if _, _, _, err := parseContentRange(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
	if a, b, n, err := parseContentRange("bytes 0-9/10"); err != nil || a != 0 || b != 9 || n != 10 {
		t.Errorf("bytes 0-9/10: %d %d %d %v", a, b, n, err)
	}
	if _, _, n, err := parseContentRange("bytes 0-9/*"); err != nil || n != -1 {
		t.Errorf("bytes 0-9/*: %d %v", n, err)
	}
}
