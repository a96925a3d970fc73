// Package atomicfile writes files so that a crash or an error leaves the
// old content or the new one, never a part: the new content goes to a
// temporary file beside the target, is synced, renamed (or linked) into
// place, and the folder is synced. Every file chatglm writes into its model
// store, converts, quantizes or saves goes through here.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Write replaces path with what fill writes to a temporary file, which
// gets mode perm. On any error the temporary file is removed and path is
// left as it was.
func Write(path string, perm os.FileMode, fill func(*os.File) error) error {
	return write(path, perm, fill, true)
}

// WriteFile replaces path with b (see Write).
func WriteFile(path string, b []byte, perm os.FileMode) error {
	return Write(path, perm, func(f *os.File) error {
		_, err := f.Write(b)
		return err
	})
}

// Create is Write for a file that must not exist yet: if path exists when
// the content is complete (it appeared meanwhile), the existing file is
// kept and the error wraps fs.ErrExist.
func Create(path string, perm os.FileMode, fill func(*os.File) error) error {
	return write(path, perm, fill, false)
}

// TempFile creates an empty temporary file beside path, named so that
// leftovers are recognisable (".<base>.tmp-*"), for content that another
// writer fills (llama.cpp's quantizer, a download). Hand it to Install.
func TempFile(path string) (*os.File, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return f, nil
}

// Install moves the complete, closed file tmp to path durably: it syncs
// tmp, renames it over path (replace) or links it there only if path does
// not exist (an error wrapping fs.ErrExist otherwise), and syncs path's
// folder. tmp must be on the same file system as path. On error tmp is
// left for the caller to remove.
func Install(tmp, path string, replace bool) error {
	if err := install(tmp, path, replace); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func install(tmp, path string, replace bool) error {
	if err := syncFile(tmp); err != nil {
		return err
	}
	if replace {
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
		return SyncDir(filepath.Dir(path))
	}
	switch err := os.Link(tmp, path); {
	case err == nil:
		os.Remove(tmp)
	case errors.Is(err, fs.ErrExist):
		return fs.ErrExist
	default:
		// File systems without hard links: check, then rename.
		if _, err := os.Lstat(path); err == nil {
			return fs.ErrExist
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
	}
	return SyncDir(filepath.Dir(path))
}

// SyncDir makes the entries of a folder (a rename into it) durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync folder %s: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync folder %s: %w", dir, err)
	}
	return nil
}

func write(path string, perm os.FileMode, fill func(*os.File) error, replace bool) error {
	f, err := TempFile(path)
	if err != nil {
		return err
	}
	err = f.Chmod(perm)
	if err == nil {
		err = fill(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = install(f.Name(), path, replace)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
