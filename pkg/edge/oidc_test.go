package edge_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/internal/edgetest"
	"github.com/tunnelhq/tunnel/internal/testoidc"
	"github.com/tunnelhq/tunnel/pkg/edge"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/oidc"
	"github.com/tunnelhq/tunnel/pkg/proto"
	"github.com/tunnelhq/tunnel/pkg/token"
)

// loginEdge is a running edge with OpenID Connect login against a real
// provider in the test process (internal/testoidc).
type loginEdge struct {
	*edgetest.Edge
	issuer *testoidc.Provider
	login  *oidc.Login
	spki   []byte // the edge certificate's SubjectPublicKeyInfo, for Chromium
}

// startLogin runs a provider and an edge whose login uses it; mod, if not
// nil, changes the login's config before New.
func startLogin(t *testing.T, mod func(*oidc.Config)) *loginEdge {
	t.Helper()
	return startLoginEdge(t, mod, nil)
}

// startLoginEdge is startLogin with emod, if not nil, changing the edge's
// config too.
func startLoginEdge(t *testing.T, mod func(*oidc.Config), emod func(*edge.Config)) *loginEdge {
	t.Helper()
	return startLoginWith(t, testoidc.Options{}, mod, emod)
}

// startLoginWith is startLoginEdge with a provider of these options.
func startLoginWith(t *testing.T, o testoidc.Options, mod func(*oidc.Config), emod func(*edge.Config)) *loginEdge {
	t.Helper()
	le := &loginEdge{}
	le.Edge = edgetest.Start(t, func(cfg *edge.Config) {
		if emod != nil {
			emod(cfg)
		}
		redirect := fmt.Sprintf("https://%s:%d%s", edgetest.Domain, cfg.PublicPort, oidc.CallbackPath)
		le.issuer = testoidc.StartWith(t, redirect, o)
		key := make([]byte, 32)
		rand.Read(key)
		oc := oidc.Config{Issuer: le.issuer.Issuer, ClientID: testoidc.ClientID, ClientSecret: testoidc.ClientSecret,
			RedirectURL: redirect, CookieKey: key, Logger: zerolog.New(zerolog.NewTestWriter(t))}
		if mod != nil {
			mod(&oc)
		}
		l, err := oidc.New(context.Background(), oc)
		if err != nil {
			t.Fatalf("oidc.New: %v", err)
		}
		t.Cleanup(func() { l.Close() })
		le.login = l
		cfg.OIDC = l
		le.spki = cfg.TLSConfig.Certificates[0].Leaf.RawSubjectPublicKeyInfo
	})
	return le
}

// identityBackend is the service: it answers with the identity header, the
// cookies and the path it got, and counts the connections made to it.
func identityBackend(t *testing.T) (addr string, conns *atomic.Int64) {
	conns = new(atomic.Int64)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := 0 // headers named like the identity header, underscores and case aside
		for k, v := range r.Header {
			if strings.HasPrefix(strings.ToUpper(strings.ReplaceAll(k, "_", "-")), "X-TUNNEL-USER") {
				n += len(v)
			}
		}
		fmt.Fprintf(w, "service page; email=%q; cookie=%q; path=%s; identity headers=%d", r.Header.Values(oidc.IdentityHeader),
			r.Header.Get("Cookie"), r.URL.RequestURI(), n)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), conns
}

// browserClient is a Go client with a cookie jar that reaches the edge for
// tunnel.test and its names, and anything else (the provider) directly.
func (le *loginEdge) browserClient(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, _, _ := net.SplitHostPort(addr)
			if host == edgetest.Domain || strings.HasSuffix(host, "."+edgetest.Domain) {
				addr = le.Addr
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		TLSClientConfig: &tls.Config{RootCAs: le.Pool},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Jar: jar, Timeout: 30 * time.Second}
}

// signIn visits url with c, signs in at the provider as user and returns
// where the redirects ended and the body there.
func signIn(t *testing.T, c *http.Client, u, user string, set func(*http.Request)) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	if set != nil {
		set(req)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(resp.Request.URL.Path, "/login/") {
		resp.Body.Close()
		t.Fatalf("visiting %s ended at %s (%d), want the provider's login form", u, resp.Request.URL, resp.StatusCode)
	}
	end := testoidc.SignIn(t, c, resp, user)
	defer end.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := end.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return end, b.String()
}

func (le *loginEdge) connect(t *testing.T, addr string, allow ...string) *edgetest.Client {
	t.Helper()
	c, err := le.Connect(edgetest.AliceToken, mux.Tunnel{Name: "wiki", Kind: proto.KindHTTP, Target: addr,
		Access: &proto.Access{OIDCAllow: allow}})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	return c
}

func TestEdge_OIDCLoginAllowsTheDomain(t *testing.T) {
	le := startLogin(t, nil)
	addr, conns := identityBackend(t)
	c := le.connect(t, addr, "@example.com")
	if w := c.Welcome.Tunnels[0]; !w.Access || !w.OIDC {
		t.Fatalf("welcome: access %v, oidc %v; want both", w.Access, w.OIDC)
	}
	b := le.browserClient(t)
	// The visitor's own cookie goes on to the service; its forged
	// identity header does not.
	u := le.URL("wiki", "/page?x=1")
	jarURL, _ := url.Parse(u)
	b.Jar.SetCookies(jarURL, []*http.Cookie{{Name: "theme", Value: "dark"}})
	forge := func(r *http.Request) {
		r.Header.Set(oidc.IdentityHeader, "mallory@example.com")
		r.Header.Set("X_Tunnel_User_Email", "mallory@example.com")
	}
	resp, body := signIn(t, b, u, "ann", forge)
	if resp.StatusCode != 200 || resp.Request.URL.String() != u {
		t.Fatalf("ended at %s with %d %q, want %s with 200", resp.Request.URL, resp.StatusCode, body, u)
	}
	if want := `email=["ann@example.com"]; cookie="theme=dark"; path=/page?x=1; identity headers=1`; !strings.Contains(body, want) {
		t.Fatalf("service saw %q, want %q: the verified identity alone, no session cookie", body, want)
	}
	// The session cookie lets the next request through without the
	// provider, still stripped and with the forged header replaced.
	resp, body = fetch(t, b, le.URL("wiki", "/next"), forge)
	if resp.StatusCode != 200 || !strings.Contains(body, `email=["ann@example.com"]; cookie="theme=dark"; path=/next; identity headers=1`) {
		t.Fatalf("second request: %d %q", resp.StatusCode, body)
	}
	if conns.Load() == 0 {
		t.Fatal("the service saw no connection")
	}
}

func TestEdge_OIDCLoginRefusesOthers(t *testing.T) {
	le := startLogin(t, nil)
	addr, conns := identityBackend(t)
	le.connect(t, addr, "carl@example.com", "@example.org")
	t.Run("not_allowed", func(t *testing.T) {
		resp, body := signIn(t, le.browserClient(t), le.URL("wiki", "/"), "bob", nil)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "signed in as bob@other.test") {
			t.Fatalf("got %d %q, want 403 naming bob@other.test", resp.StatusCode, body)
		}
	})
	t.Run("unverified_email", func(t *testing.T) {
		resp, body := signIn(t, le.browserClient(t), le.URL("wiki", "/"), "eve", nil)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "no verified email") {
			t.Fatalf("got %d %q, want 403: no verified email", resp.StatusCode, body)
		}
	})
	if n := conns.Load(); n != 0 {
		t.Fatalf("the service saw %d connections for refused visitors, want 0", n)
	}
	t.Run("exact_email_any_case", func(t *testing.T) {
		resp, body := signIn(t, le.browserClient(t), le.URL("wiki", "/"), "carl", nil)
		if resp.StatusCode != 200 || !strings.Contains(body, `email=["carl@example.com"]`) {
			t.Fatalf("got %d %q, want 200 for carl@example.com", resp.StatusCode, body)
		}
	})
}

// noFollow is c without following redirects.
func noFollow(c *http.Client) *http.Client {
	n := *c
	n.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &n
}

// isLoginRedirect reports whether resp sends the visitor to the provider.
func (le *loginEdge) isLoginRedirect(resp *http.Response) bool {
	loc := resp.Header.Get("Location")
	return resp.StatusCode == http.StatusFound && strings.HasPrefix(loc, le.issuer.Issuer+"/")
}

func TestEdge_OIDCCookieForgedOrExpired(t *testing.T) {
	le := startLogin(t, nil)
	addr, conns := identityBackend(t)
	le.connect(t, addr, "@example.com")
	if _, err := le.Connect(edgetest.BobToken, mux.Tunnel{Name: "blog", Kind: proto.KindHTTP, Target: addr,
		Access: &proto.Access{OIDCAllow: []string{"@example.com"}}}); err != nil {
		t.Fatal(err)
	}
	b := le.browserClient(t)
	if resp, body := signIn(t, b, le.URL("wiki", "/"), "ann", nil); resp.StatusCode != 200 {
		t.Fatalf("sign in: %d %q", resp.StatusCode, body)
	}
	wikiURL, _ := url.Parse(le.URL("wiki", "/"))
	var session string
	for _, c := range b.Jar.Cookies(wikiURL) {
		if c.Name == "__Host-tunnel-session" {
			session = c.Value
		}
	}
	if session == "" {
		t.Fatal("no session cookie after signing in")
	}
	before := conns.Load()
	nf := noFollow(le.browserClient(t))
	for _, tt := range []struct{ name, host, value string }{
		{"garbage", "wiki", "garbage"},
		{"one_byte_changed", "wiki", session[:len(session)-2] + map[bool]string{true: "A", false: "B"}[session[len(session)-2] != 'A'] + session[len(session)-1:]},
		{"another_tunnels", "blog", session},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := fetch(t, nf, le.URL(tt.host, "/"), func(r *http.Request) {
				r.AddCookie(&http.Cookie{Name: "__Host-tunnel-session", Value: tt.value})
			})
			if !le.isLoginRedirect(resp) {
				t.Fatalf("got %d %q (Location %q), want a redirect to the provider", resp.StatusCode, body, resp.Header.Get("Location"))
			}
		})
	}
	if n := conns.Load(); n != before {
		t.Fatalf("the service saw %d connections for refused cookies, want 0", n-before)
	}

	t.Run("expired", func(t *testing.T) {
		// Sessions of a nanosecond are expired when they come back.
		short := startLogin(t, func(c *oidc.Config) { c.SessionTTL = time.Nanosecond })
		addr, conns := identityBackend(t)
		short.connect(t, addr, "@example.com")
		b := short.browserClient(t)
		var finished bool
		b.CheckRedirect = func(r *http.Request, _ []*http.Request) error {
			finished = finished || r.URL.Path == oidc.FinishPath
			return nil
		}
		resp, body := signIn(t, b, short.URL("wiki", "/"), "ann", nil)
		if !finished || !strings.HasPrefix(resp.Request.URL.Path, "/login/") {
			t.Fatalf("finished %v, ended at %s with %d %q; want the login form again", finished, resp.Request.URL, resp.StatusCode, body)
		}
		if n := conns.Load(); n != 0 {
			t.Fatalf("the service saw %d connections, want 0", n)
		}
	})
}

func TestEdge_OIDCNoOpenRedirect(t *testing.T) {
	le := startLogin(t, nil)
	addr, _ := identityBackend(t)
	le.connect(t, addr, "@example.com")
	for _, p := range []string{"//evil.example/x", "/\\evil.example/x", "/%2F%2Fevil.example"} {
		t.Run(url.PathEscape(p), func(t *testing.T) {
			b := le.browserClient(t)
			resp, body := signIn(t, b, le.URL("wiki", p), "ann", nil)
			host := resp.Request.URL.Host
			if resp.StatusCode != 200 || host != fmt.Sprintf("wiki.%s:%d", edgetest.Domain, le.Port) {
				t.Fatalf("ended at %s with %d %q, want the tunnel's own host", resp.Request.URL, resp.StatusCode, body)
			}
		})
	}
}

// TestEdge_OIDCTickets: a ticket is used once, on its own host, and only by
// the browser that started the sign-in.
func TestEdge_OIDCTickets(t *testing.T) {
	le := startLogin(t, nil)
	addr, _ := identityBackend(t)
	le.connect(t, addr, "@example.com")
	if _, err := le.Connect(edgetest.BobToken, mux.Tunnel{Name: "blog", Kind: proto.KindHTTP, Target: addr,
		Access: &proto.Access{OIDCAllow: []string{"@example.com"}}}); err != nil {
		t.Fatal(err)
	}
	b := le.browserClient(t)
	var finish *url.URL
	b.CheckRedirect = func(r *http.Request, _ []*http.Request) error {
		if r.URL.Path == oidc.FinishPath {
			finish = r.URL
			return http.ErrUseLastResponse
		}
		return nil
	}
	resp, _ := signIn(t, b, le.URL("wiki", "/"), "ann", nil)
	if finish == nil {
		t.Fatalf("no redirect to the finish path: ended at %s with %d", resp.Request.URL, resp.StatusCode)
	}
	flow := ""
	for _, c := range b.Jar.Cookies(finish) {
		if c.Name == "__Host-tunnel-oidc-flow" {
			flow = c.Value
		}
	}
	nf := noFollow(le.browserClient(t))
	withFlow := func(r *http.Request) { r.AddCookie(&http.Cookie{Name: "__Host-tunnel-oidc-flow", Value: flow}) }
	other := *finish
	other.Host = fmt.Sprintf("blog.%s:%d", edgetest.Domain, le.Port)
	if resp, body := fetch(t, nf, other.String(), withFlow); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("ticket on another tunnel: %d %q, want 400", resp.StatusCode, body)
	}
	if resp, body := fetch(t, nf, finish.String(), nil); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("ticket from a browser that did not start the sign-in: %d %q, want 400", resp.StatusCode, body)
	}
	// A victim's browser with a sign-in of its own under way: the
	// attacker's ticket must not sign it in as the attacker.
	if resp, body := fetch(t, nf, finish.String(), func(r *http.Request) {
		r.AddCookie(&http.Cookie{Name: "__Host-tunnel-oidc-flow", Value: strings.Repeat("A", len(flow))})
	}); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("ticket from a browser with another sign-in: %d %q, want 400", resp.StatusCode, body)
	}
	resp, body := fetch(t, nf, finish.String(), withFlow)
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/" {
		t.Fatalf("ticket: %d %q (Location %q), want 302 to /", resp.StatusCode, body, resp.Header.Get("Location"))
	}
	if sc := resp.Header.Values("Set-Cookie"); len(sc) == 0 || !strings.Contains(sc[0], "__Host-tunnel-session=") ||
		!strings.Contains(sc[0], "HttpOnly") || !strings.Contains(sc[0], "Secure") || !strings.Contains(sc[0], "SameSite=Lax") ||
		strings.Contains(strings.ToLower(sc[0]), "domain=") {
		t.Fatalf("session cookie %q: want host-only, Secure, HttpOnly, SameSite=Lax", sc)
	}
	if resp, body := fetch(t, nf, finish.String(), withFlow); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("ticket used twice: %d %q, want 400", resp.StatusCode, body)
	}
}

func TestEdge_OIDCRefusedWithoutIssuer(t *testing.T) {
	h := edgetest.Start(t, nil)
	_, err := h.Connect(edgetest.AliceToken, mux.Tunnel{Name: "wiki", Kind: proto.KindHTTP, Target: "127.0.0.1:1",
		Access: &proto.Access{OIDCAllow: []string{"@example.com"}}})
	if err == nil || !strings.Contains(err.Error(), "no issuer configured (tunneld --oidc-issuer)") {
		t.Fatalf("got %v, want a refusal naming the missing issuer", err)
	}
}

func TestEdge_OIDCAllowChecked(t *testing.T) {
	le := startLogin(t, nil)
	for _, bad := range []string{"example.com", "ann@", "a b@example.com", "ann@localhost"} {
		_, err := le.Connect(edgetest.AliceToken, mux.Tunnel{Name: "wiki", Kind: proto.KindHTTP, Target: "127.0.0.1:1",
			Access: &proto.Access{OIDCAllow: []string{bad}}})
		if err == nil || !strings.Contains(err.Error(), "oidc_allow") {
			t.Errorf("%q: got %v, want a refusal of the oidc_allow entry", bad, err)
		}
	}
}

// TestEdge_IdentityHeaderStrippedEverywhere: a tunnel without login never
// passes a visitor's own identity header on either.
func TestEdge_IdentityHeaderStrippedEverywhere(t *testing.T) {
	h := edgetest.Start(t, nil)
	addr, _ := identityBackend(t)
	if _, err := h.Connect(edgetest.AliceToken, mux.Tunnel{Name: "open", Kind: proto.KindHTTP, Target: addr}); err != nil {
		t.Fatal(err)
	}
	resp, body := fetch(t, h.HTTPClient(false), h.URL("open", "/"), func(r *http.Request) {
		r.Header.Set(oidc.IdentityHeader, "mallory@example.com")
		r.Header.Set("X_Tunnel_User_Email", "mallory@example.com")
		r.Header.Set("x-tunnel-user-name", "mallory")
	})
	if resp.StatusCode != 200 || !strings.Contains(body, "identity headers=0") {
		t.Fatalf("got %d %q, want the service to see no identity header", resp.StatusCode, body)
	}
}

// TestEdge_OIDCTokenPolicies: the tokens file's "access" counts
// --oidc-allow as a rule: require is met by it, forbid refuses it; and so
// does --require-access-anonymous.
func TestEdge_OIDCTokenPolicies(t *testing.T) {
	le := startLoginEdge(t, nil, func(c *edge.Config) {
		tokens, err := token.New([]token.Entry{
			{Label: "strict", SHA256: token.Hash("tk_strict"), Names: []string{"*"}, Access: &token.AccessPolicy{Require: true}},
			{Label: "plain", SHA256: token.Hash("tk_plain"), Names: []string{"*"}, Access: &token.AccessPolicy{Forbid: true}},
		})
		if err != nil {
			t.Fatal(err)
		}
		c.Auth = tokens
		c.RequireAccessAnonymous = true
	})
	login := &proto.Access{OIDCAllow: []string{"@example.com"}}
	for _, tt := range []struct {
		name, token, want string // want "": accepted
	}{
		{"required and given", "tk_strict", ""},
		{"anonymous required and given", "", ""},
		{"forbidden", "tk_plain", "this token may not set access rules (--basic-auth, --allow-cidr, --deny-cidr, --oidc-allow)"},
	} {
		t.Run(strings.ReplaceAll(tt.name, " ", "_"), func(t *testing.T) {
			c, err := le.Connect(tt.token, mux.Tunnel{Name: "p-" + strings.ReplaceAll(tt.name, " ", "-"), Target: "127.0.0.1:1", Access: login})
			switch {
			case tt.want == "" && (err != nil || !c.Welcome.Tunnels[0].OIDC):
				t.Fatalf("got %v, want accepted with login", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("got %v, want a refusal containing %q", err, tt.want)
			}
		})
	}
}

// TestEdge_OIDCAnswersAnUnsentBody: a visitor without a session that
// announces a body and never sends it still gets its redirect to sign in
// at once (the connection then closes), as with the edge's own answers.
func TestEdge_OIDCAnswersAnUnsentBody(t *testing.T) {
	le := startLogin(t, nil)
	addr, conns := identityBackend(t)
	le.connect(t, addr, "@example.com")
	conn, err := tls.Dial("tcp", le.Addr, &tls.Config{RootCAs: le.Pool, ServerName: "wiki." + edgetest.Domain, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "POST /form HTTP/1.1\r\nHost: wiki.%s:%d\r\nContent-Length: 100\r\n\r\n", edgetest.Domain, le.Port)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer while the body is pending: %v", err)
	}
	resp.Body.Close()
	if !le.isLoginRedirect(resp) || !resp.Close {
		t.Fatalf("got %d (Location %q, close %v), want a redirect to the provider closing the connection",
			resp.StatusCode, resp.Header.Get("Location"), resp.Close)
	}
	if n := conns.Load(); n != 0 {
		t.Fatalf("the service saw %d connections, want 0", n)
	}
}

// lockedBuffer is a log sink safe for the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestEdge_OIDCCallbackRefusesGarbage: what anyone can send to the callback
// is refused with a plain page and logs nothing above debug; a state is
// had by visiting a tunnel, so a real one with a made-up code is among it.
func TestEdge_OIDCCallbackRefusesGarbage(t *testing.T) {
	logs := &lockedBuffer{}
	le := startLogin(t, func(c *oidc.Config) { c.Logger = zerolog.New(logs).Level(zerolog.InfoLevel) })
	addr, _ := identityBackend(t)
	le.connect(t, addr, "@example.com")
	nf := noFollow(le.browserClient(t))
	resp, _ := fetch(t, nf, le.URL("wiki", "/"), nil)
	loc, err := url.Parse(resp.Header.Get("Location"))
	if !le.isLoginRedirect(resp) || err != nil {
		t.Fatalf("no redirect to sign in: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	state := url.QueryEscape(loc.Query().Get("state"))
	callback := fmt.Sprintf("https://%s:%d%s", edgetest.Domain, le.Port, oidc.CallbackPath)
	for _, tt := range []struct {
		name, query string
		status      int
	}{
		{"nothing", "", http.StatusBadRequest},
		{"made-up state", "?state=AAAA&code=x", http.StatusBadRequest},
		{"no code", "?state=" + state, http.StatusBadRequest},
		{"made-up code", "?state=" + state + "&code=made-up", http.StatusBadGateway},
		{"provider's refusal", "?state=" + state + "&error=access_denied", http.StatusForbidden},
	} {
		t.Run(strings.ReplaceAll(tt.name, " ", "_"), func(t *testing.T) {
			resp, body := fetch(t, nf, callback+tt.query, nil)
			if resp.StatusCode != tt.status || resp.Header.Get("Set-Cookie") != "" || resp.Header.Get("Location") != "" {
				t.Fatalf("got %d %q (Set-Cookie %q, Location %q), want a plain %d", resp.StatusCode, body,
					resp.Header.Get("Set-Cookie"), resp.Header.Get("Location"), tt.status)
			}
		})
	}
	if l := logs.String(); l != "" {
		t.Fatalf("the login logged:\n%s\nwant nothing above debug for garbage", l)
	}
}

// TestEdge_OIDCClaimsInIDToken: with a provider that puts the email in the
// ID token itself (no userinfo request), a verified email passes and an
// unverified one is refused.
func TestEdge_OIDCClaimsInIDToken(t *testing.T) {
	le := startLoginWith(t, testoidc.Options{ClaimsInIDToken: true}, nil, nil)
	addr, _ := identityBackend(t)
	le.connect(t, addr, "@example.com")
	resp, body := signIn(t, le.browserClient(t), le.URL("wiki", "/"), "ann", nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `email=["ann@example.com"]`) {
		t.Fatalf("ann: got %d %q, want the service with ann's email", resp.StatusCode, body)
	}
	resp, body = signIn(t, le.browserClient(t), le.URL("wiki", "/"), "eve", nil)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "no verified email") {
		t.Fatalf("eve: got %d %q, want 403: no verified email", resp.StatusCode, body)
	}
}
