package hub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// File is one file of a repository snapshot as the source lists it.
type File struct {
	Path   string `json:"path"`             // slash-separated path inside the repo
	Size   int64  `json:"size"`             // bytes
	SHA256 string `json:"sha256,omitempty"` // hex sha256 of the content (LFS and ModelScope files), or ""
	BlobID string `json:"blob,omitempty"`   // git blob sha1 of the content (small Hub files), or ""
	LFS    bool   `json:"lfs,omitempty"`    // stored in LFS/Xet on the Hub
}

// Snapshot is the listing of one revision of a repository.
type Snapshot struct {
	Source   string // "huggingface" or "modelscope"
	Repo     string // org/name
	Revision string // what was asked for, e.g. "main"
	ID       string // the commit sha (Hub) or content id (ModelScope) naming the snapshot folder
	Files    []File
}

// Location is where the bytes of one file can be fetched.
type Location struct {
	URL string // final URL for ranged GETs (the CDN for Hub LFS files)
}

// Source lists repositories and locates their files. HF and ModelScope are
// the two implementations.
type Source interface {
	// Name is "huggingface" or "modelscope".
	Name() string
	// List resolves revision and lists every file of that snapshot.
	List(ctx context.Context, repo, revision string) (*Snapshot, error)
	// Locate returns where to fetch f of snap; it is called again when a
	// URL has expired (403).
	Locate(ctx context.Context, snap *Snapshot, f File) (*Location, error)
}

// HTTPError is a non-success HTTP status from a source or CDN.
type HTTPError struct {
	Method     string
	URL        string // without query (presigned URLs carry credentials)
	StatusCode int
	Body       string        // first bytes of the body, for the message
	RetryAfter time.Duration // from a Retry-After header (429, 503), or 0
}

func (e *HTTPError) Error() string {
	msg := fmt.Sprintf("%s %s: %s", e.Method, e.URL, http.StatusText(e.StatusCode))
	if e.StatusCode != 0 {
		msg = fmt.Sprintf("%s %s: HTTP %d %s", e.Method, e.URL, e.StatusCode, http.StatusText(e.StatusCode))
	}
	if e.Body != "" {
		msg += ": " + e.Body
	}
	switch e.StatusCode {
	case http.StatusUnauthorized:
		msg += " (gated or private repo? set HF_TOKEN)"
	case http.StatusNotFound:
		msg += " (check the repo name and revision)"
	}
	return msg
}

// newHTTPError reads a little of resp's body into an HTTPError and closes it.
func newHTTPError(resp *http.Response) *HTTPError {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
	resp.Body.Close()
	ra, _ := retryAfter(resp.Header.Get("Retry-After"), time.Now())
	return &HTTPError{Method: resp.Request.Method, URL: redact(resp.Request.URL), StatusCode: resp.StatusCode,
		Body: sanitize(strings.TrimSpace(string(b))), RetryAfter: ra}
}

// redact drops the query of u (presigned URLs carry signatures).
func redact(u *url.URL) string {
	c := *u
	c.RawQuery = ""
	c.User = nil
	return c.String()
}

// isNetworkError reports whether err means the source could not be reached
// at all (as opposed to an HTTP answer), for the offline fallback.
func isNetworkError(err error) bool {
	var he *HTTPError
	if errors.As(err, &he) {
		return he.StatusCode >= 500
	}
	var ne net.Error
	var oe *net.OpError
	var de *net.DNSError
	var ue *url.Error
	return errors.As(err, &ne) || errors.As(err, &oe) || errors.As(err, &de) || errors.As(err, &ue)
}

// tokenTransport adds the bearer token and the User-Agent to requests to
// the endpoint's origin (scheme, host and port), and only those: redirects
// to a CDN, or to plain http on the same host, are new requests that pass
// through here without the token.
type tokenTransport struct {
	base      http.RoundTripper
	origin    string // of the endpoint, see origin
	token     string
	userAgent string
}

// origin is "scheme://host:port" of u, lowercased, with the scheme's
// default port filled in.
func origin(u *url.URL) string {
	port := u.Port()
	if port == "" {
		switch strings.ToLower(u.Scheme) {
		case "https":
			port = "443"
		case "http":
			port = "80"
		}
	}
	return strings.ToLower(u.Scheme + "://" + net.JoinHostPort(u.Hostname(), port))
}

func (t *tokenTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	if t.userAgent != "" && r.Header.Get("User-Agent") == "" {
		r.Header.Set("User-Agent", t.userAgent)
	}
	if t.token != "" && origin(r.URL) == t.origin {
		r.Header.Set("Authorization", "Bearer "+t.token)
	} else {
		r.Header.Del("Authorization")
	}
	return t.base.RoundTrip(r)
}

// newHTTPClient builds the client used for one source: the default proxy
// settings (HTTP_PROXY, HTTPS_PROXY, NO_PROXY), no transparent compression
// (sizes must be real), the token only for the endpoint's origin.
func newHTTPClient(base *http.Client, endpoint *url.URL, token, userAgent string) *http.Client {
	var rt http.RoundTripper
	if base != nil && base.Transport != nil {
		rt = base.Transport
	} else {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.DisableCompression = true
		tr.MaxIdleConnsPerHost = 64
		tr.ResponseHeaderTimeout = 60 * time.Second
		// The default 4 KiB read buffer: body reads of the downloader's
		// 32 KiB buffers then go straight from the socket into them, where a
		// larger buffer here would add a copy of every byte.
		rt = tr
	}
	c := &http.Client{Transport: &tokenTransport{base: rt, origin: origin(endpoint), token: token, userAgent: userAgent}}
	if base != nil {
		c.Jar = base.Jar
		c.Timeout = base.Timeout
	}
	return c
}

// retryAfter parses a Retry-After header (seconds or an HTTP date).
func retryAfter(h string, now time.Time) (time.Duration, bool) {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0, false
	}
	if s, err := strconv.ParseInt(h, 10, 64); err == nil && s >= 0 {
		// Capped here so the multiplication cannot overflow into a
		// negative wait (a retry storm); callers cap it further.
		return time.Duration(min(s, 24*3600)) * time.Second, true
	}
	if t, err := http.ParseTime(h); err == nil {
		d := t.Sub(now)
		if d < 0 {
			d = 0
		}
		return d, true
	}
	return 0, false
}

// escapePath escapes each segment of a repo path for use in a URL path.
func escapePath(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		parts[i] = url.PathEscape(s)
	}
	return strings.Join(parts, "/")
}

// splitRepo checks "org/name" by the Hub's rules for repo ids: each part
// of letters, digits, "-", "_" and ".", not starting or ending with "-" or
// ".", without "--" or "..", at most 96 bytes. Both parts name folders in
// the store, so nothing else is let through (no ".locks", no "..").
func splitRepo(repo string) (org, name string, err error) {
	org, name, ok := strings.Cut(repo, "/")
	if !ok || !repoPart(org) || !repoPart(name) {
		return "", "", fmt.Errorf("repo %q: want <org>/<name> (letters, digits, -, _ and .), e.g. THUDM/chatglm3-6b", repo)
	}
	return org, name, nil
}

func repoPart(s string) bool {
	if s == "" || len(s) > 96 || strings.Contains(s, "--") || strings.Contains(s, "..") ||
		strings.ContainsAny(s[:1]+s[len(s)-1:], "-.") {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// normETag strips W/ and quotes from an ETag.
func normETag(s string) string {
	s = strings.TrimPrefix(strings.TrimSpace(s), "W/")
	return strings.Trim(s, `"`)
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
