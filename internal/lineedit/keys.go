package lineedit

import (
	"bytes"
	"unicode/utf8"
)

// keyCode names a key that is not a plain character.
type keyCode int

const (
	keyNone          keyCode = iota
	keyRune                  // a character to insert
	keyCtrl                  // a control character (key.r is 0x00..0x1f or 0x7f)
	keyEsc                   // a lone Escape
	keyUp                    // ↑
	keyDown                  // ↓
	keyLeft                  // ←
	keyRight                 // →
	keyHome                  // Home
	keyEnd                   // End
	keyDelete                // Delete
	keyWordLeft              // Ctrl-← or Alt-B
	keyWordRight             // Ctrl-→ or Alt-F
	keyKillWordLeft          // Alt-Backspace
	keyKillWordRight         // Alt-D
	keyPasteStart            // ESC [ 200 ~: bracketed paste begins
	keyPasteEnd              // ESC [ 201 ~ outside a paste: ignored
)

// key is one decoded key press.
type key struct {
	code keyCode
	r    rune
}

// maxSeq bounds an escape sequence; longer ones are dropped as garbage.
const maxSeq = 32

// parseKey decodes the key at the start of b. It returns the number of
// bytes used, or 0 when b holds only the beginning of a key (more bytes
// are needed). Unknown sequences decode to keyNone and are skipped.
func parseKey(b []byte) (key, int) {
	if len(b) == 0 {
		return key{}, 0
	}
	c := b[0]
	switch {
	case c == 0x1b:
		return parseEscape(b)
	case c < 0x20 || c == 0x7f:
		return key{code: keyCtrl, r: rune(c)}, 1
	case c < utf8.RuneSelf:
		return key{code: keyRune, r: rune(c)}, 1
	}
	if !utf8.FullRune(b) {
		return key{}, 0
	}
	r, n := utf8.DecodeRune(b)
	if r == utf8.RuneError {
		return key{}, n // invalid UTF-8: skip the byte
	}
	return key{code: keyRune, r: r}, n
}

// parseEscape decodes ESC-prefixed keys: CSI (ESC [), SS3 (ESC O) and
// Alt+key.
func parseEscape(b []byte) (key, int) {
	if len(b) < 2 {
		return key{}, 0
	}
	switch b[1] {
	case '[':
		end := -1
		for i := 2; i < len(b) && i < maxSeq; i++ {
			if b[i] >= 0x40 && b[i] <= 0x7e {
				end = i
				break
			}
		}
		if end < 0 {
			if len(b) >= maxSeq {
				return key{}, len(b)
			}
			return key{}, 0
		}
		return key{code: csiKey(string(b[2:end]), b[end])}, end + 1
	case 'O':
		if len(b) < 3 {
			return key{}, 0
		}
		return key{code: csiKey("", b[2])}, 3
	case 'b', 'B':
		return key{code: keyWordLeft}, 2
	case 'f', 'F':
		return key{code: keyWordRight}, 2
	case 'd', 'D':
		return key{code: keyKillWordRight}, 2
	case 0x7f, 0x08:
		return key{code: keyKillWordLeft}, 2
	case 0x1b:
		return key{code: keyEsc}, 1
	}
	// Alt with another key: ignore the Alt, keep the key.
	k, n := parseKey(b[1:])
	if n == 0 {
		return key{}, 0
	}
	return k, n + 1
}

// csiKey maps a CSI or SS3 sequence's parameters and final byte to a key.
func csiKey(params string, final byte) keyCode {
	mod := ""
	if i := bytes.IndexByte([]byte(params), ';'); i >= 0 {
		mod = params[i+1:]
	}
	word := mod == "5" || mod == "3" // Ctrl or Alt
	switch final {
	case 'A':
		return keyUp
	case 'B':
		return keyDown
	case 'C':
		if word {
			return keyWordRight
		}
		return keyRight
	case 'D':
		if word {
			return keyWordLeft
		}
		return keyLeft
	case 'H':
		return keyHome
	case 'F':
		return keyEnd
	case '~':
		switch params {
		case "1", "7":
			return keyHome
		case "4", "8":
			return keyEnd
		case "3":
			return keyDelete
		case "200":
			return keyPasteStart
		case "201":
			return keyPasteEnd
		}
	}
	return keyNone
}

// pasteEnd is the sequence that ends a bracketed paste.
var pasteEnd = []byte("\x1b[201~")
