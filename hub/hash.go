package hub

import (
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
