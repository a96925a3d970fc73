package hub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chatglm/chatglm/hub"
	"github.com/chatglm/chatglm/hub/hubtest"
)

const repoID = "THUDM/chatglm3-6b"

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// files is a small ChatGLM3-shaped repo.
func files(seed uint64) map[string]*hubtest.File {
	return map[string]*hubtest.File{
		"config.json":                      {Data: []byte(`{"model_type":"chatglm"}` + "\n")},
		"tokenizer_config.json":            {Data: []byte(`{"padding_side":"left"}`)},
		"tokenizer.model":                  {Data: randBytes(seed+1, 50_000), LFS: true},
		"model-00001-of-00002.safetensors": {Data: randBytes(seed+2, 400_000), LFS: true},
		"model-00002-of-00002.safetensors": {Data: randBytes(seed+3, 150_001), LFS: true},
		"model.safetensors.index.json":     {Data: []byte(`{"weight_map":{}}`)},
		"pytorch_model-00001-of-00002.bin": {Data: randBytes(seed+4, 1000), LFS: true},
		"README.md":                        {Data: []byte("# readme\n")},
		"modeling_chatglm.py":              {Data: []byte("# code\n")},
		"onnx/model.safetensors":           {Data: randBytes(seed+5, 100), LFS: true},
	}
}

var selected = []string{"config.json", "tokenizer_config.json", "tokenizer.model",
	"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json"}

const shard1 = "model-00001-of-00002.safetensors"

func newServer(t *testing.T, seed uint64) (*hubtest.Server, map[string]*hubtest.File) {
	t.Helper()
	srv := hubtest.New()
	t.Cleanup(srv.Close)
	fs := files(seed)
	if _, err := srv.SetRepo(repoID, fs); err != nil {
		t.Fatal(err)
	}
	return srv, fs
}

func opts(t *testing.T, srv *hubtest.Server) hub.Options {
	return hub.Options{
		Repo: repoID, Endpoint: srv.URL(), Dir: t.TempDir(), Token: "-",
		Connections: 4, ChunkSize: 64 << 10, Retries: 4, SplitBelow: math.MaxInt64, SplitEvery: time.Millisecond,
		Backoff: 2 * time.Millisecond, MaxBackoff: 10 * time.Millisecond, MaxRetryAfter: 10 * time.Millisecond,
		StallTimeout: 5 * time.Second, SaveInterval: 10 * time.Millisecond, LockPoll: 5 * time.Millisecond,
	}
}

// checkResult asserts that every selected file is byte-identical and that
// nothing else (no partial file) is in the snapshot folder.
func checkResult(t *testing.T, res *hub.Result, want map[string]*hubtest.File) {
	t.Helper()
	got := map[string]bool{}
	err := filepath.WalkDir(res.Dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(res.Dir, p)
		got[filepath.ToSlash(rel)] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range selected {
		b, err := os.ReadFile(filepath.Join(res.Dir, p))
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if !bytes.Equal(b, want[p].Data) {
			t.Fatalf("%s: content differs (%d bytes, want %d)", p, len(b), len(want[p].Data))
		}
		delete(got, p)
	}
	if len(got) != 0 {
		t.Fatalf("unexpected files in snapshot: %v", got)
	}
}

func TestPullSelectsVerifiesAndIsIdempotent(t *testing.T) {
	srv, fs := newServer(t, 1)
	srv.Token = "hf_secret"
	srv.PageSize = 3 // several tree pages
	o := opts(t, srv)
	o.Token = "hf_secret"
	res, err := hub.Pull(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, res, fs)
	if len(res.ID) != 40 || filepath.Base(res.Dir) != res.ID {
		t.Fatalf("snapshot dir %s, id %s", res.Dir, res.ID)
	}
	if n := srv.CDNAuthSeen(); n != 0 {
		t.Fatalf("token reached the CDN %d times", n)
	}
	if n := srv.HubRejected(); n != 0 {
		t.Fatalf("%d hub requests without token", n)
	}
	served := srv.TotalBytes()
	var size int64
	for _, p := range selected {
		size += int64(len(fs[p].Data))
	}
	if served != size || res.Fetched != size {
		t.Fatalf("served %d, fetched %d, want %d", served, res.Fetched, size)
	}
	// A second pull fetches nothing.
	res2, err := hub.Pull(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if srv.TotalBytes() != served || res2.Fetched != 0 || res2.Dir != res.Dir {
		t.Fatalf("second pull fetched %d bytes", srv.TotalBytes()-served)
	}
	// Offline, with the server gone, answers from the store.
	srv.Close()
	o.Offline = true
	res3, err := hub.Pull(context.Background(), o)
	if err != nil || res3.Dir != res.Dir || !res3.Offline {
		t.Fatalf("offline: %v %+v", err, res3)
	}
	// A failed network falls back to the store too.
	o.Offline = false
	res4, err := hub.Pull(context.Background(), o)
	if err != nil || res4.Dir != res.Dir || !res4.Offline {
		t.Fatalf("network down: %v %+v", err, res4)
	}
	// --all and --include on a fresh store.
	list, err := hub.NewStore(o.Dir).List()
	if err != nil || len(list) != 1 || list[0].Files != len(selected) || list[0].Revisions[0] != "main" {
		t.Fatalf("list: %v %+v", err, list)
	}
}

func TestPullWithoutTokenIsRejectedClearly(t *testing.T) {
	srv, _ := newServer(t, 2)
	srv.Token = "hf_secret"
	o := opts(t, srv)
	_, err := hub.Pull(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "HF_TOKEN") {
		t.Fatalf("want a 401 error mentioning HF_TOKEN, got %v", err)
	}
	if strings.Contains(err.Error(), "hf_secret") {
		t.Fatal("token in error")
	}
}

func TestPullAllAndInclude(t *testing.T) {
	srv, _ := newServer(t, 3)
	o := opts(t, srv)
	o.Include = []string{"*.py"}
	res, err := hub.Pull(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(res.Dir, "modeling_chatglm.py")); err != nil {
		t.Fatal(err)
	}
	o.All = true
	res, err = hub.Pull(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"README.md", "onnx/model.safetensors", "pytorch_model-00001-of-00002.bin"} {
		if _, err := os.Stat(filepath.Join(res.Dir, p)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSelect(t *testing.T) {
	fs := []hub.File{{Path: "config.json"}, {Path: "tokenizer.model"}, {Path: "a.bin"}, {Path: "pytorch_model-00001-of-00002.bin"},
		{Path: "pytorch_model.bin.index.json"}, {Path: "README.md"}}
	got, _ := hub.Select(fs, false, nil)
	if len(got) != 4 { // no safetensors: the .bin shards and their index
		t.Fatalf("%v", got)
	}
	fs = append(fs, hub.File{Path: "model.safetensors"})
	got, _ = hub.Select(fs, false, []string{"README*"})
	var names []string
	for _, f := range got {
		names = append(names, f.Path)
	}
	if strings.Join(names, ",") != "config.json,tokenizer.model,README.md,model.safetensors" {
		t.Fatalf("%v", names)
	}
	if _, err := hub.Select(fs, false, []string{"["}); err == nil {
		t.Fatal("bad glob accepted")
	}
}

// TestFaults: each fault, injected once (or for a while), ends with
// byte-identical files.
func TestFaults(t *testing.T) {
	cases := []struct {
		name  string
		fault func(srv *hubtest.Server, r hubtest.Request) hubtest.Fault
		check func(t *testing.T, srv *hubtest.Server)
	}{
		{"connection dropped mid-body", func(_ *hubtest.Server, r hubtest.Request) hubtest.Fault {
			if r.N <= 2 {
				return hubtest.Fault{DropAfter: 10_000}
			}
			return hubtest.Fault{}
		}, nil},
		{"stalled body", func(_ *hubtest.Server, r hubtest.Request) hubtest.Fault {
			if r.Path == shard1 && r.N == 1 {
				return hubtest.Fault{StallAfter: 20_000, Stall: 5 * time.Second}
			}
			return hubtest.Fault{}
		}, nil},
		{"500 then success", func(_ *hubtest.Server, r hubtest.Request) hubtest.Fault {
			if r.N <= 2 {
				return hubtest.Fault{Status: 500}
			}
			return hubtest.Fault{}
		}, nil},
		{"503 with Retry-After", func(_ *hubtest.Server, r hubtest.Request) hubtest.Fault {
			if r.N == 1 {
				return hubtest.Fault{Status: 503, RetryAfter: "1"}
			}
			return hubtest.Fault{}
		}, nil},
		{"429 with Retry-After", func(_ *hubtest.Server, r hubtest.Request) hubtest.Fault {
			if r.N <= 3 {
				return hubtest.Fault{Status: 429, RetryAfter: "120"}
			}
			return hubtest.Fault{}
		}, func(t *testing.T, srv *hubtest.Server) {
			if srv.Requests("tokenizer.model") < 4 {
				t.Fatal("429 not retried")
			}
		}},
		{"truncated body", func(_ *hubtest.Server, r hubtest.Request) hubtest.Fault {
			if r.N == 1 {
				return hubtest.Fault{Truncate: 5000}
			}
			return hubtest.Fault{}
		}, nil},
		{"server ignores Range", func(_ *hubtest.Server, r hubtest.Request) hubtest.Fault {
			return hubtest.Fault{IgnoreRange: true}
		}, func(t *testing.T, srv *hubtest.Server) {
			// The whole shard is sent per request: first answers thrown away, then one stream.
			if srv.Requests(shard1) < 2 {
				t.Fatal("expected a restart")
			}
		}},
		{"wrong bytes once", func(_ *hubtest.Server, r hubtest.Request) hubtest.Fault {
			if r.Path == shard1 && r.N == 2 {
				return hubtest.Fault{Body: randBytes(99, 64<<10)}
			}
			return hubtest.Fault{}
		}, func(t *testing.T, srv *hubtest.Server) {
			if srv.BytesServed(shard1) < 2*400_000 {
				t.Fatal("bad shard was not fetched again")
			}
		}},
		{"expired presigned URL", func(srv *hubtest.Server, r hubtest.Request) hubtest.Fault {
			if r.Path == shard1 && r.N == 3 {
				srv.ExpireURLs()
			}
			return hubtest.Fault{}
		}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, fs := newServer(t, 10)
			srv.SetFault(func(r hubtest.Request) hubtest.Fault { return tc.fault(srv, r) })
			o := opts(t, srv)
			o.StallTimeout = 300 * time.Millisecond // the stall fault pauses 5s
			res, err := hub.Pull(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			checkResult(t, res, fs)
			if srv.CDNAuthSeen() != 0 {
				t.Fatal("Authorization reached the CDN")
			}
			if tc.check != nil {
				tc.check(t, srv)
			}
		})
	}
}

// noFile asserts that path is in no snapshot folder and no partial remains.
func noFile(t *testing.T, dir, path string) {
	t.Helper()
	matches, _ := filepath.Glob(filepath.Join(dir, "THUDM", "chatglm3-6b", "*", path))
	parts, _ := filepath.Glob(filepath.Join(dir, "THUDM", "chatglm3-6b", ".partial", "*.part"))
	if len(matches) != 0 {
		t.Fatalf("corrupt file in the store: %v", matches)
	}
	_ = parts
}

func TestPersistentFaultsFailClearly(t *testing.T) {
	t.Run("listing sha256 differs from bytes", func(t *testing.T) {
		srv := hubtest.New()
		defer srv.Close()
		fs := files(20)
		fs[shard1].ListedSHA256 = strings.Repeat("ab", 32)
		if _, err := srv.SetRepo(repoID, fs); err != nil {
			t.Fatal(err)
		}
		o := opts(t, srv)
		_, err := hub.Pull(context.Background(), o)
		if err == nil || !strings.Contains(err.Error(), shard1) || !strings.Contains(err.Error(), "sha256") || !strings.Contains(err.Error(), "fetched twice") {
			t.Fatalf("want a sha256 mismatch naming the file, got %v", err)
		}
		noFile(t, o.Dir, shard1)
		if srv.BytesServed(shard1) != 2*400_000 {
			t.Fatalf("served %d bytes of the shard, want two full attempts", srv.BytesServed(shard1))
		}
		parts, _ := filepath.Glob(filepath.Join(o.Dir, "THUDM", "chatglm3-6b", ".partial", "*"+strings.Repeat("ab", 32)+"*"))
		if len(parts) != 0 {
			t.Fatalf("bad partial kept: %v", parts)
		}
	})
	t.Run("always truncated", func(t *testing.T) {
		srv, _ := newServer(t, 21)
		srv.SetFault(func(r hubtest.Request) hubtest.Fault {
			if r.Path == shard1 {
				return hubtest.Fault{Truncate: 1}
			}
			return hubtest.Fault{}
		})
		o := opts(t, srv)
		o.Retries = 2
		o.ChunkSize = 1 << 20
		_, err := hub.Pull(context.Background(), o)
		if err == nil || !strings.Contains(err.Error(), shard1) || !strings.Contains(err.Error(), "giving up") {
			t.Fatalf("want giving up on %s, got %v", shard1, err)
		}
		noFile(t, o.Dir, shard1)
	})
	t.Run("missing file 404", func(t *testing.T) {
		srv, _ := newServer(t, 22)
		srv.SetFault(func(r hubtest.Request) hubtest.Fault {
			if r.Path == "config.json" {
				return hubtest.Fault{Status: 404}
			}
			return hubtest.Fault{}
		})
		o := opts(t, srv)
		_, err := hub.Pull(context.Background(), o)
		if err == nil || !strings.Contains(err.Error(), "404") {
			t.Fatalf("want 404, got %v", err)
		}
		noFile(t, o.Dir, "config.json")
	})
}

// cancelAfter returns a fault hook that throttles the shard and cancels
// ctx once `after` bytes of it were requested.
func interruptedPull(t *testing.T, srv *hubtest.Server, o hub.Options, after int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var seen atomic.Int64
	srv.SetFault(func(r hubtest.Request) hubtest.Fault {
		if r.Path == shard1 {
			if seen.Add(1) > int64(after) {
				cancel()
			}
			return hubtest.Fault{Throttle: 5 * time.Millisecond}
		}
		return hubtest.Fault{}
	})
	if _, err := hub.Pull(ctx, o); !errors.Is(err, context.Canceled) {
		t.Fatalf("want canceled, got %v", err)
	}
	srv.SetFault(nil)
}

func TestResumeAfterCancelWithServerIgnoringRange(t *testing.T) {
	srv, fs := newServer(t, 30)
	o := opts(t, srv)
	interruptedPull(t, srv, o, 3)
	srv.SetFault(func(r hubtest.Request) hubtest.Fault { return hubtest.Fault{IgnoreRange: true} })
	res, err := hub.Pull(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, res, fs)
}

func TestFileChangesBetweenRuns(t *testing.T) {
	srv, _ := newServer(t, 40)
	o := opts(t, srv)
	interruptedPull(t, srv, o, 3)
	// The repo moves on: the shard has new content under a new commit.
	fs2 := files(40)
	fs2[shard1] = &hubtest.File{Data: randBytes(4242, 400_000), LFS: true}
	if _, err := srv.SetRepo(repoID, fs2); err != nil {
		t.Fatal(err)
	}
	res, err := hub.Pull(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, res, fs2)
	// A third revision changes one small file: the rest is reused, not fetched.
	fs3 := files(40)
	fs3[shard1] = fs2[shard1]
	fs3["config.json"] = &hubtest.File{Data: []byte(`{"model_type":"chatglm","v":3}`)}
	if _, err := srv.SetRepo(repoID, fs3); err != nil {
		t.Fatal(err)
	}
	srv.ResetCounters()
	res3, err := hub.Pull(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, res3, fs3)
	if res3.Dir == res.Dir || srv.TotalBytes() != int64(len(fs3["config.json"].Data)) {
		t.Fatalf("third pull fetched %d bytes", srv.TotalBytes())
	}
}

func TestConcurrentPullsOfSameRepo(t *testing.T) {
	srv, fs := newServer(t, 50)
	srv.SetFault(func(r hubtest.Request) hubtest.Fault { return hubtest.Fault{Throttle: time.Millisecond} })
	o := opts(t, srv)
	var wg sync.WaitGroup
	results := make([]*hub.Result, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = hub.Pull(context.Background(), o)
		}()
	}
	wg.Wait()
	var size int64
	for _, p := range selected {
		size += int64(len(fs[p].Data))
	}
	for i := range 2 {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		checkResult(t, results[i], fs)
	}
	if srv.TotalBytes() != size {
		t.Fatalf("served %d bytes for %d of files: the pulls did not share", srv.TotalBytes(), size)
	}
}

func TestModelScope(t *testing.T) {
	srv := hubtest.New()
	defer srv.Close()
	fs := files(60)
	if _, err := srv.SetRepo("ZhipuAI/chatglm3-6b", fs); err != nil {
		t.Fatal(err)
	}
	srv.SetFault(func(r hubtest.Request) hubtest.Fault {
		if r.Host != "modelscope" {
			t.Errorf("request to %s", r.Host)
		}
		if r.N == 1 && r.Path == shard1 {
			return hubtest.Fault{DropAfter: 1000}
		}
		return hubtest.Fault{}
	})
	o := opts(t, srv)
	o.Source, o.Repo = "modelscope", "ZhipuAI/chatglm3-6b"
	res, err := hub.Pull(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, res, fs)
	if !strings.HasPrefix(res.ID, "ms-") || res.Revision != "master" {
		t.Fatalf("snapshot %s@%s", res.ID, res.Revision)
	}
	res2, err := hub.Pull(context.Background(), o)
	if err != nil || res2.Fetched != 0 {
		t.Fatalf("second pull: %v, fetched %d", err, res2.Fetched)
	}
}

func TestStoreRemove(t *testing.T) {
	srv, _ := newServer(t, 70)
	o := opts(t, srv)
	if _, err := hub.Pull(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	st := hub.NewStore(o.Dir)
	if err := st.Remove(repoID); err != nil {
		t.Fatal(err)
	}
	if list, _ := st.List(); len(list) != 0 {
		t.Fatalf("still listed: %+v", list)
	}
	if err := st.Remove(repoID); err == nil {
		t.Fatal("removing a missing repo succeeded")
	}
}

// The helper process for TestKillMidPullThenResume: a pull configured from
// the environment.
func TestMain(m *testing.M) {
	if ep := os.Getenv("HUBTEST_HELPER_ENDPOINT"); ep != "" {
		o := hub.Options{Repo: repoID, Endpoint: ep, Dir: os.Getenv("HUBTEST_HELPER_DIR"),
			Connections: 4, ChunkSize: 256 << 10, SaveInterval: 5 * time.Millisecond, Backoff: time.Millisecond,
			UserAgent: os.Getenv("HUBTEST_HELPER_UA")}
		if _, err := hub.Pull(context.Background(), o); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	flag.Parse()
	if !testing.Verbose() {
		slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	}
	os.Exit(m.Run())
}

func TestKillMidPullThenResume(t *testing.T) {
	srv := hubtest.New()
	defer srv.Close()
	big := randBytes(80, 4<<20)
	if _, err := srv.SetRepo(repoID, map[string]*hubtest.File{
		"config.json": {Data: []byte("{}")},
		shard1:        {Data: big, LFS: true},
	}); err != nil {
		t.Fatal(err)
	}
	var slow atomic.Bool
	slow.Store(true)
	srv.SetFault(func(r hubtest.Request) hubtest.Fault {
		if slow.Load() {
			return hubtest.Fault{Throttle: 10 * time.Millisecond}
		}
		return hubtest.Fault{}
	})
	dir := t.TempDir()
	helper := func(ua string) *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "HUBTEST_HELPER_ENDPOINT="+srv.URL(), "HUBTEST_HELPER_DIR="+dir, "HUBTEST_HELPER_UA="+ua)
		cmd.Stderr = os.Stderr
		return cmd
	}
	cmd := helper("first")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	partDir := filepath.Join(dir, "THUDM", "chatglm3-6b", ".partial")
	// Wait until the saved progress shows about a quarter of the shard.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if done, _ := savedProgress(partDir); done > 1<<20 {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("helper made no progress")
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	saved, err := savedProgress(partDir)
	if err != nil {
		t.Fatal(err)
	}
	if saved <= 0 || saved >= int64(len(big)) {
		t.Fatalf("saved progress %d", saved)
	}
	slow.Store(false)
	cmd = helper("resume")
	if err := cmd.Run(); err != nil {
		t.Fatalf("resume: %v", err)
	}
	if got, want := srv.BytesServedTo(shard1, "resume"), int64(len(big))-saved; got != want {
		t.Fatalf("resume fetched %d bytes of the shard, want exactly the remainder %d (saved %d of %d)", got, want, saved, len(big))
	}
	list, err := hub.NewStore(dir).List()
	if err != nil || len(list) != 1 {
		t.Fatalf("list: %v %v", err, list)
	}
	b, err := os.ReadFile(filepath.Join(list[0].Dir, shard1))
	if err != nil || !bytes.Equal(b, big) {
		t.Fatalf("resumed file differs: %v", err)
	}
	t.Logf("killed with %d of %d bytes saved; the resume fetched %d", saved, len(big), srv.BytesServedTo(shard1, "resume"))
}

// savedProgress sums the bytes recorded in the shard's progress file.
func savedProgress(partDir string) (int64, error) {
	ms, _ := filepath.Glob(filepath.Join(partDir, "*.json"))
	for _, m := range ms {
		b, err := os.ReadFile(m)
		if err != nil {
			continue
		}
		var st struct {
			Path string  `json:"path"`
			Done []int64 `json:"done"`
		}
		if json.Unmarshal(b, &st) != nil || st.Path != shard1 {
			continue
		}
		var n int64
		for _, d := range st.Done {
			n += d
		}
		return n, nil
	}
	return 0, errors.New("no progress file for " + shard1 + " in " + partDir + " " + strconv.Itoa(len(ms)))
}

// A file on a fast link keeps one stream: its bytes are hashed as they
// arrive, and extra ranged streams would only add read-back work.
func TestFastLinkKeepsOneStreamPerFile(t *testing.T) {
	srv, fs := newServer(t, 21)
	o := opts(t, srv)
	o.SplitBelow = 1 << 20 // any loopback stream is faster than 1 MiB/s, even under -race
	o.SplitEvery = 10 * time.Millisecond
	res, err := hub.Pull(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, res, fs)
	for _, p := range selected {
		if n := srv.PeakStreams(p); n > 1 {
			t.Errorf("%s: %d streams at once on a fast link, want 1", p, n)
		}
	}
	if n := srv.Requests(shard1); n < len(fs[shard1].Data)/(64<<10) {
		t.Errorf("%s: %d requests, want one per 64 KiB chunk", shard1, n)
	}
}

// A file whose streams are slow (a per-connection cap) gets more streams,
// taken from the back, and still arrives byte-identical, each byte fetched
// once.
func TestSlowLinkSplitsFiles(t *testing.T) {
	srv, fs := newServer(t, 22)
	srv.SetFault(func(r hubtest.Request) hubtest.Fault {
		if r.Host == "cdn" {
			return hubtest.Fault{Throttle: 2 * time.Millisecond} // about 16 MB/s per stream
		}
		return hubtest.Fault{}
	})
	o := opts(t, srv)
	o.SplitBelow = 64 << 20
	o.SplitEvery = 5 * time.Millisecond
	res, err := hub.Pull(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, res, fs)
	if n := srv.PeakStreams(shard1); n < 2 || n > o.Connections {
		t.Errorf("%s: %d streams at once, want 2..%d", shard1, n, o.Connections)
	}
	if got, want := srv.BytesServed(shard1), int64(len(fs[shard1].Data)); got != want {
		t.Errorf("%s: served %d bytes for a %d-byte file", shard1, got, want)
	}
}
