package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/chatglm/chatglm/chat"
	"github.com/chatglm/chatglm/convert"
	"github.com/chatglm/chatglm/internal/config"
	"github.com/chatglm/chatglm/internal/fixture/shareddata"
	"github.com/chatglm/chatglm/internal/fixture/testmodel"
	"github.com/chatglm/chatglm/internal/fixture/vtscreen"
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
		"CHATGLM_LOG_LEVEL=error", "XDG_CONFIG_HOME="+t.TempDir(), "XDG_STATE_HOME="+t.TempDir(), "NO_COLOR=")
	return cmd
}

// tinyModel converts a tiny random ChatGLM3 checkpoint with the real
// tokenizer to GGUF in the test's temporary folder.
func tinyModel(t *testing.T) string {
	t.Helper()
	tokDir := shareddata.ChatGLM3(t)
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

// screen collects what the program writes to its terminal, as bytes and
// as what a 200x60 terminal would show.
type screen struct {
	mu  sync.Mutex
	buf bytes.Buffer
	pos int // start of the part not yet matched by expect
	vt  *vtscreen.Screen
}

func (s *screen) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.vt.Write(p)
	return s.buf.Write(p)
}

// raw returns everything written so far.
func (s *screen) raw() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// expectCursor waits until the terminal's cursor row shows text with the
// cursor col cells into it.
func (s *screen) expectCursor(t *testing.T, text string, col int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, x := s.vt.CursorLine()
		if got == text && x == col {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("cursor row %q at column %d, want %q at %d; screen:\n%s", got, x, text, col, s.vt.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
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
	t      *testing.T
	pty    *os.File
	cmd    *exec.Cmd
	scr    *screen
	done   chan error
	copied chan struct{} // closed when all the output is read
}

func startTerm(t *testing.T, args ...string) *ptyTerm {
	t.Helper()
	return startTermEnv(t, nil, args...)
}

// startTermEnv runs the program in a 200x60 pseudo-terminal with env added
// to its environment.
func startTermEnv(t *testing.T, env []string, args ...string) *ptyTerm {
	t.Helper()
	cmd := helperCmd(t, args...)
	cmd.Env = append(cmd.Env, env...)
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 60, Cols: 200})
	if err != nil {
		t.Fatal(err)
	}
	tm := &ptyTerm{t: t, pty: f, cmd: cmd, scr: &screen{vt: vtscreen.New(200, 60)}, done: make(chan error, 1), copied: make(chan struct{})}
	go func() {
		_, _ = io.Copy(tm.scr, f) // ends with EIO once the program is gone and its output read
		close(tm.copied)
	}()
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

// wait waits for the program to exit and for all it wrote to be read.
func (tm *ptyTerm) wait() error {
	select {
	case err := <-tm.done:
		select {
		case <-tm.copied:
		case <-time.After(10 * time.Second):
			tm.t.Fatal("the terminal output did not end")
		}
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
	tm.scr.expect(t, "模型加载完成!")
	tm.scr.expect(t, "你: ")

	tm.typeText("你好\n")
	tm.scr.expect(t, "AI: ")
	tm.scr.expect(t, "你: ")

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
	tm.scr.expect(t, "你: ")
	tm.typeText("\"\"\"\n块一\n块二\n\"\"\"\n")
	tm.scr.expect(t, "AI: ")
	tm.scr.expect(t, "你: ")

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
	// Greedy: a random sample may end the reply before Ctrl-C comes; the
	// tiny model's greedy reply runs to the end of the context.
	tm.typeText("/set temperature 0\n")
	tm.scr.expect(t, "(temperature = 0)")
	tm.typeText("讲一个很长很长的故事\n")
	tm.scr.expect(t, "AI: ")
	time.Sleep(200 * time.Millisecond)
	tm.typeText("\x03")
	tm.scr.expect(t, "(stopped)")
	tm.scr.expect(t, "你: ")
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
	tm.scr.expect(t, "你: ")
	tm.typeText("记住这句话\n")
	tm.scr.expect(t, "AI: ")
	tm.scr.expect(t, "你: ")
	tm.typeText("\x04")
	if err := tm.wait(); err != nil {
		t.Fatalf("Ctrl-D: %v", err)
	}
	msgs, err := chat.LoadMessagesFile(session)
	if err != nil || len(msgs) != 2 || msgs[0].Content != "记住这句话" {
		t.Fatalf("session: %v %+v", err, msgs)
	}
	tm = startTerm(t, args...)
	tm.scr.expect(t, "你: ")
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

// promptIDs returns the ids of each "chat prompt" debug record in a log.
func promptIDs(t *testing.T, log string) [][]int32 {
	t.Helper()
	var out [][]int32
	for _, m := range regexp.MustCompile(`msg="chat prompt" ids="?\[([0-9 ]*)\]`).FindAllStringSubmatch(log, -1) {
		var ids []int32
		for _, f := range strings.Fields(m[1]) {
			n, err := strconv.Atoi(f)
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, int32(n))
		}
		out = append(out, ids)
	}
	return out
}

// checkCarried checks that turn 2's prompt is turn 1's conversation (the
// first two messages of session) continued by q2, as `run --dry-run`
// builds it, and that it starts with turn 1's prompt.
func checkCarried(t *testing.T, model, session, q2 string, prompts [][]int32) {
	t.Helper()
	if len(prompts) != 2 {
		t.Fatalf("%d prompts logged, want 2", len(prompts))
	}
	msgs, err := chat.LoadMessagesFile(session)
	if err != nil || len(msgs) < 2 {
		t.Fatalf("session: %v %+v", err, msgs)
	}
	first := filepath.Join(t.TempDir(), "turn1.json")
	if err := chat.SaveMessagesFile(first, msgs[:2]); err != nil {
		t.Fatal(err)
	}
	want := ids(runJSON(t, "", "run", "-m", model, "--messages", first, "-p", q2, "--dry-run")["ids"])
	if !slices.Equal(prompts[1], want) {
		t.Fatalf("turn 2 prompt\n%v\nwant (turn 1 carried)\n%v", prompts[1], want)
	}
	if !slices.Equal(prompts[1][:len(prompts[0])-1], prompts[0][:len(prompts[0])-1]) {
		t.Fatalf("turn 2 prompt %v does not start with turn 1's %v", prompts[1], prompts[0])
	}
}

// logLines matches the log records in a terminal's output.
var logLines = regexp.MustCompile(`time=[^\n]*\n`)

// TestRecipeSessionInTerminal replays the recipe's session: the load
// announcements, a blank line and "你: " before each message, "AI: " before
// each reply, the history carried into turn 2, and " EXIT " ending it.
func TestRecipeSessionInTerminal(t *testing.T) {
	model := tinyModel(t)
	session := filepath.Join(t.TempDir(), "s.json")
	tm := startTermEnv(t, []string{"CHATGLM_LOG_LEVEL=debug"},
		"chat", "-m", model, "--gpu-layers", "0", "--ctx-size", "1024", "--temperature", "0", "--max-tokens", "8", "--session", session)
	tm.scr.expect(t, "正在加载本地模型...")
	tm.scr.expect(t, "模型加载完成!")
	tm.scr.expect(t, "你: ")
	tm.typeText("你好\r")
	tm.scr.expect(t, "AI: ")
	tm.scr.expect(t, "你: ")
	tm.typeText("晚上睡不着应该怎么办\r")
	tm.scr.expect(t, "AI: ")
	tm.scr.expect(t, "你: ")
	tm.typeText(" EXIT \r")
	if err := tm.wait(); err != nil {
		t.Fatalf("EXIT: %v", err)
	}
	raw := tm.scr.raw()
	checkCarried(t, model, session, "晚上睡不着应该怎么办", promptIDs(t, raw))

	// The transcript, log records left out, line by line against the
	// recipe's (the replies are the tiny model's words).
	vt := vtscreen.New(200, 200)
	vt.Write([]byte(logLines.ReplaceAllString(raw, "")))
	lines := strings.Split(vt.String(), "\n")
	want := []string{"正在加载本地模型...", "模型加载完成!  (/help 查看命令，exit 退出)", "", "你: 你好", "AI: *", "", "你: 晚上睡不着应该怎么办", "AI: *", "", "你:  EXIT"}
	if len(lines) != len(want) {
		t.Fatalf("transcript has %d lines, want %d:\n%s", len(lines), len(want), vt.String())
	}
	for i, w := range want {
		if got := lines[i]; got != w && !(strings.HasSuffix(w, "*") && strings.HasPrefix(got, strings.TrimSuffix(w, "*"))) {
			t.Fatalf("line %d: %q, want %q; transcript:\n%s", i+1, got, w, vt.String())
		}
	}
	if strings.Contains(raw, "\x1b[1;36mAI: \x1b[0m") == false {
		t.Fatalf("no coloured AI: label on the terminal")
	}
}

// TestRecipeSessionOnPipe: the same session on a pipe, ended by " Quit ":
// replies only on stdout, the history carried into turn 2, nothing after
// Quit sent, no history file.
func TestRecipeSessionOnPipe(t *testing.T) {
	model := tinyModel(t)
	state := t.TempDir()
	session := filepath.Join(t.TempDir(), "s.json")
	cmd := helperCmd(t, "chat", "-m", model, "--gpu-layers", "0", "--ctx-size", "1024", "--temperature", "0", "--max-tokens", "8", "--session", session)
	cmd.Env = append(cmd.Env, "CHATGLM_LOG_LEVEL=debug", "XDG_STATE_HOME="+state)
	cmd.Stdin = strings.NewReader("你好\n晚上睡不着应该怎么办\n Quit \n这一句不发送\n")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	out := stdout.String()
	if n := strings.Count(out, "\n"); n != 2 || strings.Contains(out, "AI:") || strings.Contains(out, "模型") || strings.Contains(out, "\x1b") {
		t.Fatalf("stdout on a pipe:\n%q", out)
	}
	checkCarried(t, model, session, "晚上睡不着应该怎么办", promptIDs(t, stderr.String()))
	if entries, _ := os.ReadDir(state); len(entries) != 0 {
		t.Fatalf("a pipe wrote state: %v", entries)
	}
}

// TestExitWords: the recipe's user_input.lower() in ['退出', 'exit', 'quit'].
func TestExitWords(t *testing.T) {
	for _, s := range []string{"exit", "EXIT", " Quit ", "退出", " 退出\t", "/bye"} {
		if !isExitWord(s) {
			t.Errorf("%q does not end the chat", s)
		}
	}
	for _, s := range []string{"exit now", "quitter", "", "退出了"} {
		if isExitWord(s) {
			t.Errorf("%q ends the chat", s)
		}
	}
}

// TestChatDefaultsFollowRecipe: chat, run and serve default to the recipe's
// temperature 0.7 and chat()'s top_p 0.8.
func TestChatDefaultsFollowRecipe(t *testing.T) {
	root := newRoot(config.New())
	for _, name := range []string{"chat", "run", "serve"} {
		c, _, err := root.Find([]string{name})
		if err != nil {
			t.Fatal(err)
		}
		if f := c.Flags().Lookup("temperature"); f == nil || f.DefValue != "0.7" {
			t.Errorf("%s --temperature default %v, want 0.7", name, f)
		}
		if f := c.Flags().Lookup("top-p"); f == nil || f.DefValue != "0.8" {
			t.Errorf("%s --top-p default %v, want 0.8", name, f)
		}
	}
}

// TestChatLoadFailure: the recipe's message and a way to get the model.
func TestChatLoadFailure(t *testing.T) {
	cmd := helperCmd(t, "chat", "-m", "THUDM/chatglm3-6b", "--models-dir", t.TempDir())
	cmd.Stdin = strings.NewReader("你好\n")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "加载模型失败: model THUDM/chatglm3-6b is not in the local store") ||
		!strings.Contains(string(out), "请尝试先下载模型到本地 (chatglm get THUDM/chatglm3-6b)") {
		t.Fatalf("%v: %s", err, out)
	}
}

// TestREPLLineEditing: editing a Chinese line by display width, Up
// recalling across a restart from the history file (which never holds
// /set), Ctrl-R, and a bracketed paste of three lines sent as one message.
func TestREPLLineEditing(t *testing.T) {
	model := tinyModel(t)
	state := t.TempDir()
	session := filepath.Join(t.TempDir(), "s.json")
	args := []string{"chat", "-m", model, "--ctx-size", "2048", "--temperature", "0", "--max-tokens", "4", "--session", session}
	env := []string{"XDG_STATE_HOME=" + state}
	tm := startTermEnv(t, env, args...)
	tm.scr.expect(t, "你: ")
	tm.typeText("你好世界")
	tm.scr.expectCursor(t, "你: 你好世界", 12)
	tm.typeText("\x1b[D\x1b[D")
	tm.scr.expectCursor(t, "你: 你好世界", 8)
	tm.typeText("美丽")
	tm.scr.expectCursor(t, "你: 你好美丽世界", 12)
	tm.typeText("\x1b[C\x7f") // Right, Backspace over 世
	tm.scr.expectCursor(t, "你: 你好美丽界", 12)
	tm.typeText("\r")
	tm.scr.expect(t, "AI: ")
	tm.scr.expect(t, "你: ")
	tm.typeText("/set seed 7\r")
	tm.scr.expect(t, "(seed = 7)")
	tm.typeText("\x1b[200~第一行\r第二行\r第三行\x1b[201~")
	tm.scr.expectCursor(t, "第三行", 6)
	tm.typeText("\r")
	tm.scr.expect(t, "AI: ")
	tm.scr.expect(t, "你: ")
	tm.typeText("exit\r")
	if err := tm.wait(); err != nil {
		t.Fatal(err)
	}
	msgs, err := chat.LoadMessagesFile(session)
	if err != nil || len(msgs) != 4 || msgs[0].Content != "你好美丽界" || msgs[2].Content != "第一行\n第二行\n第三行" {
		t.Fatalf("messages: %v %+v", err, msgs)
	}
	hist, err := os.ReadFile(filepath.Join(state, "chatglm", "history"))
	if err != nil || string(hist) != "你好美丽界\n第一行\\n第二行\\n第三行\n" {
		t.Fatalf("history file: %v %q", err, hist)
	}

	// A new chat: Up recalls the last message of the one before; Ctrl-R
	// finds an older one.
	tm = startTermEnv(t, env, args...)
	tm.scr.expect(t, "你: ")
	tm.typeText("\x1b[A")
	tm.scr.expectCursor(t, "第三行", 6)
	tm.typeText("\x15\x1b[A\x1b[A") // Ctrl-U: the line is empty; Up twice
	tm.scr.expectCursor(t, "你: 你好美丽界", 14)
	tm.typeText("\x15\x12美丽")
	tm.scr.expectCursor(t, "(reverse-i-search)`美丽': 你好美丽界", 30)
	tm.typeText("\r")
	tm.scr.expect(t, "AI: ")
	tm.scr.expect(t, "你: ")
	tm.typeText("\x04")
	if err := tm.wait(); err != nil {
		t.Fatal(err)
	}
	msgs, err = chat.LoadMessagesFile(session)
	if err != nil || len(msgs) != 6 || msgs[4].Content != "你好美丽界" {
		t.Fatalf("messages: %v %+v", err, msgs)
	}
}

// TestREPLCtrlCClearsLineAndSIGTERM: Ctrl-C on a line being typed drops
// it (nothing is sent); SIGTERM at the prompt ends the chat at once and
// gives the terminal back (bracketed paste off).
func TestREPLCtrlCClearsLineAndSIGTERM(t *testing.T) {
	model := tinyModel(t)
	tm := startTerm(t, "chat", "-m", model, "--gpu-layers", "0", "--ctx-size", "1024", "--max-tokens", "4")
	tm.scr.expect(t, "你: ")
	tm.typeText("不要发送")
	tm.scr.expectCursor(t, "你: 不要发送", 12)
	tm.typeText("\x03")
	tm.scr.expect(t, "^C")
	tm.scr.expect(t, "你: ")
	tm.typeText("/history\r")
	tm.scr.expect(t, "(no history)")
	tm.scr.expect(t, "你: ")
	if err := tm.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := tm.wait(); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	if raw := tm.scr.raw(); !strings.HasSuffix(strings.TrimRight(raw, "\r\n"), "\x1b[?2004l") {
		t.Fatalf("the terminal was not given back: output ends %q", raw[max(0, len(raw)-40):])
	}
}
