package hub

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
)

// newHasher is the hash a file is verified with: sha256 when the listing
// gives one, else the git blob sha1 (over "blob <size>\x00" and the bytes).
func newHasher(f File) hash.Hash {
	if f.SHA256 == "" && f.BlobID != "" {
		h := sha1.New()
		fmt.Fprintf(h, "blob %d\x00", f.Size)
		return h
	}
	return sha256.New()
}

// verify compares a content hash made by newHasher with the listed one.
func verify(f File, sum string) error {
	switch {
	case f.SHA256 != "" && sum != f.SHA256:
		return fmt.Errorf("%w: sha256 %s, want %s", errHashMismatch, sum, f.SHA256)
	case f.SHA256 == "" && f.BlobID != "" && sum != f.BlobID:
		return fmt.Errorf("%w: git blob sha1 %s, want %s", errHashMismatch, sum, f.BlobID)
	}
	return nil
}

// hashFile hashes the file at path as f is verified.
func hashFile(path string, f File) (string, error) {
	fh, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer fh.Close()
	h := newHasher(f)
	if _, err := io.Copy(h, fh); err != nil {
		return "", fmt.Errorf("hashing %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// poke wakes the hasher.
func (j *fileJob) poke() {
	select {
	case j.kick <- struct{}{}:
	default:
	}
}

type hashResult struct {
	sum string
	err error
}

// hashLoop completes the streaming hash: it reads back the part of the
// written prefix that was not hashed inline, until the whole file is hashed.
func (j *fileJob) hashLoop(ctx context.Context) hashResult {
	var buf []byte
	for {
		j.mu.Lock()
		target, epoch := j.prefix(), j.epoch
		j.mu.Unlock()
		j.hmu.Lock()
		if j.hepoch == epoch {
			if j.hashed == j.f.Size && target == j.f.Size {
				sum := hex.EncodeToString(j.h.Sum(nil))
				j.hmu.Unlock()
				return hashResult{sum: sum}
			}
			if j.hashed < target {
				if buf == nil {
					buf = make([]byte, 4<<20)
				}
				n := min(int64(len(buf)), target-j.hashed)
				if _, err := j.fh.ReadAt(buf[:n], j.hashed); err != nil {
					j.hmu.Unlock()
					return hashResult{err: fmt.Errorf("reading back %s: %w", j.part, err)}
				}
				j.h.Write(buf[:n])
				j.hashed += n
				j.hmu.Unlock()
				continue
			}
		}
		j.hmu.Unlock()
		select {
		case <-j.kick:
		case <-ctx.Done():
			return hashResult{err: ctx.Err()}
		}
	}
}
