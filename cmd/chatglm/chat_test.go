package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/chatglm/chatglm/chat"
	"github.com/chatglm/chatglm/convert"
	"github.com/chatglm/chatglm/internal/testdata"
	"github.com/chatglm/chatglm/internal/testmodel"
)

// The end-to-end tests run the real program: this test binary re-executes
// itself with CHATGLM_HELPER_MAIN=1, which makes TestMain run main() with
// the arguments in CHATGLM_HELPER_ARGS (a JSON list) instead of the tests.
const helperEnv, helperArgsEnv = "CHATGLM_HELPER_MAIN", "CHATGLM_HELPER_ARGS"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "1" {
		os.Exit(m.Run())
	}
	var args []string
	if err := json.Unmarshal([]byte(os.Getenv(helperArgsEnv)), &args); err != nil {
		panic(err)
	}
	os.Args = append([]string{"chatglm"}, args...)
	main()
	os.Exit(0)
}

// helperCmd returns the program run with args.
func helperCmd(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	a, _ := json.Marshal(args)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=1", helperArgsEnv+"="+string(a),
		"CHATGLM_LOG_LEVEL=error", "XDG_CONFIG_HOME="+t.TempDir())
	return cmd
}

// tinyModel converts a tiny random ChatGLM3 checkpoint with the real
// tokenizer to GGUF in the test's temporary folder.
func tinyModel(t *testing.T) string {
	t.Helper()
	tokDir := testdata.ChatGLM3(t)
	dir := t.TempDir()
	ckpt := filepath.Join(dir, "ckpt")
	if err := os.Mkdir(ckpt, 0o755); err != nil {
		t.Fatal(err)
	}
	spec := testmodel.Tiny
	spec.SeqLength = 4096
	if err := testmodel.WriteDir(ckpt, spec, tokDir); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "tiny-f16.gguf")
	if _, err := convert.Convert(context.Background(), convert.Options{Input: ckpt, Output: path, Threads: 2}); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(ckpt); err != nil {
		t.Fatal(err)
	}
	return path
}

// screen collects what the program writes to its terminal.
type screen struct {
	mu  sync.Mutex
	buf bytes.Buffer
	pos int // start of the part not yet matched by expect
}

func (s *screen) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

// expect waits until want appears after the last match and moves past it.
func (s *screen) expect(t *testing.T, want string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		rest := s.buf.String()[s.pos:]
		if i := strings.Index(rest, want); i >= 0 {
			s.pos += i + len(want)
			s.mu.Unlock()
			return rest[:i]
		}
		s.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t.Fatalf("screen never showed %q; after the last match it shows:\n%s", want, s.buf.String()[s.pos:])
	return ""
}

type ptyTerm struct {
	t    *testing.T
	pty  *os.File
	cmd  *exec.Cmd
	scr  *screen
	done chan error
}

func startTerm(t *testing.T, args ...string) *ptyTerm {
	t.Helper()
	cmd := helperCmd(t, args...)
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 200})
	if err != nil {
		t.Fatal(err)
	}
	tm := &ptyTerm{t: t, pty: f, cmd: cmd, scr: &screen{}, done: make(chan error, 1)}
	go func() { _, _ = io.Copy(tm.scr, f) }()
	go func() { tm.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		f.Close()
	})
	return tm
}

func (tm *ptyTerm) typeText(s string) {
	tm.t.Helper()
	if _, err := tm.pty.Write([]byte(s)); err != nil {
		tm.t.Fatal(err)
	}
}

func (tm *ptyTerm) wait() error {
	select {
	case err := <-tm.done:
		return err
	case <-time.After(60 * time.Second):
		tm.t.Fatal("the program did not exit")
		return nil
	}
}

// TestREPLInTerminal drives `chatglm chat` through a pseudo-terminal: a
// real process, typed input, the screen read back.
func TestREPLInTerminal(t *testing.T) {
	model := tinyModel(t)
	dir := t.TempDir()
	tm := startTerm(t, "chat", "-m", model, "--ctx-size", "4096", "--temperature", "0", "--max-tokens", "16")
	tm.scr.expect(t, "欢迎使用 ChatGLM3-6B")
	tm.scr.expect(t, ">>> ")

	tm.typeText("你好\n")
	tm.scr.expect(t, "AI: ")
	tm.scr.expect(t, "\n>>> ")

	tm.typeText("/system 你是一个乐于助人的助手。\n")
	tm.scr.expect(t, "(system prompt set)")
	tm.typeText("/set temperature 0.5\n")
	tm.scr.expect(t, "(temperature = 0.5)")
	tm.typeText("/set top_k -1\n")
	tm.scr.expect(t, "(/set: top_k -1")
	tm.typeText("/set\n")
	tm.scr.expect(t, "temperature 0.5")
	tm.scr.expect(t, "max_tokens 16")

	// Multi-line input: a trailing backslash and a """ block.
	tm.typeText("第一行\\\n")
	tm.scr.expect(t, "... ")
	tm.typeText("第二行\n")
	tm.scr.expect(t, "AI: ")
	tm.scr.expect(t, "\n>>> ")
	tm.typeText("\"\"\"\n块一\n块二\n\"\"\"\n")
	tm.scr.expect(t, "AI: ")
	tm.scr.expect(t, "\n>>> ")

	tm.typeText("/history\n")
	tm.scr.expect(t, "system: 你是一个乐于助人的助手。")
	tm.scr.expect(t, "user: 你好")
	tm.scr.expect(t, "user: 第一行\r\n第二行")
	tm.scr.expect(t, "user: 块一\r\n块二")

	tm.typeText("/stats\n")
	tm.scr.expect(t, "model load:")
	tm.scr.expect(t, "evaluated")
	tm.scr.expect(t, "context:")

	saved := filepath.Join(dir, "conv.json")
	tm.typeText("/save " + saved + "\n")
	tm.scr.expect(t, "(saved 7 messages to ")
	msgs, err := chat.LoadMessagesFile(saved)
	if err != nil || len(msgs) != 7 || msgs[0].Role != chat.RoleSystem || msgs[1].Content != "你好" {
		t.Fatalf("saved conversation: %v %+v", err, msgs)
	}

	tm.typeText("/clear\n")
	tm.scr.expect(t, "(conversation cleared)")
	tm.typeText("/history\n")
	tm.scr.expect(t, "system: 你是一个乐于助人的助手。")
	tm.typeText("/load " + saved + "\n")
	tm.scr.expect(t, "(loaded 7 messages from ")

	// Ctrl-C at the prompt does not end the program.
	tm.typeText("\x03")
	tm.scr.expect(t, "(exit, quit or Ctrl-D ends the chat)")

	// Ctrl-C stops a long reply, not the program.
	tm.typeText("/set max_tokens 0\n")
	tm.scr.expect(t, "(max_tokens = 0)")
	tm.typeText("/set temperature 1\n")
	tm.scr.expect(t, "(temperature = 1)")
	tm.typeText("讲一个很长很长的故事\n")
	tm.scr.expect(t, "AI: ")
	time.Sleep(200 * time.Millisecond)
	tm.typeText("\x03")
	tm.scr.expect(t, "(stopped)")
	tm.scr.expect(t, ">>> ")
	tm.typeText("/unknown\n")
	tm.scr.expect(t, "(unknown command /unknown")

	tm.typeText("退出\n")
	if err := tm.wait(); err != nil {
		t.Fatalf("exit: %v", err)
	}
}

// TestREPLSessionAndCtrlD: --session saves every turn; Ctrl-D ends the chat;
// a new chat with the same session continues the conversation.
func TestREPLSessionAndCtrlD(t *testing.T) {
	model := tinyModel(t)
	session := filepath.Join(t.TempDir(), "session.json")
	args := []string{"chat", "-m", model, "--ctx-size", "1024", "--temperature", "0", "--max-tokens", "8", "--session", session}
	tm := startTerm(t, args...)
	tm.scr.expect(t, ">>> ")
	tm.typeText("记住这句话\n")
	tm.scr.expect(t, "AI: ")
	tm.scr.expect(t, "\n>>> ")
	tm.typeText("\x04")
	if err := tm.wait(); err != nil {
		t.Fatalf("Ctrl-D: %v", err)
	}
	msgs, err := chat.LoadMessagesFile(session)
	if err != nil || len(msgs) != 2 || msgs[0].Content != "记住这句话" {
		t.Fatalf("session: %v %+v", err, msgs)
	}
	tm = startTerm(t, args...)
	tm.scr.expect(t, ">>> ")
	tm.typeText("/history\n")
	tm.scr.expect(t, "user: 记住这句话")
	tm.typeText("exit\n")
	if err := tm.wait(); err != nil {
		t.Fatal(err)
	}
}

// TestChatOnPipe: without a terminal there is no prompt, no "AI:" prefix and
// no welcome; each line is a message and each reply one line.
func TestChatOnPipe(t *testing.T) {
	model := tinyModel(t)
	cmd := helperCmd(t, "chat", "-m", model, "--ctx-size", "1024", "--temperature", "0", "--max-tokens", "8")
	cmd.Stdin = strings.NewReader("你好\n/set temperature 0\n晚上睡不着应该怎么办\n")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	out := stdout.String()
	if strings.Contains(out, ">>>") || strings.Contains(out, "AI:") || strings.Contains(out, "欢迎") || strings.Contains(out, "\x1b[") {
		t.Fatalf("decorations on a pipe:\n%s", out)
	}
	if n := strings.Count(out, "\n"); n != 2 {
		t.Fatalf("%d lines for 2 messages:\n%q", n, out)
	}
	if !strings.Contains(stderr.String(), "temperature = 0") {
		t.Fatalf("stderr: %s", stderr.String())
	}
}

func runJSON(t *testing.T, stdin string, args ...string) map[string]any {
	t.Helper()
	cmd := helperCmd(t, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, stderr.String())
	}
	var v map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &v); err != nil {
		t.Fatalf("%v: not JSON: %v\n%s", args, err, stdout.String())
	}
	return v
}

func ids(v any) []int32 {
	var out []int32
	for _, x := range v.([]any) {
		out = append(out, int32(x.(float64)))
	}
	return out
}

func TestRunDryRun(t *testing.T) {
	model := tinyModel(t)
	v := runJSON(t, "", "run", "-m", model, "-p", "你好", "--dry-run")
	if got := ids(v["ids"]); !slices.Equal(got, []int32{64790, 64792, 64795, 30910, 13, 36474, 54591, 64796}) {
		t.Fatalf("ids %v", got)
	}
	if v["context_size"].(float64) != 4096 {
		t.Fatalf("context %v", v["context_size"])
	}
	// The 46-id reference: a conversation file continued by -p, and the
	// prompt from stdin.
	conv := filepath.Join(t.TempDir(), "conv.json")
	_ = chat.SaveMessagesFile(conv, []chat.Message{{Role: chat.RoleUser, Content: "你好"},
		{Role: chat.RoleAssistant, Content: "你好👋！我是人工智能助手 ChatGLM3-6B，很高兴见到你，欢迎问我任何问题。"}})
	v = runJSON(t, "晚上睡不着应该怎么办\n", "run", "-m", model, "--messages", conv, "--dry-run")
	if got := ids(v["ids"]); len(got) != 46 || got[45] != chat.TokenAssistant || got[37] != chat.TokenUser {
		t.Fatalf("ids %v", got)
	}
	// --system adds a system message in front.
	v = runJSON(t, "", "run", "-m", model, "-p", "你好", "--system", "sop", "--dry-run")
	if got := ids(v["ids"]); got[2] != chat.TokenSystem || slices.Contains(got[3:], chat.TokenSop) {
		t.Fatalf("ids %v", got)
	}
}

func TestRunJSONGreedyIsDeterministic(t *testing.T) {
	model := tinyModel(t)
	args := []string{"run", "-m", model, "--ctx-size", "512", "-p", "写一首诗", "--temperature", "0", "--max-tokens", "12", "--json"}
	a := runJSON(t, "", args...)
	b := runJSON(t, "", args...)
	if a["reply"] != b["reply"] || a["finish_reason"] != "length" {
		t.Fatalf("greedy replies differ or bad finish: %v / %v", a, b)
	}
	// Weights read into memory instead of mapped give the same reply.
	if c := runJSON(t, "", append(args, "--no-mmap")...); c["reply"] != a["reply"] {
		t.Fatalf("--no-mmap reply %q, mmap reply %q", c["reply"], a["reply"])
	}
	usage := a["usage"].(map[string]any)
	if usage["completion_tokens"].(float64) != 12 || usage["evaluated_tokens"] != usage["prompt_tokens"] {
		t.Fatalf("usage %v", usage)
	}
	if _, ok := a["timings"].(map[string]any)["generation_tokens_per_second"]; !ok {
		t.Fatalf("timings %v", a["timings"])
	}
}

func TestRunStreamsToStdout(t *testing.T) {
	model := tinyModel(t)
	cmd := helperCmd(t, "run", "-m", model, "--ctx-size", "512", "--temperature", "0", "--max-tokens", "6", "--verbose")
	cmd.Stdin = strings.NewReader("你好")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	if !strings.HasSuffix(stdout.String(), "\n") || strings.Contains(stdout.String(), "AI:") {
		t.Fatalf("stdout %q", stdout.String())
	}
	for _, want := range []string{"loaded ", "prompt: 8 tokens", "tokens/s"} {
		if !strings.Contains(stderr.String(), want) {
			t.Fatalf("--verbose: no %q in %s", want, stderr.String())
		}
	}
}

func TestMissingModelSaysHowToGetIt(t *testing.T) {
	cmd := helperCmd(t, "run", "-m", "THUDM/chatglm3-6b", "-p", "hi", "--models-dir", t.TempDir())
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "chatglm get THUDM/chatglm3-6b") {
		t.Fatalf("%v: %s", err, out)
	}
	cmd = helperCmd(t, "run", "-m", "/no/such/model.gguf", "-p", "hi")
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no such file") {
		t.Fatalf("%v: %s", err, out)
	}
}

// TestModelByNameFromStore: -m org/name finds the GGUF converted into the
// snapshot of the local store; a snapshot without one says to convert it.
func TestModelByNameFromStore(t *testing.T) {
	model := tinyModel(t)
	store := t.TempDir()
	repoDir := filepath.Join(store, "THUDM", "chatglm3-6b")
	const id = "0123456789abcdef0123456789abcdef01234567"
	for _, d := range []string{"refs", ".meta", id} {
		if err := os.MkdirAll(filepath.Join(repoDir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(repoDir, "refs", "main"), []byte(id+"\n"), 0o644))
	must(os.WriteFile(filepath.Join(repoDir, ".meta", id+".json"),
		[]byte(`{"source": "hf", "repo": "THUDM/chatglm3-6b", "revision": "main", "id": "`+id+`", "files": []}`), 0o644))

	if _, err := resolveModelIn("THUDM/chatglm3-6b", store); err == nil || !strings.Contains(err.Error(), "not converted") {
		t.Fatalf("unconverted snapshot: %v", err)
	}
	b, err := os.ReadFile(model)
	must(err)
	want := filepath.Join(repoDir, id, "chatglm3-6b-f16.gguf")
	must(os.WriteFile(want, b, 0o644))
	for _, name := range []string{"THUDM/chatglm3-6b", "THUDM/chatglm3-6b@main", "THUDM/chatglm3-6b@" + id} {
		got, err := resolveModelIn(name, store)
		if err != nil || got != want {
			t.Fatalf("%s: %q, %v", name, got, err)
		}
	}
	if _, err := resolveModelIn("THUDM/chatglm3-6b@v2", store); err == nil || !strings.Contains(err.Error(), "chatglm get THUDM/chatglm3-6b") {
		t.Fatalf("missing revision: %v", err)
	}
	v := runJSON(t, "", "run", "-m", "THUDM/chatglm3-6b", "--models-dir", store, "-p", "你好", "--dry-run")
	if v["model"] != want {
		t.Fatalf("dry run used %v", v["model"])
	}
}
