package oidc

import (
	"context"
	"net"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
	"golang.org/x/oauth2"

	"github.com/tunnelhq/tunnel/internal/testoidc"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestAllow(t *testing.T) {
	a, err := ParseAllow([]string{"Ann@Example.com", "@example.org"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		email string
		want  bool
	}{
		{"ann@example.com", true},
		{"ANN@EXAMPLE.COM", true},
		{"bob@example.com", false},
		{"bob@example.org", true},
		{"bob@sub.example.org", false},
		{"bob@example.org.evil.test", false},
		{"example.org", false},
		{"", false},
	} {
		if got := a.Permits(tt.email); got != tt.want {
			t.Errorf("Permits(%q): got %v, want %v", tt.email, got, tt.want)
		}
	}
	if (*Allow)(nil).Permits("ann@example.com") {
		t.Error("a nil Allow let someone in")
	}
	for _, bad := range []string{"example.org", "@", "ann@", "a@b@example.org", "a b@example.org", "ann@localhost",
		"ann@.example.org", "a,b@example.org", strings.Repeat("a", 250) + "@example.org"} {
		if _, err := ParseAllow([]string{bad}); err == nil {
			t.Errorf("ParseAllow(%q): accepted", bad)
		}
	}
}

func TestSafePath(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"/", "/"},
		{"/page?x=1", "/page?x=1"},
		{"/a/b/../c", "/a/b/../c"},
		{"//evil.example/x", "/"},
		{"/\\evil.example", "/"},
		{"/a\\b", "/"},
		{"https://evil.example/", "/"},
		{"evil", "/"},
		{"", "/"},
		{"/a\r\nSet-Cookie: x", "/"},
		{"/" + strings.Repeat("a", maxPath), "/"},
	} {
		if got := SafePath(tt.in); got != tt.want {
			t.Errorf("SafePath(%q): got %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestSealer(t *testing.T) {
	s := newSealer([]byte(strings.Repeat("k", 32)))
	in := session{Host: "wiki.example.com", Email: "ann@example.com", Expires: 42}
	sealed, err := s.seal(purposeSession, in)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(sealed, "ann") {
		t.Fatalf("sealed value shows the email: %s", sealed)
	}
	var out session
	if err := s.open(purposeSession, sealed, &out); err != nil || out != in {
		t.Fatalf("open: got %+v, %v; want %+v", out, err, in)
	}
	var tk ticket
	if err := s.open(purposeTicket, sealed, &tk); err == nil {
		t.Fatal("a session opened as a ticket")
	}
	other := newSealer([]byte(strings.Repeat("x", 32)))
	if err := other.open(purposeSession, sealed, &out); err == nil {
		t.Fatal("a value sealed under another key opened")
	}
	b := []byte(sealed)
	b[len(b)/2] ^= 1
	if err := s.open(purposeSession, string(b), &out); err == nil {
		t.Fatal("an altered value opened")
	}
	for _, bad := range []string{"", "!!!", "AAAA", strings.Repeat("A", maxSealed+1)} {
		if err := s.open(purposeSession, bad, &out); err == nil {
			t.Errorf("open(%.20q): accepted", bad)
		}
	}
}

func TestStripCookies(t *testing.T) {
	for _, tt := range []struct {
		in   []string
		want []string // nil: no Cookie header left
	}{
		{[]string{"a=1; __Host-tunnel-session=x; b=2"}, []string{"a=1; b=2"}},
		{[]string{"__Host-tunnel-session=x"}, nil},
		{[]string{"__Host-tunnel-session=x", "c=3"}, []string{"c=3"}},
		{[]string{"__Host-tunnel-oidc-flow=y;__Host-tunnel-session=x"}, nil},
		{[]string{"theme=dark"}, []string{"theme=dark"}},
	} {
		h := http.Header{"Cookie": tt.in}
		StripCookies(h)
		got, ok := h["Cookie"]
		if tt.want == nil && ok || tt.want != nil && strings.Join(got, "|") != strings.Join(tt.want, "|") {
			t.Errorf("StripCookies(%q): got %q (present %v), want %q", tt.in, got, ok, tt.want)
		}
	}
}

func validConfig() Config {
	return Config{Issuer: "https://issuer.example", ClientID: "id", ClientSecret: "secret",
		RedirectURL: "https://tunnel.example" + CallbackPath, CookieKey: make([]byte, 32)}
}

func TestConfig_Validate(t *testing.T) {
	if err := validConfig().Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, tt := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no issuer", func(c *Config) { c.Issuer = "" }, "want an absolute URL"},
		{"http issuer off loopback", func(c *Config) { c.Issuer = "http://issuer.example" }, "http only on a loopback"},
		{"http issuer on loopback", func(c *Config) { c.Issuer = "http://127.0.0.1:5556" }, ""},
		{"no client id", func(c *Config) { c.ClientID = "" }, "client id"},
		{"no secret", func(c *Config) { c.ClientSecret = "" }, "client secret"},
		{"short key", func(c *Config) { c.CookieKey = make([]byte, 31) }, "cookie key: 31 bytes"},
		{"redirect elsewhere", func(c *Config) { c.RedirectURL = "https://tunnel.example/cb" }, "redirect URL"},
		{"redirect http", func(c *Config) { c.RedirectURL = "http://tunnel.example" + CallbackPath }, "redirect URL"},
	} {
		c := validConfig()
		tt.mod(&c)
		err := c.Validate()
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: got %v, want %q", tt.name, err, tt.want)
		}
	}
}

// TestNew_Discovery: New reads the real provider's discovery document; an
// issuer that never answers fails within DiscoveryTimeout, and one that is
// not listening fails at once, both with an error naming the issuer.
func TestNew_Discovery(t *testing.T) {
	redirect := "https://tunnel.test" + CallbackPath
	p := testoidc.Start(t, redirect)
	cfg := validConfig()
	cfg.Issuer, cfg.RedirectURL, cfg.Logger = p.Issuer, redirect, zerolog.Nop()
	l, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New against the provider: %v", err)
	}
	l.Close()
	l.Close()

	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := silent.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	t.Cleanup(func() {
		silent.Close()
		for c := range accepted {
			c.Close()
		}
	})
	cfg.Issuer, cfg.DiscoveryTimeout = "http://"+silent.Addr().String(), 300*time.Millisecond
	start := time.Now()
	if _, err := New(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "discovery at "+cfg.Issuer) {
		t.Fatalf("silent issuer: got %v, want a discovery error naming it", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("silent issuer: New took %v, want about the 300ms timeout", d)
	}
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	cfg.Issuer = "http://" + closed.Addr().String()
	closed.Close()
	if _, err := New(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "discovery at "+cfg.Issuer) {
		t.Fatalf("closed issuer: got %v, want a discovery error naming it", err)
	}
}

// TestVerify_Nonce: an ID token the provider issued for one sign-in is
// refused for another (its nonce differs), even with a valid signature.
// PKCE already keeps a code from being swapped between sign-ins at the
// code exchange; the nonce check is the second lock, so it is tested here
// with a real token directly.
func TestVerify_Nonce(t *testing.T) {
	redirect := "https://tunnel.test" + CallbackPath
	p := testoidc.StartWith(t, redirect, testoidc.Options{ClaimsInIDToken: true})
	cfg := validConfig()
	cfg.Issuer, cfg.RedirectURL, cfg.Logger = p.Issuer, redirect, zerolog.Nop()
	cfg.ClientID, cfg.ClientSecret = testoidc.ClientID, testoidc.ClientSecret
	l, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	verifier := oauth2.GenerateVerifier()
	authURL := l.oauth.AuthCodeURL("st", oauth2.S256ChallengeOption(verifier), gooidc.Nonce("nonce-1"))
	jar, _ := cookiejar.New(nil)
	var code string
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Jar: jar, Transport: tr, Timeout: 20 * time.Second,
		CheckRedirect: func(r *http.Request, _ []*http.Request) error {
			if r.URL.Host == "tunnel.test" { // back at tunneld: stop, keep the code
				code = r.URL.Query().Get("code")
				return http.ErrUseLastResponse
			}
			return nil
		}}
	resp, err := c.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	testoidc.SignIn(t, c, resp, "ann").Body.Close()
	if code == "" {
		t.Fatal("the provider sent no code back")
	}
	ctx := gooidc.ClientContext(context.Background(), l.client)
	tok, err := l.oauth.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.verify(ctx, tok, "nonce-2"); err == nil || !strings.Contains(err.Error(), "nonce") {
		t.Fatalf("another sign-in's nonce: got %v, want a nonce refusal", err)
	}
	if email, err := l.verify(ctx, tok, "nonce-1"); err != nil || email != "ann@example.com" {
		t.Fatalf("its own nonce: got %q, %v; want ann@example.com", email, err)
	}
}
