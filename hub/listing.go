package hub

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Limits on what a listing may hold. A hub is not trusted: everything it
// lists is checked against these before any file is created or fetched.
const (
	maxListingBody = 32 << 20 // bytes of one listing response (a tree page, ModelScope's file list)
	maxFiles       = 100_000  // files in one snapshot
	maxFileSize    = 1 << 40  // bytes of one file (1 TiB)
	maxPathLen     = 1024     // bytes of a file path in a repo
	maxSegmentLen  = 255      // bytes of one path segment (a file name)
	maxRevisionLen = 255      // bytes of a revision name
)

// checkRepoPath refuses file paths that could name anything outside the
// snapshot folder or confuse a terminal: absolute paths, "." and ".."
// segments, empty segments, backslashes, control characters, invalid UTF-8
// and overlong names.
func checkRepoPath(p string) error {
	if p == "" || len(p) > maxPathLen || !utf8.ValidString(p) || strings.HasPrefix(p, "/") || strings.Contains(p, `\`) {
		return fmt.Errorf("unsafe file path %q", p)
	}
	for _, c := range p {
		if c < 0x20 || c == 0x7f || (c >= 0x80 && c < 0xa0) {
			return fmt.Errorf("unsafe file path %q (control character)", p)
		}
	}
	for _, s := range strings.Split(p, "/") {
		if s == "" || s == "." || s == ".." || len(s) > maxSegmentLen {
			return fmt.Errorf("unsafe file path %q", p)
		}
	}
	return nil
}

// checkFile checks one listed file: a safe path, a sane size, and a hash
// of the only two accepted shapes (64 lowercase hex digits of sha256, 40 of
// a git blob sha1), since hashes name local files.
func checkFile(f File) error {
	if err := checkRepoPath(f.Path); err != nil {
		return err
	}
	if f.Size < 0 || f.Size > maxFileSize {
		return fmt.Errorf("%s: size %d out of range [0, %d]", f.Path, f.Size, int64(maxFileSize))
	}
	if f.SHA256 != "" && !isHex(f.SHA256, 64) {
		return fmt.Errorf("%s: sha256 %q is not 64 hex digits", f.Path, f.SHA256)
	}
	if f.BlobID != "" && !isHex(f.BlobID, 40) {
		return fmt.Errorf("%s: git blob id %q is not 40 hex digits", f.Path, f.BlobID)
	}
	if f.SHA256 == "" && f.BlobID == "" {
		return fmt.Errorf("%s: listed without a sha256 or git blob id, so it could not be verified", f.Path)
	}
	return nil
}

// checkFiles checks every file of a listing and refuses duplicate paths and
// listings too large to be real.
func checkFiles(files []File) error {
	if len(files) > maxFiles {
		return fmt.Errorf("%d files listed, more than the limit of %d", len(files), maxFiles)
	}
	seen := make(map[string]bool, len(files))
	for _, f := range files {
		if err := checkFile(f); err != nil {
			return err
		}
		if seen[f.Path] {
			return fmt.Errorf("%s: listed twice", f.Path)
		}
		seen[f.Path] = true
	}
	return nil
}

// checkSnapshot checks a listing before anything is done with it.
func checkSnapshot(snap *Snapshot) error {
	if err := checkSnapshotID(snap.ID); err != nil {
		return fmt.Errorf("listing %s: %w", snap.Repo, err)
	}
	if err := checkFiles(snap.Files); err != nil {
		return fmt.Errorf("listing %s@%s: %w", snap.Repo, snap.ID, err)
	}
	return nil
}

// checkSnapshotID accepts the two shapes of snapshot id: a 40-hex commit
// (the Hub) and "ms-" with 16 hex digits (ModelScope, see contentID).
func checkSnapshotID(id string) error {
	if isHex(id, 40) {
		return nil
	}
	if rest, ok := strings.CutPrefix(id, "ms-"); ok && isHex(rest, 16) {
		return nil
	}
	return fmt.Errorf("bad snapshot id %q (want a 40-hex commit or ms-<16 hex>)", id)
}

// CheckRevision checks a revision name by git's rules for ref names
// (git check-ref-format): no "..", "@{", control characters, space or any
// of ~^:?*[\, no empty, "."-leading or ".lock"-ending component, no leading
// "-", not "@", at most 255 bytes. A 40-hex commit passes too.
func CheckRevision(rev string) error {
	bad := func(why string) error { return fmt.Errorf("bad revision %q: %s", rev, why) }
	switch {
	case rev == "":
		return bad("empty")
	case len(rev) > maxRevisionLen:
		return bad(fmt.Sprintf("longer than %d bytes", maxRevisionLen))
	case rev == "@":
		return bad(`"@" alone`)
	case strings.HasPrefix(rev, "-"):
		return bad(`starts with "-"`)
	case strings.HasSuffix(rev, "."):
		return bad(`ends with "."`)
	case strings.Contains(rev, ".."), strings.Contains(rev, "@{"):
		return bad(`contains ".." or "@{"`)
	}
	for _, c := range rev {
		if c < 0x20 || c == 0x7f || strings.ContainsRune(" ~^:?*[\\", c) {
			return bad(fmt.Sprintf("contains %q", c))
		}
	}
	for _, s := range strings.Split(rev, "/") {
		if s == "" || strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".lock") {
			return bad(`empty, "."-leading or ".lock"-ending component`)
		}
	}
	return nil
}

// hfTreeItem is one entry of the Hub's tree listing.
type hfTreeItem struct {
	Type string `json:"type"`
	Oid  string `json:"oid"`
	Size int64  `json:"size"`
	Path string `json:"path"`
	LFS  *struct {
		Oid  string `json:"oid"`
		Size int64  `json:"size"`
	} `json:"lfs"`
}

// parseHFTree reads one page of GET /api/models/{repo}/tree/{commit}: the
// files (directories are skipped), each checked by checkFile.
func parseHFTree(body []byte) ([]File, error) {
	var items []hfTreeItem
	if err := json.Unmarshal(body, &items); err != nil {
		return nil, fmt.Errorf("decoding tree JSON: %w", err)
	}
	if len(items) > maxFiles {
		return nil, fmt.Errorf("%d entries in one tree page, more than the limit of %d", len(items), maxFiles)
	}
	var files []File
	for _, it := range items {
		if it.Type != "file" {
			continue
		}
		f := File{Path: it.Path, Size: it.Size}
		if it.LFS != nil {
			// The LFS oid is the content's sha256.
			f.LFS, f.SHA256, f.Size = true, strings.ToLower(it.LFS.Oid), it.LFS.Size
		} else {
			f.BlobID = it.Oid
		}
		if err := checkFile(f); err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	return files, nil
}

// msFiles is ModelScope's answer to GET /api/v1/models/{id}/repo/files.
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

// parseMSFiles reads ModelScope's file list: the files (folders and git
// attribute files are skipped), each checked by checkFile, and the list as
// a whole by checkFiles.
func parseMSFiles(body []byte) ([]File, error) {
	var resp msFiles
	if err := json.Unmarshal(body, &resp); err != nil {
		return nil, fmt.Errorf("decoding file list JSON: %w", err)
	}
	if (resp.Code != 0 && resp.Code != 200) || (resp.Success != nil && !*resp.Success) {
		return nil, fmt.Errorf("code %d: %s", resp.Code, sanitize(resp.Message))
	}
	var files []File
	for _, it := range resp.Data.Files {
		if it.Type == "tree" || it.Name == ".gitignore" || it.Name == ".gitattributes" {
			continue
		}
		files = append(files, File{Path: it.Path, Size: it.Size, SHA256: strings.ToLower(it.Sha256)})
	}
	if err := checkFiles(files); err != nil {
		return nil, err
	}
	return files, nil
}

// sanitize shortens a message from a server and quotes what a terminal
// would interpret.
func sanitize(s string) string {
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	q := fmt.Sprintf("%q", s)
	return q[1 : len(q)-1]
}
