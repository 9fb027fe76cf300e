package mux

import (
	"errors"
	"strings"
	"testing"

	"github.com/tunnelhq/tunnel/pkg/proto"
)

// TestRun_RefusesServerThatIgnoresPool runs a client that asks for a pool
// against a server of before pools, which welcomes the tunnel without
// confirming the pool (and took the name over from the other members).
// The client must not serve; against a server that confirms, it does.
func TestRun_RefusesServerThatIgnoresPool(t *testing.T) {
	cfg := welcomingServer(t, func(h *proto.Hello, w *proto.Welcome) {
		for i, tr := range h.Tunnels {
			// A server that knows pools confirms them; the name "old"
			// plays one that predates them.
			w.Tunnels[i].Pool = tr.Pool && tr.Name != "old"
		}
	})
	for _, tt := range []struct {
		name    string
		tunnels []Tunnel
		wantErr bool
	}{
		{"unconfirmed", []Tunnel{{Name: "open", Target: "127.0.0.1:1"}, {Name: "old", Target: "127.0.0.1:1", Pool: true}}, true},
		{"confirmed", []Tunnel{{Name: "wiki", Target: "127.0.0.1:1", Pool: true}}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := cfg
			cfg.Tunnels = tt.tunnels
			err := runUntilWelcome(cfg)
			var perr *proto.Error
			switch {
			case !tt.wantErr && err != nil:
				t.Fatalf("Run: got %v, want it served until stopped", err)
			case tt.wantErr && (!errors.As(err, &perr) || perr.Code != proto.CodePoolNotAllowed || !IsPermanent(err) ||
				!strings.Contains(perr.Message, "did not confirm the pool") || !strings.Contains(perr.Message, "old.example.com")):
				t.Fatalf("Run: got %v, want a permanent pool_not_allowed naming old's URL", err)
			}
		})
	}
}

// A pool needs a name: random names are never shared.
func TestClientConfig_PoolNeedsName(t *testing.T) {
	cfg := ClientConfig{Config: DefaultConfig(), Server: "127.0.0.1:1", Tunnels: []Tunnel{{Target: "127.0.0.1:1", Pool: true}}}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "a pool needs a name") {
		t.Fatalf("Validate: got %v, want a pool needs a name", err)
	}
	cfg.Tunnels[0].Name = "wiki"
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate with a name: got %v, want nil", err)
	}
	cfg.Tunnels[0].Domain = "wiki.example.org"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "a pool cannot serve a custom domain") {
		t.Fatalf("Validate with a domain: got %v, want a pool cannot serve a custom domain", err)
	}
}
