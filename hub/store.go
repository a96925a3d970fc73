package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chatglm/chatglm/internal/atomicfile"
)

// DefaultDir is the default store: os.UserCacheDir()/chatglm/models
// (~/.cache/chatglm/models on Linux).
func DefaultDir() string {
	d, err := os.UserCacheDir()
	if err != nil {
		d = os.TempDir()
	}
	return filepath.Join(d, "chatglm", "models")
}

// Store is the local model store (see the package doc for its layout).
type Store struct {
	Dir string
}

// NewStore returns the store at dir (DefaultDir when empty).
func NewStore(dir string) *Store {
	if dir == "" {
		dir = DefaultDir()
	}
	return &Store{Dir: dir}
}

// RepoDir is the folder of one repo: <dir>/<org>/<name>.
func (s *Store) RepoDir(repo string) (string, error) {
	org, name, err := splitRepo(repo)
	if err != nil {
		return "", err
	}
	return filepath.Join(s.Dir, org, name), nil
}

// SnapshotDir is the folder with the files of one snapshot.
func (s *Store) SnapshotDir(repo, id string) (string, error) {
	rd, err := s.RepoDir(repo)
	if err != nil {
		return "", err
	}
	if err := checkSnapshotID(id); err != nil {
		return "", fmt.Errorf("%s: %w", repo, err)
	}
	return filepath.Join(rd, id), nil
}

// GGUFPath is where the converted model of a snapshot is kept:
// <snapshot dir>/<name>-<type>.gguf, e.g. chatglm3-6b-f16.gguf.
func (s *Store) GGUFPath(repo, id, typ string) (string, error) {
	d, err := s.SnapshotDir(repo, id)
	if err != nil {
		return "", err
	}
	_, name, _ := splitRepo(repo)
	return filepath.Join(d, fmt.Sprintf("%s-%s.gguf", name, strings.ToLower(typ))), nil
}

// Manifest describes a pulled snapshot; it is written to .meta/<id>.json
// after every file of a pull is in place.
type Manifest struct {
	Source   string    `json:"source"`
	Repo     string    `json:"repo"`
	Revision string    `json:"revision"`
	ID       string    `json:"id"`
	Files    []File    `json:"files"`
	PulledAt time.Time `json:"pulled_at"`
}

// refName is the file name of a revision under refs/: "%" and "/" are
// escaped, so every valid revision (see CheckRevision) has its own name.
func refName(rev string) string {
	return strings.ReplaceAll(strings.ReplaceAll(rev, "%", "%25"), "/", "%2F")
}

// revisionOf undoes refName.
func revisionOf(name string) string {
	return strings.ReplaceAll(strings.ReplaceAll(name, "%2F", "/"), "%25", "%")
}

// ReadRef returns the snapshot id that revision last resolved to, or ""
// (also for an invalid revision or a ref file that does not hold an id).
func (s *Store) ReadRef(repo, revision string) string {
	rd, err := s.RepoDir(repo)
	if err != nil || CheckRevision(revision) != nil {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(rd, "refs", refName(revision)))
	if err != nil {
		return ""
	}
	id := strings.TrimSpace(string(b))
	if checkSnapshotID(id) != nil {
		return ""
	}
	return id
}

func (s *Store) writeRef(repo, revision, id string) error {
	rd, err := s.RepoDir(repo)
	if err != nil {
		return err
	}
	if err := CheckRevision(revision); err != nil {
		return err
	}
	if err := checkSnapshotID(id); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(rd, "refs", refName(revision)), []byte(id+"\n"))
}

// ReadManifest reads the manifest of a snapshot and checks it as a
// listing is checked (a manifest names files to open).
func (s *Store) ReadManifest(repo, id string) (*Manifest, error) {
	rd, err := s.RepoDir(repo)
	if err != nil {
		return nil, err
	}
	if err := checkSnapshotID(id); err != nil {
		return nil, fmt.Errorf("%s: %w", repo, err)
	}
	p := filepath.Join(rd, ".meta", id+".json")
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", p, err)
	}
	if m.ID != id {
		return nil, fmt.Errorf("manifest %s: id %q, want %q", p, m.ID, id)
	}
	if err := checkFiles(m.Files); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", p, err)
	}
	return &m, nil
}

// writeManifest merges m's files into the snapshot's manifest.
func (s *Store) writeManifest(m *Manifest) error {
	rd, err := s.RepoDir(m.Repo)
	if err != nil {
		return err
	}
	if old, err := s.ReadManifest(m.Repo, m.ID); err == nil {
		have := map[string]bool{}
		for _, f := range m.Files {
			have[f.Path] = true
		}
		for _, f := range old.Files {
			if !have[f.Path] {
				m.Files = append(m.Files, f)
			}
		}
		sort.Slice(m.Files, func(i, j int) bool { return m.Files[i].Path < m.Files[j].Path })
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(rd, ".meta", m.ID+".json"), b)
}

// Local finds a complete local snapshot of repo for revision (a revision
// name recorded by an earlier pull, or a snapshot id) without any network.
// It returns the manifest and the snapshot folder.
func (s *Store) Local(repo, revision string) (*Manifest, string, error) {
	if err := CheckRevision(revision); err != nil {
		return nil, "", err
	}
	id := s.ReadRef(repo, revision)
	if id == "" {
		id = revision
	}
	if checkSnapshotID(id) != nil {
		return nil, "", fmt.Errorf("%s@%s is not in the store %s (pull it first)", repo, revision, s.Dir)
	}
	m, err := s.ReadManifest(repo, id)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, "", fmt.Errorf("%s@%s is not in the store %s (pull it first)", repo, revision, s.Dir)
		}
		return nil, "", err
	}
	dir, err := s.SnapshotDir(repo, id)
	if err != nil {
		return nil, "", err
	}
	for _, f := range m.Files {
		st, err := os.Stat(filepath.Join(dir, filepath.FromSlash(f.Path)))
		if err != nil || st.Size() != f.Size {
			return nil, "", fmt.Errorf("%s@%s in the store is incomplete: %s missing or wrong size", repo, revision, f.Path)
		}
	}
	return m, dir, nil
}

// SnapshotInfo describes one local snapshot for `chatglm list`.
type SnapshotInfo struct {
	Repo      string
	ID        string
	Revisions []string // refs pointing at it
	Source    string
	Dir       string
	Files     int
	Size      int64 // bytes of the pulled files (GGUFs not counted)
	GGUFs     []string
	PulledAt  time.Time
}

// List returns every snapshot with a manifest, sorted by repo and time.
func (s *Store) List() ([]SnapshotInfo, error) {
	var out []SnapshotInfo
	orgs, err := os.ReadDir(s.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading store %s: %w", s.Dir, err)
	}
	for _, o := range orgs {
		if !o.IsDir() || strings.HasPrefix(o.Name(), ".") {
			continue
		}
		names, _ := os.ReadDir(filepath.Join(s.Dir, o.Name()))
		for _, n := range names {
			if !n.IsDir() || strings.HasPrefix(n.Name(), ".") { // .rm-* folders being removed
				continue
			}
			repo := o.Name() + "/" + n.Name()
			rd := filepath.Join(s.Dir, o.Name(), n.Name())
			refs := map[string][]string{}
			rs, _ := os.ReadDir(filepath.Join(rd, "refs"))
			for _, r := range rs {
				if b, err := os.ReadFile(filepath.Join(rd, "refs", r.Name())); err == nil {
					id := strings.TrimSpace(string(b))
					refs[id] = append(refs[id], revisionOf(r.Name()))
				}
			}
			metas, _ := os.ReadDir(filepath.Join(rd, ".meta"))
			for _, me := range metas {
				id, ok := strings.CutSuffix(me.Name(), ".json")
				if !ok {
					continue
				}
				m, err := s.ReadManifest(repo, id)
				if err != nil {
					slog.Warn("skipping unreadable manifest", "repo", repo, "snapshot", id, "err", err)
					continue
				}
				info := SnapshotInfo{Repo: repo, ID: id, Revisions: refs[id], Source: m.Source,
					Dir: filepath.Join(rd, id), Files: len(m.Files), PulledAt: m.PulledAt}
				for _, f := range m.Files {
					info.Size += f.Size
				}
				ggufs, _ := filepath.Glob(filepath.Join(rd, id, "*.gguf"))
				info.GGUFs = ggufs
				out = append(out, info)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Repo != out[j].Repo {
			return out[i].Repo < out[j].Repo
		}
		return out[i].PulledAt.Before(out[j].PulledAt)
	})
	return out, nil
}

// lockPath is the lock file of a repo: <dir>/.locks/<org>/<name>.lock,
// outside the repo folder, so that Remove's rename cannot move it and a
// pull waiting for it and a later one always contend for the same file.
// Lock files are never removed (removing one would split its waiters).
func (s *Store) lockPath(repo string) (string, error) {
	org, name, err := splitRepo(repo)
	if err != nil {
		return "", err
	}
	return filepath.Join(s.Dir, ".locks", org, name+".lock"), nil
}

// Remove deletes a repo (every snapshot, partial download and ref) from the
// store. It takes the repo lock that pulls take, and fails at once if a
// pull of that repo holds it.
func (s *Store) Remove(repo string) error {
	rd, err := s.RepoDir(repo)
	if err != nil {
		return err
	}
	if _, err := os.Stat(rd); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s is not in the store %s", repo, s.Dir)
		}
		return err
	}
	lp, _ := s.lockPath(repo)
	l, err := tryLock(lp)
	if err != nil {
		return fmt.Errorf("removing %s: %w", repo, err)
	}
	defer l.Unlock()
	if testHookRemoveLocked != nil {
		testHookRemoveLocked()
	}
	// Move the folder aside first so a reader never sees half of it.
	trash := filepath.Join(filepath.Dir(rd), fmt.Sprintf(".rm-%s-%d", filepath.Base(rd), os.Getpid()))
	if err := os.Rename(rd, trash); err != nil {
		return fmt.Errorf("removing %s: %w", repo, err)
	}
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("removing %s: %w", trash, err)
	}
	_ = os.Remove(filepath.Dir(rd)) // the org folder, if now empty
	return nil
}

// testHookRemoveLocked, when set by a test, runs in Remove while it holds
// the lock.
var testHookRemoveLocked func()

// fileLock is an advisory flock on a file.
type fileLock struct{ f *os.File }

func openLockFile(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
}

// tryLock takes the lock or fails at once.
func tryLock(path string) (*fileLock, error) {
	f, err := openLockFile(path)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s is held by another chatglm process (a pull in progress?)", path)
		}
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	return &fileLock{f: f}, nil
}

// lock waits for the lock until ctx is done, calling waiting once if it has
// to wait.
func lock(ctx context.Context, path string, poll time.Duration, waiting func()) (*fileLock, error) {
	f, err := openLockFile(path)
	if err != nil {
		return nil, err
	}
	for i := 0; ; i++ {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return &fileLock{f: f}, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		if i == 0 && waiting != nil {
			waiting()
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for lock %s: %w", path, ctx.Err())
		case <-time.After(poll):
		}
	}
}

// Unlock releases the lock.
func (l *fileLock) Unlock() {
	_ = unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
	l.f.Close()
}

// freeSpace is the bytes available to us on the file system holding dir.
func freeSpace(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// writeFileAtomic writes b to path durably (see atomicfile), making its
// folder first.
func writeFileAtomic(path string, b []byte) error {
	return writeAtomic(path, func(f *os.File) error {
		_, err := f.Write(b)
		return err
	})
}

// writeAtomic is writeFileAtomic with the content written by fill.
func writeAtomic(path string, fill func(*os.File) error) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.Write(path, 0o644, fill)
}

// linkOrCopy makes dst a hard link of src, or a copy where links are not
// possible, durably (see writeAtomic).
func linkOrCopy(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp := dst + ".tmp-link"
	_ = os.Remove(tmp)
	if err := os.Link(src, tmp); err == nil {
		if err := os.Rename(tmp, dst); err != nil {
			os.Remove(tmp)
			return err
		}
		return atomicfile.SyncDir(filepath.Dir(dst))
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return writeAtomic(dst, func(out *os.File) error {
		if _, err := io.Copy(out, in); err != nil {
			return fmt.Errorf("copying %s: %w", src, err)
		}
		return nil
	})
}

// FindGGUF returns the converted model of repo@revision of the given type
// (e.g. "f16") if the store has it, without any network access.
func (s *Store) FindGGUF(repo, revision, typ string) (string, error) {
	m, _, err := s.Local(repo, revision)
	if err != nil {
		return "", err
	}
	p, err := s.GGUFPath(repo, m.ID, typ)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s@%s has no %s GGUF in the store (run `chatglm get %s --type %s`)", repo, revision, typ, repo, typ)
	}
	return p, nil
}
