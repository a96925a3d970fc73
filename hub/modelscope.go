package hub

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
)

// DefaultModelScopeEndpoint is ModelScope's main site.
const DefaultModelScopeEndpoint = "https://www.modelscope.cn"

// ModelScope is ModelScope's model API.
type ModelScope struct {
	endpoint *url.URL
	client   *http.Client
	api      apiClient
}

// NewModelScope returns a ModelScope client for endpoint
// (DefaultModelScopeEndpoint when empty). base may be nil. Its metadata
// requests follow the default Options' retry policy and limits.
func NewModelScope(endpoint, userAgent string, base *http.Client) (*ModelScope, error) {
	if endpoint == "" {
		endpoint = DefaultModelScopeEndpoint
	}
	u, err := url.Parse(strings.TrimRight(endpoint, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("modelscope endpoint %s: want an http(s) URL", redactURL(endpoint))
	}
	c := newHTTPClient(base, u, "", userAgent)
	return &ModelScope{endpoint: u, client: c, api: newAPIClient(c)}, nil
}

// Name implements Source.
func (m *ModelScope) Name() string { return "modelscope" }

// Client is the HTTP client used for this source.
func (m *ModelScope) Client() *http.Client { return m.client }

// List implements Source with GET /api/v1/models/{id}/repo/files.
func (m *ModelScope) List(ctx context.Context, repo, revision string) (*Snapshot, error) {
	if _, _, err := splitRepo(repo); err != nil {
		return nil, err
	}
	if revision == "" {
		revision = "master"
	}
	if err := CheckRevision(revision); err != nil {
		return nil, err
	}
	q := url.Values{"Revision": {revision}, "Recursive": {"True"}}
	u := fmt.Sprintf("%s/api/v1/models/%s/repo/files?%s", m.endpoint, repo, q.Encode())
	body, _, err := m.api.get(ctx, u)
	var files []File
	if err == nil {
		files, err = parseMSFiles(body)
	}
	if err != nil {
		return nil, fmt.Errorf("listing files of %s@%s on ModelScope: %w", repo, revision, err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s@%s on ModelScope has no files (GET %s)", repo, revision, redactURL(u))
	}
	snap := &Snapshot{Source: m.Name(), Repo: repo, Revision: revision, Files: files, ID: contentID(files)}
	if err := checkSnapshot(snap); err != nil {
		return nil, err
	}
	return snap, nil
}

// contentID names a ModelScope snapshot by its content: "ms-" + 16 hex of
// sha256 over the sorted "path\tsha256\tsize" lines.
func contentID(files []File) string {
	lines := make([]string, len(files))
	for i, f := range files {
		lines[i] = fmt.Sprintf("%s\t%s\t%d\n", f.Path, f.SHA256, f.Size)
	}
	sort.Strings(lines)
	h := sha256.New()
	for _, l := range lines {
		h.Write([]byte(l))
	}
	return "ms-" + hex.EncodeToString(h.Sum(nil))[:16]
}

// Locate implements Source: GET /api/v1/models/{id}/repo?Revision=..&FilePath=..
// (redirects, if any, are followed by the GETs themselves).
func (m *ModelScope) Locate(ctx context.Context, snap *Snapshot, f File) (*Location, error) {
	q := url.Values{"Revision": {snap.Revision}, "FilePath": {f.Path}}
	return &Location{URL: fmt.Sprintf("%s/api/v1/models/%s/repo?%s", m.endpoint, snap.Repo, q.Encode())}, nil
}
