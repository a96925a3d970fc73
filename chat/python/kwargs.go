package python

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"unicode"
)

// PythonJSON returns the arguments as Python's json.dumps(kwargs,
// ensure_ascii=False) writes them (the official API server's
// function_call.arguments): ", " and ": " separators, key order kept,
// tuples as arrays, non-string dict keys converted as Python converts them.
// Non-finite floats are written as Python writes them (NaN, Infinity), which
// strict JSON parsers reject.
func (k Kwargs) PythonJSON() (string, error) {
	var sb strings.Builder
	sb.WriteByte('{')
	for i, a := range k {
		if i > 0 {
			sb.WriteString(", ")
		}
		writePyString(&sb, a.Name)
		sb.WriteString(": ")
		if err := writePyValueJSON(&sb, a.Value); err != nil {
			return "", fmt.Errorf("argument %s: %w", a.Name, err)
		}
	}
	sb.WriteByte('}')
	return sb.String(), nil
}

// MarshalJSON writes the arguments as a JSON object in source order. Unlike
// PythonJSON it fails on NaN and infinite floats, which JSON cannot hold.
func (k Kwargs) MarshalJSON() ([]byte, error) {
	if err := checkFinite(k); err != nil {
		return nil, err
	}
	s, err := k.PythonJSON()
	return []byte(s), err
}

func checkFinite(v any) error {
	switch v := v.(type) {
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("%v cannot be written as JSON", v)
		}
	case Kwargs:
		for _, a := range v {
			if err := checkFinite(a.Value); err != nil {
				return err
			}
		}
	case []any:
		for _, e := range v {
			if err := checkFinite(e); err != nil {
				return err
			}
		}
	case Tuple:
		return checkFinite([]any(v))
	case *Dict:
		if err := checkFinite(v.Keys); err != nil {
			return err
		}
		return checkFinite(v.Values)
	}
	return nil
}

func writePyValueJSON(sb *strings.Builder, v any) error {
	switch v := v.(type) {
	case nil:
		sb.WriteString("null")
	case bool:
		sb.WriteString(strconv.FormatBool(v))
	case string:
		writePyString(sb, v)
	case int64:
		sb.WriteString(strconv.FormatInt(v, 10))
	case *big.Int:
		sb.WriteString(v.String())
	case float64:
		sb.WriteString(FloatRepr(v))
	case []any:
		return writePyArrayJSON(sb, v)
	case Tuple:
		return writePyArrayJSON(sb, v)
	case *Dict:
		sb.WriteByte('{')
		for i := range v.Keys {
			if i > 0 {
				sb.WriteString(", ")
			}
			key, err := pyJSONKey(v.Keys[i])
			if err != nil {
				return err
			}
			writePyString(sb, key)
			sb.WriteString(": ")
			if err := writePyValueJSON(sb, v.Values[i]); err != nil {
				return err
			}
		}
		sb.WriteByte('}')
	default:
		return fmt.Errorf("unsupported value type %T", v)
	}
	return nil
}

func writePyArrayJSON(sb *strings.Builder, items []any) error {
	sb.WriteByte('[')
	for i, e := range items {
		if i > 0 {
			sb.WriteString(", ")
		}
		if err := writePyValueJSON(sb, e); err != nil {
			return err
		}
	}
	sb.WriteByte(']')
	return nil
}

// pyJSONKey converts a dict key as Python's json module does.
func pyJSONKey(k any) (string, error) {
	switch k := k.(type) {
	case string:
		return k, nil
	case nil:
		return "null", nil
	case bool:
		return strconv.FormatBool(k), nil
	case int64:
		return strconv.FormatInt(k, 10), nil
	case *big.Int:
		return k.String(), nil
	case float64:
		return FloatRepr(k), nil
	}
	return "", errors.New("keys must be str, int, float, bool or None, not tuple")
}

// IsSpace is Python's str.isspace for one character: Unicode White_Space
// plus the separators U+001C..U+001F.
// IsSpace reports a character Python's str.strip() removes: Unicode white
// space and the separators U+001C..U+001F.
func IsSpace(r rune) bool { return unicode.IsSpace(r) || (r >= 0x1c && r <= 0x1f) }
