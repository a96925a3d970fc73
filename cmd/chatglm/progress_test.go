package main

import (
	"bytes"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chatglm/chatglm/hub/hubtest"
	"github.com/chatglm/chatglm/internal/fixture/vtscreen"
)

// TestGetProgressInTerminal captures `chatglm get` in a terminal: a pull
// bar with bytes done / total, speed and files, then a convert bar with
// tensors and bytes, and stage lines each on a line of their own, so that
// the screen at the end reads pull -> convert -> check -> ready.
func TestGetProgressInTerminal(t *testing.T) {
	srv := fakeHubWithTinyModel(t)
	srv.SetFault(func(hubtest.Request) hubtest.Fault { return hubtest.Fault{Throttle: 20 * time.Millisecond} })
	store := t.TempDir()
	tm := startTerm(t, "get", "test/tiny-chatglm3", "--models-dir", store, "--endpoint", srv.URL())
	if err := tm.wait(); err != nil {
		t.Fatalf("get: %v\n%s", err, tm.scr.raw())
	}
	raw := tm.scr.raw()
	for _, re := range []string{
		`pulling  [0-9.]+ / [0-9.]+ [kMG]?B \[[= >]+\] +[0-9]+%  [0-9.]+ [kMG]?B/s  ETA [^ ]+  [0-9]/[0-9] files`,
		`converting: tensor [0-9]+/[0-9]+ [a-z_.0-9]+  [0-9.]+ / [0-9.]+ [kMG]?B \[`,
	} {
		if !regexp.MustCompile(re).MatchString(raw) {
			t.Errorf("no frame matching %s in:\n%q", re, raw)
		}
	}
	vt := vtscreen.New(200, 60)
	vt.Write([]byte(raw))
	lines := strings.Split(vt.String(), "\n")
	want := []string{
		`^pulling test/tiny-chatglm3\.\.\.$`,
		`^pulled [0-9.]+ [kM]?B of [0-9.]+ [kM]?B in [0-9.]+m?s \([0-9.]+ [kM]?B/s\)$`,
		`^converting test/tiny-chatglm3 to f16 GGUF\.\.\.$`,
		`^converted [0-9]+ tensors, [0-9.]+ [kM]?B in [0-9.]+m?s$`,
		`^checking .*\.gguf\.\.\.$`,
		`^test/tiny-chatglm3 is converted: .*\.gguf$`,
		`^next: chatglm chat -m test/tiny-chatglm3$`,
		`^` + regexp.QuoteMeta(store) + `.*\.gguf$`,
	}
	if len(lines) != len(want) {
		t.Fatalf("the screen has %d lines, want %d:\n%s", len(lines), len(want), vt.String())
	}
	for i, w := range want {
		if !regexp.MustCompile(w).MatchString(lines[i]) {
			t.Fatalf("line %d %q does not match %s; screen:\n%s", i+1, lines[i], w, vt.String())
		}
	}

	// Off a terminal: plain lines, no escape codes, no carriage returns.
	srv.SetFault(nil)
	store2 := t.TempDir()
	cmd := helperCmd(t, "get", "test/tiny-chatglm3", "--models-dir", store2, "--endpoint", srv.URL())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	if s := stderr.String(); strings.ContainsAny(s, "\r\x1b") || !strings.Contains(s, "pull: ") || !strings.Contains(s, "\nconverting: tensor 1/") || strings.Count(s, "\n") > 20 {
		t.Fatalf("stderr off a terminal:\n%s", s)
	}
}

// TestQuantizeProgressInTerminal: the quantize bar shows bytes while it
// runs and leaves only the result (the convert bar is in the get test).
func TestQuantizeProgressInTerminal(t *testing.T) {
	model := tinyModel(t)
	out := filepath.Join(t.TempDir(), "tiny-q8_0.gguf")
	tm := startTerm(t, "quantize", model, out, "q8_0")
	if err := tm.wait(); err != nil {
		t.Fatalf("quantize: %v\n%s", err, tm.scr.raw())
	}
	raw := tm.scr.raw()
	if !regexp.MustCompile(`quantizing to q8_0 \(size estimated\)  [0-9.]+ / [0-9.]+ [kMG]?B \[[= >]+\] +[0-9]+%`).MatchString(raw) {
		t.Errorf("no quantize bar in %q", raw)
	}
	vt := vtscreen.New(200, 20)
	vt.Write([]byte(raw))
	if got := vt.String(); !regexp.MustCompile(`^wrote .*tiny-q8_0\.gguf \(q8_0, [0-9.]+ GiB\) in [0-9.]+m?s$`).MatchString(got) {
		t.Errorf("screen after quantize:\n%s", got)
	}
}
