// Package vtscreen is a small terminal emulator for tests: it applies what
// a program writes to a terminal (text, CR, LF, cursor motion, erase) to a
// grid of cells, with East Asian wide characters in two cells and
// combining marks joined to the cell before them, so that tests can check
// what a user would see and where the cursor is.
package vtscreen

import (
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/rivo/uniseg"
)

// Screen is a grid of rows x cols cells with a cursor. It is safe for
// concurrent use.
type Screen struct {
	mu         sync.Mutex
	cols, rows int
	cells      [][]string // "" is blank; a wide character's second cell is "\x00"
	x, y       int
	pending    []byte // an incomplete UTF-8 character or escape sequence
	wrapNext   bool   // the last column was written: the next character wraps
	onlcr      bool   // LF also returns the carriage, as a tty's output does
}

// SetONLCR makes a line feed also return the carriage, as a terminal
// driver in its usual (cooked) mode does to what a program writes; a
// pseudo-terminal under test does it already.
func (s *Screen) SetONLCR(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onlcr = on
}

// New returns a blank screen.
func New(cols, rows int) *Screen {
	s := &Screen{cols: cols, rows: rows}
	for range rows {
		s.cells = append(s.cells, make([]string, cols))
	}
	return s
}

// Write applies terminal output to the screen.
func (s *Screen) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := append(s.pending, p...)
	s.pending = nil
	for len(b) > 0 {
		n := s.step(b)
		if n == 0 {
			s.pending = append([]byte(nil), b...)
			break
		}
		b = b[n:]
	}
	return len(p), nil
}

// step applies the character or sequence at the start of b and returns its
// length, or 0 when b holds only part of one.
func (s *Screen) step(b []byte) int {
	switch c := b[0]; {
	case c == 0x1b:
		if len(b) < 2 {
			return 0
		}
		if b[1] != '[' {
			return 2
		}
		for i := 2; i < len(b); i++ {
			if b[i] >= 0x40 && b[i] <= 0x7e {
				s.csi(string(b[2:i]), b[i])
				return i + 1
			}
		}
		return 0
	case c == '\r':
		s.x, s.wrapNext = 0, false
	case c == '\n':
		if s.onlcr {
			s.x = 0
		}
		s.lineFeed()
	case c == '\b':
		if s.x > 0 {
			s.x--
		}
		s.wrapNext = false
	case c < 0x20 || c == 0x7f:
	default:
		if !utf8.FullRune(b) {
			return 0
		}
		r, n := utf8.DecodeRune(b)
		s.put(string(r))
		return n
	}
	return 1
}

func (s *Screen) lineFeed() {
	s.wrapNext = false
	if s.y < s.rows-1 {
		s.y++
		return
	}
	s.cells = append(s.cells[1:], make([]string, s.cols))
}

// put writes one character at the cursor.
func (s *Screen) put(ch string) {
	w := min(uniseg.StringWidth(ch), s.cols)
	if w == 0 {
		// A combining mark: join the cell before the cursor.
		x, y := s.x-1, s.y
		if s.wrapNext {
			x = s.cols - 1
		}
		if x >= 0 && s.cells[y][x] == "\x00" && x > 0 {
			x--
		}
		if x >= 0 {
			s.cells[y][x] += ch
		}
		return
	}
	if s.wrapNext || s.x+w > s.cols {
		s.x = 0
		s.lineFeed()
	}
	s.cells[s.y][s.x] = ch
	if w == 2 {
		s.cells[s.y][s.x+1] = "\x00"
	}
	s.x += w
	if s.x >= s.cols {
		s.x, s.wrapNext = s.cols-1, true
	}
}

func (s *Screen) csi(params string, final byte) {
	n := 1
	if v, err := strconv.Atoi(params); err == nil && v > 0 {
		n = v
	}
	s.wrapNext = false
	switch final {
	case 'A':
		s.y = max(s.y-n, 0)
	case 'B':
		s.y = min(s.y+n, s.rows-1)
	case 'C':
		s.x = min(s.x+n, s.cols-1)
	case 'D':
		s.x = max(s.x-n, 0)
	case 'H':
		s.x, s.y = 0, 0
		if r, c, ok := strings.Cut(params, ";"); ok {
			row, _ := strconv.Atoi(r)
			col, _ := strconv.Atoi(c)
			s.x, s.y = min(max(col-1, 0), s.cols-1), min(max(row-1, 0), s.rows-1)
		}
	case 'J':
		if params == "2" {
			for y := range s.cells {
				s.cells[y] = make([]string, s.cols)
			}
			return
		}
		for x := s.x; x < s.cols; x++ {
			s.cells[s.y][x] = ""
		}
		for y := s.y + 1; y < s.rows; y++ {
			s.cells[y] = make([]string, s.cols)
		}
	case 'K':
		for x := s.x; x < s.cols; x++ {
			s.cells[s.y][x] = ""
		}
	}
}

// Line returns row y as text, trailing blanks removed.
func (s *Screen) Line(y int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.line(y)
}

func (s *Screen) line(y int) string {
	var b strings.Builder
	for _, c := range s.cells[y] {
		switch c {
		case "\x00":
		case "":
			b.WriteByte(' ')
		default:
			b.WriteString(c)
		}
	}
	return strings.TrimRight(b.String(), " ")
}

// Cursor returns the cursor's column and row (from 0).
func (s *Screen) Cursor() (x, y int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.x, s.y
}

// CursorLine returns the text of the cursor's row and the display width of
// the part before the cursor.
func (s *Screen) CursorLine() (string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.line(s.y), s.x
}

// String returns the non-blank rows, one per line.
func (s *Screen) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var lines []string
	for y := range s.cells {
		lines = append(lines, s.line(y))
	}
	return strings.TrimRight(strings.Join(lines, "\n"), "\n")
}
