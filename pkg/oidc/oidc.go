package oidc

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"github.com/rs/zerolog"
	"golang.org/x/oauth2"

	"github.com/tunnelhq/tunnel/internal/expiring"
	"github.com/tunnelhq/tunnel/internal/httpserve"
)

// The paths the login answers on: CallbackPath on the host of
// Config.RedirectURL (the apex), FinishPath on every tunnel's host. Both sit
// under /.tunnel/, which a tunnel with login gives up to tunneld.
const (
	CallbackPath = "/.tunnel/oidc/callback"
	FinishPath   = "/.tunnel/oidc/finish"
)

// IdentityHeader carries the verified email of a signed-in visitor to the
// service. The edge sets it on requests to a tunnel with login, and removes
// it (and any header named like it) from every visitor's request to every
// tunnel, so a service can trust it.
const IdentityHeader = "X-Tunnel-User-Email"

// The cookies, both host-only (the __Host- prefix makes the browser refuse
// them with a Domain, without Secure or off "/"), so one tunnel's session
// is never sent to another tunnel.
const (
	sessionCookie = "__Host-tunnel-session"
	flowCookie    = "__Host-tunnel-oidc-flow"
	cookiePrefix  = "__Host-tunnel-"
)

// Lifetimes of what the login hands out.
const (
	stateTTL  = 10 * time.Minute // a sign-in at the issuer, the flow cookie with it
	ticketTTL = time.Minute      // callback → finish is one redirect
	// maxUsedTickets bounds the memory of tickets already used: one per
	// sign-in in the last ticketTTL. Past it, a ticket is refused (the
	// visitor starts again) rather than remembered by evicting another.
	maxUsedTickets = 8192
	// maxPath bounds the original path a login returns to, so a state
	// stays a URL issuers accept.
	maxPath = 1024
)

// Config configures a Login. Every field is read once, by New.
type Config struct {
	// Issuer is the OpenID Connect issuer URL; discovery reads
	// Issuer/.well-known/openid-configuration. https, or http on a
	// loopback address (tests, a provider on the same machine).
	Issuer string
	// ClientID and ClientSecret are tunneld's client at the issuer.
	ClientID, ClientSecret string
	// RedirectURL is the one callback URL registered at the issuer:
	// https://DOMAIN/.tunnel/oidc/callback (CallbackPath), with the public
	// port if not 443.
	RedirectURL string
	// CookieKey seals states, tickets and session cookies: at least 32
	// random bytes. Nodes serving the same names must share it.
	CookieKey []byte
	// SessionTTL is how long a session cookie lets a visitor in before
	// the next sign-in. Zero means DefaultSessionTTL.
	SessionTTL time.Duration
	// DiscoveryTimeout bounds New's discovery request. Zero means
	// DefaultDiscoveryTimeout.
	DiscoveryTimeout time.Duration
	// Logger gets the login's few lines: failures of the issuer, never a
	// refused cookie or state.
	Logger zerolog.Logger
}

// Defaults of Config.
const (
	DefaultSessionTTL       = 12 * time.Hour
	DefaultDiscoveryTimeout = 10 * time.Second
	// issuerTimeout bounds each request to the issuer after discovery
	// (code exchange, keys), so a stalled issuer holds a callback only so
	// long.
	issuerTimeout = 15 * time.Second
	// MinCookieKey is the shortest Config.CookieKey.
	MinCookieKey = 32
)

// Validate checks cfg without contacting the issuer.
func (c Config) Validate() error {
	u, err := url.Parse(c.Issuer)
	switch {
	case c.Issuer == "" || err != nil || u.Host == "":
		return fmt.Errorf("oidc: issuer %q: want an absolute URL such as https://accounts.example.com", c.Issuer)
	case u.Scheme == "http" && !isLoopback(u.Hostname()):
		return fmt.Errorf("oidc: issuer %q: http only on a loopback address; use https", c.Issuer)
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Errorf("oidc: issuer %q: want https", c.Issuer)
	case c.ClientID == "":
		return errors.New("oidc: client id is required")
	case c.ClientSecret == "":
		return errors.New("oidc: client secret is required")
	case len(c.CookieKey) < MinCookieKey:
		return fmt.Errorf("oidc: cookie key: %d bytes, want at least %d", len(c.CookieKey), MinCookieKey)
	case c.SessionTTL < 0 || c.DiscoveryTimeout < 0:
		return errors.New("oidc: negative duration")
	}
	r, err := url.Parse(c.RedirectURL)
	if err != nil || r.Scheme != "https" || r.Host == "" || r.Path != CallbackPath {
		return fmt.Errorf("oidc: redirect URL %q: want https://DOMAIN%s", c.RedirectURL, CallbackPath)
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Login is tunneld's OpenID Connect client: it starts sign-ins, takes the
// issuer's callbacks and checks session cookies. Safe for concurrent use.
// Close releases its idle connections to the issuer.
type Login struct {
	log      zerolog.Logger
	oauth    oauth2.Config
	provider *gooidc.Provider
	verifier *gooidc.IDTokenVerifier
	client   *http.Client
	sealer   *sealer
	ttl      time.Duration

	mu   sync.Mutex
	used *expiring.Table[string, struct{}] // tickets used in the last ticketTTL
}

// New validates cfg and discovers the issuer, within cfg.DiscoveryTimeout
// and ctx. Its error says what to check; nothing runs after it returns.
func New(ctx context.Context, cfg Config) (*Login, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.DiscoveryTimeout == 0 {
		cfg.DiscoveryTimeout = DefaultDiscoveryTimeout
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	client := &http.Client{Transport: tr, Timeout: issuerTimeout}
	dctx, cancel := context.WithTimeout(gooidc.ClientContext(ctx, client), cfg.DiscoveryTimeout)
	defer cancel()
	// The issuer as given, trailing slash and all: go-oidc checks that the
	// discovery document names exactly it, and some issuers' end in "/".
	p, err := gooidc.NewProvider(dctx, cfg.Issuer)
	if err != nil {
		tr.CloseIdleConnections()
		return nil, fmt.Errorf("oidc: discovery at %s (within %v): %w", cfg.Issuer, cfg.DiscoveryTimeout, err)
	}
	l := &Login{
		log: cfg.Logger.With().Str("component", "oidc").Logger(),
		oauth: oauth2.Config{
			ClientID:     cfg.ClientID,
			ClientSecret: cfg.ClientSecret,
			Endpoint:     p.Endpoint(),
			RedirectURL:  cfg.RedirectURL,
			Scopes:       []string{gooidc.ScopeOpenID, "email"},
		},
		provider: p,
		verifier: p.Verifier(&gooidc.Config{ClientID: cfg.ClientID}),
		client:   client,
		sealer:   newSealer(cfg.CookieKey),
		ttl:      cfg.SessionTTL,
		used:     expiring.New[string, struct{}](maxUsedTickets, ticketTTL),
	}
	return l, nil
}

// Close closes the idle connections to the issuer. Safe to call twice.
func (l *Login) Close() error {
	l.client.Transport.(*http.Transport).CloseIdleConnections()
	return nil
}

// state travels through the issuer in the state parameter, sealed.
type state struct {
	Host     string `json:"h"`
	Path     string `json:"p"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	Binding  string `json:"b"`
	Expires  int64  `json:"e"`
}

// ticket takes a verified identity from the callback to the tunnel's host.
type ticket struct {
	ID      string `json:"i"`
	Host    string `json:"h"`
	Path    string `json:"p"`
	Email   string `json:"m"`
	Binding string `json:"b"`
	Expires int64  `json:"e"`
}

// session is the session cookie's content.
type session struct {
	Host    string `json:"h"`
	Email   string `json:"m"`
	Expires int64  `json:"e"`
}

// Gate decides a request to host, a tunnel with login whose allowed
// identities are allow. It returns the visitor's verified email and true
// when the request may go on to the service; otherwise it has answered it
// (a redirect to sign in, the end of a sign-in, or a 403 naming who the
// visitor is signed in as). The edge still removes the cookies
// (StripCookies) and sets IdentityHeader.
func (l *Login) Gate(w http.ResponseWriter, r *http.Request, host string, allow *Allow) (string, bool) {
	if r.URL.Path == FinishPath {
		closeIfBodyPending(w, r)
		l.finish(w, r, host)
		return "", false
	}
	email, ok := l.session(r, host)
	if !ok {
		closeIfBodyPending(w, r)
		l.start(w, r, host)
		return "", false
	}
	if !allow.Permits(email) {
		closeIfBodyPending(w, r)
		httpserve.Page(w, http.StatusForbidden, fmt.Sprintf("You are signed in as %s, who may not visit %s.\nAsk the tunnel's owner to allow this address, or sign in as someone else at your identity provider.", email, host))
		return "", false
	}
	return email, true
}

// session returns the email of r's valid session cookie for host.
func (l *Login) session(r *http.Request, host string) (string, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return "", false
	}
	var s session
	if l.sealer.open(purposeSession, c.Value, &s) != nil {
		return "", false
	}
	if s.Host != host || time.Now().Unix() >= s.Expires || s.Email == "" {
		return "", false
	}
	return s.Email, true
}

// start sends the visitor to the issuer to sign in, to come back to the
// path it asked for.
func (l *Login) start(w http.ResponseWriter, r *http.Request, host string) {
	binding := ""
	if c, err := r.Cookie(flowCookie); err == nil && len(c.Value) == 22 {
		// Another sign-in of this browser is under way (a second tab):
		// keep its binding, so both can finish.
		binding = c.Value
	} else {
		binding = randomString(16)
	}
	st := state{
		Host:     host,
		Path:     SafePath(r.URL.RequestURI()),
		Nonce:    randomString(16),
		Verifier: oauth2.GenerateVerifier(),
		Binding:  binding,
		Expires:  time.Now().Add(stateTTL).Unix(),
	}
	sealed, err := l.sealer.seal(purposeState, st)
	if err != nil {
		l.log.Error().Err(err).Msg("seal state")
		httpserve.Page(w, http.StatusInternalServerError, "The sign-in could not start.")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: flowCookie, Value: binding, Path: "/", MaxAge: int(stateTTL / time.Second),
		Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode})
	u := l.oauth.AuthCodeURL(sealed, oauth2.S256ChallengeOption(st.Verifier), gooidc.Nonce(st.Nonce))
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, u, http.StatusFound)
}

// Callback is the handler of the RedirectURL: it takes the issuer's answer,
// verifies the identity and hands it to the tunnel's host with a ticket.
func (l *Login) Callback(w http.ResponseWriter, r *http.Request) {
	closeIfBodyPending(w, r)
	q := r.URL.Query()
	var st state
	if l.sealer.open(purposeState, q.Get("state"), &st) != nil || time.Now().Unix() >= st.Expires {
		httpserve.Page(w, http.StatusBadRequest, "This sign-in is not valid or has expired. Open the tunnel's address again to sign in.")
		return
	}
	if e := q.Get("error"); e != "" {
		httpserve.Page(w, http.StatusForbidden, fmt.Sprintf("The identity provider ended the sign-in: %.64s. Open https://%s/ to try again.", e, st.Host))
		return
	}
	code := q.Get("code")
	if code == "" || len(code) > maxSealed {
		httpserve.Page(w, http.StatusBadRequest, fmt.Sprintf("The identity provider sent no sign-in code. Open https://%s/ to try again.", st.Host))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), issuerTimeout)
	defer cancel()
	ctx = gooidc.ClientContext(ctx, l.client)
	tok, err := l.oauth.Exchange(ctx, code, oauth2.VerifierOption(st.Verifier))
	if err != nil {
		// A code the issuer does not know is anyone's to send (a state is
		// had by visiting a tunnel): not worth a line. Anything else (the
		// issuer unreachable, tunneld's client refused) is the operator's.
		lvl := l.log.Warn()
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.ErrorCode == "invalid_grant" {
			lvl = l.log.Debug()
		}
		lvl.Err(err).Str("host", st.Host).Msg("oidc code exchange failed")
		httpserve.Page(w, http.StatusBadGateway, fmt.Sprintf("The identity provider did not confirm the sign-in. Open https://%s/ to try again.", st.Host))
		return
	}
	email, err := l.verify(ctx, tok, st.Nonce)
	if err != nil {
		l.log.Debug().Err(err).Str("host", st.Host).Msg("oidc identity refused")
		msg := "The sign-in could not be verified."
		if errors.Is(err, errUnverified) {
			msg = "The sign-in could not be verified: " + errUnverified.Error() + "."
		}
		httpserve.Page(w, http.StatusForbidden, msg)
		return
	}
	t := ticket{ID: randomString(16), Host: st.Host, Path: st.Path, Email: email, Binding: st.Binding,
		Expires: time.Now().Add(ticketTTL).Unix()}
	sealed, err := l.sealer.seal(purposeTicket, t)
	if err != nil {
		l.log.Error().Err(err).Msg("seal ticket")
		httpserve.Page(w, http.StatusInternalServerError, "The sign-in could not finish.")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, "https://"+st.Host+FinishPath+"?ticket="+url.QueryEscape(sealed), http.StatusFound)
}

// errUnverified: the issuer gave no email, or one it has not verified.
var errUnverified = errors.New("the identity provider gave no verified email address")

// verify checks the ID token of tok (signature, issuer, audience, expiry
// by go-oidc; then the nonce) and returns its verified email. An issuer
// that leaves the email out of the ID token (zitadel's does, in the code
// flow) is asked at its userinfo endpoint, with the access token of the
// same exchange, for the same subject.
func (l *Login) verify(ctx context.Context, tok *oauth2.Token, nonce string) (string, error) {
	raw, ok := tok.Extra("id_token").(string)
	if !ok {
		return "", errors.New("no id_token in the token response")
	}
	idt, err := l.verifier.Verify(ctx, raw)
	if err != nil {
		return "", fmt.Errorf("id token: %w", err)
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(nonce)) != 1 {
		return "", errors.New("id token: nonce does not match")
	}
	var claims struct {
		Email         string `json:"email"`
		EmailVerified any    `json:"email_verified"`
	}
	if err := idt.Claims(&claims); err != nil {
		return "", fmt.Errorf("id token claims: %w", err)
	}
	// Some issuers send the flag as a string.
	verified := claims.EmailVerified == true || claims.EmailVerified == "true"
	if claims.Email == "" {
		ui, err := l.provider.UserInfo(ctx, oauth2.StaticTokenSource(tok))
		if err != nil {
			return "", fmt.Errorf("userinfo: %w", err)
		}
		if ui.Subject != idt.Subject {
			return "", errors.New("userinfo: another subject than the id token's")
		}
		claims.Email, verified = ui.Email, ui.EmailVerified
	}
	if claims.Email == "" || !verified || len(claims.Email) > maxEmail {
		return "", errUnverified
	}
	return strings.ToLower(claims.Email), nil
}

// finish takes a ticket on the tunnel's host: sets the session cookie and
// goes back to the path the visitor first asked for.
func (l *Login) finish(w http.ResponseWriter, r *http.Request, host string) {
	var t ticket
	bad := func() {
		httpserve.Page(w, http.StatusBadRequest, fmt.Sprintf("This sign-in link is not valid, was used already, or has expired. Open https://%s/ to sign in again.", host))
	}
	if l.sealer.open(purposeTicket, r.URL.Query().Get("ticket"), &t) != nil {
		bad()
		return
	}
	c, err := r.Cookie(flowCookie)
	now := time.Now()
	if err != nil || t.Host != host || now.Unix() >= t.Expires ||
		subtle.ConstantTimeCompare([]byte(c.Value), []byte(t.Binding)) != 1 {
		bad()
		return
	}
	l.mu.Lock()
	_, used := l.used.Get(t.ID, now)
	fresh := !used && l.used.PutIfRoom(t.ID, struct{}{}, now)
	l.mu.Unlock()
	if !fresh {
		bad()
		return
	}
	s := session{Host: host, Email: t.Email, Expires: now.Add(l.ttl).Unix()}
	sealed, err := l.sealer.seal(purposeSession, s)
	if err != nil {
		l.log.Error().Err(err).Msg("seal session")
		httpserve.Page(w, http.StatusInternalServerError, "The sign-in could not finish.")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: sealed, Path: "/", MaxAge: int(l.ttl / time.Second),
		Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode})
	http.SetCookie(w, &http.Cookie{Name: flowCookie, Value: "", Path: "/", MaxAge: -1,
		Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode})
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, SafePath(t.Path), http.StatusFound)
}

// SafePath returns p if it is a path on the same host ("/x?y"), else "/":
// "//evil.example/" or "/\evil.example" would be read by browsers as
// another host, and a sign-in must never send a visitor elsewhere.
func SafePath(p string) string {
	if len(p) == 0 || len(p) > maxPath || p[0] != '/' {
		return "/"
	}
	if len(p) > 1 && (p[1] == '/' || p[1] == '\\') {
		return "/"
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < 0x20 || c == 0x7f || c == '\\' {
			return "/"
		}
	}
	return p
}

// StripCookies removes the login's cookies from the Cookie headers of h,
// so that the service never sees (and cannot replay) a visitor's session.
// Other cookies are kept as they were.
func StripCookies(h http.Header) {
	vals, ok := h["Cookie"]
	if !ok {
		return
	}
	var out []string
	for _, v := range vals {
		if !strings.Contains(v, cookiePrefix) {
			out = append(out, v)
			continue
		}
		var kept []string
		for part := range strings.SplitSeq(v, ";") {
			name, _, _ := strings.Cut(strings.TrimSpace(part), "=")
			if !strings.HasPrefix(name, cookiePrefix) && strings.TrimSpace(part) != "" {
				kept = append(kept, strings.TrimSpace(part))
			}
		}
		if len(kept) > 0 {
			out = append(out, strings.Join(kept, "; "))
		}
	}
	if len(out) == 0 {
		delete(h, "Cookie")
		return
	}
	h["Cookie"] = out
}

// closeIfBodyPending makes an answer that leaves the request body unread
// close the connection, as the edge's own answers do: otherwise net/http
// first reads what is left of a small body to reuse the connection, and a
// visitor that announced a body and never sends it would never get the
// answer.
func closeIfBodyPending(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 && r.ContentLength != 0 {
		w.Header().Set("Connection", "close")
	}
}

// randomString is n random bytes, base64url without padding.
func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
