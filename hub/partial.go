package hub

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
)

// partState is the progress of one partial file, saved as <key>.json.
type partState struct {
	Path    string  `json:"path"`
	Size    int64   `json:"size"`
	SHA256  string  `json:"sha256,omitempty"`
	BlobID  string  `json:"blob,omitempty"`
	Chunk   int64   `json:"chunk"`
	NoRange bool    `json:"no_range,omitempty"`
	Done    []int64 `json:"done"` // bytes written at the start of each chunk
}

func (s *partState) chunk(i int) (off, n int64) {
	off = int64(i) * s.Chunk
	n = min(s.Chunk, s.Size-off)
	return off, n
}

func (s *partState) have() (n int64) {
	for _, d := range s.Done {
		n += d
	}
	return n
}

func newState(f File, chunk int64) partState {
	st := partState{Path: f.Path, Size: f.Size, SHA256: f.SHA256, BlobID: f.BlobID, Chunk: chunk}
	if chunk <= 0 || f.Size <= chunk {
		st.Chunk = max(f.Size, 1)
	}
	n := (f.Size + st.Chunk - 1) / st.Chunk
	st.Done = make([]int64, n)
	return st
}

// partKey names the partial files of f: 8 hex digits of the path's sha256,
// "-", and the content hash, which checkFile has already checked to be hex;
// checked again here since the name must never leave partDir.
func partKey(f File) (string, error) {
	ph := sha256.Sum256([]byte(f.Path))
	key := hex.EncodeToString(ph[:4]) + "-"
	switch {
	case isHex(f.SHA256, 64):
		return key + f.SHA256, nil
	case f.SHA256 == "" && isHex(f.BlobID, 40):
		return key + f.BlobID, nil
	}
	return "", fmt.Errorf("%s: no valid sha256 or git blob id to name its partial file", f.Path)
}

func (d *downloader) newJob(f File, partDir, dest string) (*fileJob, error) {
	key, err := partKey(f)
	if err != nil {
		return nil, err
	}
	ph := key[:8]
	j := &fileJob{d: d, f: f, dest: dest,
		part: filepath.Join(partDir, key+".part"), state: filepath.Join(partDir, key+".json")}
	// Partials of other contents of the same path are stale.
	old, _ := filepath.Glob(filepath.Join(partDir, ph+"-*"))
	for _, o := range old {
		if o != j.part && o != j.state {
			_ = os.Remove(o)
		}
	}
	return j, nil
}

// load reads a saved state that fits the file and its partial data, or
// starts a fresh one; it returns the bytes already there.
func (j *fileJob) load() int64 {
	j.st = newState(j.f, j.d.opts.ChunkSize)
	b, err := os.ReadFile(j.state)
	if err != nil {
		return 0
	}
	var st partState
	if json.Unmarshal(b, &st) != nil || st.Size != j.f.Size || st.SHA256 != j.f.SHA256 || st.BlobID != j.f.BlobID ||
		st.Chunk <= 0 || int64(len(st.Done)) != (st.Size+st.Chunk-1)/st.Chunk {
		return 0
	}
	for i, d := range st.Done {
		if _, n := st.chunk(i); d < 0 || d > n {
			return 0
		}
	}
	// The partial file grows as chunks are written (it is not sized up
	// front): it must hold every byte the state counts, and no more than
	// the file has.
	fi, err := os.Stat(j.part)
	if err != nil || fi.Size() > j.f.Size {
		return 0
	}
	for i, d := range st.Done {
		if off, _ := st.chunk(i); d > 0 && off+d > fi.Size() {
			return 0
		}
	}
	j.st = st
	slog.Debug("resuming", "file", j.f.Path, "have", st.have(), "size", st.Size)
	return st.have()
}

// saveState writes the chunk progress (never more than what is written).
func (j *fileJob) saveState() error {
	j.mu.Lock()
	st := j.st
	st.Done = append([]int64(nil), j.st.Done...)
	j.mu.Unlock()
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return writeFileAtomic(j.state, b)
}

// open opens the partial file, creating it when the state is fresh. It is
// not sized up front: appending to a file is cheaper for the kernel than
// filling the holes of a sparse one, and most bytes arrive in order.
func (j *fileJob) open() error {
	if err := os.MkdirAll(filepath.Dir(j.part), 0o755); err != nil {
		return err
	}
	flags := os.O_RDWR | os.O_CREATE
	if j.st.have() == 0 {
		flags |= os.O_TRUNC
	}
	fh, err := os.OpenFile(j.part, flags, 0o644)
	if err != nil {
		return fmt.Errorf("opening partial file for %s: %w", j.f.Path, err)
	}
	j.fh = fh
	j.first = 0
	j.hmu.Lock()
	j.h, j.hashed, j.hepoch = newHasher(j.f), 0, j.epoch
	j.hmu.Unlock()
	return nil
}

// reset throws away every byte of the partial file (a hash mismatch or a
// server without Range support).
func (j *fileJob) reset(noRange bool) error {
	defer j.poke()
	j.mu.Lock()
	defer j.mu.Unlock()
	lost := j.st.have()
	j.st = newState(j.f, j.d.opts.ChunkSize)
	if noRange {
		j.st.Chunk = max(j.f.Size, 1)
		j.st.Done = make([]int64, min(1, len(j.st.Done)))
		j.st.NoRange = true
	}
	j.claimed = make([]bool, len(j.st.Done))
	j.first = 0
	j.epoch++
	// The hash moves to the new epoch before the file shrinks (lock order
	// mu, then hmu): a hasher that saw the old epoch's prefix must not
	// read it back from a truncated file.
	j.hmu.Lock()
	j.h, j.hashed, j.hepoch = newHasher(j.f), 0, j.epoch
	j.hmu.Unlock()
	addProgress(j.d.progress, j.f.Path, -lost)
	if j.fh != nil {
		if err := j.fh.Truncate(0); err != nil {
			return fmt.Errorf("resetting partial file for %s: %w", j.f.Path, err)
		}
	}
	return nil
}

// discard removes the partial file and its state.
func (j *fileJob) discard() {
	if j.fh != nil {
		j.fh.Close()
		j.fh = nil
	}
	_ = os.Remove(j.part)
	_ = os.Remove(j.state)
}

// prefix is the number of bytes from the start that are all written.
func (j *fileJob) prefix() int64 {
	for j.first < len(j.st.Done) {
		if _, n := j.st.chunk(j.first); j.st.Done[j.first] < n {
			break
		}
		j.first++
	}
	if j.first >= len(j.st.Done) {
		return j.f.Size
	}
	off, _ := j.st.chunk(j.first)
	return off + j.st.Done[j.first]
}
