package lineedit

import (
	"strings"
	"unicode"

	"github.com/rivo/uniseg"
)

// cluster is one user-perceived character (a grapheme cluster) of the
// line: runes [start, end) of the buffer, shown as text occupying width
// cells. A newline (from a paste or a recalled multi-line entry) has width
// 0 and breaks the row.
type cluster struct {
	start, end int
	text       string
	width      int
	newline    bool
}

// tabWidth is how many cells a tab is drawn as.
const tabWidth = 4

// segment splits runes into grapheme clusters with their display form and
// width: East Asian wide characters take two cells, combining marks join
// the character before them, control characters are drawn as ^X.
func segment(runes []rune) []cluster {
	s := string(runes)
	out := make([]cluster, 0, len(runes))
	pos, state := 0, -1
	for s != "" {
		var c string
		var w int
		c, s, w, state = uniseg.FirstGraphemeClusterInString(s, state)
		n := len([]rune(c))
		cl := cluster{start: pos, end: pos + n, text: c, width: w}
		if r := []rune(c)[0]; n == 1 && (r < 0x20 || r == 0x7f) {
			switch r {
			case '\n':
				cl.text, cl.width, cl.newline = "", 0, true
			case '\t':
				cl.text, cl.width = strings.Repeat(" ", tabWidth), tabWidth
			default:
				cl.text, cl.width = "^"+string(r^0x40), 2
			}
		}
		out = append(out, cl)
		pos += n
	}
	return out
}

// boundary returns the index of the cluster that starts at rune position
// pos, or len(cs) when pos is the end.
func boundary(cs []cluster, pos int) int {
	for i, c := range cs {
		if c.start >= pos {
			return i
		}
	}
	return len(cs)
}

// isWordChar reports whether a cluster belongs to a word for the word
// motions: letters (CJK included), digits and underscore; spaces and
// punctuation (，。 too) separate words.
func isWordChar(c cluster) bool {
	r := []rune(c.text)
	if len(r) == 0 {
		return false
	}
	return r[0] == '_' || unicode.IsLetter(r[0]) || unicode.IsDigit(r[0])
}

// isSpace reports whether a cluster is white space.
func isSpace(c cluster) bool {
	r := []rune(c.text)
	return c.newline || len(r) == 0 || unicode.IsSpace(r[0])
}

// displayWidth is the number of cells s takes on a terminal, ANSI escape
// sequences (colours) not counted.
func displayWidth(s string) int {
	return uniseg.StringWidth(stripANSI(s))
}

// stripANSI removes CSI escape sequences (ESC [ ... final byte) from s.
func stripANSI(s string) string {
	if !strings.Contains(s, "\x1b") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '[' {
			j := i + 2
			for j < len(s) && (s[j] < 0x40 || s[j] > 0x7e) {
				j++
			}
			i = j
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
