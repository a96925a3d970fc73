package web_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/input"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/chatglm/chatglm/internal/fixture/testbin"
	"github.com/chatglm/chatglm/internal/fixture/testmodel"
	"github.com/chatglm/chatglm/server"
)

func TestMain(m *testing.M) { testmodel.Main(m) }

// newBrowser starts headless Chromium. Without it the test is skipped,
// unless CI=true, where a missing browser is a failure (.ci/run installs it).
func newBrowser(t testing.TB) context.Context {
	t.Helper()
	var exe string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			exe = p
			break
		}
	}
	if exe == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("Chromium is not installed (CI=true): .ci/run installs the Debian package chromium")
		}
		t.Skip("Chromium is not installed; install the Debian package chromium to run the browser tests")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.WindowSize(1280, 860), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("lang", "en-US"))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelB := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelB(); cancelA() })
	if err := chromedp.Run(bctx); err != nil {
		t.Fatalf("start %s: %v", exe, err)
	}
	return bctx
}

// page is one browser tab on the chat page, recording console errors,
// exceptions and every URL the page requests.
type page struct {
	t      testing.TB
	ctx    context.Context
	origin string
	mu     sync.Mutex
	errs   []string
	urls   []string
	allow  []string // console errors to accept (substrings)
}

func openPage(t testing.TB, bctx context.Context, url string) *page {
	t.Helper()
	ctx, cancel := chromedp.NewContext(bctx)
	t.Cleanup(cancel)
	ctx, cancelT := context.WithTimeout(ctx, 5*time.Minute)
	t.Cleanup(cancelT)
	p := &page{t: t, ctx: ctx, origin: strings.TrimSuffix(url, "/")}
	chromedp.ListenTarget(ctx, func(ev interface{}) {
		p.mu.Lock()
		defer p.mu.Unlock()
		switch e := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.APITypeError || e.Type == runtime.APITypeAssert {
				var parts []string
				for _, a := range e.Args {
					parts = append(parts, string(a.Value)+a.Description)
				}
				p.errs = append(p.errs, "console."+string(e.Type)+": "+strings.Join(parts, " "))
			}
		case *runtime.EventExceptionThrown:
			p.errs = append(p.errs, "exception: "+e.ExceptionDetails.Error())
		case *cdplog.EventEntryAdded:
			if e.Entry.Level == cdplog.LevelError {
				p.errs = append(p.errs, "log: "+e.Entry.Text+" "+e.Entry.URL)
			}
		case *network.EventRequestWillBeSent:
			p.urls = append(p.urls, e.Request.URL)
		}
	})
	p.run(network.Enable(), cdplog.Enable(), chromedp.Navigate(url), chromedp.WaitVisible("#input", chromedp.ByID))
	return p
}

func (p *page) run(actions ...chromedp.Action) {
	p.t.Helper()
	if err := chromedp.Run(p.ctx, actions...); err != nil {
		p.t.Fatalf("browser: %v\nconsole errors: %v", err, p.errors())
	}
}

func (p *page) errors() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
next:
	for _, e := range p.errs {
		for _, a := range p.allow {
			if strings.Contains(e, a) {
				continue next
			}
		}
		out = append(out, e)
	}
	return out
}

// allowErrors sets the console errors that are expected from now on.
func (p *page) allowErrors(subs ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.allow = subs
}

// checkClean fails on console errors and on requests that left the origin.
func (p *page) checkClean() {
	p.t.Helper()
	if errs := p.errors(); len(errs) > 0 {
		p.t.Errorf("console errors:\n%s", strings.Join(errs, "\n"))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, u := range p.urls {
		if !strings.HasPrefix(u, p.origin+"/") && !strings.HasPrefix(u, "blob:"+p.origin+"/") && !strings.HasPrefix(u, "data:") {
			p.t.Errorf("request left the origin %s: %s", p.origin, u)
		}
	}
}

func evalJS[T any](p *page, expr string) T {
	p.t.Helper()
	var v T
	p.run(chromedp.Evaluate(expr, &v))
	return v
}

// waitJS polls a JavaScript condition until it is true.
func (p *page) waitJS(expr string, d time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(d)
	for {
		var ok bool
		err := chromedp.Run(p.ctx, chromedp.Evaluate(expr, &ok))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("waited %v for %s (last error %v)\nconsole errors: %v", d, expr, err, p.errors())
		}
		time.Sleep(30 * time.Millisecond)
	}
}

// key sends one key event as a keyboard would.
func key(typ input.KeyType, key string, vk int64, mods input.Modifier, text string) chromedp.Action {
	return input.DispatchKeyEvent(typ).WithKey(key).WithCode(key).WithWindowsVirtualKeyCode(vk).
		WithNativeVirtualKeyCode(vk).WithModifiers(mods).WithText(text).WithUnmodifiedText(text)
}

func pressEnter(mods input.Modifier) chromedp.Action {
	return chromedp.Tasks{key(input.KeyDown, "Enter", 13, mods, "\r"), key(input.KeyUp, "Enter", 13, mods, "")}
}

// typeAndSend types text into the message box and presses Enter.
func (p *page) typeAndSend(text string) {
	p.t.Helper()
	p.run(chromedp.Focus("#input", chromedp.ByID), input.InsertText(text), pressEnter(0))
}

const idle = `!document.body.classList.contains('busy')`

// lastReply is the text of the last message's body.
const lastReply = `((document.querySelector('#messages article:last-of-type .body')||{}).textContent||'')`

func screenshotDir(t testing.TB) string {
	dir := os.Getenv("CHATGLM_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "chatglm-web-screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func (p *page) screenshot(name string) {
	p.t.Helper()
	var buf []byte
	p.run(chromedp.CaptureScreenshot(&buf))
	path := filepath.Join(screenshotDir(p.t), name)
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("screenshot: %s", path)
}

// fakeServer serves the page and the API in process over a scripted backend.
func fakeServer(t testing.TB, apiKey string) (*httptest.Server, *fakeBackend) {
	t.Helper()
	pg := newPage(t)
	srv := server.New(server.Options{ModelID: "tiny", APIKey: apiKey, Web: pg, Queue: 4,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	fb := newFakeBackend(2, 4096)
	srv.SetBackend(fb)
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return ts, fb
}

func metric(t *testing.T, base, key, name string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/metrics", nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	t.Fatalf("/metrics has no %s:\n%s", name, b)
	return ""
}

const markdownReply = "Here is **bold**, *italic*, `inline code` and ~~struck~~ text.\n\n" +
	"1. first\n2. second\n   - nested\n\n" +
	"| city | temp |\n|---|--:|\n| 北京 | 21 |\n| Paris | 18 |\n\n" +
	"```go\nfmt.Println(\"hi\")\n```\n\n> a quote"

// TestPageFakeBackend drives the page against the server's real HTTP code
// over a scripted backend whose replies and speed the test chooses: the page
// loads clean, a reply streams in over several updates and shows its token
// counts, Markdown renders, Stop frees the sequence, reload keeps the
// conversation, regenerate, edit-and-continue, copy, the sidebar, tool calls
// and observations, XSS payloads stay inert, IME Enter, Shift+Enter,
// keyboard-only use, dark mode and a phone-width viewport.
func TestPageFakeBackend(t *testing.T) {
	bctx := newBrowser(t)
	ts, fb := fakeServer(t, "")
	p := openPage(t, bctx, ts.URL+"/")
	p.waitJS(`document.getElementById('defaults').textContent.includes('temperature 0.7')`, 10*time.Second)

	// A streamed reply grows over several updates and ends with token counts.
	fb.setReply(func(string) string { return markdownReply })
	fb.delay.Store(int64(15 * time.Millisecond))
	p.run(chromedp.Evaluate(`window.__lens = []; new MutationObserver(() => {
		const b = document.querySelector('#messages article.role-assistant:last-of-type .body');
		if (b && window.__lens[window.__lens.length-1] !== b.textContent.length) window.__lens.push(b.textContent.length);
	}).observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true}); true`, nil))
	p.typeAndSend("Show me some Markdown")
	p.waitJS(`document.body.classList.contains('busy')`, 5*time.Second)
	p.waitJS(idle, 30*time.Second)
	lens := evalJS[[]int](p, `window.__lens`)
	if len(lens) < 5 {
		t.Errorf("the reply appeared in %d updates (%v); want it to stream in over several", len(lens), lens)
	}
	stats := evalJS[string](p, `document.querySelector('#messages article:last-of-type .stats').textContent`)
	if !strings.Contains(stats, "tokens/s") || !strings.Contains(stats, fmt.Sprintf("%d tokens", len([]rune(markdownReply))+1)) {
		t.Errorf("reply stats %q: want the token count and tokens/s", stats)
	}
	if s := evalJS[string](p, `document.getElementById('ctx-use').textContent`); !strings.Contains(s, "/ 4096") {
		t.Errorf("context use %q", s)
	}
	md := evalJS[map[string]int](p, `(() => { const b = document.querySelector('#messages article:last-of-type .body');
		const n = (s) => b.querySelectorAll(s).length;
		return {strong: n('strong'), em: n('em'), code: n('p code'), del: n('del'), ol: n('ol > li'), ul: n('ol ul > li'),
			th: n('table th'), td: n('table td'), right: n('td.al-right'), pre: n('.code pre code'), copy: n('.code button.copy-code'), quote: n('blockquote')}; })()`)
	want := map[string]int{"strong": 1, "em": 1, "code": 1, "del": 1, "ol": 2, "ul": 1, "th": 2, "td": 4, "right": 2, "pre": 1, "copy": 1, "quote": 1}
	for k, v := range want {
		if md[k] != v {
			t.Errorf("Markdown: %d %s elements, want %d (all: %v)", md[k], k, v, md)
		}
	}
	// Copy buttons copy (the button says so).
	p.run(chromedp.Click(`#messages article:last-of-type .copy-code`, chromedp.ByQuery))
	p.waitJS(`document.querySelector('#messages article:last-of-type .copy-code').textContent === 'Copied'`, 5*time.Second)
	p.screenshot("light.png")

	// Stop: the reply ends where it was, and the server frees the sequence.
	fb.setReply(func(string) string { return strings.Repeat("slow words ", 400) })
	fb.delay.Store(int64(20 * time.Millisecond))
	p.typeAndSend("Tell me a long story")
	p.waitJS(lastReply+`.length > 20`, 10*time.Second)
	if got := metric(t, ts.URL, "", "chatglm_sequences_active"); got != "1" {
		t.Errorf("while generating: chatglm_sequences_active %s, want 1", got)
	}
	p.run(chromedp.Click("#stop", chromedp.ByID))
	p.waitJS(idle, 5*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for fb.active.Load() != 0 || metric(t, ts.URL, "", "chatglm_sequences_active") != "0" {
		if time.Now().After(deadline) {
			t.Fatalf("after Stop the server still reports %d active sequences", fb.active.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if fb.cancelled.Load() != 1 {
		t.Errorf("the backend saw %d cancelled generations, want 1", fb.cancelled.Load())
	}
	if s := evalJS[string](p, `document.querySelector('#messages article:last-of-type .stats').textContent`); !strings.Contains(s, "stopped") {
		t.Errorf("stopped reply's footer %q", s)
	}
	stoppedLen := evalJS[int](p, lastReply+`.length`)
	if stoppedLen >= len(strings.Repeat("slow words ", 400)) {
		t.Errorf("the stopped reply is complete (%d chars)", stoppedLen)
	}

	// Regenerate replaces the last reply; reload keeps the conversation.
	fb.delay.Store(0)
	fb.setReply(func(string) string { return "A second answer." })
	p.run(chromedp.Click(`#messages article:last-of-type .regenerate`, chromedp.ByQuery))
	p.waitJS(idle+` && `+lastReply+` === 'A second answer.'`, 10*time.Second)
	if n := evalJS[int](p, `document.querySelectorAll('#messages article').length`); n != 4 {
		t.Errorf("after regenerate: %d messages, want 4", n)
	}
	p.run(chromedp.Reload(), chromedp.WaitVisible("#input", chromedp.ByID))
	p.waitJS(`document.querySelectorAll('#messages article').length === 4`, 5*time.Second)
	if s := evalJS[string](p, lastReply); s != "A second answer." {
		t.Errorf("after reload the last reply is %q", s)
	}

	// Edit and continue: the conversation is cut after the edited message.
	fb.setReply(func(prompt string) string {
		if strings.Contains(prompt, "Edited question") {
			return "Answer to the edited question."
		}
		return "?"
	})
	p.run(chromedp.Click(`#messages article:first-of-type .actions button:nth-child(2)`, chromedp.ByQuery))
	p.run(chromedp.SetValue(`#messages textarea.edit`, "Edited question", chromedp.ByQuery),
		chromedp.Click(`#messages .edit-actions button:first-child`, chromedp.ByQuery))
	p.waitJS(idle+` && `+lastReply+` === 'Answer to the edited question.'`, 10*time.Second)
	if n := evalJS[int](p, `document.querySelectorAll('#messages article').length`); n != 2 {
		t.Errorf("after edit and continue: %d messages, want 2", n)
	}

	// XSS: payloads from the user and from the model stay text or inert.
	const payload = `<img src=x onerror="window.__xss=1"> <script>window.__xss=2</script> ` +
		`[click](javascript:window.__xss=3) ![pic](http://203.0.113.9/x.png) <a href="javascript:window.__xss=4">a</a> ` +
		`**<b onmouseover="window.__xss=5">bold</b>** <iframe src="javascript:window.__xss=6"></iframe> <svg onload="window.__xss=7"></svg>`
	fb.setReply(func(string) string {
		return payload + "\n\n| a | <img src=x onerror=window.__xss=8> |\n|---|---|\n| `<script>` | [x](javascript:window.__xss=9) |\n\n" +
			"[data](data:text/html,<script>window.__xss=10</script>) [ok](https://example.com/a)\n\n```html\n<script>window.__xss=11</script>\n```"
	})
	p.typeAndSend(payload)
	p.waitJS(idle, 10*time.Second)
	time.Sleep(300 * time.Millisecond)
	xss := evalJS[map[string]any](p, `(() => { const m = document.getElementById('messages');
		return {xss: window.__xss === undefined ? 0 : window.__xss,
			bad: m.querySelectorAll('img, script, iframe, svg, object, embed, [onerror], [onload], [onmouseover]').length,
			links: [...m.querySelectorAll('a')].map(a => a.href),
			user: [...m.querySelectorAll('article.role-user .body')].pop().textContent,
			reply: m.querySelector('article:last-of-type .body').textContent}; })()`)
	if xss["xss"] != float64(0) || xss["bad"] != float64(0) {
		t.Errorf("XSS: window.__xss=%v, %v active elements", xss["xss"], xss["bad"])
	}
	links, _ := xss["links"].([]any)
	if len(links) != 1 || links[0] != "https://example.com/a" {
		t.Errorf("XSS: links %v, want only https://example.com/a", links)
	}
	if xss["user"] != payload || !strings.Contains(xss["reply"].(string), `<img src=x onerror="window.__xss=1">`) {
		t.Errorf("XSS: the payloads are not shown as text:\nuser: %v\nreply: %v", xss["user"], xss["reply"])
	}
	p.run(chromedp.Evaluate(`document.querySelectorAll('#messages b, #messages .md-image').forEach(e => e.click()); true`, nil))
	if v := evalJS[bool](p, `window.__xss === undefined`); !v {
		t.Error("XSS: a click ran a payload")
	}

	// Tool calls: shown as the call, and an observation goes back.
	p.run(chromedp.Click("#new-chat", chromedp.ByID), chromedp.Click("#settings-toggle", chromedp.ByID),
		chromedp.SetValue("#tools", `[{"name": "get_weather", "description": "Weather of a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]`, chromedp.ByID),
		chromedp.Evaluate(`document.getElementById('tools').dispatchEvent(new Event('change')); true`, nil),
		chromedp.SetValue("#system", "You are a weather bot.", chromedp.ByID),
		chromedp.Evaluate(`document.getElementById('system').dispatchEvent(new Event('change')); true`, nil),
		chromedp.Click("#settings-toggle", chromedp.ByID))
	fb.setReply(func(prompt string) string {
		if strings.Contains(prompt, "<|observation|>") {
			return "It is 21 degrees in Beijing."
		}
		return "get_weather\n```python\ntool_call(city=\"北京\")\n```"
	})
	for len(fb.prompts) > 0 {
		<-fb.prompts
	}
	p.typeAndSend("Weather in Beijing?")
	p.waitJS(idle+` && !!document.querySelector('#messages .tool-name')`, 10*time.Second)
	first := <-fb.prompts
	if !strings.Contains(first, "<|system|>") || !strings.Contains(first, "You are a weather bot.") || !strings.Contains(first, `"get_weather"`) {
		t.Errorf("the request's prompt lacks the system prompt or the tools:\n%s", first)
	}
	call := evalJS[[]string](p, `[document.querySelector('#messages .tool-name').textContent, document.querySelector('#messages .tool-args').textContent]`)
	if call[0] != "get_weather" || !strings.Contains(call[1], `"city": "北京"`) {
		t.Errorf("tool call shown as %q", call)
	}
	p.run(chromedp.SetValue(`#messages form.observation textarea`, `{"temperature": 21}`, chromedp.ByQuery),
		chromedp.Click(`#messages form.observation button`, chromedp.ByQuery))
	p.waitJS(idle+` && `+lastReply+` === 'It is 21 degrees in Beijing.'`, 10*time.Second)
	second := <-fb.prompts
	if !strings.Contains(second, "<|assistant|> get_weather\n") || !strings.Contains(second, "tool_call(city=\"北京\")\n```<|observation|>") ||
		!strings.Contains(second, `{"temperature": 21}`) {
		t.Errorf("the observation's prompt does not replay the call and its result:\n%s", second)
	}
	// Its export is the /save format, with the call as ChatGLM3 writes it.
	exp := evalJS[string](p, `JSON.stringify(window.chatglmPage.exportMessages(JSON.parse(localStorage.getItem('chatglm.conversations'))[0]))`)
	var msgs []map[string]any
	if err := json.Unmarshal([]byte(exp), &msgs); err != nil || len(msgs) != 5 || msgs[0]["role"] != "system" || msgs[0]["tools"] == nil ||
		msgs[2]["metadata"] != "get_weather" || msgs[2]["content"] != "```python\ntool_call(city=\"北京\")\n```" || msgs[3]["role"] != "observation" {
		t.Errorf("export of the tool conversation: %s (%v)", exp, err)
	}

	// IME: an Enter that commits a composition never sends; Shift+Enter is a
	// new line; a plain Enter sends.
	sent := evalJS[int](p, `document.querySelectorAll('#messages article').length`)
	p.run(chromedp.Evaluate(`document.getElementById('input').value = ''; true`, nil), chromedp.Focus("#input", chromedp.ByID),
		input.ImeSetComposition("nihao", 5, 5),
		key(input.KeyRawDown, "Enter", 229, 0, ""), key(input.KeyUp, "Enter", 229, 0, ""),
		input.InsertText("你好"))
	p.run(chromedp.Evaluate(`document.getElementById('input').dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', isComposing: true, bubbles: true, cancelable: true})); true`, nil))
	time.Sleep(200 * time.Millisecond)
	if n := evalJS[int](p, `document.querySelectorAll('#messages article').length`); n != sent {
		t.Errorf("an IME-composing Enter sent the message (%d -> %d messages)", sent, n)
	}
	if v := evalJS[string](p, `document.getElementById('input').value`); v != "你好" {
		t.Errorf("after the composition the input holds %q, want 你好", v)
	}
	p.run(pressEnter(input.ModifierShift), input.InsertText("世界"))
	if v := evalJS[string](p, `document.getElementById('input').value`); v != "你好\n世界" {
		t.Errorf("Shift+Enter: input %q, want a new line", v)
	}
	fb.setReply(func(string) string { return "收到" })
	p.run(pressEnter(0))
	p.waitJS(idle+` && `+lastReply+` === '收到'`, 10*time.Second)
	if u := evalJS[string](p, `[...document.querySelectorAll('#messages article.role-user')].pop().textContent`); !strings.Contains(u, "你好\n世界") {
		t.Errorf("the sent message is %q", u)
	}

	// Switching conversations stops the reply; the stopped one stays the
	// most recent, the one switched to does not jump the list.
	fb.setReply(func(string) string { return strings.Repeat("slow ", 400) })
	fb.delay.Store(int64(20 * time.Millisecond))
	p.typeAndSend("one more")
	p.waitJS(lastReply+`.length > 10`, 10*time.Second)
	p.run(chromedp.Click(`#conv-list li:nth-child(2) .conv-title`, chromedp.ByQuery))
	p.waitJS(idle, 5*time.Second)
	time.Sleep(100 * time.Millisecond)
	for _, js := range []string{`[...document.querySelectorAll('#conv-list .conv-title')].map(b => b.textContent)`,
		`JSON.parse(localStorage.getItem('chatglm.conversations')).map(c => c.title)`} {
		if order := evalJS[[]string](p, js); len(order) != 2 || order[0] != "Weather in Beijing?" {
			t.Errorf("after switching away from a reply, %s is %q; want the interrupted conversation first", js, order)
		}
	}
	p.run(chromedp.Click(`#conv-list li:first-child .conv-title`, chromedp.ByQuery))
	p.waitJS(lastReply+`.startsWith('slow')`, 5*time.Second)
	fb.delay.Store(0)

	// The sidebar: rename, search, switch, delete.
	p.run(chromedp.Click(`#conv-list li.current button.small`, chromedp.ByQuery))
	p.run(chromedp.SetValue(`#conv-list input.rename`, "Weather chat", chromedp.ByQuery), chromedp.Focus(`#conv-list input.rename`, chromedp.ByQuery), pressEnter(0))
	p.waitJS(`document.getElementById('title').textContent === 'Weather chat'`, 5*time.Second)
	if n := evalJS[int](p, `document.querySelectorAll('#conv-list li').length`); n != 2 {
		t.Errorf("%d conversations in the list, want 2", n)
	}
	p.run(chromedp.SendKeys("#search", "edited question", chromedp.ByID))
	p.waitJS(`document.querySelectorAll('#conv-list li').length === 1`, 5*time.Second)
	p.run(chromedp.Click(`#conv-list .conv-title`, chromedp.ByQuery))
	p.waitJS(lastReply+`.includes('__xss=11')`, 5*time.Second)
	p.run(chromedp.Evaluate(`const q = document.getElementById('search'); q.value = ''; q.dispatchEvent(new Event('input')); true`, nil))
	p.run(chromedp.Click(`#conv-list li.current .danger`, chromedp.ByQuery))
	p.waitJS(`document.activeElement.textContent === 'Delete?'`, 5*time.Second)
	p.run(pressEnter(0)) // the keyboard confirms
	p.waitJS(`document.querySelectorAll('#conv-list li').length === 1 && document.getElementById('title').textContent === 'Weather chat'`, 5*time.Second)

	// Keyboard only: Tab reaches every control of the page.
	p.run(chromedp.Evaluate(`document.activeElement.blur(); true`, nil))
	seen := map[string]bool{}
	for range 40 {
		p.run(key(input.KeyRawDown, "Tab", 9, 0, ""), key(input.KeyUp, "Tab", 9, 0, ""))
		seen[evalJS[string](p, `document.activeElement.id || document.activeElement.className`)] = true
	}
	for _, id := range []string{"new-chat", "search", "conv-title", "export", "import", "settings-toggle", "input", "send"} {
		if !seen[id] {
			t.Errorf("Tab never reaches %s (reached %v)", id, seen)
		}
	}

	// CSP is enforced: an injected inline script does not run.
	p.checkClean()
	p.allowErrors("Content Security Policy")
	p.run(chromedp.Evaluate(`const s = document.createElement('script'); s.textContent = 'window.__inline = 1'; document.body.append(s); true`, nil))
	if v := evalJS[bool](p, `window.__inline === undefined`); !v {
		t.Error("an inline script ran: the CSP is not enforced")
	}

	// Dark mode follows the system; the narrow viewport fits a phone.
	p.run(emulation.SetEmulatedMedia().WithFeatures([]*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}))
	if bg := evalJS[string](p, `getComputedStyle(document.body).backgroundColor`); bg != "rgb(22, 24, 29)" {
		t.Errorf("dark mode: body background %s", bg)
	}
	p.screenshot("dark.png")
	p.run(emulation.SetEmulatedMedia().WithFeatures([]*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "light"}}),
		emulation.SetDeviceMetricsOverride(390, 800, 2, true))
	p.waitJS(`window.innerWidth === 390`, 5*time.Second)
	narrow := evalJS[map[string]any](p, `({scroll: document.documentElement.scrollWidth, side: getComputedStyle(document.getElementById('sidebar')).visibility,
		menu: getComputedStyle(document.getElementById('open-sidebar')).display, input: document.getElementById('input').getBoundingClientRect().width})`)
	if narrow["scroll"].(float64) > 390 || narrow["side"] != "hidden" || narrow["menu"] == "none" || narrow["input"].(float64) < 200 {
		t.Errorf("narrow viewport: %v", narrow)
	}
	p.screenshot("narrow.png")
	p.run(chromedp.Click("#open-sidebar", chromedp.ByID))
	p.waitJS(`getComputedStyle(document.getElementById('sidebar')).visibility === 'visible'`, 5*time.Second)
	p.screenshot("narrow-sidebar.png")
	p.run(chromedp.Click("#close-sidebar", chromedp.ByID))
	p.allowErrors()
	if errs := p.errors(); len(errs) > 1 {
		t.Errorf("console errors beyond the CSP report: %v", errs)
	}
}

// TestPageImportRejects checks that a bad file is refused with an error that
// names it and the message at fault, and a good one is read back.
func TestPageImportRejects(t *testing.T) {
	bctx := newBrowser(t)
	ts, _ := fakeServer(t, "")
	p := openPage(t, bctx, ts.URL+"/")
	for _, c := range []struct{ json, want string }{
		{`{"role": "user"}`, "want a JSON list"},
		{`[{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]`, `message 1: unknown role "robot"`},
		{`[{"role": "user", "content": 5}]`, "message 0: content is not a string"},
		{`[{"role": "user", "content": "a", "tools": []}]`, "message 0: only a system message may carry tools"},
	} {
		got := evalJS[string](p, `(() => { try { window.chatglmPage.importMessages(`+c.json+`, 'x'); return 'ok'; } catch (e) { return e.message; } })()`)
		if !strings.Contains(got, c.want) {
			t.Errorf("import %s: %q, want %q", c.json, got, c.want)
		}
	}
	saved, _ := json.Marshal([]map[string]any{{"role": "system", "content": "s", "tools": []any{map[string]any{"name": "f"}}},
		{"role": "user", "content": "q"},
		{"role": "assistant", "metadata": "f", "content": "```python\ntool_call(a='x\\'y', b=[1, 2.5, True, None], **{\"c-d\": {\"e\": False}})\n```"}})
	got := evalJS[string](p, `JSON.stringify(window.chatglmPage.importMessages(`+string(saved)+`, 't'))`)
	var conv struct {
		System, Tools string
		Messages      []struct{ Role, Content, Metadata, Args string }
	}
	if err := json.Unmarshal([]byte(got), &conv); err != nil || conv.System != "s" || len(conv.Messages) != 2 ||
		conv.Messages[1].Args != `{"a":"x'y","b":[1,2.5,true,null],"c-d":{"e":false}}` {
		t.Errorf("import: %s (%v)", got, err)
	}
	if s := evalJS[string](p, `window.chatglmPage.toolCallCode('{"a":"x\'y","b":[1,2.5,true,null],"c-d":{"e":false},"class":1}')`); s != "```python\ntool_call(a=\"x'y\", b=[1, 2.5, True, None], **{\"c-d\": {\"e\": False}, \"class\": 1})\n```" {
		t.Errorf("toolCallCode: %q", s)
	}
	p.checkClean()
}

// TestPageAPIKey: with --api-key the page asks for the key once, keeps it
// across a reload, and asks again when it is refused.
func TestPageAPIKey(t *testing.T) {
	bctx := newBrowser(t)
	ts, _ := fakeServer(t, "s3cret")
	p := openPage(t, bctx, ts.URL+"/")
	p.allowErrors("401")
	p.waitJS(`!document.getElementById('key-dialog').hidden`, 5*time.Second)
	p.run(chromedp.SendKeys("#key-input", "wrong", chromedp.ByID), chromedp.Click("#key-save", chromedp.ByID))
	p.waitJS(`!document.getElementById('key-dialog').hidden && document.getElementById('key-error').textContent.includes('refused')`, 5*time.Second)
	p.run(chromedp.SendKeys("#key-input", "s3cret", chromedp.ByID), chromedp.Click("#key-save", chromedp.ByID))
	p.waitJS(`document.getElementById('key-dialog').hidden && document.getElementById('defaults').textContent.includes('temperature')`, 5*time.Second)
	p.typeAndSend("hello")
	p.waitJS(idle+` && `+lastReply+` === 'Hello!'`, 10*time.Second)
	p.run(chromedp.Reload(), chromedp.WaitVisible("#input", chromedp.ByID))
	p.waitJS(`document.getElementById('defaults').textContent.includes('temperature')`, 5*time.Second)
	if v := evalJS[bool](p, `document.getElementById('key-dialog').hidden`); !v {
		t.Error("after a reload the page asks for the key again")
	}
	p.checkClean()
}

// serveProc is a running `chatglm serve`.
type serveProc struct {
	url  string
	mu   sync.Mutex
	logs strings.Builder
}

func (s *serveProc) log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logs.String()
}

// startServe runs `chatglm serve` and returns once it prints a line that
// starts with ready; url is the page URL it printed, or the address it
// listens on.
func startServe(t *testing.T, bin, ready string, args ...string) *serveProc {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	s := &serveProc{}
	done := make(chan struct{})
	var once sync.Once
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.logs.WriteString(line + "\n")
			if u, ok := strings.CutPrefix(line, "chatglm: chat page at "); ok {
				s.url = u
			} else if a, ok := strings.CutPrefix(line, "chatglm: listening on "); ok && s.url == "" {
				s.url = strings.Fields(a)[0]
			}
			s.mu.Unlock()
			if strings.HasPrefix(line, ready) {
				once.Do(func() { close(done) })
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("serve printed no %q:\n%s", ready, s.log())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s
}

// TestPageRealServe runs the page against a real `chatglm serve` process on
// a tiny converted ChatGLM3 model, with --api-key: the key flow, the
// server's sampling defaults shown, replies with token counts, ten turns
// whose prompts are served from the KV cache (each turn evaluates only its
// new tokens: turn 10 starts as fast as turn 2), the sequences free at the
// end, reload, and an export that `chatglm run --messages` accepts.
func TestPageRealServe(t *testing.T) {
	bctx := newBrowser(t)
	bin := testbin.Path(t)
	spec := testmodel.Tiny
	spec.SeqLength = 2048
	model := testmodel.GGUF(t, spec, "f16")
	const apiKey = "page-key"
	srv := startServe(t, bin, "chatglm: chat page at ", "-m", model, "--port", "0", "--parallel", "2", "--api-key", apiKey,
		"--temperature", "0.3", "--top-p", "0.7", "-n", "12", "--threads", "2")

	resp, err := http.Get(srv.url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d", srv.url, resp.StatusCode)
	}
	checkSecurityHeaders(t, resp.Header)

	p := openPage(t, bctx, srv.url)
	p.allowErrors("401")
	p.waitJS(`!document.getElementById('key-dialog').hidden`, 10*time.Second)
	p.run(chromedp.SendKeys("#key-input", apiKey, chromedp.ByID), chromedp.Click("#key-save", chromedp.ByID))
	p.waitJS(`document.getElementById('key-dialog').hidden && document.getElementById('defaults').textContent !== ''`, 10*time.Second)
	if d := evalJS[string](p, `document.getElementById('defaults').textContent`); d != "temperature 0.3, top_p 0.7, top_k 50, max_tokens 12" {
		t.Errorf("defaults shown: %q, want the server's --temperature 0.3 --top-p 0.7 -n 12", d)
	}

	type stat struct{ Prompt, Cached, Completion int }
	const turns = 10
	for i := 1; i <= turns; i++ {
		p.typeAndSend(fmt.Sprintf("第%d轮：你好", i))
		p.waitJS(fmt.Sprintf(`document.querySelectorAll('#messages article').length === %d && %s`, 2*i, idle), time.Minute)
		if s := evalJS[string](p, `document.querySelector('#messages article:last-of-type .stats').textContent`); !strings.Contains(s, "tokens") || !strings.Contains(s, "cached") {
			t.Fatalf("turn %d: reply footer %q, want token counts", i, s)
		}
	}
	var stats []stat
	raw := evalJS[string](p, `JSON.stringify(JSON.parse(localStorage.getItem('chatglm.conversations'))[0].messages.filter(m => m.role === 'assistant').map(m => ({prompt: m.stats.prompt, cached: m.stats.cached, completion: m.stats.completion})))`)
	if err := json.Unmarshal([]byte(raw), &stats); err != nil || len(stats) != turns {
		t.Fatalf("stats %s: %v", raw, err)
	}
	for i := 1; i < turns; i++ {
		// The previous turn's whole prompt is a prefix of this one's and
		// must come from the cache: only the new tokens are evaluated.
		if stats[i].Cached < stats[i-1].Prompt {
			t.Errorf("turn %d: %d of %d prompt tokens cached, want at least the previous prompt's %d", i+1, stats[i].Cached, stats[i].Prompt, stats[i-1].Prompt)
		}
	}
	eval2, eval10 := stats[1].Prompt-stats[1].Cached, stats[9].Prompt-stats[9].Cached
	t.Logf("turn 2: prompt %d, evaluated %d; turn 10: prompt %d, evaluated %d", stats[1].Prompt, eval2, stats[9].Prompt, eval10)
	if eval10 > eval2+16 {
		t.Errorf("turn 10 evaluated %d prompt tokens, turn 2 %d: the cache is not reused", eval10, eval2)
	}
	if got := metric(t, srv.url[:len(srv.url)-1], apiKey, "chatglm_sequences_active"); got != "0" {
		t.Errorf("after the turns: chatglm_sequences_active %s", got)
	}

	// Reload keeps the conversation.
	p.run(chromedp.Reload(), chromedp.WaitVisible("#input", chromedp.ByID))
	p.waitJS(fmt.Sprintf(`document.querySelectorAll('#messages article').length === %d`, 2*turns), 10*time.Second)

	// Stop, on the real engine: a reply of up to 1900 tokens is stopped
	// after its first words, and the server frees the sequence at once.
	p.run(chromedp.Click("#new-chat", chromedp.ByID), chromedp.Click("#settings-toggle", chromedp.ByID),
		chromedp.SetValue("#p-max_tokens", "1900", chromedp.ByID),
		chromedp.Evaluate(`document.getElementById('p-max_tokens').dispatchEvent(new Event('change')); true`, nil),
		chromedp.Click("#settings-toggle", chromedp.ByID))
	p.typeAndSend("讲一个很长的故事")
	p.waitJS(lastReply+`.length > 0`, 30*time.Second)
	p.run(chromedp.Click("#stop", chromedp.ByID))
	p.waitJS(idle, 10*time.Second)
	foot := evalJS[string](p, `document.querySelector('#messages article:last-of-type .stats').textContent`)
	t.Logf("stopped reply: %q", foot)
	if !strings.Contains(foot, "stopped") {
		t.Errorf("the reply was not stopped: %q", foot)
	}
	for deadline := time.Now().Add(5 * time.Second); metric(t, srv.url[:len(srv.url)-1], apiKey, "chatglm_sequences_active") != "0"; {
		if time.Now().After(deadline) {
			t.Fatal("after Stop the server still reports an active sequence")
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.run(chromedp.Click(`#conv-list li:nth-child(2) .conv-title`, chromedp.ByQuery))
	p.waitJS(fmt.Sprintf(`document.querySelectorAll('#messages article').length === %d`, 2*turns), 10*time.Second)

	// Export, then `chatglm run --messages` continues the conversation.
	dl := t.TempDir()
	p.run(browser.SetDownloadBehavior(browser.SetDownloadBehaviorBehaviorAllow).WithDownloadPath(dl).WithEventsEnabled(true),
		chromedp.Click("#export", chromedp.ByID))
	var file string
	for deadline := time.Now().Add(10 * time.Second); file == ""; {
		if m, _ := filepath.Glob(filepath.Join(dl, "*.json")); len(m) == 1 {
			file = m[0]
		} else if time.Now().After(deadline) {
			t.Fatalf("no exported file in %s", dl)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	out, err := exec.Command(bin, "run", "-m", model, "--messages", file, "-p", "继续", "-n", "4", "--json").CombinedOutput()
	if err != nil {
		b, _ := os.ReadFile(file)
		t.Fatalf("chatglm run --messages %s: %v\n%s\nfile:\n%s", file, err, out, b)
	}
	var res struct {
		HistoryMessages int `json:"history_messages"`
	}
	if i := strings.Index(string(out), "{"); i < 0 || json.Unmarshal(out[i:], &res) != nil || res.HistoryMessages < 2*turns {
		t.Errorf("chatglm run --messages: %s", out)
	}
	// Import the file back: a new conversation with the same messages.
	p.run(chromedp.SetUploadFiles("#import-file", []string{file}, chromedp.ByID))
	p.waitJS(fmt.Sprintf(`document.querySelectorAll('#messages article').length === %d && document.getElementById('status').textContent.startsWith('Imported %d messages')`, 2*turns, 2*turns), 10*time.Second)
	p.checkClean()
	if strings.Contains(srv.log(), "你好") {
		t.Errorf("the server log holds prompt text")
	}

	// --web=false: no page, / is the API's 404.
	off := startServe(t, bin, "chatglm: ready", "-m", model, "--port", "0", "--web=false", "--threads", "1")
	resp, err = http.Get(off.url + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || strings.Contains(off.log(), "chat page") {
		t.Errorf("--web=false: GET / is %d, log:\n%s", resp.StatusCode, off.log())
	}
}

// FuzzMarkdown feeds the page's parsers (the Markdown renderer, the
// tool_call reader, the /save importer) arbitrary text in the browser: no
// exception escapes, nothing active is ever built, the text is kept, and
// each call finishes within a second (no runaway regular expression).
func FuzzMarkdown(f *testing.F) {
	for _, s := range []string{markdownReply, "**a *b* c**", "`code` and ``a`b``", "| a |\n|---|\n| <img src=x onerror=1> |",
		"- a\n  - b\n    - c\n1. x", "[x](javascript:alert(1)) ![i](http://203.0.113.9/i.png)", "```\nunclosed",
		strings.Repeat("*", 3000), strings.Repeat("_a", 2000), strings.Repeat("[", 2000) + strings.Repeat("](", 2000),
		strings.Repeat("`", 20000) + "a", strings.Repeat("**a ", 8000), strings.Repeat("~~a ", 8000), "# " + strings.Repeat(" #", 10000) + "x",
		strings.Repeat("|", 20000) + "\n" + strings.Repeat("-|", 10000), strings.Repeat("- - ", 8000) + "x", strings.Repeat("a_b ", 8000),
		strings.Repeat("> ", 100) + "deep", strings.Repeat("- ", 200) + "deep", "tool_call(a='x', **{\"b\": [1, (2,)]})"} {
		f.Add(s)
	}
	bctx := newBrowser(f)
	ts, _ := fakeServer(f, "")
	p := openPage(f, bctx, ts.URL+"/")
	f.Fuzz(func(t *testing.T, text string) {
		if !utf8.ValidString(text) || len(text) > 64<<10 {
			return
		}
		arg, _ := json.Marshal(text)
		var res struct {
			Err    string
			Bad    int
			Text   string
			Millis float64
		}
		js := `(() => { const t = ` + string(arg) + `; const d = document.createElement('div'); const t0 = performance.now();
			try {
				window.chatglmPage.renderMarkdown(t, d);
				window.chatglmPage.parseToolCall(t);
				try { window.chatglmPage.importMessages(JSON.parse(t), 'f'); } catch (e) { if (!(e instanceof SyntaxError) && !e.message) throw e; }
			} catch (e) { return {Err: String(e && e.stack || e), Bad: 0, Text: '', Millis: 0}; }
			return {Err: '', Bad: d.querySelectorAll('img, script, iframe, svg, object, embed, style, link, [onerror], [onload]').length +
				[...d.querySelectorAll('a')].filter(a => !/^(https?|mailto):/.test(a.href)).length,
				Text: d.textContent, Millis: performance.now() - t0}; })()`
		ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
		defer cancel()
		if err := chromedp.Run(ctx, chromedp.Evaluate(js, &res)); err != nil {
			t.Fatalf("render %q: %v", text, err)
		}
		if res.Err != "" || res.Bad != 0 {
			t.Fatalf("render %q: error %q, %d active elements", text, res.Err, res.Bad)
		}
		if res.Millis > 1000 {
			t.Fatalf("render %d bytes took %.0f ms", len(text), res.Millis)
		}
		if strings.IndexFunc(text, unicode.IsLetter) >= 0 && strings.IndexFunc(res.Text, unicode.IsLetter) < 0 {
			t.Fatalf("render %q lost the text", text)
		}
	})
}
