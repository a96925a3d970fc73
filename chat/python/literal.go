// Package python reproduces the Python-shaped parts of ChatGLM3's tool
// protocol without running Python: the model calls a tool by writing
// tool_call(name=value, ...) with Python literals (ParseToolCall reads it,
// FormatToolCall writes it from JSON arguments), the system prompt embeds
// the tools as json.dumps(tools, indent=4) (JSONIndent), and the official
// API returns arguments as json.dumps(kwargs) (Kwargs.PythonJSON). Input
// comes from models and clients: every walk has a depth limit (MaxDepth)
// and output a size limit.
package python

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The values a tool call's arguments can hold, as Go types:
//
//	Python str          string
//	Python int          int64, or *big.Int when it does not fit
//	Python float        float64
//	True/False          bool
//	None                nil
//	list                []any
//	tuple               Tuple
//	dict                *Dict
//
// Tuple is a Python tuple. In JSON it is an array, as in Python's json.
type Tuple []any

// Dict is a Python dict literal with its keys in source order. Keys are
// str, int, float, bool, None or tuple values.
type Dict struct {
	Keys   []any
	Values []any
}

// Get returns the value of the string key k.
func (d *Dict) Get(k string) (any, bool) {
	for i, key := range d.Keys {
		if s, ok := key.(string); ok && s == k {
			return d.Values[i], true
		}
	}
	return nil, false
}

// Kwarg is one keyword argument of a tool call.
type Kwarg struct {
	Name  string
	Value any
}

// Kwargs are the keyword arguments of a tool call in source order: what the
// official tool_call(**kwargs) returns as a dict.
type Kwargs []Kwarg

// Get returns the value of the argument named name.
func (k Kwargs) Get(name string) (any, bool) {
	for _, a := range k {
		if a.Name == name {
			return a.Value, true
		}
	}
	return nil, false
}

// ParseToolCall parses the code of a ChatGLM3 function call, a single
// expression `tool_call(name=value, ...)` whose values are Python literals:
// strings (with escapes, raw and implicit concatenation), ints, floats,
// True/False/None, lists, tuples and dicts (unary +/- on numbers). Nothing is
// evaluated: names, calls, operators, positional arguments, sets, bytes and
// f-strings are errors.
func ParseToolCall(code string) (Kwargs, error) {
	p := &pyParser{src: code}
	p.skipSpace(true)
	name := p.ident()
	if name != "tool_call" {
		return nil, p.errorf("want tool_call(...), got %q", name)
	}
	p.skipSpace(true)
	if !p.eat('(') {
		return nil, p.errorf("want ( after tool_call")
	}
	var out Kwargs
	seen := map[string]bool{}
	for {
		p.skipSpace(true)
		if p.eat(')') {
			break
		}
		start := p.pos
		k := p.ident()
		p.skipSpace(true)
		if k == "" || !p.eat('=') {
			p.pos = start
			return nil, p.errorf("want keyword=value (positional arguments are not allowed)")
		}
		if isPyKeyword(k) {
			return nil, p.errorf("%q is a Python keyword, not an argument name", k)
		}
		if seen[k] {
			return nil, p.errorf("keyword argument %q repeated", k)
		}
		seen[k] = true
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		out = append(out, Kwarg{k, v})
		p.skipSpace(true)
		if p.eat(')') {
			break
		}
		if !p.eat(',') {
			return nil, p.errorf("want , or ) after argument %s", k)
		}
	}
	p.skipSpace(true)
	if p.pos < len(p.src) {
		return nil, p.errorf("unexpected text after tool_call(...)")
	}
	if out == nil {
		out = Kwargs{}
	}
	return out, nil
}

type pyParser struct {
	src   string
	pos   int
	depth int // brackets open around the value being parsed
}

func (p *pyParser) errorf(format string, args ...any) error {
	line, col := 1, 1
	for _, r := range p.src[:min(p.pos, len(p.src))] {
		if r == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return fmt.Errorf("tool call: line %d col %d: %s", line, col, fmt.Sprintf(format, args...))
}

func (p *pyParser) peek() byte {
	if p.pos < len(p.src) {
		return p.src[p.pos]
	}
	return 0
}

func (p *pyParser) eat(c byte) bool {
	if p.peek() == c {
		p.pos++
		return true
	}
	return false
}

// skipSpace skips blanks, comments and (inside brackets) newlines and
// backslash line continuations.
func (p *pyParser) skipSpace(newlines bool) {
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		switch {
		case c == ' ' || c == '\t' || c == '\f' || c == '\r' || (c == '\n' && newlines):
			p.pos++
		case c == '#':
			for p.pos < len(p.src) && p.src[p.pos] != '\n' {
				p.pos++
			}
		case c == '\\' && strings.HasPrefix(p.src[p.pos+1:], "\n"):
			p.pos += 2
		default:
			return
		}
	}
}

func (p *pyParser) ident() string {
	start := p.pos
	for p.pos < len(p.src) {
		r, n := utf8.DecodeRuneInString(p.src[p.pos:])
		if r == '_' || unicode.IsLetter(r) || (p.pos > start && unicode.IsDigit(r)) {
			p.pos += n
			continue
		}
		break
	}
	return p.src[start:p.pos]
}

// pyKeywords are Python's reserved words, which cannot be argument names.
var pyKeywords = map[string]bool{"False": true, "None": true, "True": true, "and": true, "as": true,
	"assert": true, "async": true, "await": true, "break": true, "class": true, "continue": true,
	"def": true, "del": true, "elif": true, "else": true, "except": true, "finally": true, "for": true,
	"from": true, "global": true, "if": true, "import": true, "in": true, "is": true, "lambda": true,
	"nonlocal": true, "not": true, "or": true, "pass": true, "raise": true, "return": true, "try": true,
	"while": true, "with": true, "yield": true}

func isPyKeyword(s string) bool { return pyKeywords[s] }

// value parses one literal.
func (p *pyParser) value() (any, error) {
	p.skipSpace(true)
	c := p.peek()
	if c == '[' || c == '(' || c == '{' {
		if p.depth >= MaxDepth {
			return nil, p.errorf("%v", ErrTooDeep)
		}
		p.depth++
		defer func() { p.depth-- }()
	}
	switch {
	case c == 0:
		return nil, p.errorf("unexpected end of input")
	case c == '[':
		p.pos++
		items, _, err := p.sequence(']')
		return items, err
	case c == '(':
		p.pos++
		items, trailingComma, err := p.sequence(')')
		if err != nil {
			return nil, err
		}
		if len(items) == 1 && !trailingComma {
			return items[0], nil // parenthesised expression
		}
		return Tuple(items), nil
	case c == '{':
		p.pos++
		return p.dict()
	case c == '"' || c == '\'':
		return p.strings()
	case c == '-' || c == '+' || c == '.' || (c >= '0' && c <= '9'):
		return p.number()
	}
	start := p.pos
	id := p.ident()
	switch id {
	case "True":
		return true, nil
	case "False":
		return false, nil
	case "None":
		return nil, nil
	case "":
		return nil, p.errorf("unexpected %q", c)
	}
	if q := p.peek(); q == '"' || q == '\'' {
		switch strings.ToLower(id) {
		case "r", "u":
			p.pos = start
			return p.strings()
		}
		return nil, p.errorf("%s-prefixed strings are not allowed", id)
	}
	p.pos = start
	return nil, p.errorf("name %q is not a literal (only strings, numbers, True/False/None, lists, tuples and dicts)", id)
}

// sequence parses items up to the closing bracket; it reports whether the
// last item had a trailing comma.
func (p *pyParser) sequence(close byte) ([]any, bool, error) {
	items := []any{}
	trailing := false
	for {
		p.skipSpace(true)
		if p.eat(close) {
			return items, trailing, nil
		}
		v, err := p.value()
		if err != nil {
			return nil, false, err
		}
		items = append(items, v)
		p.skipSpace(true)
		if p.eat(close) {
			return items, false, nil
		}
		if !p.eat(',') {
			return nil, false, p.errorf("want , or %c", close)
		}
		trailing = true
	}
}

func (p *pyParser) dict() (any, error) {
	d := &Dict{}
	for {
		p.skipSpace(true)
		if p.eat('}') {
			return d, nil
		}
		k, err := p.value()
		if err != nil {
			return nil, err
		}
		p.skipSpace(true)
		if !p.eat(':') {
			if len(d.Keys) == 0 && (p.peek() == ',' || p.peek() == '}') {
				return nil, p.errorf("sets are not allowed")
			}
			return nil, p.errorf("want : after dict key")
		}
		if err := checkHashable(k); err != nil {
			return nil, p.errorf("%v", err)
		}
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		if i := dictIndex(d, k); i >= 0 {
			d.Values[i] = v // Python keeps the first key position, the last value
		} else {
			d.Keys = append(d.Keys, k)
			d.Values = append(d.Values, v)
		}
		p.skipSpace(true)
		if p.eat('}') {
			return d, nil
		}
		if !p.eat(',') {
			return nil, p.errorf("want , or }")
		}
	}
}

func checkHashable(k any) error {
	switch k := k.(type) {
	case []any, *Dict:
		return errors.New("unhashable dict key (list or dict)")
	case Tuple:
		for _, e := range k {
			if err := checkHashable(e); err != nil {
				return err
			}
		}
	}
	return nil
}

// dictIndex finds an equal key, with Python's equality for the literal
// types (1 == 1.0 == True).
func dictIndex(d *Dict, k any) int {
	for i, key := range d.Keys {
		if pyEqual(key, k) {
			return i
		}
	}
	return -1
}

func pyEqual(a, b any) bool {
	if fa, ok := pyNumeric(a); ok {
		fb, ok := pyNumeric(b)
		return ok && fa.Cmp(fb) == 0
	}
	switch a := a.(type) {
	case string:
		s, ok := b.(string)
		return ok && a == s
	case nil:
		return b == nil
	case Tuple:
		t, ok := b.(Tuple)
		if !ok || len(t) != len(a) {
			return false
		}
		for i := range a {
			if !pyEqual(a[i], t[i]) {
				return false
			}
		}
		return true
	}
	return false
}

func pyNumeric(v any) (*big.Float, bool) {
	switch v := v.(type) {
	case bool:
		if v {
			return big.NewFloat(1), true
		}
		return big.NewFloat(0), true
	case int64:
		return new(big.Float).SetInt64(v), true
	case *big.Int:
		return new(big.Float).SetInt(v), true
	case float64:
		if v != v {
			return nil, false
		}
		return big.NewFloat(v), true
	}
	return nil, false
}

// strings parses one or more adjacent string literals (implicit
// concatenation).
func (p *pyParser) strings() (any, error) {
	var sb strings.Builder
	for {
		s, err := p.stringLit()
		if err != nil {
			return nil, err
		}
		sb.WriteString(s)
		save := p.pos
		p.skipSpace(true)
		c := p.peek()
		if c == '"' || c == '\'' {
			continue
		}
		if c == 'r' || c == 'R' || c == 'u' || c == 'U' {
			if q := p.src[min(p.pos+1, len(p.src)-1)]; q == '"' || q == '\'' {
				continue
			}
		}
		p.pos = save
		return sb.String(), nil
	}
}

func (p *pyParser) stringLit() (string, error) {
	raw := false
	switch p.peek() {
	case 'r', 'R':
		raw = true
		p.pos++
	case 'u', 'U':
		p.pos++
	}
	q := p.peek()
	if q != '"' && q != '\'' {
		return "", p.errorf("want a string")
	}
	quote := string(q)
	if strings.HasPrefix(p.src[p.pos:], strings.Repeat(quote, 3)) {
		quote = strings.Repeat(quote, 3)
	}
	start := p.pos
	p.pos += len(quote)
	var sb strings.Builder
	for {
		if p.pos >= len(p.src) {
			p.pos = start
			return "", p.errorf("unterminated string")
		}
		if strings.HasPrefix(p.src[p.pos:], quote) {
			p.pos += len(quote)
			return sb.String(), nil
		}
		c := p.src[p.pos]
		if c == '\n' && len(quote) == 1 {
			p.pos = start
			return "", p.errorf("unterminated string (newline inside a one-line string)")
		}
		if c != '\\' {
			r, n := utf8.DecodeRuneInString(p.src[p.pos:])
			sb.WriteRune(r)
			p.pos += n
			continue
		}
		if p.pos+1 >= len(p.src) {
			p.pos = start
			return "", p.errorf("unterminated string")
		}
		if raw {
			// A raw string keeps the backslash; it still escapes a quote.
			sb.WriteByte('\\')
			r, n := utf8.DecodeRuneInString(p.src[p.pos+1:])
			sb.WriteRune(r)
			p.pos += 1 + n
			continue
		}
		if err := p.escape(&sb); err != nil {
			return "", err
		}
	}
}

// escape decodes one backslash escape of a (non-raw) Python string.
func (p *pyParser) escape(sb *strings.Builder) error {
	e := p.src[p.pos+1]
	p.pos += 2
	simple := map[byte]string{'\\': "\\", '\'': "'", '"': "\"", 'a': "\a", 'b': "\b",
		'f': "\f", 'n': "\n", 'r': "\r", 't': "\t", 'v': "\v", '\n': ""}
	if s, ok := simple[e]; ok {
		sb.WriteString(s)
		return nil
	}
	hex := func(n int) error {
		if p.pos+n > len(p.src) {
			return p.errorf("truncated \\%c escape", e)
		}
		v, err := strconv.ParseUint(p.src[p.pos:p.pos+n], 16, 32)
		if err != nil || strings.ContainsAny(p.src[p.pos:p.pos+n], "+-_") {
			return p.errorf("bad \\%c escape", e)
		}
		if v > unicode.MaxRune {
			return p.errorf("\\%c escape out of range", e)
		}
		p.pos += n
		sb.WriteRune(rune(v))
		return nil
	}
	switch e {
	case 'x':
		return hex(2)
	case 'u':
		return hex(4)
	case 'U':
		return hex(8)
	case 'N':
		return p.errorf("\\N{...} escapes are not supported")
	}
	if e >= '0' && e <= '7' {
		v := int(e - '0')
		for i := 0; i < 2 && p.pos < len(p.src) && p.src[p.pos] >= '0' && p.src[p.pos] <= '7'; i++ {
			v = v*8 + int(p.src[p.pos]-'0')
			p.pos++
		}
		sb.WriteRune(rune(v))
		return nil
	}
	// Unknown escapes keep the backslash, as Python does.
	sb.WriteByte('\\')
	p.pos--
	return nil
}

// number parses an int or float literal with optional unary signs.
func (p *pyParser) number() (any, error) {
	neg := false
	for {
		p.skipSpace(false)
		if p.eat('-') {
			neg = !neg
		} else if !p.eat('+') {
			break
		}
	}
	start := p.pos
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		isExpSign := (c == '+' || c == '-') && p.pos > start &&
			(p.src[p.pos-1] == 'e' || p.src[p.pos-1] == 'E') && !strings.HasPrefix(strings.ToLower(p.src[start:]), "0x")
		if c == '_' || c == '.' || isExpSign || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' {
			p.pos++
			continue
		}
		break
	}
	lit := p.src[start:p.pos]
	if lit == "" {
		return nil, p.errorf("want a number")
	}
	v, err := parsePyNumber(lit)
	if err != nil {
		p.pos = start
		return nil, p.errorf("%v", err)
	}
	if neg {
		switch x := v.(type) {
		case int64:
			if x == -x && x != 0 { // MinInt64 cannot be negated
				return new(big.Int).Neg(big.NewInt(x)), nil
			}
			return -x, nil
		case *big.Int:
			return normInt(new(big.Int).Neg(x)), nil
		case float64:
			return -x, nil
		}
	}
	return v, nil
}

func parsePyNumber(lit string) (any, error) {
	if strings.HasSuffix(lit, "j") || strings.HasSuffix(lit, "J") {
		return nil, fmt.Errorf("complex number %q is not allowed", lit)
	}
	if strings.HasPrefix(lit, "_") || strings.HasSuffix(lit, "_") || strings.Contains(lit, "__") {
		return nil, fmt.Errorf("bad number %q", lit)
	}
	low := strings.ToLower(lit)
	base := 10
	digits := low
	switch {
	case strings.HasPrefix(low, "0x"):
		base, digits = 16, low[2:]
	case strings.HasPrefix(low, "0o"):
		base, digits = 8, low[2:]
	case strings.HasPrefix(low, "0b"):
		base, digits = 2, low[2:]
	}
	digits = strings.TrimPrefix(digits, "_")
	if base != 10 || !strings.ContainsAny(low, ".e") {
		clean := strings.ReplaceAll(digits, "_", "")
		if clean == "" || strings.Contains(digits, "__") {
			return nil, fmt.Errorf("bad number %q", lit)
		}
		if base == 10 && len(clean) > 1 && clean[0] == '0' && strings.Trim(clean, "0") != "" {
			return nil, fmt.Errorf("leading zeros in decimal integer %q are not allowed", lit)
		}
		var i big.Int
		if _, ok := i.SetString(clean, base); !ok {
			return nil, fmt.Errorf("bad number %q", lit)
		}
		return normInt(&i), nil
	}
	// A float: digits, optional fraction, optional exponent; underscores only
	// between digits.
	for i := 0; i < len(low); i++ {
		if low[i] == '_' && !(i > 0 && isDigit(low[i-1]) && i+1 < len(low) && isDigit(low[i+1])) {
			return nil, fmt.Errorf("bad number %q", lit)
		}
	}
	clean := strings.ReplaceAll(low, "_", "")
	for _, c := range clean {
		if !(c >= '0' && c <= '9' || c == '.' || c == 'e' || c == '+' || c == '-') {
			return nil, fmt.Errorf("bad number %q", lit)
		}
	}
	f, err := strconv.ParseFloat(clean, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return nil, fmt.Errorf("bad number %q", lit)
	}
	return f, nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func normInt(i *big.Int) any {
	if i.IsInt64() {
		return i.Int64()
	}
	return i
}

// FormatToolCall writes a function call's JSON arguments (an object, or
// empty for none) as the ChatGLM3 model writes calls: tool_call(name=value,
// ...) with Python literals, in the arguments' order. Keys that are not
// ASCII Python identifiers go into a trailing **{...}. The arguments may come
// from anyone: values nested deeper than MaxDepth are an error.
func FormatToolCall(arguments string) (string, error) {
	arguments = strings.TrimSpace(arguments)
	if arguments == "" {
		return "tool_call()", nil
	}
	dec := json.NewDecoder(strings.NewReader(arguments))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", errors.New("want a JSON object")
	}
	var kw, extra []string
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return "", err
		}
		k, _ := kt.(string)
		var sb strings.Builder
		if err := writePyLiteral(&sb, dec, 2); err != nil {
			return "", err
		}
		if isASCIIIdentifier(k) && !isPyKeyword(k) {
			kw = append(kw, k+"="+sb.String())
		} else {
			var ks strings.Builder
			writePyString(&ks, k)
			extra = append(extra, ks.String()+": "+sb.String())
		}
	}
	if _, err := dec.Token(); err != nil {
		return "", err
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", errors.New("extra data after the JSON object")
	}
	if len(extra) > 0 {
		kw = append(kw, "**{"+strings.Join(extra, ", ")+"}")
	}
	return "tool_call(" + strings.Join(kw, ", ") + ")", nil
}

// writePyLiteral copies the JSON value that starts at dec's next token, at
// nesting level depth, as a Python literal.
func writePyLiteral(sb *strings.Builder, dec *json.Decoder, depth int) error {
	t, err := dec.Token()
	if err != nil {
		return err
	}
	switch v := t.(type) {
	case json.Delim:
		if depth > MaxDepth {
			return ErrTooDeep
		}
		sb.WriteString(v.String())
		for i := 0; dec.More(); i++ {
			if i > 0 {
				sb.WriteString(", ")
			}
			if v == '{' {
				k, err := dec.Token()
				if err != nil {
					return err
				}
				ks, _ := k.(string)
				writePyString(sb, ks)
				sb.WriteString(": ")
			}
			if err := writePyLiteral(sb, dec, depth+1); err != nil {
				return err
			}
		}
		end, err := dec.Token()
		if err != nil {
			return err
		}
		d, ok := end.(json.Delim)
		if !ok {
			return fmt.Errorf("unexpected %v", end)
		}
		sb.WriteString(d.String())
	case string:
		writePyString(sb, v)
	case json.Number:
		sb.WriteString(v.String())
	case bool:
		if v {
			sb.WriteString("True")
		} else {
			sb.WriteString("False")
		}
	case nil:
		sb.WriteString("None")
	}
	return nil
}

// isASCIIIdentifier reports whether s is a Python identifier made of ASCII
// letters, digits and underscores.
func isASCIIIdentifier(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}
