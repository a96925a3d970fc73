package python

import (
	"math"
	"math/big"
	"reflect"
	"strings"
	"testing"
)

func TestFloatRepr(t *testing.T) {
	for f, want := range map[float64]string{
		0.5: "0.5", 1e-7: "1e-07", 1e20: "1e+20", 100: "100.0", 1.0 / 3: "0.3333333333333333",
		1e16: "1e+16", 1e15: "1000000000000000.0", 0.0001: "0.0001", 0.00001: "1e-05",
		-2.5: "-2.5", 123456789.125: "123456789.125", 1.5e300: "1.5e+300", 5e-324: "5e-324",
		math.Inf(1): "Infinity", math.Inf(-1): "-Infinity", math.Copysign(0, -1): "-0.0", 0: "0.0",
		9007199254740993: "9007199254740992.0", 1.7976931348623157e308: "1.7976931348623157e+308",
	} {
		if got := FloatRepr(f); got != want {
			t.Errorf("FloatRepr(%v) = %s, want %s", f, got, want)
		}
	}
}

func TestJSONIndentEdgeCases(t *testing.T) {
	for raw, want := range map[string]string{
		`[]`:                              `[]`,
		`{}`:                              `{}`,
		`"a<b>&c\u2028"`:                  "\"a<b>&c\u2028\"",
		`{"b":1,"a":2,"b":3}`:             "{\n    \"b\": 3,\n    \"a\": 2\n}",
		`-0`:                              `0`,
		`1e400`:                           `Infinity`,
		`[1.0, 10, "\u0000\u001f\u007f"]`: "[\n    1.0,\n    10,\n    \"\\u0000\\u001f\u007f\"\n]",
	} {
		got, err := JSONIndent([]byte(raw))
		if err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		if got != want {
			t.Errorf("%s:\n got %q\nwant %q", raw, got, want)
		}
	}
	for _, bad := range []string{``, `[1,]`, `{"a":1} x`, `nope`} {
		if _, err := JSONIndent([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestParseToolCall(t *testing.T) {
	huge, _ := new(big.Int).SetString("123456789012345678901234567890", 10)
	cases := []struct {
		code string
		want Kwargs
	}{
		{`tool_call(location="beijing", unit="celsius")`,
			Kwargs{{"location", "beijing"}, {"unit", "celsius"}}},
		{`tool_call(seed=42, range=(0, 100))`, Kwargs{{"seed", int64(42)}, {"range", Tuple{int64(0), int64(100)}}}},
		{`tool_call()`, Kwargs{}},
		{"  tool_call(\n  a = 'x\\'y',\n  b=\"\"\"multi\nline\"\"\",  # comment\n)\n", Kwargs{{"a", "x'y"}, {"b", "multi\nline"}}},
		{`tool_call(s="tab\tnl\n\x41\u4f60\U0001F600\101\q", r=r"C:\new\"x", c='ab' "cd" u'ef')`,
			Kwargs{{"s", "tab\tnl\nA你😀A\\q"}, {"r", `C:\new\"x`}, {"c", "abcdef"}}},
		{`tool_call(a=-1, b=+2.5, c=1_000, d=0x1F, e=0o17, f=0b101, g=1e-3, h=.5, i=5., j=-1E+3, k=0, l=00)`,
			Kwargs{{"a", int64(-1)}, {"b", 2.5}, {"c", int64(1000)}, {"d", int64(31)}, {"e", int64(15)},
				{"f", int64(5)}, {"g", 0.001}, {"h", 0.5}, {"i", 5.0}, {"j", -1000.0}, {"k", int64(0)}, {"l", int64(0)}}},
		{`tool_call(n=123456789012345678901234567890, m=-9223372036854775808)`,
			Kwargs{{"n", huge}, {"m", int64(math.MinInt64)}}},
		{`tool_call(t=True, f=False, n=None)`, Kwargs{{"t", true}, {"f", false}, {"n", nil}}},
		{`tool_call(l=[1, [2, "3"], ()], t=(1,), p=(1), e=[],)`,
			Kwargs{{"l", []any{int64(1), []any{int64(2), "3"}, Tuple{}}}, {"t", Tuple{int64(1)}}, {"p", int64(1)}, {"e", []any{}}}},
		{`tool_call(d={"a": 1, 2: [None], (1, "x"): {}, "a": 3})`,
			Kwargs{{"d", &Dict{Keys: []any{"a", int64(2), Tuple{int64(1), "x"}}, Values: []any{int64(3), []any{nil}, &Dict{}}}}}},
		{`tool_call(名字="张三")`, Kwargs{{"名字", "张三"}}},
	}
	for _, c := range cases {
		got, err := ParseToolCall(c.code)
		if err != nil {
			t.Errorf("%s: %v", c.code, err)
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s:\n got %#v\nwant %#v", c.code, got, c.want)
		}
	}
}

func TestParseToolCallRejects(t *testing.T) {
	for _, code := range []string{
		``, `foo(a=1)`, `tool_call(1)`, `tool_call(a=1, a=2)`, `tool_call(a=b)`, `tool_call(a=__import__("os"))`,
		`tool_call(a=1+2)`, `tool_call(a=f"{x}")`, `tool_call(a=b"x")`, `tool_call(a={1, 2})`, `tool_call(a=1j)`,
		`tool_call(a=01)`, `tool_call(a="x)`, `tool_call(a=[1, 2)`, `tool_call(a=1) tool_call(b=2)`, `tool_call(a=1`,
		`tool_call(**{"a": 1})`, `tool_call(a="\N{DASH}")`, `tool_call(a={[1]: 2})`, `tool_call(a=1__0)`,
		`tool_call(a=1)\nimport os`, `tool_call(if=1)`, `tool_call(a="\x4")`, `tool_call(a='no newline` + "\n" + `')`,
		`tool_call(a=1.2.3)`, `tool_call(a=1e)`, `tool_call(a=inf)`, `tool_call(a=-True)`,
	} {
		if got, err := ParseToolCall(code); err == nil {
			t.Errorf("%q parsed to %#v, want an error", code, got)
		} else if !strings.HasPrefix(err.Error(), "tool call:") {
			t.Errorf("%q: error %q lacks context", code, err)
		}
	}
}

func TestKwargsJSON(t *testing.T) {
	k, err := ParseToolCall(`tool_call(z="中<&>\"", a=(1, 2.0), d={1: None, True: "t", 1.5: [], None: 0}, big=2**0 if False else 1)`)
	if err == nil {
		t.Fatal("expression accepted")
	}
	k, err = ParseToolCall(`tool_call(z="中<&>\"", a=(1, 2.0, 1e-7), d={1: None, 1.5: [], None: 0, False: 1})`)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"z": "中<&>\"", "a": [1, 2.0, 1e-07], "d": {"1": null, "1.5": [], "null": 0, "false": 1}}`
	got, err := k.PythonJSON()
	if err != nil || got != want {
		t.Fatalf("PythonJSON = %s, %v\nwant %s", got, err, want)
	}
	b, err := k.MarshalJSON()
	if err != nil || string(b) != want {
		t.Fatalf("MarshalJSON = %s, %v", b, err)
	}
	k, _ = ParseToolCall(`tool_call(x=1e999)`)
	if _, err := k.MarshalJSON(); err == nil {
		t.Fatal("MarshalJSON accepted an infinite float")
	}
	if s, _ := k.PythonJSON(); s != `{"x": Infinity}` {
		t.Fatalf("PythonJSON = %s", s)
	}
	k, _ = ParseToolCall(`tool_call(x={(1, 2): 3})`)
	if _, err := k.PythonJSON(); err == nil {
		t.Fatal("tuple key written as JSON")
	}
}
