package main

import (
	"strings"
	"testing"
)

func TestOptions_ConnectConfig(t *testing.T) {
	tests := []struct {
		name, server, host          string
		wantServer, wantSNI, tunnel string
		wantErr                     string
	}{
		{name: "host alone", host: "pi-ssh.example.com",
			wantServer: "pi-ssh.example.com:443", wantSNI: "example.com", tunnel: "pi-ssh"},
		{name: "host with port", host: "pi-ssh.example.com:8443",
			wantServer: "pi-ssh.example.com:8443", wantSNI: "example.com", tunnel: "pi-ssh"},
		{name: "--server wins", server: "tunnel.example.com:443", host: "pi-ssh.example.com",
			wantServer: "tunnel.example.com:443", tunnel: "pi-ssh"},
		{name: "bare name with --server", server: "localhost:8443", host: "pi-ssh",
			wantServer: "localhost:8443", tunnel: "pi-ssh"},
		{name: "bare name without server", host: "pi-ssh", wantErr: "NAME.DOMAIN"},
		{name: "invalid name", host: "Pi_SSH.example.com", wantErr: "invalid name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := options{server: tt.server, token: "tk"}.connectConfig(tt.host)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Server != tt.wantServer || cfg.TLS.ServerName != tt.wantSNI || cfg.Tunnel != tt.tunnel || cfg.Token != "tk" {
				t.Fatalf("got server %q sni %q tunnel %q token %q, want %q %q %q tk",
					cfg.Server, cfg.TLS.ServerName, cfg.Tunnel, cfg.Token, tt.wantServer, tt.wantSNI, tt.tunnel)
			}
		})
	}
}
