package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// DefaultEndpoint is the Hugging Face Hub.
const DefaultEndpoint = "https://huggingface.co"

// HF is the Hugging Face Hub API (or a mirror with the same API).
type HF struct {
	endpoint *url.URL
	client   *http.Client
	// noFollow is client without redirect following, for resolve HEADs.
	noFollow *http.Client
	api      apiClient
}

// NewHF returns a Hub client for endpoint (DefaultEndpoint when empty). The
// token is sent only to the endpoint's scheme, host and port. base may be
// nil. Its metadata requests follow the default Options' retry policy and
// limits.
func NewHF(endpoint, token, userAgent string, base *http.Client) (*HF, error) {
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	u, err := url.Parse(strings.TrimRight(endpoint, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("hub endpoint %s: want an http(s) URL", redactURL(endpoint))
	}
	c := newHTTPClient(base, u, token, userAgent)
	nf := *c
	nf.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &HF{endpoint: u, client: c, noFollow: &nf, api: newAPIClient(c)}, nil
}

// Name implements Source.
func (h *HF) Name() string { return "huggingface" }

// Client is the HTTP client used for this source (token only to the endpoint).
func (h *HF) Client() *http.Client { return h.client }

func (h *HF) apiURL(format string, a ...any) string {
	return h.endpoint.String() + fmt.Sprintf(format, a...)
}

type hfRefs struct {
	Branches []hfRef `json:"branches"`
	Tags     []hfRef `json:"tags"`
	Converts []hfRef `json:"converts"`
}

type hfRef struct {
	Name         string `json:"name"`
	Ref          string `json:"ref"`
	TargetCommit string `json:"targetCommit"`
}

// Commit resolves revision (a branch, tag or 40-hex commit) to a commit sha.
func (h *HF) Commit(ctx context.Context, repo, revision string) (string, error) {
	if err := CheckRevision(revision); err != nil {
		return "", err
	}
	if isHex(revision, 40) {
		return revision, nil
	}
	var refs hfRefs
	u := h.apiURL("/api/models/%s/refs", repo)
	body, _, err := h.api.get(ctx, u)
	if err == nil {
		err = json.Unmarshal(body, &refs)
	}
	if err != nil {
		return "", fmt.Errorf("resolving revision %q of %s: %w", revision, repo, err)
	}
	for _, list := range [][]hfRef{refs.Branches, refs.Tags, refs.Converts} {
		for _, r := range list {
			if (r.Name == revision || r.Ref == revision) && isHex(r.TargetCommit, 40) {
				return r.TargetCommit, nil
			}
		}
	}
	return "", fmt.Errorf("%s has no branch or tag %q (GET %s)", repo, revision, redactURL(u))
}

// List implements Source: refs, then the recursive tree of that commit.
func (h *HF) List(ctx context.Context, repo, revision string) (*Snapshot, error) {
	if _, _, err := splitRepo(repo); err != nil {
		return nil, err
	}
	commit, err := h.Commit(ctx, repo, revision)
	if err != nil {
		return nil, err
	}
	snap := &Snapshot{Source: h.Name(), Repo: repo, Revision: revision, ID: commit}
	next := h.apiURL("/api/models/%s/tree/%s?recursive=true&expand=false", repo, url.PathEscape(commit))
	seen := map[string]bool{}
	for page := 0; next != ""; page++ {
		if page > 10000 {
			return nil, fmt.Errorf("listing %s: too many pages", repo)
		}
		if seen[next] {
			return nil, fmt.Errorf("listing %s: the pages link back to %s", repo, redactURL(next))
		}
		seen[next] = true
		body, hdr, err := h.api.get(ctx, next)
		if err == nil {
			var files []File
			if files, err = parseHFTree(body); err == nil {
				snap.Files = append(snap.Files, files...)
			}
		}
		if err == nil && len(snap.Files) > maxFiles {
			err = fmt.Errorf("more than %d files", maxFiles)
		}
		if err != nil {
			return nil, fmt.Errorf("listing files of %s@%s: %w", repo, commit, err)
		}
		next, err = nextLink(next, hdr.Values("Link"))
		if err != nil {
			return nil, fmt.Errorf("listing %s: %w", repo, err)
		}
		if next != "" {
			// The next page must come from the endpoint: a listing may
			// not send the client (and its token) elsewhere.
			if u, err := url.Parse(next); err != nil || origin(u) != origin(h.endpoint) {
				return nil, fmt.Errorf("listing %s: next page %s is not on the endpoint %s", repo, redactURL(next), redact(h.endpoint))
			}
		}
	}
	if err := checkSnapshot(snap); err != nil {
		return nil, err
	}
	return snap, nil
}

// nextLink finds rel="next" in Link headers, resolved against base.
func nextLink(base string, links []string) (string, error) {
	for _, l := range links {
		for _, part := range strings.Split(l, ",") {
			target, params, ok := strings.Cut(strings.TrimSpace(part), ";")
			if !ok {
				continue
			}
			isNext := false
			for _, p := range strings.Split(params, ";") {
				k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
				if strings.EqualFold(k, "rel") {
					for _, r := range strings.Fields(strings.Trim(v, `"`)) {
						if r == "next" {
							isNext = true
						}
					}
				}
			}
			if !isNext {
				continue
			}
			target = strings.Trim(strings.TrimSpace(target), "<>")
			b, err := url.Parse(base)
			if err != nil {
				return "", err
			}
			t, err := url.Parse(target)
			if err != nil {
				return "", fmt.Errorf("bad Link next %q: %w", target, err)
			}
			return b.ResolveReference(t).String(), nil
		}
	}
	return "", nil
}

// ResolveURL is {endpoint}/{repo}/resolve/{commit}/{path}.
func (h *HF) ResolveURL(repo, commit, path string) string {
	return h.apiURL("/%s/resolve/%s/%s", repo, url.PathEscape(commit), escapePath(path))
}

// Locate implements Source: a HEAD on the resolve URL that follows only
// same-host redirects (renamed repos); a redirect to another host is the
// CDN location, whose X-Linked-* headers are checked against f.
func (h *HF) Locate(ctx context.Context, snap *Snapshot, f File) (*Location, error) {
	u := h.ResolveURL(snap.Repo, snap.ID, f.Path)
	ctx, cancel := context.WithTimeout(ctx, h.api.timeout)
	defer cancel()
	for hops := 0; hops < 10; hops++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodHead, u, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept-Encoding", "identity")
		resp, err := h.noFollow.Do(req)
		if err != nil {
			return nil, fmt.Errorf("resolving %s: %w", f.Path, redactErr(err))
		}
		resp.Body.Close()
		if err := checkLinked(resp.Header, snap, f); err != nil {
			return nil, err
		}
		switch {
		case resp.StatusCode >= 300 && resp.StatusCode < 400:
			loc := resp.Header.Get("Location")
			if loc == "" {
				return nil, fmt.Errorf("HEAD %s: %d without Location", redactURL(u), resp.StatusCode)
			}
			next, err := resp.Request.URL.Parse(loc)
			if err != nil {
				return nil, fmt.Errorf("HEAD %s: bad Location: %w", redactURL(u), err)
			}
			if origin(next) != origin(h.endpoint) {
				return &Location{URL: next.String()}, nil
			}
			u = next.String()
		case resp.StatusCode == http.StatusOK:
			if et := normETag(resp.Header.Get("ETag")); f.BlobID != "" && isHex(et, 40) && et != f.BlobID && resp.Header.Get("X-Linked-Etag") == "" {
				return nil, fmt.Errorf("%s: the Hub's ETag %s differs from the listed blob id %s (file changed?)", f.Path, et, f.BlobID)
			}
			return &Location{URL: u}, nil
		default:
			return nil, fmt.Errorf("resolving %s: %w", f.Path, &HTTPError{Method: "HEAD", URL: redactURL(u), StatusCode: resp.StatusCode})
		}
	}
	return nil, fmt.Errorf("resolving %s: too many redirects", f.Path)
}

// checkLinked compares X-Repo-Commit, X-Linked-Etag and X-Linked-Size with
// the listing: a difference means the file changed under us.
func checkLinked(h http.Header, snap *Snapshot, f File) error {
	if c := h.Get("X-Repo-Commit"); c != "" && snap.ID != "" && c != snap.ID {
		return fmt.Errorf("%s: resolve answered for commit %q, listed commit %s (repo changed during the pull?)", f.Path, sanitize(c), snap.ID)
	}
	if et := strings.ToLower(normETag(h.Get("X-Linked-Etag"))); et != "" && f.SHA256 != "" && isHex(et, 64) && et != f.SHA256 {
		return fmt.Errorf("%s: X-Linked-Etag %s differs from the listed sha256 %s (file changed?)", f.Path, et, f.SHA256)
	}
	if s := h.Get("X-Linked-Size"); s != "" {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil && n != f.Size {
			return fmt.Errorf("%s: X-Linked-Size %d differs from the listed size %d (file changed?)", f.Path, n, f.Size)
		}
	}
	return nil
}
