package mux

import (
	"errors"
	"strings"
	"testing"

	"github.com/tunnelhq/tunnel/pkg/proto"
)

// TestRun_RefusesServerThatIgnoresAccess runs a client that asks for
// access rules against a server of before them: one that welcomes the
// tunnels without confirming the rules. The client must not serve, or
// its service would be open to everyone.
func TestRun_RefusesServerThatIgnoresAccess(t *testing.T) {
	cfg := welcomingServer(t, nil) // an old server: no TunnelInfo.Access
	for _, tt := range []struct {
		name    string
		tunnels []Tunnel
		wantErr bool
	}{
		{"rules asked", []Tunnel{{Name: "open", Target: "127.0.0.1:1"},
			{Name: "wiki", Target: "127.0.0.1:1", Access: &proto.Access{AllowCIDR: []string{"10.0.0.0/8"}}}}, true},
		{"empty rules", []Tunnel{{Name: "wiki", Target: "127.0.0.1:1", Access: &proto.Access{}}}, false},
	} {
		t.Run(strings.ReplaceAll(tt.name, " ", "_"), func(t *testing.T) {
			cfg := cfg
			cfg.Tunnels = tt.tunnels
			err := runUntilWelcome(cfg)
			var perr *proto.Error
			switch {
			case !tt.wantErr && err != nil:
				t.Fatalf("Run: got %v, want it served until stopped", err)
			case tt.wantErr && (!errors.As(err, &perr) || !IsPermanent(err) ||
				!strings.Contains(perr.Message, "does not enforce access rules") || !strings.Contains(perr.Message, "wiki.example.com")):
				t.Fatalf("Run: got %v, want a permanent refusal naming wiki's URL", err)
			}
		})
	}
}

// TestRun_RefusesServerThatIgnoresOIDC runs a client that asks for
// OpenID Connect login against a server that knows access rules but not
// the login: it confirms Access and says nothing of OIDC. The client must
// not serve, or its service would be open to everyone.
func TestRun_RefusesServerThatIgnoresOIDC(t *testing.T) {
	cfg := welcomingServer(t, func(_ *proto.Hello, w *proto.Welcome) {
		for i := range w.Tunnels {
			w.Tunnels[i].Access = true // a server of before the login
		}
	})
	cfg.Tunnels = []Tunnel{{Name: "wiki", Target: "127.0.0.1:1", Access: &proto.Access{OIDCAllow: []string{"@example.com"}}}}
	err := runUntilWelcome(cfg)
	var perr *proto.Error
	if !errors.As(err, &perr) || !IsPermanent(err) || !strings.Contains(perr.Message, "does not enforce --oidc-allow") {
		t.Fatalf("Run: got %v, want a permanent refusal of a server that ignores --oidc-allow", err)
	}
}
