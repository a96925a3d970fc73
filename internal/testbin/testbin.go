// Package testbin gives tests that run chatglm as a separate process the
// binary: `go build ./cmd/chatglm`, once per test process (with the cgo
// flags of the environment, which `make test` exports), written to
// <user cache dir>/chatglm-testbin/chatglm by a rename, so test processes
// running at once each get a whole file and nothing piles up in /tmp; or
// the prebuilt binary named by $CHATGLM_BIN. Test processes build one after
// the other (a file lock), so the first compiles llama.cpp and the others
// find it in Go's build cache.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
)

var (
	once sync.Once
	path string
	err  error
)

// Path returns the chatglm binary, building it on first use; a failed build
// fails the test with the compiler's output.
func Path(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		if path = os.Getenv("CHATGLM_BIN"); path != "" {
			return
		}
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		cache, e := os.UserCacheDir()
		if e != nil {
			cache = os.TempDir()
		}
		dir := filepath.Join(cache, "chatglm-testbin")
		if e := os.MkdirAll(dir, 0o755); e != nil {
			err = fmt.Errorf("testbin: %w", e)
			return
		}
		lock, e := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
		if e != nil {
			err = fmt.Errorf("testbin: %w", e)
			return
		}
		defer lock.Close()
		if e := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); e != nil {
			err = fmt.Errorf("testbin: lock: %w", e)
			return
		}
		path = filepath.Join(dir, "chatglm")
		tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
		cmd := exec.Command("go", "build", "-o", tmp, "./cmd/chatglm")
		cmd.Dir = root
		if out, e := cmd.CombinedOutput(); e != nil {
			os.Remove(tmp)
			err = fmt.Errorf("testbin: go build ./cmd/chatglm: %v\n%s", e, out)
			return
		}
		if e := os.Rename(tmp, path); e != nil {
			os.Remove(tmp)
			err = fmt.Errorf("testbin: %w", e)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return path
}
