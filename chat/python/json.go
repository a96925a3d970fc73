package python

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// JSONIndent re-serialises the JSON value raw exactly as Python's
// json.dumps(json.loads(raw), indent=4, ensure_ascii=False) does: keys in
// their original order (a repeated key keeps its first position and its last
// value, like a Python dict), ", "/": " separators with "," at line ends,
// empty containers as [] and {}, no HTML escaping, non-ASCII kept, control
// characters as \u00XX, integers as Python ints and every other number as
// Python's float repr (0.50 -> 0.5, 1E-7 -> 1e-07, 1e2 -> 100.0).
//
// raw may come from anyone: values nested deeper than MaxDepth and output
// longer than MaxIndentedJSON are errors (the indentation makes the output
// grow with the square of the depth).
func JSONIndent(raw []byte) (string, error) {
	v, err := parsePyJSON(raw)
	if err != nil {
		return "", err
	}
	var sb strings.Builder
	if err := writePyJSON(&sb, v, 0); err != nil {
		return "", err
	}
	return sb.String(), nil
}

// MaxDepth is how deeply the values of ChatGLM3's tool protocol may nest:
// the tools JSON, a call's JSON arguments and the Python literals of a
// tool_call(...). Deeper input is an error, never a deep recursion.
const MaxDepth = 64

// MaxIndentedJSON is the most text JSONIndent writes (4 MiB, over
// a million tokens: far more than any ChatGLM3 context holds).
const MaxIndentedJSON = 4 << 20

// ErrTooDeep is the error for values nested deeper than MaxDepth.
var ErrTooDeep = fmt.Errorf("values nested more than %d levels deep", MaxDepth)

// indent is the indentation of the deepest line JSONIndent writes.
var indent = strings.Repeat("    ", MaxDepth+1)

// pyNode is a parsed JSON value that keeps object key order.
type pyNode struct {
	kind   byte // 's' string, 'n' number, 'b' bool, 'z' null, 'a' array, 'o' object
	str    string
	num    string // Python form of the number
	bool   bool
	keys   []string
	values []*pyNode
}

func parsePyJSON(raw []byte) (*pyNode, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	v, err := parsePyValue(dec, 1)
	if err != nil {
		return nil, fmt.Errorf("tools JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("tools JSON: extra data after the value")
	}
	return v, nil
}

// parsePyValue parses the value that starts at dec's next token, at
// nesting level depth (1 for the top).
func parsePyValue(dec *json.Decoder, depth int) (*pyNode, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		if depth > MaxDepth {
			return nil, ErrTooDeep
		}
		switch t {
		case '[':
			n := &pyNode{kind: 'a'}
			for dec.More() {
				v, err := parsePyValue(dec, depth+1)
				if err != nil {
					return nil, err
				}
				n.values = append(n.values, v)
			}
			_, err := dec.Token() // ]
			return n, err
		case '{':
			n := &pyNode{kind: 'o'}
			index := map[string]int{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				k, _ := kt.(string)
				v, err := parsePyValue(dec, depth+1)
				if err != nil {
					return nil, err
				}
				if i, ok := index[k]; ok {
					n.values[i] = v
					continue
				}
				index[k] = len(n.keys)
				n.keys = append(n.keys, k)
				n.values = append(n.values, v)
			}
			_, err := dec.Token() // }
			return n, err
		}
		return nil, fmt.Errorf("unexpected %v", t)
	case string:
		return &pyNode{kind: 's', str: t}, nil
	case json.Number:
		s, err := pyNumber(string(t))
		return &pyNode{kind: 'n', num: s}, err
	case bool:
		return &pyNode{kind: 'b', bool: t}, nil
	case nil:
		return &pyNode{kind: 'z'}, nil
	}
	return nil, fmt.Errorf("unexpected token %v", tok)
}

// pyNumber maps a JSON number literal to what Python's json module prints
// for it: an int for literals without fraction or exponent, else a float.
func pyNumber(lit string) (string, error) {
	if !strings.ContainsAny(lit, ".eE") {
		var i big.Int
		if _, ok := i.SetString(lit, 10); !ok {
			return "", fmt.Errorf("bad number %q", lit)
		}
		return i.String(), nil
	}
	f, err := strconv.ParseFloat(lit, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return "", fmt.Errorf("bad number %q: %w", lit, err)
	}
	return FloatRepr(f), nil
}

// FloatRepr formats f as Python's repr(float) and json.dumps do: the
// shortest round-tripping digits, scientific notation when the decimal
// exponent is below -4 or at least 16 (1e-05, 1e+16), otherwise fixed with at
// least one fractional digit (100.0). Infinities and NaN are written as
// json.dumps writes them (Infinity, -Infinity, NaN).
func FloatRepr(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	case math.IsNaN(f):
		return "NaN"
	case f == 0:
		if math.Signbit(f) {
			return "-0.0"
		}
		return "0.0"
	}
	e := strconv.FormatFloat(f, 'e', -1, 64) // [-]d[.ddd]e±XX
	sign := ""
	if e[0] == '-' {
		sign, e = "-", e[1:]
	}
	mant, expStr, _ := strings.Cut(e, "e")
	exp, _ := strconv.Atoi(expStr)
	if exp < -4 || exp >= 16 {
		es := "+"
		if exp < 0 {
			es, exp = "-", -exp
		}
		return fmt.Sprintf("%s%se%s%02d", sign, mant, es, exp)
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.Contains(s, ".") {
		s += ".0"
	}
	return s
}

// writePyJSON writes n at nesting level depth (0 for the top; parsePyJSON
// keeps it below MaxDepth, so the indentation fits indent).
func writePyJSON(sb *strings.Builder, n *pyNode, depth int) error {
	if sb.Len() > MaxIndentedJSON {
		return fmt.Errorf("tools JSON: more than %d bytes once indented", MaxIndentedJSON)
	}
	switch n.kind {
	case 's':
		writePyString(sb, n.str)
	case 'n':
		sb.WriteString(n.num)
	case 'b':
		if n.bool {
			sb.WriteString("true")
		} else {
			sb.WriteString("false")
		}
	case 'z':
		sb.WriteString("null")
	case 'a', 'o':
		open, close := "[", "]"
		if n.kind == 'o' {
			open, close = "{", "}"
		}
		if len(n.values) == 0 {
			sb.WriteString(open + close)
			return nil
		}
		sb.WriteString(open)
		for i, v := range n.values {
			if i > 0 {
				sb.WriteByte(',')
			}
			sb.WriteByte('\n')
			sb.WriteString(indent[:4*(depth+1)])
			if n.kind == 'o' {
				writePyString(sb, n.keys[i])
				sb.WriteString(": ")
			}
			if err := writePyJSON(sb, v, depth+1); err != nil {
				return err
			}
		}
		sb.WriteByte('\n')
		sb.WriteString(indent[:4*depth])
		sb.WriteString(close)
	}
	return nil
}

// writePyString writes s as Python's json module does with
// ensure_ascii=False: only the quote, the backslash and control characters
// below U+0020 are escaped.
func writePyString(sb *strings.Builder, s string) {
	sb.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			sb.WriteString(`\"`)
		case '\\':
			sb.WriteString(`\\`)
		case '\n':
			sb.WriteString(`\n`)
		case '\r':
			sb.WriteString(`\r`)
		case '\t':
			sb.WriteString(`\t`)
		case '\b':
			sb.WriteString(`\b`)
		case '\f':
			sb.WriteString(`\f`)
		default:
			if r < 0x20 {
				fmt.Fprintf(sb, `\u%04x`, r)
			} else {
				sb.WriteRune(r)
			}
		}
	}
	sb.WriteByte('"')
}
