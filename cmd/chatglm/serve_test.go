package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chatglm/chatglm/convert"
	"github.com/chatglm/chatglm/internal/fixture/shareddata"
	"github.com/chatglm/chatglm/internal/fixture/testmodel"
)

// TestServeOpenAIClient builds the real binary, serves a tiny random
// ChatGLM3 model with it, runs the official OpenAI Node client's tests in
// test/openai against it (`npm ci` first when node_modules is missing), and
// stops it with SIGTERM, which must end it with status 0. It runs whenever
// node is installed.
func TestServeOpenAIClient(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed; .ci/run installs it")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	clientDir := filepath.Join(root, "test", "openai")
	if _, err := os.Stat(filepath.Join(clientDir, "node_modules", "openai")); err != nil {
		npm, err := exec.LookPath("npm")
		if err != nil {
			t.Fatal("node_modules is missing and npm is not installed")
		}
		serveExec(t, clientDir, nil, npm, "ci", "--no-audit", "--no-fund")
	}

	tmp := t.TempDir()
	bin := filepath.Join(tmp, "chatglm")
	serveExec(t, root, nil, "go", "build", "-o", bin, "./cmd/chatglm")
	model := serveTinyModel(t, tmp)

	const key = "test-key"
	srv := startServeProc(t, bin, "-m", model, "--port", "0", "--parallel", "2", "--api-key", key, "--log-level", "info")
	// /health needs no key and is ready once the model is loaded.
	serveWaitHealthy(t, srv.url)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec", "client.test.mjs")
	cmd.Dir = clientDir
	cmd.Env = append(os.Environ(),
		"CHATGLM_BASE_URL="+srv.url+"/v1", "CHATGLM_API_KEY="+key, "CHATGLM_MODEL=tiny-f16", "NO_COLOR=1")
	out, err := cmd.CombinedOutput()
	t.Logf("node --test:\n%s", out)
	if err != nil {
		t.Fatalf("the OpenAI client tests failed: %v\nserver log:\n%s", err, srv.log())
	}

	// SIGTERM: stop accepting, finish, exit 0.
	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := srv.wait(30 * time.Second); err != nil {
		t.Fatalf("after SIGTERM: %v\nserver log:\n%s", err, srv.log())
	}
	log := srv.log()
	if !strings.Contains(log, "chatglm: stopped") {
		t.Errorf("no clean stop in the log:\n%s", log)
	}
	// One line per request, never the prompt text.
	if strings.Contains(log, "Tell me a story") || strings.Contains(log, "你好") {
		t.Errorf("the server log holds prompt text:\n%s", log)
	}
	if !strings.Contains(log, "msg=request") {
		t.Errorf("no request log lines:\n%s", log)
	}
}

// tinyModel writes a tiny random ChatGLM3 checkpoint (real tokenizer, 1024
// tokens of context) and converts it to dir/tiny-f16.gguf.
func serveTinyModel(t *testing.T, dir string) string {
	t.Helper()
	ckpt := filepath.Join(dir, "ckpt")
	if err := os.Mkdir(ckpt, 0o755); err != nil {
		t.Fatal(err)
	}
	spec := testmodel.Tiny
	spec.SeqLength = 1024
	if err := testmodel.WriteDir(ckpt, spec, shareddata.ChatGLM3(t)); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "tiny-f16.gguf")
	if _, err := convert.Convert(context.Background(), convert.Options{Input: ckpt, Output: out, Threads: 2}); err != nil {
		t.Fatal(err)
	}
	return out
}

func serveExec(t *testing.T, dir string, env []string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// serveProc is a running `chatglm serve`.
type serveProc struct {
	cmd    *exec.Cmd
	url    string
	logBuf *serveLogBuffer
	done   chan error
}

func (p *serveProc) log() string { return p.logBuf.String() }

// wait waits for the process to exit with status 0.
func (p *serveProc) wait(d time.Duration) error {
	select {
	case err := <-p.done:
		return err
	case <-time.After(d):
		return fmt.Errorf("still running after %v", d)
	}
}

// startServe starts the binary's serve command and returns once it prints
// its address.
func startServeProc(t *testing.T, bin string, args ...string) *serveProc {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve"}, args...)...)
	cmd.Env = append(os.Environ(), "CHATGLM_LOG_LEVEL=info")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serveProc{cmd: cmd, logBuf: &serveLogBuffer{}, done: make(chan error, 1)}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.logBuf.WriteString(line + "\n")
			if _, rest, ok := strings.Cut(line, "chatglm: listening on "); ok {
				addr <- strings.Fields(rest)[0]
			}
		}
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
	})
	select {
	case u := <-addr:
		p.url = u
	case <-time.After(60 * time.Second):
		t.Fatalf("serve printed no address:\n%s", p.log())
	}
	return p
}

func serveWaitHealthy(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(url + "/health")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/health not 200 after 60s (last: %v)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// serveLogBuffer collects a process's output for the test to read.
type serveLogBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *serveLogBuffer) WriteString(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.WriteString(s)
}

func (b *serveLogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestServeParallelFlagSpelling: -p means the prompt (run) and nothing in
// serve; the parallel count is --parallel or llama.cpp's -np.
func TestServeParallelFlagSpelling(t *testing.T) {
	if got := llamaServerArgs([]string{"serve", "-np", "3", "-np=2", "-n", "5"}); !slices.Equal(got, []string{"serve", "--parallel", "3", "--parallel=2", "-n", "5"}) {
		t.Errorf("llamaServerArgs = %q", got)
	}
	if got := llamaServerArgs([]string{"run", "-np"}); !slices.Equal(got, []string{"run", "-np"}) {
		t.Errorf("run's arguments rewritten: %q", got)
	}
	out, err := helperCmd(t, "serve", "-p", "2", "-m", "/no/such/model.gguf").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--parallel N or -np N") {
		t.Errorf("serve -p: %v\n%s", err, out)
	}
	out, err = helperCmd(t, "serve", "-np", "2", "-m", "/no/such/model.gguf").CombinedOutput()
	if err == nil || strings.Contains(string(out), "flag") || !strings.Contains(string(out), "/no/such/model.gguf") {
		t.Errorf("serve -np 2 should get past flag parsing to the model: %v\n%s", err, out)
	}
}
