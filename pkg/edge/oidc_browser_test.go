package edge_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tunnelhq/tunnel/internal/edgetest"
	"github.com/tunnelhq/tunnel/internal/testhttp"
	"github.com/tunnelhq/tunnel/internal/testoidc"
)

// chromium starts a headless Chromium (the flags TESTING.md lists) that
// reaches the edge for tunnel.test and its names and trusts the edge's
// certificate, and returns a tab's context, ended when the test ends.
func (le *loginEdge) chromium(t *testing.T) context.Context {
	t.Helper()
	bin := testhttp.Chromium(t)
	sum := sha256.Sum256(le.spki)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("host-resolver-rules", "MAP *."+edgetest.Domain+" 127.0.0.1, MAP "+edgetest.Domain+" 127.0.0.1"),
		chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(sum[:])),
		chromedp.UserDataDir(t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, time.Minute)
	t.Cleanup(func() {
		cancelTimeout()
		cancelTab()
		cancelAlloc()
	})
	return ctx
}

// browserSignIn opens u in ctx's tab, signs in at the provider's login
// page as user, and returns the text of the page the sign-in ends on.
func browserSignIn(t *testing.T, ctx context.Context, u, user string) (host, text string) {
	t.Helper()
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	port := pu.Port()
	if err := chromedp.Do(ctx, chromedp.Navigate(u)); err != nil {
		t.Fatalf("open %s: %v", u, err)
	}
	// wait polls the page for js to hold; a navigation in between (the
	// sign-in is a chain of redirects) ends one poll, and the next one
	// starts on the new page.
	wait := func(what, js string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			wctx, cancel := context.WithDeadline(ctx, deadline)
			_, err := chromedp.Run(wctx, chromedp.Poll[bool](js))
			cancel()
			if err == nil {
				return
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				page, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText`))
				t.Fatalf("waiting for %s: %v\npage:\n%s", what, err, page)
			}
		}
	}
	wait("the provider's login form", `!!document.getElementById('username')`)
	fill := `(() => {
		document.getElementById('username').value = '` + user + `';
		document.getElementById('password').value = '` + testoidc.Password + `';
		document.querySelector('form').submit();
		return true; })()`
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](fill)); err != nil {
		t.Fatalf("submit the login form: %v", err)
	}
	wait("the end of the sign-in", `location.host.endsWith('.`+edgetest.Domain+`:`+port+`') && document.readyState === 'complete' && document.body && document.body.innerText.length > 0`)
	out, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[location.host, location.pathname + location.search, document.body.innerText]`))
	if err != nil || len(out) != 3 {
		t.Fatalf("read the page: %v", err)
	}
	return out[0] + out[1], out[2]
}

// TestEdge_OIDCLoginInChromium: a real browser signs in at the provider's
// login page and ends on the service's page, which shows the identity
// tunneld gave it; a browser signed in as a refused identity gets the 403
// page naming it.
func TestEdge_OIDCLoginInChromium(t *testing.T) {
	le := startLogin(t, nil)
	addr, _ := identityBackend(t)
	le.connect(t, addr, "@example.com")
	u := le.URL("wiki", "/page?x=1")
	t.Run("allowed", func(t *testing.T) {
		ctx := le.chromium(t)
		where, text := browserSignIn(t, ctx, u, "ann")
		if want := strings.TrimPrefix(u, "https://"); where != want {
			t.Fatalf("ended at %s, want %s", where, want)
		}
		if !strings.Contains(text, `service page; email=["ann@example.com"]`) || strings.Contains(text, "tunnel-session") {
			t.Fatalf("service page: %q, want the identity header and no session cookie", text)
		}
		// The next page needs no sign-in.
		if err := chromedp.Do(ctx, chromedp.Navigate(le.URL("wiki", "/again"))); err != nil {
			t.Fatal(err)
		}
		txt, err := chromedp.Run(ctx, chromedp.Text("body"))
		if err != nil || !strings.Contains(txt, "path=/again") {
			t.Fatalf("second page: %q, %v", txt, err)
		}
	})
	t.Run("refused", func(t *testing.T) {
		_, text := browserSignIn(t, le.chromium(t), u, "bob")
		if !strings.Contains(text, "403 Forbidden") || !strings.Contains(text, "signed in as bob@other.test") {
			t.Fatalf("page: %q, want 403 naming bob@other.test", text)
		}
	})
}
