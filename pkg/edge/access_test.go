package edge_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/tunnelhq/tunnel/internal/edgetest"
	"github.com/tunnelhq/tunnel/pkg/edge"
	"github.com/tunnelhq/tunnel/pkg/limit"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/proto"
	"github.com/tunnelhq/tunnel/pkg/token"
)

// bcryptHash hashes password at bcrypt's lowest cost: the edge accepts any
// cost up to 12, and the tests check many passwords.
func bcryptHash(t testing.TB, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// countingBackend answers 200 with the Authorization header it got (or
// "none"), and counts the connections made to it: each one is a stream
// the edge opened to the client, which dialled the service for it.
func countingBackend(t *testing.T) (addr string, conns *atomic.Int64) {
	conns = new(atomic.Int64)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := r.Header.Get("Authorization")
		if a == "" {
			a = "none"
		}
		fmt.Fprintf(w, "service ok; authorization: %s", a)
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

func fetch(t *testing.T, c *http.Client, url string, set func(*http.Request)) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if set != nil {
		set(req)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func TestEdge_BasicAuth(t *testing.T) {
	h := edgetest.Start(t, nil)
	addr, conns := countingBackend(t)
	access := &proto.Access{BasicAuth: []proto.BasicAuthUser{
		{User: "ann", Hash: bcryptHash(t, "s3cret pass")},
		{User: "bo", Hash: bcryptHash(t, "other")},
	}}
	c, err := h.Connect(aliceToken, mux.Tunnel{Name: "wiki", Target: addr, Access: access},
		mux.Tunnel{Name: "open", Target: addr})
	if err != nil {
		t.Fatal(err)
	}
	if !c.Welcome.Tunnels[0].Access || c.Welcome.Tunnels[1].Access {
		t.Fatalf("Welcome: got access %v, %v; want true for wiki only", c.Welcome.Tunnels[0].Access, c.Welcome.Tunnels[1].Access)
	}
	hc := h.HTTPClient(false)
	url := h.URL("wiki", "/")
	realm := fmt.Sprintf(`Basic realm="wiki.%s:%d", charset="UTF-8"`, domain, h.Port)
	// Fewer wrong ones than limit.VisitorAuthFreeFailures: this is not
	// the rate limit's test.
	refused := []struct {
		name string
		set  func(*http.Request)
	}{
		{"no header", nil},
		{"wrong password", func(r *http.Request) { r.SetBasicAuth("ann", "wrong") }},
		{"another user's password", func(r *http.Request) { r.SetBasicAuth("ann", "other") }},
		{"unknown user", func(r *http.Request) { r.SetBasicAuth("eve", "s3cret pass") }},
		{"not basic", func(r *http.Request) { r.Header.Set("Authorization", "Bearer s3cret pass") }},
	}
	for _, tt := range refused {
		resp, body := fetch(t, hc, url, tt.set)
		if resp.StatusCode != 401 || !strings.Contains(body, "asks for a user name and password") {
			t.Errorf("%s: got %d %q, want 401", tt.name, resp.StatusCode, body)
		}
		if got := resp.Header.Get("WWW-Authenticate"); got != realm {
			t.Errorf("%s: WWW-Authenticate: got %q, want %q", tt.name, got, realm)
		}
	}
	if n := conns.Load(); n != 0 {
		t.Fatalf("refused visitors made the client dial its service %d times, want 0", n)
	}
	for _, u := range [][2]string{{"ann", "s3cret pass"}, {"bo", "other"}, {"ann", "s3cret pass"}} {
		resp, body := fetch(t, hc, url, func(r *http.Request) { r.SetBasicAuth(u[0], u[1]) })
		if resp.StatusCode != 200 || body != "service ok; authorization: none" {
			t.Fatalf("%s with the right password: got %d %q, want 200 with the Authorization header stripped", u[0], resp.StatusCode, body)
		}
	}
	// The open tunnel of the same session passes Authorization on, as ever.
	resp, body := fetch(t, hc, h.URL("open", "/"), func(r *http.Request) { r.SetBasicAuth("x", "y") })
	if resp.StatusCode != 200 || !strings.HasPrefix(body, "service ok; authorization: Basic ") {
		t.Fatalf("tunnel without rules: got %d %q, want 200 with the visitor's Authorization", resp.StatusCode, body)
	}

	var st *edge.AccessStatus
	for _, ts := range h.Srv.Tunnels() {
		if ts.Name == "wiki" {
			st = ts.Access
		} else if ts.Access != nil {
			t.Errorf("status of %s: got access %+v, want none", ts.Name, ts.Access)
		}
	}
	if st == nil || strings.Join(st.BasicAuthUsers, ",") != "ann,bo" {
		t.Errorf("status of wiki: got access %+v, want users ann and bo", st)
	}
}

func TestEdge_BasicAuthPassesAuthorizationIfAsked(t *testing.T) {
	h := edgetest.Start(t, nil)
	addr, _ := countingBackend(t)
	access := &proto.Access{BasicAuth: []proto.BasicAuthUser{{User: "ann", Hash: bcryptHash(t, "pw")}}, PassAuthorization: true}
	if _, err := h.Connect(aliceToken, mux.Tunnel{Name: "wiki", Target: addr, Access: access}); err != nil {
		t.Fatal(err)
	}
	resp, body := fetch(t, h.HTTPClient(true), h.URL("wiki", "/"), func(r *http.Request) { r.SetBasicAuth("ann", "pw") })
	if want := "service ok; authorization: Basic YW5uOnB3"; resp.StatusCode != 200 || body != want {
		t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, want)
	}
}

func TestEdge_BasicAuthRateLimitedPerVisitor(t *testing.T) {
	h := edgetest.Start(t, nil)
	addr, conns := countingBackend(t)
	access := &proto.Access{BasicAuth: []proto.BasicAuthUser{{User: "ann", Hash: bcryptHash(t, "pw")}}}
	if _, err := h.Connect(aliceToken, mux.Tunnel{Name: "wiki", Target: addr, Access: access},
		mux.Tunnel{Name: "open", Target: addr}); err != nil {
		t.Fatal(err)
	}
	hc := h.HTTPClient(false)
	url := h.URL("wiki", "/")
	right := func(r *http.Request) { r.SetBasicAuth("ann", "pw") }
	// A browser's first request carries no header: it is no failure.
	for range limit.VisitorAuthFreeFailures + 2 {
		if resp, _ := fetch(t, hc, url, nil); resp.StatusCode != 401 {
			t.Fatalf("no header: got %d, want 401", resp.StatusCode)
		}
	}
	for i := range limit.VisitorAuthFreeFailures {
		resp, _ := fetch(t, hc, url, func(r *http.Request) { r.SetBasicAuth("ann", fmt.Sprint("guess", i)) })
		if resp.StatusCode != 401 {
			t.Fatalf("guess %d: got %d, want 401", i+1, resp.StatusCode)
		}
	}
	// Now even the right password is not checked for a while.
	resp, body := fetch(t, hc, url, right)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "1" || !strings.Contains(body, "Too many wrong passwords") {
		t.Fatalf("after %d wrong passwords: got %d (Retry-After %q) %q, want 429 with Retry-After 1",
			limit.VisitorAuthFreeFailures, resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	// The limit is on passwords only: the same visitor still reaches an
	// open tunnel.
	if resp, _ := fetch(t, hc, h.URL("open", "/"), nil); resp.StatusCode != 200 {
		t.Fatalf("open tunnel: got %d, want 200", resp.StatusCode)
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("the client dialled its service %d times, want once (for the open tunnel)", n)
	}
}

func TestEdge_AccessCIDR(t *testing.T) {
	tests := []struct {
		name       string
		trusted    string // a trusted proxy's prefix; "": none
		xff        string // the X-Forwarded-For the visitor (or proxy) sends
		allow      []string
		deny       []string
		wantStatus int
	}{
		{"allowed", "", "", []string{"127.0.0.0/8"}, nil, 200},
		{"allowed among others", "", "", []string{"10.0.0.0/8", "2001:db8::/32", "127.0.0.1/32"}, nil, 200},
		{"not allowed", "", "", []string{"10.0.0.0/8"}, nil, 403},
		{"only IPv6 allowed", "", "", []string{"::/0"}, nil, 403},
		{"IPv4-mapped IPv6 is not IPv4", "", "", []string{"::ffff:127.0.0.1/128"}, nil, 403},
		{"denied", "", "", nil, []string{"127.0.0.1/32"}, 403},
		{"deny wins over allow", "", "", []string{"127.0.0.0/8"}, []string{"127.0.0.0/24"}, 403},
		{"other denied", "", "", nil, []string{"10.0.0.0/8"}, 200},
		{"forged X-Forwarded-For ignored", "", "203.0.113.9", []string{"203.0.113.0/24"}, nil, 403},
		{"behind a trusted proxy, allowed", "127.0.0.1/32", "203.0.113.9", []string{"203.0.113.0/24"}, nil, 200},
		{"behind a trusted proxy, denied", "127.0.0.1/32", "203.0.113.9", nil, []string{"203.0.113.0/24"}, 403},
		{"behind a trusted proxy, the proxy itself is not the visitor", "127.0.0.1/32", "203.0.113.9", []string{"127.0.0.0/8"}, nil, 403},
		{"behind a trusted proxy, IPv6 visitor", "127.0.0.1/32", "2001:db8::7", []string{"2001:db8::/32"}, nil, 200},
		{"behind a trusted proxy, forged entries left of the real one", "127.0.0.1/32", "10.1.1.1, 203.0.113.9", []string{"10.0.0.0/8"}, nil, 403},
	}
	for _, tt := range tests {
		t.Run(strings.ReplaceAll(tt.name, " ", "_"), func(t *testing.T) {
			h := edgetest.Start(t, func(c *edge.Config) {
				if tt.trusted != "" {
					c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix(tt.trusted)}
				}
			})
			addr, conns := countingBackend(t)
			access := &proto.Access{AllowCIDR: tt.allow, DenyCIDR: tt.deny}
			if _, err := h.Connect(aliceToken, mux.Tunnel{Name: "wiki", Target: addr, Access: access}); err != nil {
				t.Fatal(err)
			}
			resp, body := fetch(t, h.HTTPClient(false), h.URL("wiki", "/"), func(r *http.Request) {
				if tt.xff != "" {
					r.Header.Set("X-Forwarded-For", tt.xff)
				}
			})
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("got %d %q, want %d", resp.StatusCode, body, tt.wantStatus)
			}
			if tt.wantStatus == 403 {
				if !strings.Contains(body, "Your address may not visit wiki.") {
					t.Errorf("page: got %q, want it to say the address may not visit", body)
				}
				if n := conns.Load(); n != 0 {
					t.Errorf("a refused visitor made the client dial its service %d times, want 0", n)
				}
			}
		})
	}
}

func TestEdge_AccessAddressBeforePassword(t *testing.T) {
	h := edgetest.Start(t, nil)
	addr, _ := countingBackend(t)
	access := &proto.Access{BasicAuth: []proto.BasicAuthUser{{User: "ann", Hash: bcryptHash(t, "pw")}},
		DenyCIDR: []string{"127.0.0.0/8"}}
	if _, err := h.Connect(aliceToken, mux.Tunnel{Name: "wiki", Target: addr, Access: access}); err != nil {
		t.Fatal(err)
	}
	resp, _ := fetch(t, h.HTTPClient(false), h.URL("wiki", "/"), func(r *http.Request) { r.SetBasicAuth("ann", "pw") })
	if resp.StatusCode != 403 || resp.Header.Get("WWW-Authenticate") != "" {
		t.Fatalf("denied address with the right password: got %d (WWW-Authenticate %q), want 403 and no password asked",
			resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
}

func TestEdge_AccessRefusedAtRegistration(t *testing.T) {
	h := edgetest.Start(t, nil)
	good := bcryptHash(t, "pw")
	costly := strings.Replace(good, "$04$", "$13$", 1)
	user := func(u, hash string) *proto.Access {
		return &proto.Access{BasicAuth: []proto.BasicAuthUser{{User: u, Hash: hash}}}
	}
	tests := []struct {
		name   string
		access *proto.Access
		want   string
	}{
		{"bad cidr", &proto.Access{AllowCIDR: []string{"10.0.0.0/33"}}, `allow_cidr "10.0.0.0/33": not a CIDR prefix`},
		{"bare address", &proto.Access{DenyCIDR: []string{"10.0.0.1"}}, `deny_cidr "10.0.0.1": not a CIDR prefix`},
		{"host bits", &proto.Access{AllowCIDR: []string{"10.1.2.3/8"}}, `allow_cidr "10.1.2.3/8": host bits set, did you mean 10.0.0.0/8?`},
		{"empty user", user("", good), "empty user name"},
		{"colon in user", user("a:b", good), `basic auth user "a:b": a user name cannot hold ':'`},
		{"control character in user", user("a\tb", good), "control character"},
		{"not bcrypt", user("ann", "plaintext"), `basic auth user "ann": password hash is not bcrypt`},
		{"cost too high", user("ann", costly), "bcrypt cost 13, at most 12"},
		{"user twice", &proto.Access{BasicAuth: []proto.BasicAuthUser{{User: "ann", Hash: good}, {User: "ann", Hash: good}}}, `"ann" given twice`},
		{"pass authorization alone", &proto.Access{PassAuthorization: true}, "pass_authorization without basic auth"},
		{"pass authorization with prefixes only", &proto.Access{AllowCIDR: []string{"10.0.0.0/8"}, PassAuthorization: true}, "pass_authorization without basic auth"},
	}
	addr, _ := countingBackend(t)
	for _, tt := range tests {
		t.Run(strings.ReplaceAll(tt.name, " ", "_"), func(t *testing.T) {
			_, err := h.Connect(aliceToken, mux.Tunnel{Name: "fine", Target: addr}, mux.Tunnel{Name: "wiki", Target: addr, Access: tt.access})
			var perr *proto.Error
			if !errors.As(err, &perr) || perr.Code != proto.CodeBadRequest || !strings.Contains(perr.Message, "tunnel 2 (wiki): access: ") ||
				!strings.Contains(perr.Message, tt.want) {
				t.Fatalf("got %v, want bad_request naming tunnel 2 (wiki) and containing %q", err, tt.want)
			}
			if !mux.IsPermanent(err) {
				t.Errorf("the refusal is not permanent: the client would retry forever")
			}
		})
	}
	// None of the refused tunnels took its name.
	if _, err := h.Connect(bobToken, mux.Tunnel{Name: "wiki", Target: addr}); err != nil {
		t.Fatalf("wiki after the refusals: %v", err)
	}
}

func TestEdge_AccessPolicies(t *testing.T) {
	rule := &proto.Access{AllowCIDR: []string{"127.0.0.0/8"}}
	h := edgetest.Start(t, func(c *edge.Config) {
		tokens, err := token.New([]token.Entry{
			{Label: "strict", SHA256: token.Hash("tk_strict"), Names: []string{"*"}, Access: &token.AccessPolicy{Require: true}},
			{Label: "plain", SHA256: token.Hash("tk_plain"), Names: []string{"*"}, Access: &token.AccessPolicy{Forbid: true}},
			{Label: "free", SHA256: token.Hash("tk_free"), Names: []string{"*"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		c.Auth = tokens
		c.RequireAccessAnonymous = true
	})
	addr, _ := countingBackend(t)
	tests := []struct {
		name, token string
		tunnels     []mux.Tunnel
		want        string // "": accepted
	}{
		{"required and missing", "tk_strict", []mux.Tunnel{{Name: "a1", Target: addr, Access: rule}, {Name: "a2", Target: addr}},
			"tunnel 2 (a2): this token requires an access rule on every http tunnel"},
		{"required and given", "tk_strict", []mux.Tunnel{{Name: "a3", Target: addr, Access: rule}}, ""},
		{"required, random name", "tk_strict", []mux.Tunnel{{Target: addr, Access: &proto.Access{}}},
			"tunnel 1 (random name): this token requires an access rule"},
		{"forbidden and given", "tk_plain", []mux.Tunnel{{Name: "b1", Target: addr, Access: rule}}, "tunnel 1 (b1): this token may not set access rules"},
		{"forbidden and absent", "tk_plain", []mux.Tunnel{{Name: "b2", Target: addr}}, ""},
		{"free without", "tk_free", []mux.Tunnel{{Name: "c1", Target: addr}}, ""},
		{"free with", "tk_free", []mux.Tunnel{{Name: "c2", Target: addr, Access: rule}}, ""},
		{"anonymous without", "", []mux.Tunnel{{Name: "d1", Target: addr}}, "tunnel 1 (d1): this server requires an access rule on every http tunnel"},
		{"anonymous with", "", []mux.Tunnel{{Name: "d2", Target: addr, Access: rule}}, ""},
	}
	for _, tt := range tests {
		t.Run(strings.ReplaceAll(tt.name, " ", "_"), func(t *testing.T) {
			_, err := h.Connect(tt.token, tt.tunnels...)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("got %v, want accepted", err)
				}
				return
			}
			var perr *proto.Error
			if !errors.As(err, &perr) || perr.Code != proto.CodeBadRequest || !strings.Contains(perr.Message, tt.want) {
				t.Fatalf("got %v, want bad_request containing %q", err, tt.want)
			}
		})
	}
}

// TestEdge_AccessOnlyForHTTPTunnels: a Hello that puts rules on a TCP or
// TLS tunnel (the client refuses to send one; a hand-made Hello) is refused
// with the reason, and a token that requires rules still opens TCP tunnels
// without them, since they cannot carry any.
func TestEdge_AccessOnlyForHTTPTunnels(t *testing.T) {
	a := startAbuse(t, func(c *edge.Config) {
		tokens, err := token.New([]token.Entry{
			{Label: "alice", SHA256: token.Hash(aliceToken), Names: []string{"*"}}, // the canary's
			{Label: "strict", SHA256: token.Hash("tk_strict"), Names: []string{"*"}, Access: &token.AccessPolicy{Require: true}},
		})
		if err != nil {
			t.Fatal(err)
		}
		c.Auth = tokens
	})
	for _, kind := range []string{proto.KindTCP, proto.KindTLS} {
		_, m := a.helloFrom(t, &proto.Hello{Version: proto.Version, Token: "tk_strict", Tunnels: []proto.TunnelRequest{
			{Name: "svc-" + kind, Kind: kind, Access: &proto.Access{AllowCIDR: []string{"10.0.0.0/8"}}}}})
		perr, ok := m.(*proto.Error)
		if want := "tunnel 1 (svc-" + kind + "): access rules are for http tunnels, not " + kind; !ok || perr.Code != proto.CodeBadRequest || perr.Message != want {
			t.Errorf("rules on a %s tunnel: got %v, want bad_request %q", kind, m, want)
		}
	}
	addr, _ := countingBackend(t)
	if _, err := a.Connect("tk_strict", mux.Tunnel{Name: "ssh", Target: addr, Kind: proto.KindTCP}); err != nil {
		t.Errorf("a tcp tunnel of a token that requires rules: %v, want accepted", err)
	}
	_, err := a.Connect("tk_strict", mux.Tunnel{Name: "ssh2", Target: addr, Kind: proto.KindTCP}, mux.Tunnel{Name: "web", Target: addr})
	var perr *proto.Error
	if !errors.As(err, &perr) || !strings.Contains(perr.Message, "tunnel 2 (web): this token requires an access rule on every http tunnel") {
		t.Errorf("an http tunnel beside it without rules: got %v, want refused", err)
	}
}
