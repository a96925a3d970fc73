package hub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatglm/chatglm/hub"
	"github.com/chatglm/chatglm/hub/hubtest"
)

// treeHook answers every tree request of the fake Hub with items.
func treeHook(items []map[string]any) func(http.ResponseWriter, *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/tree/") {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(items)
		return true
	}
}

// snapshotTree lists every file of a file set (as the Hub would) in a form a
// test can edit before serving it with treeHook.
func snapshotTree(fs map[string]*hubtest.File) []map[string]any {
	var items []map[string]any
	for p, f := range fs {
		it := map[string]any{"type": "file", "path": p, "size": len(f.Data), "oid": f.BlobID()}
		if f.LFS {
			it["lfs"] = map[string]any{"oid": f.SHA256(), "size": len(f.Data)}
		}
		items = append(items, it)
	}
	return items
}

// dirSnapshot maps every path under dir to its content.
func dirSnapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		out[p] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Issue 11 item 1: names and hashes from a listing never build a path
// outside the store.
func TestHostileListingStaysInStore(t *testing.T) {
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "precious"), []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(it map[string]any, partDir string)
		want string
	}{
		{"lfs oid climbs out", func(it map[string]any, partDir string) {
			rel, _ := filepath.Rel(partDir, outside)
			it["lfs"] = map[string]any{"oid": "x/../" + filepath.ToSlash(rel) + "/precious", "size": 5}
		}, "sha256"},
		{"git oid climbs out", func(it map[string]any, partDir string) {
			rel, _ := filepath.Rel(partDir, outside)
			delete(it, "lfs")
			it["oid"] = "x/../" + filepath.ToSlash(rel) + "/precious"
		}, "blob"},
		{"uppercase sha256", func(it map[string]any, _ string) {
			it["lfs"] = map[string]any{"oid": strings.Repeat("A", 63) + "/", "size": 5}
		}, "sha256"},
		{"no hash at all", func(it map[string]any, _ string) { delete(it, "lfs"); delete(it, "oid") }, "blob"},
		{"path climbs out", func(it map[string]any, _ string) { it["path"] = "../../../../precious" }, "path"},
		{"absolute path", func(it map[string]any, _ string) { it["path"] = outside + "/precious" }, "path"},
		{"backslash", func(it map[string]any, _ string) { it["path"] = `..\..\precious` }, "path"},
		{"NUL", func(it map[string]any, _ string) { it["path"] = "model\x00.safetensors" }, "path"},
		{"dot segment", func(it map[string]any, _ string) { it["path"] = "a/./b" }, "path"},
		{"control character", func(it map[string]any, _ string) { it["path"] = "a\x1b[2Jb" }, "path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, fs := newServer(t, 90)
			o := opts(t, srv)
			o.All = true
			partDir := filepath.Join(o.Dir, "THUDM", "chatglm3-6b", ".partial")
			items := snapshotTree(fs)
			for _, it := range items {
				if it["path"] == shard1 {
					tc.edit(it, partDir)
				}
			}
			srv.SetAPIHook(treeHook(items))
			before := dirSnapshot(t, outside)
			_, err := hub.Pull(context.Background(), o)
			if err == nil {
				t.Fatal("pull of a hostile listing succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not name the %s", err, tc.want)
			}
			if after := dirSnapshot(t, outside); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatalf("files outside the store changed: %v -> %v", before, after)
			}
			if srv.TotalBytes() != 0 {
				t.Fatal("a download started before the listing was validated")
			}
		})
	}
	t.Run("modelscope sha256 climbs out", func(t *testing.T) {
		srv, _ := newServer(t, 91)
		o := opts(t, srv)
		o.Source = "modelscope"
		srv.SetAPIHook(func(w http.ResponseWriter, r *http.Request) bool {
			if !strings.HasSuffix(r.URL.Path, "/repo/files") {
				return false
			}
			rel, _ := filepath.Rel(filepath.Join(o.Dir, "THUDM", "chatglm3-6b", ".partial"), outside)
			_ = json.NewEncoder(w).Encode(map[string]any{"Code": 200, "Success": true, "Data": map[string]any{"Files": []any{
				map[string]any{"Name": "config.json", "Path": "config.json", "Type": "blob", "Size": 5, "Sha256": "x/../" + rel + "/precious"},
			}}})
			return true
		})
		before := dirSnapshot(t, outside)
		if _, err := hub.Pull(context.Background(), o); err == nil || !strings.Contains(err.Error(), "config.json") {
			t.Fatalf("want an error naming config.json, got %v", err)
		}
		if after := dirSnapshot(t, outside); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("files outside the store changed")
		}
	})
}

// Issue 11 item 3: absurd sizes and duplicate paths are refused before any
// work starts (a negative size used to panic in makeslice).
func TestListingValidatedBeforeWork(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func([]map[string]any) []map[string]any
		want string
	}{
		{"negative size", func(items []map[string]any) []map[string]any {
			for _, it := range items {
				if it["path"] == "config.json" {
					it["size"] = -5
				}
			}
			return items
		}, "config.json"},
		{"negative lfs size", func(items []map[string]any) []map[string]any {
			for _, it := range items {
				if it["path"] == shard1 {
					it["lfs"].(map[string]any)["size"] = -1
				}
			}
			return items
		}, shard1},
		{"absurd size", func(items []map[string]any) []map[string]any {
			for _, it := range items {
				if it["path"] == shard1 {
					it["lfs"].(map[string]any)["size"] = int64(1) << 62
				}
			}
			return items
		}, shard1},
		{"same path twice", func(items []map[string]any) []map[string]any {
			for _, it := range items {
				if it["path"] == shard1 {
					dup := map[string]any{}
					for k, v := range it {
						dup[k] = v
					}
					return append(items, dup)
				}
			}
			return items
		}, shard1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, fs := newServer(t, 92)
			o := opts(t, srv)
			srv.SetAPIHook(treeHook(tc.edit(snapshotTree(fs))))
			_, err := hub.Pull(context.Background(), o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error naming %s, got %v", tc.want, err)
			}
			if srv.TotalBytes() != 0 {
				t.Fatal("a download started before the listing was validated")
			}
		})
	}
}

// Issue 11 item 2: the metadata API gets the retry policy of downloads.
func TestAPICallsAreRetried(t *testing.T) {
	t.Run("huggingface", func(t *testing.T) {
		srv, fs := newServer(t, 93)
		var refs, tree, head atomic.Int32
		srv.SetAPIHook(func(w http.ResponseWriter, r *http.Request) bool {
			switch {
			case strings.HasSuffix(r.URL.Path, "/refs") && refs.Add(1) <= 2:
				w.Header().Set("Retry-After", "1")
				http.Error(w, "slow down", http.StatusTooManyRequests)
			case strings.Contains(r.URL.Path, "/tree/") && tree.Add(1) == 1:
				http.Error(w, "busy", http.StatusServiceUnavailable)
			case strings.Contains(r.URL.Path, "/tree/") && tree.Load() == 2:
				// A connection dropped mid-listing.
				w.Header().Set("Content-Length", "1000")
				w.Write([]byte(`[{"type":"file",`))
				w.(http.Flusher).Flush()
				panic(http.ErrAbortHandler)
			case r.Method == http.MethodHead && head.Add(1) == 1:
				w.WriteHeader(http.StatusBadGateway)
			default:
				return false
			}
			return true
		})
		res, err := hub.Pull(context.Background(), opts(t, srv))
		if err != nil {
			t.Fatal(err)
		}
		checkResult(t, res, fs)
		if refs.Load() < 3 || tree.Load() < 3 {
			t.Fatalf("refs asked %d times, tree %d", refs.Load(), tree.Load())
		}
	})
	t.Run("modelscope", func(t *testing.T) {
		srv, _ := newServer(t, 94)
		var n atomic.Int32
		srv.SetAPIHook(func(w http.ResponseWriter, r *http.Request) bool {
			if strings.HasSuffix(r.URL.Path, "/repo/files") && n.Add(1) <= 2 {
				http.Error(w, "oops", http.StatusInternalServerError)
				return true
			}
			return false
		})
		o := opts(t, srv)
		o.Source = "modelscope"
		if _, err := hub.Pull(context.Background(), o); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("not found is not retried", func(t *testing.T) {
		srv, _ := newServer(t, 95)
		var n atomic.Int32
		srv.SetAPIHook(func(w http.ResponseWriter, r *http.Request) bool { n.Add(1); return false })
		o := opts(t, srv)
		o.Repo = "THUDM/nope"
		if _, err := hub.Pull(context.Background(), o); err == nil {
			t.Fatal("pull of a missing repo succeeded")
		}
		if n.Load() != 1 {
			t.Fatalf("a 404 was asked %d times", n.Load())
		}
	})
}

// Issue 11 item 2: a huge or trickling listing neither hangs nor eats memory.
func TestListingBodyLimits(t *testing.T) {
	t.Run("huge", func(t *testing.T) {
		srv, _ := newServer(t, 96)
		srv.SetAPIHook(func(w http.ResponseWriter, r *http.Request) bool {
			if !strings.Contains(r.URL.Path, "/tree/") {
				return false
			}
			item := []byte(`{"type":"directory","path":"` + strings.Repeat("a", 1000) + `","oid":"x","size":0},`)
			w.Write([]byte("["))
			for i := 0; i < 400<<10; i++ { // 400 MiB
				if _, err := w.Write(item); err != nil {
					break
				}
			}
			return true
		})
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		_, err := hub.Pull(ctx, opts(t, srv))
		if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "larger than") {
			t.Fatalf("want a size error, got %v", err)
		}
	})
	t.Run("trickling", func(t *testing.T) {
		srv, _ := newServer(t, 97)
		srv.SetAPIHook(func(w http.ResponseWriter, r *http.Request) bool {
			if !strings.Contains(r.URL.Path, "/tree/") {
				return false
			}
			for _, c := range []byte(`[` + strings.Repeat(" ", 1000) + `]`) {
				if _, err := w.Write([]byte{c}); err != nil {
					break
				}
				w.(http.Flusher).Flush()
				select {
				case <-time.After(50 * time.Millisecond):
				case <-r.Context().Done():
					return true
				}
			}
			return true
		})
		o := opts(t, srv)
		o.APITimeout = 300 * time.Millisecond
		o.Retries = 2
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_, err := hub.Pull(ctx, o)
		if err == nil || ctx.Err() != nil {
			t.Fatalf("want a timeout error before the test's deadline, got %v", err)
		}
	})
}

// Issue 11 item 4: credentials in the endpoint URL never reach an error.
func TestEndpointCredentialsRedacted(t *testing.T) {
	srv, _ := newServer(t, 98)
	o := opts(t, srv)
	o.Endpoint = strings.Replace(srv.URL(), "http://", "http://alice:hunter2@", 1)
	check := func(err error) {
		t.Helper()
		if err == nil {
			t.Fatal("want an error")
		}
		if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "alice") {
			t.Fatalf("credentials in the error: %v", err)
		}
	}
	o.Revision = "no-such-branch"
	_, err := hub.Pull(context.Background(), o)
	check(err)
	o.Revision = ""
	srv.SetAPIHook(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, "/tree/") {
			w.Write([]byte(`{not json`))
			return true
		}
		return false
	})
	_, err = hub.Pull(context.Background(), o)
	check(err)
	srv.SetAPIHook(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, "/tree/") {
			panic(http.ErrAbortHandler) // a connection error: *url.Error
		}
		return false
	})
	_, err = hub.Pull(context.Background(), o)
	check(err)
	srv.SetAPIHook(nil)
	srv.SetFault(func(r hubtest.Request) hubtest.Fault {
		return hubtest.Fault{Abort: r.Path == "config.json"} // a connection error on a file GET
	})
	_, err = hub.Pull(context.Background(), o)
	check(err)
	_, err = hub.NewHF("ftp://alice:hunter2@example.com", "", "", nil)
	check(err)
}

// Issue 11 item 5: revision names follow git's ref rules and are checked
// before anything reaches the hub or the store.
func TestRevisionValidatedFirst(t *testing.T) {
	srv, _ := newServer(t, 99)
	var asked atomic.Int32
	srv.SetAPIHook(func(w http.ResponseWriter, r *http.Request) bool { asked.Add(1); return false })
	for _, rev := range []string{".", "..", "a..b", "/main", "main/", "a//b", "a.lock", "a/.b", ".hidden", "a b",
		"a~1", "a^", "a:b", "a?", "a*", "a[", `a\b`, "@", "a@{1}", "a\x00b", "a\x7fb", "main.", "-x", strings.Repeat("a", 300)} {
		o := opts(t, srv)
		o.Revision = rev
		_, err := hub.Pull(context.Background(), o)
		if err == nil || !strings.Contains(err.Error(), "revision") {
			t.Fatalf("revision %q: want a revision error, got %v", rev, err)
		}
		if asked.Load() != 0 {
			t.Fatalf("revision %q reached the hub", rev)
		}
		if _, err := os.Stat(o.Dir); err == nil {
			if ents, _ := os.ReadDir(o.Dir); len(ents) != 0 {
				t.Fatalf("revision %q touched the store: %v", rev, ents)
			}
		}
		if _, _, err := hub.NewStore(o.Dir).Local(repoID, rev); err == nil || !strings.Contains(err.Error(), "revision") {
			t.Fatalf("Local(%q): want a revision error, got %v", rev, err)
		}
	}
	// Names git accepts work, including the Hub's refs/pr/N.
	for _, rev := range []string{"main", "v1.0", "refs/pr/1", "feature/x-y_z"} {
		o := opts(t, srv)
		o.Revision = rev
		_, err := hub.Pull(context.Background(), o)
		if err != nil && strings.Contains(err.Error(), "bad revision") {
			t.Fatalf("revision %q refused: %v", rev, err)
		}
	}
}

// Issue 11 item 6: a server that keeps a connection alive with a byte now
// and then is dropped by the minimum rate, not waited on forever.
func TestMinimumTransferRate(t *testing.T) {
	srv, fs := newServer(t, 100)
	srv.SetFault(func(r hubtest.Request) hubtest.Fault {
		if r.Path == shard1 && r.N == 1 {
			return hubtest.Fault{Trickle: 20 * time.Millisecond}
		}
		return hubtest.Fault{}
	})
	o := opts(t, srv)
	o.StallTimeout = 300 * time.Millisecond
	o.MinRate = 1000 // bytes/s: 300 bytes per window, the trickle sends ~15
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := hub.Pull(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, res, fs)
	if srv.Requests(shard1) < 2 {
		t.Fatal("the trickling request was not dropped and retried")
	}
}

// Issue 11 item 7b: a file found in a snapshot folder that no manifest
// vouches for (a crash between its rename and the manifest) is verified
// again before it is used.
func TestUnrecordedSnapshotFileIsReverified(t *testing.T) {
	srv, fs := newServer(t, 101)
	o := opts(t, srv)
	res, err := hub.Pull(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	// The crash: the manifest never reached the disk and the shard's bytes
	// did not either (same size, other bytes).
	rd := filepath.Join(o.Dir, "THUDM", "chatglm3-6b")
	if err := os.RemoveAll(filepath.Join(rd, ".meta")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(res.Dir, shard1), make([]byte, len(fs[shard1].Data)), 0o644); err != nil {
		t.Fatal(err)
	}
	srv.ResetCounters()
	res, err = hub.Pull(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, res, fs)
	if got := srv.TotalBytes(); got != int64(len(fs[shard1].Data)) {
		t.Fatalf("fetched %d bytes again, want just the bad shard's %d", got, len(fs[shard1].Data))
	}
	// With the manifest back, the files are trusted without a network byte.
	srv.ResetCounters()
	if res, err = hub.Pull(context.Background(), o); err != nil || srv.TotalBytes() != 0 {
		t.Fatalf("third pull: %v, %d bytes", err, srv.TotalBytes())
	}
	if b, _ := os.ReadFile(filepath.Join(res.Dir, shard1)); !bytes.Equal(b, fs[shard1].Data) {
		t.Fatal("shard differs")
	}
}

// Repo names become two folder names in the store: only the Hub's repo id
// characters pass, so no name reaches the lock folder or leaves the store.
func TestRepoNamesAreChecked(t *testing.T) {
	srv, _ := newServer(t, 102)
	var asked atomic.Int32
	srv.SetAPIHook(func(w http.ResponseWriter, r *http.Request) bool { asked.Add(1); return false })
	for _, repo := range []string{".locks/THUDM", "THUDM/.partial", "a/..", "../a", "a/b/c", "a\x1b[2J/b", "a--b/c", "-a/b", "a./b", "a/b c", "a/" + strings.Repeat("x", 97)} {
		o := opts(t, srv)
		o.Repo = repo
		if _, err := hub.Pull(context.Background(), o); err == nil || !strings.Contains(err.Error(), "repo") {
			t.Errorf("pull %q: want a repo error, got %v", repo, err)
		}
		if err := hub.NewStore(o.Dir).Remove(repo); err == nil || !strings.Contains(err.Error(), "repo") {
			t.Errorf("rm %q: want a repo error, got %v", repo, err)
		}
	}
	if asked.Load() != 0 {
		t.Fatal("a bad repo name reached the hub")
	}
}

// A tree page's Link rel="next" may not send the client to another host,
// nor back to a page it has read.
func TestListingPagesStayOnEndpoint(t *testing.T) {
	var foreign atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		foreign.Add(1)
		w.Write([]byte("[]"))
	}))
	defer other.Close()
	for name, next := range map[string]func(r *http.Request) string{
		"other host": func(*http.Request) string { return other.URL + "/page2" },
		"loop":       func(r *http.Request) string { return r.URL.String() },
	} {
		t.Run(name, func(t *testing.T) {
			srv, _ := newServer(t, 103)
			srv.SetAPIHook(func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.Contains(r.URL.Path, "/tree/") {
					return false
				}
				w.Header().Set("Link", "<"+next(r)+`>; rel="next"`)
				w.Write([]byte("[]"))
				return true
			})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if _, err := hub.Pull(ctx, opts(t, srv)); err == nil || ctx.Err() != nil {
				t.Fatalf("want a listing error, got %v", err)
			}
			if foreign.Load() != 0 {
				t.Fatal("the listing sent the client to another host")
			}
		})
	}
}
