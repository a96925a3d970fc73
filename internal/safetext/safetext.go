// Package safetext makes text that comes from files and servers safe to
// print on a terminal or in a log line: names, keys and values read from a
// GGUF, a safetensors header, a pickle or a hub listing may hold escape
// sequences (ESC [ 2 J clears the screen, OSC sequences set the window
// title), bidirectional overrides or invalid UTF-8.
package safetext

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// Quote returns s unchanged when it is valid UTF-8 made only of printable
// characters (strconv.IsPrint: letters, marks, numbers, punctuation,
// symbols and the ASCII space) and does not start with a double quote;
// otherwise it returns s as a Go-quoted string ("a\x1b[2Jb"), in which
// control, format and invalid bytes are escaped. A quoted result always
// starts with a double quote, so the two forms cannot be confused.
func Quote(s string) string {
	if Printable(s) && !strings.HasPrefix(s, `"`) {
		return s
	}
	return strconv.Quote(s)
}

// Printable reports whether s is valid UTF-8 made only of characters for
// which strconv.IsPrint is true.
func Printable(s string) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				return false
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 || !strconv.IsPrint(r) {
			return false
		}
		i += n
	}
	return true
}
