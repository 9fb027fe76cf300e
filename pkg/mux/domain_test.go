package mux

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/tunnelhq/tunnel/internal/testnet"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// TestRun_CustomDomain: the client sends its tunnel's custom domain and
// serves only when the Welcome names the domain's URL; a server that does
// not (one of before custom domains) gets a permanent refusal naming the
// domain.
func TestRun_CustomDomain(t *testing.T) {
	cfg := welcomingServer(t, func(h *proto.Hello, w *proto.Welcome) {
		for i, tr := range h.Tunnels {
			// This server serves only the domains under example.org.
			if strings.HasSuffix(tr.Domain, ".example.org") {
				w.Tunnels[i].DomainURL = "https://" + tr.Domain
			}
		}
	})
	for _, tt := range []struct {
		name, domain string
		wantErr      bool
	}{
		{"served", "wiki.example.org", false},
		{"not served", "wiki.example.net", true},
	} {
		t.Run(strings.ReplaceAll(tt.name, " ", "_"), func(t *testing.T) {
			cfg := cfg
			cfg.Tunnels = []Tunnel{{Name: "wiki", Target: "127.0.0.1:1", Domain: tt.domain}}
			ctx, cancel := context.WithCancel(context.Background())
			var got string
			cfg.OnReady = func(w *proto.Welcome) { got = w.Tunnels[0].DomainURL; cancel() }
			err := Run(ctx, cfg)
			cancel()
			var perr *proto.Error
			switch {
			case !tt.wantErr && (err != nil || got != "https://"+tt.domain):
				t.Fatalf("Run: got %v with domain URL %q, want it served at https://%s until stopped", err, got, tt.domain)
			case tt.wantErr && (!errors.As(err, &perr) || !IsPermanent(err) || !strings.Contains(perr.Message, tt.domain)):
				t.Fatalf("Run: got %v, want a permanent refusal naming %s", err, tt.domain)
			}
		})
	}
}

func TestRun_CustomDomainOnlyOnHTTP(t *testing.T) {
	cfg := ClientConfig{Config: testConfig(t), Server: testnet.ClosedAddr(t),
		Tunnels: []Tunnel{{Name: "ssh", Target: "127.0.0.1:22", Kind: proto.KindTCP, Domain: "ssh.example.org"}}}
	err := Run(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "custom domains are for http tunnels only") {
		t.Fatalf("Run: got %v, want the configuration refused", err)
	}
}
