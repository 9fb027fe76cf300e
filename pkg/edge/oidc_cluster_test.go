package edge_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/internal/edgetest"
	"github.com/tunnelhq/tunnel/internal/etcdtest"
	"github.com/tunnelhq/tunnel/internal/testoidc"
	"github.com/tunnelhq/tunnel/pkg/edge"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/oidc"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// TestClusterRegistry_OIDCAcrossNodes: a tunnel with sign-in on node a is
// signed in to through node b (b's callback, b's ticket), and the session
// then works on a too, since both share the cookie key; node c, which has
// no issuer, refuses the tunnel's visitors instead of letting them through.
func TestClusterRegistry_OIDCAcrossNodes(t *testing.T) {
	e := etcdtest.Start(t, 1)
	// Every node writes port-less URLs (public port 443), so one redirect
	// URI serves them all; the visitor's client picks the node it dials.
	const redirect = "https://" + edgetest.Domain + oidc.CallbackPath
	provider := testoidc.Start(t, redirect)
	key := make([]byte, 32)
	rand.Read(key)
	built := 0
	nodes := startClusterWith(t, e, &directForwarder{}, func(cfg *edge.Config) {
		cfg.PublicPort = 443
		if built++; built > 2 {
			return // c: no issuer
		}
		l, err := oidc.New(context.Background(), oidc.Config{Issuer: provider.Issuer, ClientID: testoidc.ClientID,
			ClientSecret: testoidc.ClientSecret, RedirectURL: redirect, CookieKey: key, Logger: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		cfg.OIDC = l
	}, "a", "b", "c")
	a, b, c := nodes[0], nodes[1], nodes[2]
	addr, _ := identityBackend(t)
	cl, err := a.Connect(edgetest.AliceToken, mux.Tunnel{Name: "wiki", Target: addr,
		Access: &proto.Access{OIDCAllow: []string{"@example.com"}}})
	if err != nil {
		t.Fatal(err)
	}
	b.seen(t, "wiki", cl.Welcome.SessionID)
	c.seen(t, "wiki", cl.Welcome.SessionID)

	jar, _ := cookiejar.New(nil)
	via := func(n clusterNode) *http.Client {
		tr := &http.Transport{
			DialContext: func(ctx context.Context, network, hostport string) (net.Conn, error) {
				if host, _, _ := net.SplitHostPort(hostport); host == edgetest.Domain || strings.HasSuffix(host, "."+edgetest.Domain) {
					hostport = n.Addr
				}
				var d net.Dialer
				return d.DialContext(ctx, network, hostport)
			},
			TLSClientConfig: &tls.Config{RootCAs: n.Pool},
		}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Jar: jar, Timeout: 30 * time.Second}
	}
	u := "https://wiki." + edgetest.Domain + "/page"
	resp, body := signIn(t, via(b), u, "ann", nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `email=["ann@example.com"]`) {
		t.Fatalf("signing in through b: %d %q at %s, want the service with ann's email", resp.StatusCode, body, resp.Request.URL)
	}
	resp, body = fetch(t, noFollow(via(a)), u, nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `email=["ann@example.com"]`) {
		t.Fatalf("b's session on a: %d %q, want the service with ann's email", resp.StatusCode, body)
	}
	resp, body = fetch(t, noFollow(via(c)), u, nil)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "no sign-in configured") {
		t.Fatalf("on c, which has no issuer: %d %q, want 503 saying so", resp.StatusCode, body)
	}
}
