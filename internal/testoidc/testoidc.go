// Package testoidc runs a real OpenID Connect provider for tests: zitadel's
// provider package (github.com/zitadel/oidc/v3/pkg/op) with its example
// storage and login page, on 127.0.0.1:0 over plain HTTP, with a few
// users and one web client. The login tests of tunneld sign in there, at
// its HTML form, through the same code path a browser takes: never a mock
// of the protocol. Only tests import it.
package testoidc

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"
)

// The client tunneld is registered as.
const (
	ClientID     = "tunneld"
	ClientSecret = "tunneld-secret"
)

// Password is every user's password.
const Password = "verysecure"

// The users: a username each (the login form's), with their emails.
var Users = map[string]struct {
	Email    string
	Verified bool
}{
	"ann":  {"ann@example.com", true},  // an allowed domain
	"bob":  {"bob@other.test", true},   // a domain nobody allows
	"eve":  {"eve@example.com", false}, // an email the provider has not verified
	"carl": {"Carl@Example.com", true}, // case differs from the allow list
}

// Provider is a running provider.
type Provider struct {
	Issuer string // http://127.0.0.1:PORT
}

// slogOnce silences the example server's request log: SetupServer sets
// the process's default slog logger to the one it is given.
var slogOnce sync.Once

// Options change what the provider does.
type Options struct {
	// ClaimsInIDToken puts the email claims in the ID token itself, as
	// Google's provider does. Without it they come only from the userinfo
	// endpoint, as zitadel's do in the code flow.
	ClaimsInIDToken bool
}

// Start runs a provider until the test ends, with tunneld's client allowed
// to come back to redirectURL.
func Start(t testing.TB, redirectURL string) *Provider {
	t.Helper()
	return StartWith(t, redirectURL, Options{})
}

// StartWith is Start with options.
func StartWith(t testing.TB, redirectURL string, o Options) *Provider {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	issuer := "http://" + ln.Addr().String()
	users := userStore{}
	for name, u := range Users {
		users[name] = &storage.User{ID: "id-" + name, Username: name, Password: Password, Email: u.Email,
			EmailVerified: u.Verified, FirstName: name, LastName: "Test", PreferredLanguage: language.English}
	}
	clients := map[string]*storage.Client{ClientID: storage.WebClient(ClientID, ClientSecret, redirectURL)}
	var st exampleop.Storage = storage.NewStorageWithClients(users, clients)
	if o.ClaimsInIDToken {
		st = claimsStorage{st.(*storage.Storage)}
	}
	var logger *slog.Logger
	slogOnce.Do(func() { logger = slog.New(slog.DiscardHandler) })
	router := exampleop.SetupServer(issuer, st, logger, false)
	srv := httptest.NewUnstartedServer(router)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return &Provider{Issuer: issuer}
}

// claimsStorage is the example storage whose client asks for the userinfo
// claims in the ID token (Options.ClaimsInIDToken).
type claimsStorage struct{ *storage.Storage }

func (s claimsStorage) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	c, err := s.Storage.GetClientByClientID(ctx, id)
	if err != nil {
		return nil, err
	}
	return claimsClient{c}, nil
}

type claimsClient struct{ op.Client }

func (claimsClient) IDTokenUserinfoClaimsAssertion() bool { return true }

// userStore is storage.UserStore over a fixed map, by username.
type userStore map[string]*storage.User

func (u userStore) GetUserByID(id string) *storage.User {
	for _, v := range u {
		if v.ID == id {
			return v
		}
	}
	return nil
}

func (u userStore) GetUserByUsername(name string) *storage.User { return u[name] }

func (u userStore) ExampleClientID() string { return storage.ServiceUserID }

// SignIn fills in the provider's login form as a browser would: c has
// followed the redirect to the form, whose page is resp; SignIn posts the
// username and password and returns the provider's answer (a redirect
// back to tunneld, which c follows as its CheckRedirect says).
func SignIn(t testing.TB, c *http.Client, resp *http.Response, username string) *http.Response {
	t.Helper()
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	id := formValue(string(body), "id")
	if id == "" {
		t.Fatalf("no login form at %s: %d %.300s", resp.Request.URL, resp.StatusCode, body)
	}
	form := url.Values{"id": {id}, "username": {username}, "password": {Password}}
	post, err := c.PostForm(resp.Request.URL.Scheme+"://"+resp.Request.URL.Host+"/login/username", form)
	if err != nil {
		t.Fatalf("post the login form: %v", err)
	}
	return post
}

// formValue finds the value of the hidden input named name.
func formValue(html, name string) string {
	i := strings.Index(html, `name="`+name+`" value="`)
	if i < 0 {
		return ""
	}
	rest := html[i+len(`name="`+name+`" value="`):]
	j := strings.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return rest[:j]
}
