package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/chatglm/chatglm/chat"
	"github.com/chatglm/chatglm/chat/backend"
	"github.com/chatglm/chatglm/gen"
	"github.com/chatglm/chatglm/internal/config"
	"github.com/chatglm/chatglm/internal/lineedit"
)

func init() { register(newChatCmd) }

const chatLong = `Chat with the model in the terminal, streaming each reply as it is generated.

Type a message after "你: " and press Enter; the reply follows "AI: ". A line
ending in \ continues on the next line; """ starts a block that runs until a
line ending in """. exit, quit or 退出 (any case, spaces around ignored) or
Ctrl-D on an empty line ends the chat; Ctrl-C stops the reply being written,
or clears the line being typed. On a terminal the line can be edited (arrows,
Home/End, Ctrl-U/K/W, Alt-B/F), Up/Down and Ctrl-R recall earlier messages
(kept in $XDG_STATE_HOME/chatglm/history), and a pasted block is one message.
Commands:

  /clear              forget the conversation (the system prompt stays)
  /system [TEXT]      show or set the system prompt
  /save FILE          save the conversation as JSON ([{role, content, metadata, tools}])
  /load FILE          load a saved conversation
  /history            show the conversation
  /set [KEY VALUE]    show or change sampling: temperature, top_p, top_k, min_p,
                      repeat_penalty, seed, max_tokens
  /observation TEXT   send a tool's result after a tool call
  /stats              load time, token counts and speeds of the last reply
  /help               this list

When stdin or stdout is not a terminal (a pipe or a file) there is no prompt,
no "AI:" prefix, no line editing and no history file: each input line is one
message and each reply one line. With --session FILE the conversation is
loaded from FILE when it exists and saved to it after every change.`

// Config keys of the chat REPL (file and environment only).
const (
	keyChatPrompt      = "chat.prompt"
	keyChatHistory     = "chat.history"
	keyChatHistorySize = "chat.history_size"
)

// newChatCmd builds `chatglm chat`.
func newChatCmd(cfg *config.Store) *cobra.Command {
	var session, system string
	var verbose bool
	cmd := &cobra.Command{
		Use:     "chat -m MODEL",
		Short:   "Chat with the model in the terminal (streaming, history, /commands)",
		Long:    chatLong,
		Example: "  chatglm chat -m THUDM/chatglm3-6b\n  chatglm chat -m chatglm3-6b-q8_0.gguf --session notes.json --temperature 0",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runChat(cmd, cfg, session, system, verbose)
		},
	}
	declareModelKeys(cfg, cmd)
	declareSamplingKeys(cfg, cmd)
	cfg.Declare(cmd.Flags(),
		config.Key{Name: keyChatPrompt, Default: "你: ", Usage: "the prompt before each message on a terminal (the recipe's input(\"\\n你: \"))"},
		config.Key{Name: keyChatHistory, Default: true, Usage: "keep the messages typed on a terminal in $XDG_STATE_HOME/chatglm/history (false: this session only)"},
		config.Key{Name: keyChatHistorySize, Default: 1000, Usage: "most messages the history file keeps"},
	)
	cmd.Flags().StringVar(&session, "session", "", "load the conversation from FILE if it exists and save it there after every turn")
	cmd.Flags().StringVar(&system, "system", "", "system prompt")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "print load time and prompt/generation speed to stderr")
	return cmd
}

func runChat(cmd *cobra.Command, cfg *config.Store, session, system string, verbose bool) error {
	sampling, maxTokens, err := samplingFromConfig(cfg)
	if err != nil {
		return err
	}
	// Ctrl-C must not end the program: the root context is cancelled by the
	// first SIGINT, so the chat runs on a context without that cancellation
	// and handles signals itself.
	ctx := context.WithoutCancel(cmd.Context())
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)

	stdin, stdout, stderr := cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()
	interactive := isTTY(stdin) && isTTY(stdout)
	if interactive && !cmd.Flags().Changed("log-level") && os.Getenv("CHATGLM_LOG_LEVEL") == "" {
		// llama.cpp's load-time warnings would land between the prompts;
		// keep them for an explicit --log-level warn.
		if err := setupLogging("error"); err != nil {
			return err
		}
	}
	st := newChatStyle(interactive)
	var ed *lineedit.Editor
	if interactive {
		if ed, err = newChatEditor(cfg, stdin.(*os.File), stdout, stderr); err != nil {
			return err
		}
		defer ed.Close()
		fmt.Fprintln(stdout, "正在加载本地模型...")
	}
	loadCtx, cancelLoad := context.WithCancel(ctx)
	defer cancelLoad()
	go func() {
		select {
		case <-sigs:
			cancelLoad()
		case <-loadCtx.Done():
		}
	}()
	lm, err := openModel(loadCtx, cfg, 1, stderr, verbose)
	cancelLoad()
	if err != nil {
		// The recipe's words, then how to get a model.
		fmt.Fprintf(stderr, "加载模型失败: %v\n请尝试先下载模型到本地 (chatglm get THUDM/chatglm3-6b)，或者使用API方案 (chatglm serve)\n", err)
		return exitError{1}
	}
	defer lm.Close()
	conv, release, err := backend.NewConversation(ctx, lm.Engine, lm.Model, chat.Options{Sampling: sampling, MaxTokens: maxTokens})
	if err != nil {
		return err
	}
	defer release()
	r := &repl{
		conv: conv, out: stdout, errOut: stderr, style: st,
		interactive: interactive, verbose: verbose, session: session, loadTime: lm.LoadTime,
		ctxSize: lm.Engine.ContextSize(),
		prompt:  st.prompt(cfg.String(keyChatPrompt)), more: st.prompt(promptMore),
	}
	if session != "" {
		if msgs, err := chat.LoadMessagesFile(session); err == nil {
			if err := conv.SetMessages(msgs); err != nil {
				return fmt.Errorf("--session %s: %w", session, err)
			}
		} else if !isNotExist(err) {
			return fmt.Errorf("--session: %w", err)
		}
	}
	if system != "" {
		conv.SetSystem(system)
	}
	if interactive {
		r.lines, r.editor = ed, ed
		fmt.Fprintln(stdout, "模型加载完成!"+st.dim("  (/help 查看命令，exit 退出)"))
	} else {
		r.lines = pipeLines{bufio.NewReader(stdin)}
	}
	return r.run(ctx, sigs)
}

// isTTY reports whether v is a terminal (an *os.File on a tty).
func isTTY(v any) bool {
	f, ok := v.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// lineReader reads one line of input after showing prompt.
type lineReader interface {
	ReadLine(prompt string) (string, error)
}

// pipeLines reads lines from a pipe or file: no prompt, no editing. The
// last line may lack its newline; io.EOF follows it.
type pipeLines struct{ r *bufio.Reader }

// ReadLine implements lineReader.
func (p pipeLines) ReadLine(string) (string, error) {
	line, err := p.r.ReadString('\n')
	if errors.Is(err, io.EOF) && line != "" {
		err = nil
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read input: %w", err)
	}
	return strings.TrimRight(line, "\r\n"), err
}

// repl is the read-eval-print loop of `chatglm chat`.
type repl struct {
	conv         *chat.Conversation
	lines        lineReader
	editor       *lineedit.Editor // the terminal's editor; nil on a pipe
	out, errOut  io.Writer
	style        chatStyle
	interactive  bool
	verbose      bool
	session      string
	loadTime     time.Duration
	ctxSize      int
	prompt, more string

	mu        sync.Mutex
	cancelGen context.CancelFunc // set while a reply is generated
	last      *chat.Turn
}

const (
	promptMore = "... "
	replyLabel = "AI: "
)

func (r *repl) run(ctx context.Context, sigs <-chan os.Signal) error {
	done := make(chan struct{})
	defer close(done)
	terminated := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				r.mu.Lock()
				cancel := r.cancelGen
				r.mu.Unlock()
				if cancel != nil {
					cancel() // Ctrl-C stops the reply; SIGTERM too, then ends
				}
				if s == syscall.SIGTERM {
					close(terminated)
					if r.editor != nil {
						_ = r.editor.Close() // wakes a ReadLine and restores the terminal
					}
					return
				}
			case <-done:
				return
			}
		}
	}()
	isTerminated := func() bool {
		select {
		case <-terminated:
			return true
		default:
			return false
		}
	}
	for !isTerminated() {
		text, eof, err := r.readMessage()
		if isTerminated() {
			return nil
		}
		if err != nil {
			return err
		}
		if strings.TrimSpace(text) != "" {
			quit, err := r.handle(ctx, text)
			if err != nil {
				return err
			}
			if quit {
				return nil
			}
		}
		if eof {
			return nil
		}
	}
	return nil
}

// readMessage reads one message: a line, lines joined by a trailing \, or a
// """ block. On a terminal each message starts after a blank line, as the
// recipe's input("\n你: ") does; Ctrl-C drops what was typed.
func (r *repl) readMessage() (string, bool, error) {
	var lines []string
	block := false
	for {
		prompt := r.more
		if len(lines) == 0 && !block {
			prompt = r.prompt
			if r.interactive {
				fmt.Fprintln(r.out)
			}
		}
		line, err := r.lines.ReadLine(prompt)
		if errors.Is(err, lineedit.ErrInterrupt) {
			if len(lines) == 0 && !block && line == "" {
				r.note("exit, quit or Ctrl-D ends the chat")
			}
			lines, block = nil, false
			continue
		}
		eof := errors.Is(err, io.EOF)
		if err != nil && !eof {
			return "", false, err
		}
		if eof && line == "" && len(lines) == 0 {
			return "", true, nil
		}
		switch {
		case block:
			if strings.HasSuffix(line, `"""`) {
				lines = append(lines, strings.TrimSuffix(line, `"""`))
				return r.remember(strings.Join(lines, "\n")), eof, nil
			}
			lines = append(lines, line)
		case len(lines) == 0 && strings.HasPrefix(strings.TrimSpace(line), `"""`):
			rest := strings.TrimPrefix(strings.TrimSpace(line), `"""`)
			if len(rest) >= 3 && strings.HasSuffix(rest, `"""`) {
				return r.remember(strings.Trim(strings.TrimSuffix(rest, `"""`), "\n")), eof, nil
			}
			block = true
			if rest = strings.TrimPrefix(rest, "\n"); rest != "" {
				lines = append(lines, rest)
			}
		case strings.HasSuffix(line, `\`):
			lines = append(lines, strings.TrimSuffix(line, `\`))
		default:
			// A paste may end in a newline; it is not part of the message.
			lines = append(lines, strings.TrimRight(line, "\n"))
			return r.remember(strings.Join(lines, "\n")), eof, nil
		}
		if eof {
			return r.remember(strings.Join(lines, "\n")), true, nil
		}
	}
}

// remember adds a message read on a terminal to the history and returns it.
func (r *repl) remember(text string) string {
	if r.editor == nil || isExitWord(text) {
		return text
	}
	if err := r.editor.History.Add(text); err != nil {
		r.note("history: " + err.Error())
	}
	return text
}

// isExitWord reports whether a message ends the chat: the recipe's
// user_input.lower() in ['退出', 'exit', 'quit'], spaces around ignored,
// and /exit, /quit, /bye.
func isExitWord(text string) bool {
	switch strings.ToLower(strings.TrimSpace(text)) {
	case "exit", "quit", "退出", "/exit", "/quit", "/bye":
		return true
	}
	return false
}

// handle runs a command or sends a message; it reports whether to quit.
func (r *repl) handle(ctx context.Context, text string) (bool, error) {
	if isExitWord(text) {
		return true, nil
	}
	trimmed := strings.TrimSpace(text)
	if strings.HasPrefix(trimmed, "/") && !strings.Contains(trimmed, "\n") {
		name, arg, _ := strings.Cut(trimmed, " ")
		arg = strings.TrimSpace(arg)
		if done, err := r.command(ctx, name, arg); done || err != nil {
			return false, err
		}
	}
	r.send(ctx, chat.Message{Role: chat.RoleUser, Content: text})
	return false, nil
}

// command runs a /command; it reports false when name is not one, so that
// the text is sent as a message.
func (r *repl) command(ctx context.Context, name, arg string) (bool, error) {
	switch name {
	case "/help", "/?":
		fmt.Fprintln(r.out, chatHelp())
	case "/clear":
		r.conv.Clear()
		r.saveSession()
		r.note("conversation cleared")
	case "/system":
		if arg == "" {
			if s := r.conv.System(); s != "" {
				fmt.Fprintln(r.out, s)
			} else {
				r.note("no system prompt")
			}
			break
		}
		r.conv.SetSystem(arg)
		r.saveSession()
		r.note("system prompt set")
	case "/save":
		if arg == "" {
			r.note("usage: /save FILE")
			break
		}
		if err := chat.SaveMessagesFile(arg, r.conv.Messages()); err != nil {
			r.note("error: " + err.Error())
			break
		}
		r.note(fmt.Sprintf("saved %d messages to %s", len(r.conv.Messages()), arg))
	case "/load":
		if arg == "" {
			r.note("usage: /load FILE")
			break
		}
		msgs, err := chat.LoadMessagesFile(arg)
		if err == nil {
			err = r.conv.SetMessages(msgs)
		}
		if err != nil {
			r.note("error: " + err.Error())
			break
		}
		r.saveSession()
		r.note(fmt.Sprintf("loaded %d messages from %s", len(msgs), arg))
	case "/history":
		msgs := r.conv.Messages()
		if len(msgs) == 0 {
			r.note("no history")
		}
		for _, m := range msgs {
			label := string(m.Role)
			if m.Metadata != "" {
				label += " (" + strings.TrimSpace(m.Metadata) + ")"
			}
			if len(m.Tools) > 0 {
				label += " [tools]"
			}
			fmt.Fprintf(r.out, "%s: %s\n", label, m.Content)
		}
	case "/set":
		r.set(arg)
	case "/stats":
		r.stats()
	case "/observation", "/obs":
		if arg == "" {
			r.note("usage: /observation TEXT (the result of the tool call)")
			break
		}
		r.send(ctx, chat.Message{Role: chat.RoleObservation, Content: arg})
	default:
		if r.interactive {
			r.note("unknown command " + name + " (/help lists them; start the line with a space to send it as text)")
			return true, nil
		}
		return false, nil
	}
	return true, nil
}

func chatHelp() string {
	i := strings.Index(chatLong, "  /clear")
	j := strings.Index(chatLong, "\n\nWhen stdin")
	return strings.TrimRight(chatLong[i:j], "\n")
}

// note prints a message about the REPL itself (not a reply).
func (r *repl) note(s string) {
	if r.interactive {
		fmt.Fprintln(r.out, r.style.dim("("+s+")"))
	} else {
		fmt.Fprintln(r.errOut, s)
	}
}

// settings maps /set keys to their fields.
var settings = map[string]func(o *chat.Options, v string) error{
	"temperature":    floatSetting(func(o *chat.Options) *float32 { return &o.Sampling.Temperature }),
	"top_p":          floatSetting(func(o *chat.Options) *float32 { return &o.Sampling.TopP }),
	"min_p":          floatSetting(func(o *chat.Options) *float32 { return &o.Sampling.MinP }),
	"repeat_penalty": floatSetting(func(o *chat.Options) *float32 { return &o.Sampling.RepeatPenalty }),
	"top_k":          intSetting(func(o *chat.Options) *int { return &o.Sampling.TopK }),
	"max_tokens":     intSetting(func(o *chat.Options) *int { return &o.MaxTokens }),
	"seed": func(o *chat.Options, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return err
		}
		s, err := parseSeed(n)
		o.Sampling.Seed = s
		return err
	},
}

func floatSetting(field func(*chat.Options) *float32) func(*chat.Options, string) error {
	return func(o *chat.Options, v string) error {
		f, err := strconv.ParseFloat(v, 32)
		*field(o) = float32(f)
		return err
	}
}

func intSetting(field func(*chat.Options) *int) func(*chat.Options, string) error {
	return func(o *chat.Options, v string) error {
		n, err := strconv.Atoi(v)
		*field(o) = n
		return err
	}
}

func (r *repl) set(arg string) {
	o := r.conv.Options()
	fields := strings.Fields(arg)
	if len(fields) == 0 {
		seed := "random"
		if o.Sampling.Seed != ^uint32(0) {
			seed = strconv.FormatUint(uint64(o.Sampling.Seed), 10)
		}
		fmt.Fprintf(r.out, "temperature %g\ntop_p %g\ntop_k %d\nmin_p %g\nrepeat_penalty %g\nseed %s\nmax_tokens %d\n",
			o.Sampling.Temperature, o.Sampling.TopP, o.Sampling.TopK, o.Sampling.MinP, o.Sampling.RepeatPenalty, seed, o.MaxTokens)
		return
	}
	key := strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(fields[0], "--")), "-", "_")
	apply, ok := settings[key]
	if !ok || len(fields) != 2 {
		keys := make([]string, 0, len(settings))
		for k := range settings {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		r.note("usage: /set KEY VALUE with KEY one of " + strings.Join(keys, ", "))
		return
	}
	if err := apply(&o, fields[1]); err != nil {
		r.note(fmt.Sprintf("/set %s: bad value %q", key, fields[1]))
		return
	}
	if err := checkSampling(o.Sampling, o.MaxTokens); err != nil {
		r.note("/set: " + err.Error())
		return
	}
	r.conv.SetOptions(o)
	r.note(fmt.Sprintf("%s = %s", key, fields[1]))
}

// send generates the reply to m, streaming it.
func (r *repl) send(ctx context.Context, m chat.Message) {
	genCtx, cancel := context.WithCancel(ctx)
	r.mu.Lock()
	r.cancelGen = cancel
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.cancelGen = nil
		r.mu.Unlock()
		cancel()
	}()
	if slog.Default().Enabled(ctx, slog.LevelDebug) {
		// The prompt ids, for checking what a turn carries (tests use it).
		if p, err := r.conv.Plan(m); err == nil {
			slog.Debug("chat prompt", "ids", p.IDs)
		}
	}
	started := false
	start := func() {
		if !started && r.interactive {
			fmt.Fprint(r.out, r.style.label(replyLabel))
		}
		started = true
	}
	turn, err := r.conv.Send(genCtx, m, func(s string) error {
		start()
		_, err := io.WriteString(r.out, s)
		return err
	})
	if err != nil {
		if started {
			fmt.Fprintln(r.out)
		}
		r.note("error: " + err.Error())
		return
	}
	r.last = turn
	if tc := turn.Response.ToolCall; tc != nil {
		if started {
			fmt.Fprintln(r.out)
		}
		start()
		fmt.Fprintln(r.out, formatToolCall(tc))
		if r.interactive {
			r.note("send the tool's result with /observation TEXT")
		}
	} else {
		start()
		fmt.Fprintln(r.out)
	}
	if turn.Result.Finish == gen.FinishCancelled {
		r.note("stopped")
	}
	if turn.TrimNotice {
		fmt.Fprintf(r.errOut, "(the conversation outgrew the context of %d tokens: the oldest turns are dropped from now on)\n", r.ctxSize)
	}
	if r.verbose {
		fmt.Fprintln(r.errOut, turnStats(turn.Result))
	}
	r.saveSession()
}

func formatToolCall(tc *chat.ToolCall) string {
	switch {
	case tc.Err != nil:
		return fmt.Sprintf("[tool call %s: %v]\n%s", tc.Name, tc.Err, tc.Content)
	case tc.Arguments != nil:
		args, err := tc.Arguments.PythonJSON()
		if err != nil {
			args = tc.Content
		}
		return fmt.Sprintf("[tool call %s %s]", tc.Name, args)
	}
	return fmt.Sprintf("[%s]\n%s", tc.Name, tc.Content)
}

func (r *repl) saveSession() {
	if r.session == "" {
		return
	}
	if err := chat.SaveMessagesFile(r.session, r.conv.Messages()); err != nil {
		fmt.Fprintln(r.errOut, "chatglm: --session:", err)
	}
}

func (r *repl) stats() {
	fmt.Fprintf(r.out, "model load: %s\n", r.loadTime.Round(time.Millisecond))
	if r.last == nil {
		fmt.Fprintln(r.out, "no reply yet")
		return
	}
	fmt.Fprintln(r.out, turnStats(r.last.Result))
	used := r.last.Result.PromptTokens + len(r.last.Result.Tokens)
	fmt.Fprintf(r.out, "context: %d of %d tokens\n", used, r.ctxSize)
}

// turnStats describes one generation's counts and speeds.
func turnStats(res gen.Result) string {
	return fmt.Sprintf("prompt: %d tokens (%d cached, %d evaluated) in %s, %s; reply: %d tokens in %s, %s; finish: %s",
		res.PromptTokens, res.CachedTokens, res.EvaluatedTokens, res.PromptTime.Round(time.Millisecond),
		rate(res.EvaluatedTokens, res.PromptTime), len(res.Tokens), res.GenTime.Round(time.Millisecond),
		rate(len(res.Tokens), res.GenTime), res.Finish)
}

func rate(n int, d time.Duration) string {
	if d <= 0 || n == 0 {
		return "- tokens/s"
	}
	return fmt.Sprintf("%.1f tokens/s", float64(n)/d.Seconds())
}
