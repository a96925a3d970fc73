package lineedit

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/chatglm/chatglm/internal/fixture/vtscreen"
)

// script is an input that hands out one chunk per Read and runs checks
// between chunks, when the editor has drawn everything before them.
type script struct {
	steps []any // string (keys) or func()
}

func (s *script) Read(p []byte) (int, error) {
	for len(s.steps) > 0 {
		st := s.steps[0]
		s.steps = s.steps[1:]
		switch v := st.(type) {
		case func():
			v()
		case string:
			return copy(p, v), nil
		}
	}
	return 0, io.EOF
}

// keys for readability
const (
	left, right, up, down = "\x1b[D", "\x1b[C", "\x1b[A", "\x1b[B"
	home, end, del        = "\x1b[H", "\x1b[F", "\x1b[3~"
	backspace             = "\x7f"
	ctrlLeft, ctrlRight   = "\x1b[1;5D", "\x1b[1;5C"
	altB, altF            = "\x1bb", "\x1bf"
	enter                 = "\r"
)

// run reads one line from steps on a fresh cols-wide screen.
func run(t *testing.T, cols int, h *History, prompt string, steps ...any) (string, error, *vtscreen.Screen) {
	t.Helper()
	scr := vtscreen.New(cols, 10)
	e := newTestEditor(&script{steps: steps}, scr, cols, h)
	line, err := e.ReadLine(prompt)
	return line, err, scr
}

// cursorAt returns a check that the cursor's row reads text and the
// cursor is col cells into it.
func cursorAt(t *testing.T, scr **vtscreen.Screen, text string, col int) func() {
	return func() {
		t.Helper()
		got, x := (*scr).CursorLine()
		if got != text || x != col {
			t.Errorf("cursor row %q at column %d, want %q at %d\nscreen:\n%s", got, x, text, col, (*scr).String())
		}
	}
}

func TestEditWideCharacters(t *testing.T) {
	var scr *vtscreen.Screen
	steps := []any{"你好世界", cursorAt(t, &scr, "你: 你好世界", 12),
		left + left, cursorAt(t, &scr, "你: 你好世界", 8),
		"美丽", cursorAt(t, &scr, "你: 你好美丽世界", 12),
		right, backspace, cursorAt(t, &scr, "你: 你好美丽界", 12),
		home, cursorAt(t, &scr, "你: 你好美丽界", 4),
		end, cursorAt(t, &scr, "你: 你好美丽界", 14),
		enter}
	scr = vtscreen.New(80, 10)
	e := newTestEditor(&script{steps: steps}, scr, 80, nil)
	line, err := e.ReadLine("你: ")
	if err != nil || line != "你好美丽界" {
		t.Fatalf("line %q, %v", line, err)
	}
	if x, y := scr.Cursor(); x != 0 || y != 1 {
		t.Fatalf("after Enter the cursor is at %d,%d, want the start of the next row", x, y)
	}
}

func TestCombiningMarksMoveAsOne(t *testing.T) {
	// e + U+0301 is one character of width 1; the flag is one of width 2.
	line, err, _ := run(t, 80, nil, "> ", "cafe\u0301 🇨🇳x", left, backspace, left, backspace, enter)
	if err != nil || line != "caf x" {
		t.Fatalf("line %q, %v", line, err)
	}
	var scr *vtscreen.Screen
	scr = vtscreen.New(80, 10)
	e := newTestEditor(&script{steps: []any{"e\u0301e\u0301", left, cursorAt(t, &scr, "> e\u0301e\u0301", 3), enter}}, scr, 80, nil)
	if _, err := e.ReadLine("> "); err != nil {
		t.Fatal(err)
	}
}

func TestKillAndWordKeys(t *testing.T) {
	cases := []struct {
		keys string
		want string
	}{
		{"hello world foo" + altB + altB + "\x0b", "hello "},               // Ctrl-K
		{"hello world foo" + ctrlLeft + "\x15", "foo"},                     // Ctrl-U
		{"hello world foo" + "\x17", "hello world "},                       // Ctrl-W
		{"hello world foo" + "\x17\x17", "hello "},                         // Ctrl-W twice
		{"a.b c" + home + ctrlRight + "X", "aX.b c"},                       // word right stops at punctuation
		{"abc def" + home + altF + altF + "!", "abc def!"},                 // Alt-F
		{"你好，世界" + altB + "X", "你好，X世界"},                                   // CJK punctuation separates words
		{"abc" + home + del + "\x04", "c"},                                 // Delete, Ctrl-D on a non-empty line
		{"abc" + "\x01" + "X" + "\x05" + "Y" + "\x02\x02" + "Z", "XabZcY"}, // Ctrl-A/E/B
		{"abc def" + "\x1b\x7f", "abc "},                                   // Alt-Backspace
	}
	for _, c := range cases {
		line, err, _ := run(t, 80, nil, "> ", c.keys, enter)
		if err != nil || line != c.want {
			t.Errorf("%q: line %q, %v; want %q", c.keys, line, err, c.want)
		}
	}
}

func TestCtrlCAndCtrlD(t *testing.T) {
	line, err, scr := run(t, 80, nil, "> ", "abc", "\x03")
	if !errors.Is(err, ErrInterrupt) || line != "abc" {
		t.Fatalf("Ctrl-C: %q, %v", line, err)
	}
	if got := scr.Line(0); got != "> abc^C" {
		t.Fatalf("Ctrl-C shows %q", got)
	}
	if _, err, _ := run(t, 80, nil, "> ", "\x04"); err != io.EOF {
		t.Fatalf("Ctrl-D on an empty line: %v", err)
	}
	// End of input with text typed returns the text.
	if line, err, _ := run(t, 80, nil, "> ", "abc"); err != nil || line != "abc" {
		t.Fatalf("EOF: %q, %v", line, err)
	}
}

func TestWrapLongLines(t *testing.T) {
	// 10 columns: "> " + 4 wide characters = 10 cells; the fifth wraps. A
	// wide character that does not fit in the last cell moves to the next row.
	var scr *vtscreen.Screen
	steps := []any{"一二三四五", cursorAt(t, &scr, "五", 2),
		home, cursorAt(t, &scr, "> 一二三四", 2),
		"ab", cursorAt(t, &scr, "> ab一二三", 4),
		end, cursorAt(t, &scr, "四五", 4),
		"\x15", cursorAt(t, &scr, ">", 2),
		"a一二三四", cursorAt(t, &scr, "四", 2),
		enter}
	scr = vtscreen.New(10, 10)
	e := newTestEditor(&script{steps: steps}, scr, 10, nil)
	line, err := e.ReadLine("> ")
	if err != nil || line != "a一二三四" {
		t.Fatalf("%q %v", line, err)
	}
	if got := scr.String(); got != "> a一二三\n四" {
		t.Fatalf("screen:\n%s", got)
	}
}

func TestBracketedPasteIsOneLine(t *testing.T) {
	// The paste arrives in pieces, its end marker split between reads; the
	// newlines in it do not end the line, Enter does.
	var scr *vtscreen.Screen
	steps := []any{"前", "\x1b[200~第一行\r\n第二", "行\r第三行\x1b[2", "01~", cursorAt(t, &scr, "第三行", 6), "后", enter}
	scr = vtscreen.New(40, 10)
	e := newTestEditor(&script{steps: steps}, scr, 40, nil)
	line, err := e.ReadLine("> ")
	if err != nil || line != "前第一行\n第二行\n第三行后" {
		t.Fatalf("%q %v", line, err)
	}
	if got := scr.String(); got != "> 前第一行\n第二行\n第三行后" {
		t.Fatalf("screen:\n%s", got)
	}
	// Control characters in a paste are dropped; the paste is capped.
	line, err, _ = run(t, 40, nil, "> ", "\x1b[200~a\x1b[31mb\x07\tc\x1b[201~", enter)
	if err != nil || line != "a[31mb\tc" {
		t.Fatalf("%q %v", line, err)
	}
}

func TestHistoryUpDownAndSearch(t *testing.T) {
	h, err := OpenHistory(HistoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []string{"第一条", "second one", "第三条 three"} {
		if err := h.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		keys, want string
	}{
		{up, "第三条 three"},
		{up + up, "second one"},
		{up + up + up + up + up, "第一条"},
		{"draft" + up + down, "draft"},
		{up + up + down, "第三条 three"},
		{"\x12第一", "第一条"},                         // Ctrl-R, Enter sends the match
		{"\x12e", "第三条 three"},                    // the newest match
		{"\x12e\x12", "second one"},               // Ctrl-R again: older
		{"\x12one" + "\x05" + "!", "second one!"}, // another key edits the match
		{"x\x12second\x07", "x"},                  // Ctrl-G cancels
		{"\x12zzz", ""},                           // no match
	}
	for _, c := range cases {
		line, err, _ := run(t, 80, h, "> ", c.keys, enter)
		if err != nil || line != c.want {
			t.Errorf("%q: %q, %v; want %q", c.keys, line, err, c.want)
		}
	}
	var scr *vtscreen.Screen
	scr = vtscreen.New(80, 10)
	e := newTestEditor(&script{steps: []any{"\x12th", cursorAt(t, &scr, "(reverse-i-search)`th': 第三条 three", 31),
		"x", cursorAt(t, &scr, "(failing reverse-i-search)`thx': 第三条 three", 45), "\x1b", enter}}, scr, 80, h)
	if _, err := e.ReadLine("> "); err != nil {
		t.Fatal(err)
	}
}

func TestHistoryFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "chatglm", "history")
	skip := func(s string) bool { return strings.HasPrefix(s, "/set") }
	h, err := OpenHistory(HistoryOptions{Path: path, Max: 3, Skip: skip})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []string{"one", "two\\n\nlines", "/set api_key sk-secret", "two\\n\nlines", "three", "four", strings.Repeat("x", MaxEntryBytes+1)} {
		if err := h.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "secret") || strings.Contains(string(b), "xxxx") {
		t.Fatalf("the file holds a skipped entry:\n%s", b)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode())
	}
	// Reopened: the newest 3 entries the file holds, and the file cut to them.
	h2, err := OpenHistory(HistoryOptions{Path: path, Max: 3, Skip: skip})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(h2.Entries(), "|"); got != "two\\n\nlines|three|four" {
		t.Fatalf("entries %q", got)
	}
	if b, _ := os.ReadFile(path); strings.Count(string(b), "\n") != 3 {
		t.Fatalf("file not cut to 3 entries:\n%s", b)
	}
	// Damaged and overlong lines are skipped, not an error, and the lines
	// after them are read.
	if err := os.WriteFile(path, []byte("ok\nbad\\q\n\\\n"+strings.Repeat("y", 3*MaxEntryBytes)+"\nafter\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h3, err := OpenHistory(HistoryOptions{Path: path})
	if err != nil || strings.Join(h3.Entries(), "|") != "ok|after" {
		t.Fatalf("%v %q", err, h3.Entries())
	}
}

// FuzzEditor feeds arbitrary bytes as keys: no panic, and the line is
// valid UTF-8 within MaxLine.
func FuzzEditor(f *testing.F) {
	for _, s := range []string{"abc\r", "你好" + left + "x" + backspace + "\r", "\x1b[200~a\nb\x1b[201~\r", "\x12a\x12\x1b\r",
		"\x1b[1;5D\x1b[9999999999A\x1b", "e\u0301\x7f\x15\x0b\x17", up + up + down + "\x04", "\x1bOH\x1bOF\x1b[3~\x1b[7~"} {
		f.Add([]byte(s), uint8(20))
	}
	f.Fuzz(func(t *testing.T, in []byte, cols uint8) {
		h, _ := OpenHistory(HistoryOptions{})
		_ = h.Add("你好 world")
		_ = h.Add("e\u0301\n2")
		scr := vtscreen.New(int(cols%100)+2, 10)
		e := newTestEditor(&script{steps: []any{string(in)}}, scr, int(cols%100)+2, h)
		for range 4 {
			line, err := e.ReadLine("你: ")
			if !utf8.ValidString(line) || len([]rune(line)) > MaxLine {
				t.Fatalf("bad line %q", line)
			}
			if err == io.EOF {
				break
			}
		}
	})
}

// FuzzHistoryFile: any file content opens (no panic, no error) and
// yields entries that round-trip.
func FuzzHistoryFile(f *testing.F) {
	f.Add([]byte("a\nb\\nc\n\\\n\xff\xfe\n"), uint8(2))
	f.Fuzz(func(t *testing.T, b []byte, max uint8) {
		path := filepath.Join(t.TempDir(), "history")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		h, err := OpenHistory(HistoryOptions{Path: path, Max: int(max%8) + 1})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(h.Entries()); n > int(max%8)+1 {
			t.Fatalf("%d entries, max %d", n, max%8+1)
		}
	})
}

// FuzzHistoryEntry: every entry survives the file's encoding.
func FuzzHistoryEntry(f *testing.F) {
	f.Add("a\\nb\nc\r")
	f.Fuzz(func(t *testing.T, s string) {
		line := encodeEntry(s)
		if strings.ContainsAny(line, "\n\r") {
			t.Fatalf("encoded entry spans lines: %q", line)
		}
		if got, ok := decodeEntry(line); !ok || got != s {
			t.Fatalf("%q -> %q -> %q %v", s, line, got, ok)
		}
	})
}
