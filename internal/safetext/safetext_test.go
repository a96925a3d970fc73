package safetext

import (
	"strings"
	"testing"
)

func TestQuote(t *testing.T) {
	cases := map[string]string{
		"transformer.encoder.layers.0.mlp": "transformer.encoder.layers.0.mlp",
		"▁你好 world":                        "▁你好 world",
		"":                                 "",
		"a\x1b[2Jb":                        `"a\x1b[2Jb"`,
		"\x1b]0;pwned\x07":                 `"\x1b]0;pwned\a"`,
		"tab\there":                        `"tab\there"`,
		"del\x7f":                          `"del\x7f"`,
		"c1\u009b2J":                       `"c1\u009b2J"`,
		"bidi\u202eevil":                   `"bidi\u202eevil"`,
		"bad\xffutf8":                      `"bad\xffutf8"`,
		`"quoted"`:                         `"\"quoted\""`,
		`back\slash`:                       `back\slash`,
	}
	for in, want := range cases {
		if got := Quote(in); got != want {
			t.Errorf("Quote(%q) = %s, want %s", in, got, want)
		}
	}
}

func FuzzQuote(f *testing.F) {
	f.Add("a\x1b[2Jb")
	f.Add("▁你好")
	f.Fuzz(func(t *testing.T, s string) {
		q := Quote(s)
		for _, r := range q {
			if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u202e' {
				t.Fatalf("Quote(%q) = %q keeps control character %U", s, q, r)
			}
		}
		if q != s && !strings.HasPrefix(q, `"`) {
			t.Fatalf("Quote(%q) = %q changed the text without quoting it", s, q)
		}
	})
}
