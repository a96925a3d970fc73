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
}

// NewModelScope returns a ModelScope client for endpoint
// (DefaultModelScopeEndpoint when empty). base may be nil.
func NewModelScope(endpoint, userAgent string, base *http.Client) (*ModelScope, error) {
	if endpoint == "" {
		endpoint = DefaultModelScopeEndpoint
	}
	u, err := url.Parse(strings.TrimRight(endpoint, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("modelscope endpoint %q: want an http(s) URL", endpoint)
	}
	return &ModelScope{endpoint: u, client: newHTTPClient(base, u.Host, "", userAgent)}, nil
}

// Name implements Source.
func (m *ModelScope) Name() string { return "modelscope" }

// Client is the HTTP client used for this source.
func (m *ModelScope) Client() *http.Client { return m.client }

type msFiles struct {
	Code    int    `json:"Code"`
	Message string `json:"Message"`
	Success *bool  `json:"Success"`
	Data    struct {
		Files []struct {
			Name     string `json:"Name"`
			Path     string `json:"Path"`
			Type     string `json:"Type"`
			Size     int64  `json:"Size"`
			Sha256   string `json:"Sha256"`
			Revision string `json:"Revision"`
		} `json:"Files"`
	} `json:"Data"`
}

// List implements Source with GET /api/v1/models/{id}/repo/files.
func (m *ModelScope) List(ctx context.Context, repo, revision string) (*Snapshot, error) {
	if _, _, err := splitRepo(repo); err != nil {
		return nil, err
	}
	if revision == "" {
		revision = "master"
	}
	q := url.Values{"Revision": {revision}, "Recursive": {"True"}}
	u := fmt.Sprintf("%s/api/v1/models/%s/repo/files?%s", m.endpoint, repo, q.Encode())
	var resp msFiles
	if _, err := getJSON(ctx, m.client, u, &resp); err != nil {
		return nil, fmt.Errorf("listing files of %s@%s on ModelScope: %w", repo, revision, err)
	}
	if (resp.Code != 0 && resp.Code != 200) || (resp.Success != nil && !*resp.Success) {
		return nil, fmt.Errorf("listing files of %s@%s on ModelScope (GET %s): code %d: %s", repo, revision, u, resp.Code, resp.Message)
	}
	snap := &Snapshot{Source: m.Name(), Repo: repo, Revision: revision}
	for _, it := range resp.Data.Files {
		if it.Type == "tree" || it.Name == ".gitignore" || it.Name == ".gitattributes" {
			continue
		}
		if err := checkRepoPath(it.Path); err != nil {
			return nil, fmt.Errorf("listing %s on ModelScope: %w", repo, err)
		}
		snap.Files = append(snap.Files, File{Path: it.Path, Size: it.Size, SHA256: strings.ToLower(it.Sha256)})
	}
	if len(snap.Files) == 0 {
		return nil, fmt.Errorf("%s@%s on ModelScope has no files (GET %s)", repo, revision, u)
	}
	snap.ID = contentID(snap.Files)
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
