package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/chatglm/chatglm/internal/config"
	"github.com/chatglm/chatglm/internal/lineedit"
)

// chatStyle colours the REPL's prompt, reply label and notes on a terminal
// (not when NO_COLOR is set or TERM is dumb; never on a pipe).
type chatStyle struct{ color bool }

func newChatStyle(interactive bool) chatStyle {
	return chatStyle{color: interactive && os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb"}
}

func (s chatStyle) wrap(code, text string) string {
	if !s.color || text == "" {
		return text
	}
	return "\x1b[" + code + "m" + text + "\x1b[0m"
}

// prompt is the style of "你: " and "... ".
func (s chatStyle) prompt(text string) string { return s.wrap("1;32", text) }

// label is the style of "AI: ".
func (s chatStyle) label(text string) string { return s.wrap("1;36", text) }

// dim is the style of notes about the REPL itself.
func (s chatStyle) dim(text string) string { return s.wrap("2", text) }

// historyPath is the chat history file: $XDG_STATE_HOME/chatglm/history,
// or ~/.local/state/chatglm/history.
func historyPath() (string, error) {
	dir := os.Getenv("XDG_STATE_HOME")
	if !filepath.IsAbs(dir) { // the XDG spec: a relative path is ignored
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("history: %w", err)
		}
		dir = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(dir, "chatglm", "history"), nil
}

// keepOutOfHistoryFile reports entries recalled in the session but never
// written to the history file: /commands (/set, /system, /save and the
// rest may carry secrets or paths) and the exit words.
func keepOutOfHistoryFile(entry string) bool {
	return strings.HasPrefix(strings.TrimSpace(entry), "/") || isExitWord(entry)
}

// newChatEditor returns the line editor of `chatglm chat` on the terminal
// in, with the history the config asks for. A history file that cannot be
// read is reported on stderr and the session keeps its history in memory.
func newChatEditor(cfg *config.Store, in *os.File, out, stderr io.Writer) (*lineedit.Editor, error) {
	o := lineedit.HistoryOptions{Max: cfg.Int(keyChatHistorySize), Skip: keepOutOfHistoryFile}
	if o.Max < 0 {
		return nil, fmt.Errorf("%s %d: must be 0 (the default, 1000) or more", keyChatHistorySize, o.Max)
	}
	if cfg.Bool(keyChatHistory) {
		p, err := historyPath()
		if err != nil {
			fmt.Fprintln(stderr, "chatglm:", err)
		}
		o.Path = p
	}
	h, err := lineedit.OpenHistory(o)
	if err != nil {
		fmt.Fprintln(stderr, "chatglm:", err, "(this session's messages are kept in memory only)")
		o.Path = ""
		h, _ = lineedit.OpenHistory(o)
	}
	return lineedit.New(in, out, h)
}
