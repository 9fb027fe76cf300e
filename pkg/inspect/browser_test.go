package inspect_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tunnelhq/tunnel/internal/testhttp"
	"github.com/tunnelhq/tunnel/pkg/inspect"
)

func chromiumPath(t *testing.T) string { return testhttp.Chromium(t) }

// browser starts a headless chromium (the flags TESTING.md lists) and
// returns a tab's context, ended when the test ends.
func browser(t *testing.T) context.Context {
	t.Helper()
	bin := chromiumPath(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1400, 900))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(func() {
		cancelTimeout()
		cancelTab()
		cancelAlloc()
	})
	return ctx
}

// do runs browser actions, failing the test on the first error with what
// was being done.
func do(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// until waits, in the page, for a JavaScript condition to hold.
func until(t *testing.T, ctx context.Context, what, js string) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := chromedp.Run(wctx, chromedp.Poll[bool](js)); err != nil {
		text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
		t.Fatalf("waiting for %s (%s): %v\npage:\n%s", what, js, err, text)
	}
}

func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return v
}

// setInput sets a filter input's value as typing would, firing input.
func setInput(id, value string) chromedp.Action[chromedp.Void] {
	v, _ := json.Marshal(value)
	js := `(() => { const e = document.getElementById('` + id + `'); e.value = ` + string(v) + `; e.dispatchEvent(new Event('input')); return true; })()`
	return func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Evaluate[bool](js)(ctx, tg)
		return chromedp.Void{}, err
	}
}

// click clicks the element sel finds, in one step of the page's own: a
// row the list redraws between finding and clicking it cannot be missed.
func click(sel string) chromedp.Action[chromedp.Void] {
	q, _ := json.Marshal(sel)
	js := `(() => { document.querySelector(` + string(q) + `).click(); return true; })()`
	return func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Evaluate[bool](js)(ctx, tg)
		return chromedp.Void{}, err
	}
}

// TestPage_InChromium drives the page in a real browser against a real
// inspector on a real path to a service that counts its requests.
func TestPage_InChromium(t *testing.T) {
	var hits atomic.Int64
	var mu sync.Mutex
	var lastBody string
	svc := echoService(&hits)
	r := newRig(t, inspect.DefaultConfig(), http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		mu.Lock()
		lastBody = string(b)
		mu.Unlock()
		req.Body = io.NopCloser(strings.NewReader(string(b)))
		svc.ServeHTTP(w, req)
	}))
	c := r.client(t)
	// After newRig: the browser, and its event stream, must end before
	// the API's server closes, which waits for open requests.
	ctx := browser(t)

	do(t, ctx, "open the page", chromedp.Navigate(r.api.URL+"/"))
	until(t, ctx, "the event stream", `document.getElementById('status').textContent === 'live'`)

	// A request appears in the list without a reload.
	first := r.send(t, c, "POST", "/hook/github", `{"event":"push","ref":"main"}`,
		"Content-Type", "application/json", "Authorization", "Bearer sk_live_secret", "Cookie", "sid=cookie_secret")
	until(t, ctx, "the request in the list", `document.querySelectorAll('#rows tr').length === 1`)

	// The detail shows the body, pretty, and masks the secrets.
	do(t, ctx, "select it", click(`#rows tr`))
	until(t, ctx, "the detail", `document.getElementById('col-main').innerText.includes('"ref": "main"')`)
	main := eval[string](t, ctx, `document.getElementById('col-main').innerText`)
	for _, secret := range []string{"sk_live_secret", "cookie_secret", "session=secret"} {
		if strings.Contains(main, secret) {
			t.Errorf("the detail shows %q unmasked", secret)
		}
	}
	do(t, ctx, "reveal Authorization", click(`#col-main .reveal`))
	until(t, ctx, "the revealed value", `document.getElementById('col-main').innerText.includes('Bearer sk_live_secret')`)

	// Copy as curl gives a command that sends the same request.
	do(t, ctx, "copy as curl", click(`#curl`))
	curl := eval[string](t, ctx, `document.getElementById('curl-out').value`)
	for _, want := range []string{"curl -X POST 'http://wiki.example/hook/github'", `--data-binary '{"event":"push","ref":"main"}'`, "'Authorization: Bearer sk_live_secret'"} {
		if !strings.Contains(curl, want) {
			t.Errorf("copy as curl gave %q, want it to contain %q", curl, want)
		}
	}

	// Replay reaches the service a second time; the diff shows the field
	// that changed (the service's hit count).
	do(t, ctx, "replay", click(`#replay`))
	until(t, ctx, "the replay beside the original", `!document.getElementById('col-replay').hidden && document.getElementById('col-replay').innerText.includes('"hit": 2')`)
	if n := hits.Load(); n != 2 {
		t.Errorf("the service saw %d requests after a replay, want 2", n)
	}
	adds := eval[string](t, ctx, `Array.from(document.querySelectorAll('#diff .add')).map(e => e.textContent).join('')`)
	dels := eval[string](t, ctx, `Array.from(document.querySelectorAll('#diff .del')).map(e => e.textContent).join('')`)
	if !strings.Contains(adds, `"hit": 2`) || !strings.Contains(dels, `"hit": 1`) || strings.Contains(adds+dels, `"method"`) {
		t.Errorf("diff: added %q, removed %q; want only the hit count changed, 1 -> 2", adds, dels)
	}
	until(t, ctx, "the replay in the list", `document.querySelectorAll('#rows tr').length === 2`)
	shot, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(t.ArtifactDir(), "inspector-replay.png"), shot, 0o644); err != nil {
		t.Fatal(err)
	}

	// Edit and replay sends the edited body.
	do(t, ctx, "edit", click(`#edit`))
	until(t, ctx, "the editor", `!document.getElementById('editor').hidden`)
	do(t, ctx, "change the body", setInput("ed-body", `{"event":"edited-xyzzy"}`), click(`#ed-send`))
	until(t, ctx, "the edited replay", `document.getElementById('col-replay').innerText.includes('edited-xyzzy')`)
	mu.Lock()
	got := lastBody
	mu.Unlock()
	if got != `{"event":"edited-xyzzy"}` || hits.Load() != 3 {
		t.Errorf("after edit and replay the service got %q (%d requests), want the edited body, 3 requests", got, hits.Load())
	}
	until(t, ctx, "three in the list", `document.querySelectorAll('#rows tr').length === 3`)

	// The status filter and the body search narrow the list.
	r.send(t, c, "GET", "/missing", "")
	until(t, ctx, "four in the list", `document.querySelectorAll('#rows tr').length === 4`)
	do(t, ctx, "filter 4xx", setInput("f-status", "4xx"))
	until(t, ctx, "only the 404", `document.querySelectorAll('#rows tr').length === 1 && document.querySelector('#rows tr').innerText.includes('/missing')`)
	do(t, ctx, "no status filter, search bodies", setInput("f-status", ""), setInput("f-q", "xyzzy"))
	until(t, ctx, "only the edited replay", `document.querySelectorAll('#rows tr').length === 1 && document.querySelector('#rows tr').classList.contains('replay')`)
	do(t, ctx, "no filters", setInput("f-q", ""))
	until(t, ctx, "all four", `document.querySelectorAll('#rows tr').length === 4`)

	// Keyboard: j moves the selection down the list, k back up.
	do(t, ctx, "select the newest", click(`#rows tr:first-child`))
	until(t, ctx, "the newest selected", `document.querySelector('#rows tr.selected') === document.querySelector('#rows tr:first-child')`)
	eval[bool](t, ctx, `(document.activeElement.blur(), true)`)
	do(t, ctx, "press j", chromedp.KeyEvent("j"))
	until(t, ctx, "the second selected", `document.querySelector('#rows tr.selected') === document.querySelector('#rows tr:nth-child(2)')`)
	do(t, ctx, "press j, then k", chromedp.KeyEvent("j"), chromedp.KeyEvent("k"))
	until(t, ctx, "the second selected again", `document.querySelector('#rows tr.selected') === document.querySelector('#rows tr:nth-child(2)')`)

	// HAR export: the page's link gives HAR 1.2.
	href := eval[string](t, ctx, `document.getElementById('har-all').href`)
	resp, err := http.Get(href)
	if err != nil {
		t.Fatal(err)
	}
	har, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	checkHAR(t, har, 4)
	if !strings.Contains(string(har), "/hook/github") || first.ID == 0 {
		t.Errorf("HAR lacks the first request")
	}

	// Clear empties the list, and the next request appears alone.
	do(t, ctx, "clear", click(`#clear`))
	until(t, ctx, "an empty list", `document.querySelectorAll('#rows tr').length === 0 && !document.getElementById('empty').hidden`)
	r.send(t, c, "GET", "/after-clear", "")
	until(t, ctx, "the new request alone", `document.querySelectorAll('#rows tr').length === 1 && document.querySelector('#rows tr').innerText.includes('/after-clear')`)
}

// TestPage_WithTokenInChromium: with a token, the page opened at
// /?token=TOKEN (the URL tunnel prints) loads, follows the event stream
// and lists requests.
func TestPage_WithTokenInChromium(t *testing.T) {
	var hits atomic.Int64
	cfg := inspect.DefaultConfig()
	cfg.Token = "tok-123"
	r := newRig(t, cfg, echoService(&hits))
	ctx := browser(t)
	do(t, ctx, "open the page", chromedp.Navigate(r.api.URL+"/?token=tok-123"))
	until(t, ctx, "the event stream", `document.getElementById('status').textContent === 'live'`)
	r.send(t, r.client(t), "GET", "/with-token", "")
	until(t, ctx, "the request in the list", `document.querySelectorAll('#rows tr').length === 1`)
	do(t, ctx, "select it", click(`#rows tr`))
	until(t, ctx, "the detail", `document.getElementById('col-main').innerText.includes('/with-token')`)
}
