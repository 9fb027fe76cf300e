package admin_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/internal/edgetest"
	"github.com/tunnelhq/tunnel/internal/testoidc"
	"github.com/tunnelhq/tunnel/pkg/edge"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/oidc"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// TestAdmin_StatusShowsSignIn: a tunnel's --oidc-allow list is on the
// status page and in /api/tunnels.
func TestAdmin_StatusShowsSignIn(t *testing.T) {
	h := edgetest.Start(t, func(cfg *edge.Config) {
		redirect := fmt.Sprintf("https://%s:%d%s", edgetest.Domain, cfg.PublicPort, oidc.CallbackPath)
		p := testoidc.Start(t, redirect)
		l, err := oidc.New(context.Background(), oidc.Config{Issuer: p.Issuer, ClientID: testoidc.ClientID,
			ClientSecret: testoidc.ClientSecret, RedirectURL: redirect, CookieKey: make([]byte, 32), Logger: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		cfg.OIDC = l
	})
	backend := edgetest.Backend(t, http.NotFoundHandler())
	if _, err := h.Connect(edgetest.AliceToken, mux.Tunnel{Name: "wiki", Target: backend,
		Access: &proto.Access{OIDCAllow: []string{"ann@example.com", "@example.org"}}}); err != nil {
		t.Fatal(err)
	}
	base := startAdmin(t, h, "127.0.0.1:0", nil)
	if status, body := adminGet(t, base, "/api/tunnels", ""); status != 200 ||
		!strings.Contains(string(body), `"access":{"oidc_allow":["ann@example.com","@example.org"]}`) {
		t.Errorf("/api/tunnels: got %d %s, want the oidc_allow list", status, body)
	}
	if status, body := adminGet(t, base, "/", ""); status != 200 ||
		!strings.Contains(string(body), `<td class="access"> sign-in: ann@example.com, @example.org</td>`) {
		t.Errorf("status page: got %d\n%s\nwant the sign-in list", status, body)
	}
}
