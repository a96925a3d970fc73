package python

import (
	"errors"
	"runtime"
	"strings"
	"testing"
)

// nested returns n opening brackets around v and the n closing ones.
func nested(n int, open, close, v string) string {
	return strings.Repeat(open, n) + v + strings.Repeat(close, n)
}

func TestFormatToolCall(t *testing.T) {
	for args, want := range map[string]string{
		``:                                 `tool_call()`,
		`{}`:                               `tool_call()`,
		`{"seed": 42, "range": [0, 100]}`:  `tool_call(seed=42, range=[0, 100])`,
		`{"q": "a \"b\" <c>", "x": 1e3}`:   `tool_call(q="a \"b\" <c>", x=1e3)`,
		`{"class": false}`:                 `tool_call(**{"class": False})`,
		`{"城市": null, "o": {"k": [true]}}`: `tool_call(o={"k": [True]}, **{"城市": None})`,
	} {
		got, err := FormatToolCall(args)
		if err != nil || got != want {
			t.Errorf("%s: got %q %v, want %q", args, got, err, want)
		}
		if _, err := ParseToolCall(got); err != nil && !strings.Contains(got, "**{") {
			t.Errorf("%s: %s does not parse back: %v", args, got, err)
		}
	}
	for _, bad := range []string{`[1]`, `{"a":}`, `{"a":1} x`, `"s"`, `{"a": [}`} {
		if _, err := FormatToolCall(bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

// Issue 11 item 8: 2 MB of nested '[' in a call's arguments ended the
// process with a stack overflow; now it is ErrTooDeep after MaxDepth levels.
func TestFormatToolCallDepthLimit(t *testing.T) {
	ok := `{"a": ` + nested(MaxDepth-1, "[", "]", "1") + `}`
	if _, err := FormatToolCall(ok); err != nil {
		t.Fatalf("%d levels: %v", MaxDepth, err)
	}
	for _, deep := range []string{
		`{"a": ` + nested(MaxDepth, "[", "]", "1") + `}`,
		`{"a": ` + strings.Repeat("[", 2<<20),
		`{"a": ` + strings.Repeat(`{"b":`, 1<<20),
	} {
		if _, err := FormatToolCall(deep); !errors.Is(err, ErrTooDeep) {
			t.Errorf("%.20s... (%d bytes): %v, want ErrTooDeep", deep, len(deep), err)
		}
	}
}

func TestParseToolCallDepthLimit(t *testing.T) {
	if _, err := ParseToolCall("tool_call(a=" + nested(MaxDepth, "[", "]", "1") + ")"); err != nil {
		t.Fatalf("%d levels: %v", MaxDepth, err)
	}
	for _, deep := range []string{
		"tool_call(a=" + nested(MaxDepth+1, "[", "]", "1") + ")",
		"tool_call(a=" + strings.Repeat("(", 1<<20),
		"tool_call(a=" + strings.Repeat("{1:", 1<<20),
	} {
		if _, err := ParseToolCall(deep); err == nil || !strings.Contains(err.Error(), ErrTooDeep.Error()) {
			t.Errorf("%.20s... (%d bytes): %v, want ErrTooDeep", deep, len(deep), err)
		}
	}
}

// Issue 11 item 9: 6 KB of nested [] in a tool's parameters grew memory to
// gigabytes (the indentation is quadratic in the depth). Now deep values
// are refused at once, and the output is capped.
func TestJSONIndentLimits(t *testing.T) {
	if _, err := JSONIndent([]byte(nested(MaxDepth, "[", "]", ""))); err != nil {
		t.Fatalf("%d levels: %v", MaxDepth, err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	deep := nested(3000, "[", "]", "")
	if _, err := JSONIndent([]byte(deep)); !errors.Is(err, ErrTooDeep) {
		t.Errorf("3000 levels: %v, want ErrTooDeep", err)
	}
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
		t.Errorf("3000 levels allocated %d bytes", alloc)
	}
	// Wide and deep: 60 levels of arrays holding 200k zeros renders to
	// about 50 MB; the cap stops it.
	wide := nested(60, "[", "]", strings.Repeat("0,", 200000)+"0")
	if _, err := JSONIndent([]byte(wide)); err == nil || !strings.Contains(err.Error(), "bytes once indented") {
		t.Errorf("wide: %v, want the size error", err)
	}
}

func FuzzJSONIndent(f *testing.F) {
	for _, s := range []string{`[]`, `{"a": [1, 2.5, "x", null, true]}`, `[{"name": "f", "parameters": {}}]`, nested(70, "[", "]", "")} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		out, err := JSONIndent(raw)
		if err == nil && len(out) > MaxIndentedJSON+4*(MaxDepth+2)+len(raw) {
			t.Fatalf("%d bytes of output", len(out))
		}
	})
}

func FuzzParseToolCall(f *testing.F) {
	for _, s := range []string{`tool_call(a=1, b="x", c=[1, (2,), {3: None}])`, `tool_call()`, `tool_call(a=r'\q' "y", b=-0x1_0)`,
		"tool_call(a=" + nested(70, "[", "]", "") + ")"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, code string) {
		kw, err := ParseToolCall(code)
		if err != nil {
			return
		}
		// What parses can be written back as JSON (or fails cleanly).
		if js, err := kw.PythonJSON(); err == nil {
			if _, err := JSONIndent([]byte(js)); err != nil && !strings.Contains(js, "NaN") && !strings.Contains(js, "Infinity") {
				t.Fatalf("%q: PythonJSON %s does not re-read: %v", code, js, err)
			}
		}
	})
}

func FuzzFormatToolCall(f *testing.F) {
	for _, s := range []string{`{"a": 1, "b": [true, null], "c d": {"e": "f"}}`, ``, `{}`, `{"a": ` + nested(70, "[", "]", "") + `}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, args string) {
		code, err := FormatToolCall(args)
		if err != nil || strings.Contains(code, "**{") { // ParseToolCall takes no **kwargs
			return
		}
		if _, err := ParseToolCall(code); err != nil {
			t.Fatalf("%q: %s does not parse: %v", args, code, err)
		}
	})
}
