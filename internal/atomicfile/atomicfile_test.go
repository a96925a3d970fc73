package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(path, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "new" {
		t.Fatalf("content %q", b)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode())
	}
	// A failing fill leaves the old content and no temporary file.
	boom := errors.New("boom")
	err := Write(path, 0o600, func(f *os.File) error {
		f.WriteString("half")
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "new" {
		t.Fatalf("content after a failed write %q", b)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("left behind: %v", entries)
	}
	if err := WriteFile(filepath.Join(dir, "no", "such", "dir"), nil, 0o600); err == nil {
		t.Fatal("no error for a missing folder")
	}
}

func TestCreateNeverReplaces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "model.gguf")
	fill := func(s string) func(*os.File) error {
		return func(f *os.File) error { _, err := f.WriteString(s); return err }
	}
	if err := Create(path, 0o644, fill("first")); err != nil {
		t.Fatal(err)
	}
	// The file exists by the time the second content is complete.
	err := Create(path, 0o644, fill("second"))
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second Create: %v, want fs.ErrExist", err)
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name the file", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "first" {
		t.Fatalf("content %q, want the first", b)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("left behind: %v", entries)
	}
}

func TestInstall(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out")
	for i, replace := range []bool{false, true} {
		tmp, err := TempFile(path)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(tmp, "v%d", i)
		tmp.Close()
		if err := Install(tmp.Name(), path, replace); err != nil {
			t.Fatalf("Install replace=%v: %v", replace, err)
		}
		if b, _ := os.ReadFile(path); string(b) != fmt.Sprintf("v%d", i) {
			t.Fatalf("content %q", b)
		}
		if _, err := os.Stat(tmp.Name()); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("temporary file still there: %v", err)
		}
	}
	tmp, _ := TempFile(path)
	tmp.Close()
	if err := Install(tmp.Name(), path, false); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Install over an existing file without replace: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "v1" {
		t.Fatalf("existing file changed: %q", b)
	}
}
