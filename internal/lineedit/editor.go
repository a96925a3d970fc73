// Package lineedit reads lines from a terminal with editing and history:
// cursor motion and deletion by grapheme cluster and display width (wide
// CJK characters take two cells, combining marks stay with their base),
// Home/End, word jumps, Ctrl-U/K/W, Up/Down history, Ctrl-R reverse search
// and bracketed paste (a pasted block, newlines and all, is one line).
//
// It is built on golang.org/x/term (raw mode, size) and github.com/rivo/uniseg
// (grapheme clusters and widths), and never asks the terminal anything: it
// only writes CR, LF and cursor-motion sequences, so it works in every
// terminal and under test in a pseudo-terminal.
package lineedit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// ErrInterrupt is returned by ReadLine when Ctrl-C is pressed; the text
// typed so far comes with it.
var ErrInterrupt = errors.New("lineedit: interrupted")

// ErrClosed is returned by ReadLine after Close, including by a ReadLine
// that Close interrupted.
var ErrClosed = errors.New("lineedit: closed")

// MaxLine is the most runes a line holds; input past it (a huge paste) is
// dropped.
const MaxLine = 256 << 10

// Editor reads edited lines from a terminal. Use one Editor per terminal,
// from one goroutine; Close may be called from any goroutine.
type Editor struct {
	in      io.Reader
	fd      int // the terminal's descriptor; -1 when in is not a terminal (tests)
	out     io.Writer
	width   func() int
	History *History

	wakeR, wakeW *os.File // Close writes to wakeW to stop a blocked read
	closeOnce    sync.Once
	mu           sync.Mutex
	closed       bool

	pending []byte // bytes read but not yet decoded

	// the line being edited
	buf       []rune
	pos       int // cursor, in runes, on a cluster boundary
	prompt    string
	cursorRow int // the row of the cursor within what refresh drew

	// history browsing
	histIdx  int    // index into the history's entries; len = the line being typed
	histSave []rune // the line being typed while browsing

	// reverse search
	searching bool
	query     []rune
	matchIdx  int  // entry shown while searching, -1 none
	failed    bool // no entry holds the query
}

// New returns an editor on the terminal f, drawing on out (normally the
// same terminal). h may be nil (no history).
func New(f *os.File, out io.Writer, h *History) (*Editor, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("lineedit: %w", err)
	}
	fd := int(f.Fd())
	e := &Editor{in: f, fd: fd, out: out, History: h, wakeR: r, wakeW: w}
	e.width = func() int {
		if w, _, err := term.GetSize(fd); err == nil && w > 0 {
			return w
		}
		return 80
	}
	return e, nil
}

// newTestEditor returns an editor reading keys from in without a
// terminal: no raw mode, a fixed width.
func newTestEditor(in io.Reader, out io.Writer, cols int, h *History) *Editor {
	return &Editor{in: in, fd: -1, out: out, History: h, width: func() int { return cols }}
}

// Close restores the terminal (when a ReadLine is running, it returns
// ErrClosed) and releases the editor. It is safe to call more than once.
func (e *Editor) Close() error {
	e.closeOnce.Do(func() {
		e.mu.Lock()
		e.closed = true
		e.mu.Unlock()
		if e.wakeW != nil {
			_, _ = e.wakeW.Write([]byte{0})
		}
	})
	return nil
}

// ReadLine shows prompt and returns the line typed, without its newline.
// It returns io.EOF for Ctrl-D on an empty line and ErrInterrupt (with the
// text typed) for Ctrl-C. The terminal is in raw mode only while ReadLine
// runs, so signals such as Ctrl-C work as usual between calls.
func (e *Editor) ReadLine(prompt string) (string, error) {
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return "", ErrClosed
	}
	if e.fd >= 0 {
		st, err := term.MakeRaw(e.fd)
		if err != nil {
			return "", fmt.Errorf("lineedit: raw mode: %w", err)
		}
		defer term.Restore(e.fd, st)
	}
	e.write("\x1b[?2004h") // bracketed paste on
	defer e.write("\x1b[?2004l")
	e.buf, e.pos, e.prompt = e.buf[:0], 0, prompt
	e.cursorRow = 0
	e.histIdx, e.histSave = len(e.entries()), nil
	e.searching = false
	e.refresh()
	for {
		k, paste, err := e.nextKey()
		if err != nil {
			e.finish("")
			if err == io.EOF && len(e.buf) > 0 {
				return string(e.buf), nil
			}
			return "", err
		}
		if paste != nil {
			e.endSearch()
			e.insert(paste)
			e.refresh()
			continue
		}
		line, done, err := e.handle(k)
		if done || err != nil {
			return line, err
		}
		e.refresh()
	}
}

func (e *Editor) entries() []string {
	if e.History == nil {
		return nil
	}
	return e.History.Entries()
}

func (e *Editor) write(s string) { _, _ = io.WriteString(e.out, s) }

// read fills e.pending with more input, waiting for the terminal or a
// Close, whichever comes first.
func (e *Editor) read() error {
	if e.fd >= 0 && e.wakeR != nil {
		fds := []unix.PollFd{{Fd: int32(e.fd), Events: unix.POLLIN}, {Fd: int32(e.wakeR.Fd()), Events: unix.POLLIN}}
		for {
			_, err := unix.Poll(fds, -1)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return fmt.Errorf("lineedit: poll: %w", err)
			}
			break
		}
		if fds[1].Revents != 0 {
			return ErrClosed
		}
	}
	var b [4096]byte
	n, err := e.in.Read(b[:])
	e.pending = append(e.pending, b[:n]...)
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.EOF
	}
	return err
}

// moreSoon reports whether the terminal has more input within 50ms (the
// rest of an escape sequence split between reads).
func (e *Editor) moreSoon() bool {
	if e.fd < 0 {
		return false
	}
	fds := []unix.PollFd{{Fd: int32(e.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 50)
	return err == nil && n > 0
}

// nextKey returns the next key, or the text of a bracketed paste.
func (e *Editor) nextKey() (key, []rune, error) {
	for {
		k, n := parseKey(e.pending)
		if n == 0 && len(e.pending) == 1 && e.pending[0] == 0x1b && !e.moreSoon() {
			// An ESC with nothing after it is the Escape key.
			k, n = key{code: keyEsc}, 1
		}
		if n > 0 {
			e.pending = e.pending[n:]
			if k.code == keyPasteStart {
				p, err := e.readPaste()
				return key{}, p, err
			}
			return k, nil, nil
		}
		if err := e.read(); err != nil {
			return key{}, nil, err
		}
	}
}

// readPaste collects a bracketed paste up to its end marker (at most
// MaxLine runes are kept) and returns it with newlines as \n and other
// control characters dropped.
func (e *Editor) readPaste() ([]rune, error) {
	var raw []byte
	for {
		if i := bytes.Index(e.pending, pasteEnd); i >= 0 {
			raw = append(raw, e.pending[:i]...)
			e.pending = e.pending[i+len(pasteEnd):]
			break
		}
		// Keep a tail that may be the start of the end marker.
		keep := min(len(e.pending), len(pasteEnd)-1)
		raw = append(raw, e.pending[:len(e.pending)-keep]...)
		e.pending = e.pending[len(e.pending)-keep:]
		if len(raw) > 4*MaxLine {
			raw = raw[:4*MaxLine]
		}
		if err := e.read(); err != nil {
			return nil, err
		}
	}
	s := strings.ToValidUTF8(string(raw), "")
	s = strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(s)
	out := make([]rune, 0, len(s))
	for _, r := range s {
		if (r < 0x20 && r != '\n' && r != '\t') || r == 0x7f {
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// handle applies one key; done reports that the line is finished.
func (e *Editor) handle(k key) (string, bool, error) {
	if e.searching {
		if k2, consumed := e.searchKey(k); consumed {
			return "", false, nil
		} else {
			k = k2
		}
	}
	cs := segment(e.buf)
	i := boundary(cs, e.pos)
	switch k.code {
	case keyRune:
		e.insert([]rune{k.r})
	case keyLeft:
		if i > 0 {
			e.pos = cs[i-1].start
		}
	case keyRight:
		if i < len(cs) {
			e.pos = cs[i].end
		}
	case keyHome:
		e.pos = 0
	case keyEnd:
		e.pos = len(e.buf)
	case keyWordLeft:
		e.pos = wordLeft(cs, i, isWordChar)
	case keyWordRight:
		e.pos = wordRight(cs, i)
	case keyDelete:
		if i < len(cs) {
			e.cut(cs[i].start, cs[i].end)
		}
	case keyKillWordLeft:
		e.cut(wordLeft(cs, i, isWordChar), e.pos)
	case keyKillWordRight:
		e.cut(e.pos, wordRight(cs, i))
	case keyUp:
		e.recall(-1)
	case keyDown:
		e.recall(+1)
	case keyCtrl:
		return e.control(k.r, cs, i)
	}
	return "", false, nil
}

// control applies a control key.
func (e *Editor) control(r rune, cs []cluster, i int) (string, bool, error) {
	switch r {
	case '\r', '\n':
		line := string(e.buf)
		e.finish("")
		return line, true, nil
	case 0x03: // Ctrl-C
		line := string(e.buf)
		e.finish("^C")
		return line, true, ErrInterrupt
	case 0x04: // Ctrl-D
		if len(e.buf) == 0 {
			e.finish("")
			return "", true, io.EOF
		}
		if i < len(cs) {
			e.cut(cs[i].start, cs[i].end)
		}
	case 0x7f, 0x08: // Backspace
		if i > 0 {
			e.cut(cs[i-1].start, e.pos)
		}
	case 0x01: // Ctrl-A
		e.pos = 0
	case 0x05: // Ctrl-E
		e.pos = len(e.buf)
	case 0x02: // Ctrl-B
		if i > 0 {
			e.pos = cs[i-1].start
		}
	case 0x06: // Ctrl-F
		if i < len(cs) {
			e.pos = cs[i].end
		}
	case 0x15: // Ctrl-U
		e.cut(0, e.pos)
	case 0x0b: // Ctrl-K
		e.cut(e.pos, len(e.buf))
	case 0x17: // Ctrl-W: back to white space
		e.cut(wordLeft(cs, i, func(c cluster) bool { return !isSpace(c) }), e.pos)
	case 0x10: // Ctrl-P
		e.recall(-1)
	case 0x0e: // Ctrl-N
		e.recall(+1)
	case 0x12: // Ctrl-R
		e.searching, e.query, e.matchIdx, e.failed = true, nil, -1, false
	case 0x0c: // Ctrl-L
		e.write("\x1b[H\x1b[2J")
		e.cursorRow = 0
	case '\t':
		e.insert([]rune{'\t'})
	}
	return "", false, nil
}

// wordLeft returns the start of the word before cluster i: skip clusters
// that are not in a word, then those that are.
func wordLeft(cs []cluster, i int, in func(cluster) bool) int {
	for i > 0 && !in(cs[i-1]) {
		i--
	}
	for i > 0 && in(cs[i-1]) {
		i--
	}
	if i < len(cs) {
		return cs[i].start
	}
	if len(cs) == 0 {
		return 0
	}
	return cs[len(cs)-1].end
}

// wordRight returns the end of the word at or after cluster i.
func wordRight(cs []cluster, i int) int {
	for i < len(cs) && !isWordChar(cs[i]) {
		i++
	}
	for i < len(cs) && isWordChar(cs[i]) {
		i++
	}
	if i == 0 {
		return 0
	}
	return cs[i-1].end
}

// insert puts runes at the cursor, keeping the line within MaxLine.
func (e *Editor) insert(rs []rune) {
	if room := MaxLine - len(e.buf); len(rs) > room {
		rs = rs[:max(room, 0)]
	}
	e.buf = append(e.buf[:e.pos], append(rs, e.buf[e.pos:]...)...)
	e.pos += len(rs)
	// A combining mark typed at the cursor joins the cluster before it;
	// keep the cursor on a boundary.
	cs := segment(e.buf)
	if j := boundary(cs, e.pos); j < len(cs) && cs[j].start != e.pos && j > 0 {
		e.pos = cs[j-1].end
	}
}

// cut deletes runes [from, to).
func (e *Editor) cut(from, to int) {
	if from >= to {
		return
	}
	e.buf = append(e.buf[:from], e.buf[to:]...)
	e.pos = from
}

// recall moves through the history: dir -1 is older, +1 newer.
func (e *Editor) recall(dir int) {
	hs := e.entries()
	n := min(e.histIdx, len(hs))
	j := n + dir
	if j < 0 || j > len(hs) {
		return
	}
	if n == len(hs) {
		e.histSave = append([]rune(nil), e.buf...)
	}
	e.histIdx = j
	if j == len(hs) {
		e.buf = append(e.buf[:0], e.histSave...)
	} else {
		e.buf = []rune(hs[j])
	}
	e.pos = len(e.buf)
}

// searchKey handles a key during Ctrl-R search. It reports whether the key
// was used; otherwise the search ends with the match as the line and the
// key is handled as usual (Enter sends the match).
func (e *Editor) searchKey(k key) (key, bool) {
	hs := e.entries()
	switch {
	case k.code == keyRune:
		e.query = append(e.query, k.r)
		e.search(hs, e.startIdx(hs))
		return k, true
	case k.code == keyCtrl && k.r == 0x12: // Ctrl-R again: older match
		from := e.matchIdx - 1
		if e.matchIdx < 0 {
			from = e.startIdx(hs)
		}
		e.search(hs, from)
		return k, true
	case k.code == keyCtrl && (k.r == 0x7f || k.r == 0x08):
		if len(e.query) > 0 {
			e.query = e.query[:len(e.query)-1]
		}
		e.search(hs, e.startIdx(hs))
		return k, true
	case k.code == keyEsc || (k.code == keyCtrl && k.r == 0x07): // Esc, Ctrl-G: cancel
		e.searching = false
		return k, true
	}
	e.endSearch()
	return k, false
}

// startIdx is where a search that changed its query starts: the entry
// shown, or the newest.
func (e *Editor) startIdx(hs []string) int {
	if e.matchIdx >= 0 {
		return e.matchIdx
	}
	return len(hs) - 1
}

// search finds the newest entry at or before from containing the query.
func (e *Editor) search(hs []string, from int) {
	q := string(e.query)
	for j := min(from, len(hs)-1); j >= 0; j-- {
		if strings.Contains(hs[j], q) {
			e.matchIdx, e.failed = j, false
			return
		}
	}
	e.failed = q != ""
	if q == "" {
		e.matchIdx = -1
	}
}

// endSearch leaves search mode with the match as the line being edited.
func (e *Editor) endSearch() {
	if !e.searching {
		return
	}
	e.searching = false
	hs := e.entries()
	if e.matchIdx >= 0 && e.matchIdx < len(hs) {
		e.buf = []rune(hs[e.matchIdx])
		e.pos = len(e.buf)
		if i := strings.Index(hs[e.matchIdx], string(e.query)); i >= 0 && len(e.query) > 0 {
			e.pos = len([]rune(hs[e.matchIdx][:i]))
		}
		e.histIdx = e.matchIdx
	}
}

// finish draws the line with the cursor at its end, then suffix (e.g. ^C)
// and a newline, so that what follows starts on a new row.
func (e *Editor) finish(suffix string) {
	e.searching = false
	e.pos = len(e.buf)
	e.refresh()
	e.write(suffix + "\r\n")
	e.cursorRow = 0
}

// refresh redraws the prompt and the line and puts the cursor in place.
func (e *Editor) refresh() {
	prompt, text, cur := e.prompt, e.buf, e.pos
	if e.searching {
		hs := e.entries()
		prompt = fmt.Sprintf("(reverse-i-search)`%s': ", string(e.query))
		if e.failed {
			prompt = "(failing " + prompt[1:]
		}
		text, cur = nil, 0
		if e.matchIdx >= 0 && e.matchIdx < len(hs) {
			text = []rune(hs[e.matchIdx])
			cur = len(text)
			if i := strings.Index(hs[e.matchIdx], string(e.query)); i >= 0 {
				cur = len([]rune(hs[e.matchIdx][:i]))
			}
		}
	}
	cols := max(e.width(), 2)
	var b strings.Builder
	if e.cursorRow > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", e.cursorRow)
	}
	b.WriteString("\r\x1b[J")
	b.WriteString(prompt)
	row, col := 0, displayWidth(prompt)%cols
	curRow, curCol := -1, 0
	for _, c := range segment(text) {
		if c.newline {
			if curRow < 0 && c.start >= cur {
				curRow, curCol = row, col
			}
			row, col = row+1, 0
			b.WriteString("\r\n")
			continue
		}
		if col+c.width > cols {
			row, col = row+1, 0
			b.WriteString("\r\n")
		}
		if curRow < 0 && c.start >= cur {
			curRow, curCol = row, col
		}
		b.WriteString(c.text)
		col += c.width
		if col >= cols {
			row, col = row+1, 0
			b.WriteString("\r\n")
		}
	}
	if curRow < 0 {
		curRow, curCol = row, col
	}
	if d := row - curRow; d > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", d)
	}
	b.WriteString("\r")
	if curCol > 0 {
		fmt.Fprintf(&b, "\x1b[%dC", curCol)
	}
	e.cursorRow = curRow
	e.write(b.String())
}
