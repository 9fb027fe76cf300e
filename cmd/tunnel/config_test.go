package main

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/tunnelhq/tunnel/pkg/mux"
)

func TestParseTargets(t *testing.T) {
	tests := []struct {
		name    string
		flag    string
		args    []string
		want    []mux.Tunnel
		wantErr string
	}{
		{name: "port", args: []string{"8080"}, want: []mux.Tunnel{{Target: "localhost:8080"}}},
		{name: "port with --name", flag: "wiki", args: []string{"8080"}, want: []mux.Tunnel{{Name: "wiki", Target: "localhost:8080"}}},
		{name: "host port", args: []string{"10.0.0.5:80"}, want: []mux.Tunnel{{Target: "10.0.0.5:80"}}},
		{name: "empty host", args: []string{":3000"}, want: []mux.Tunnel{{Target: "localhost:3000"}}},
		{name: "ipv6", args: []string{"blog=[::1]:9090"}, want: []mux.Tunnel{{Name: "blog", Target: "[::1]:9090"}}},
		{name: "two named", args: []string{"wiki=8080", "blog=127.0.0.1:9090"},
			want: []mux.Tunnel{{Name: "wiki", Target: "localhost:8080"}, {Name: "blog", Target: "127.0.0.1:9090"}}},
		{name: "named and random", args: []string{"wiki=8080", "9090"},
			want: []mux.Tunnel{{Name: "wiki", Target: "localhost:8080"}, {Target: "localhost:9090"}}},

		{name: "none", wantErr: "no TARGET"},
		{name: "name with two", flag: "wiki", args: []string{"8080", "9090"}, wantErr: "single TARGET"},
		{name: "name twice", flag: "wiki", args: []string{"api=8080"}, wantErr: "use one"},
		{name: "empty name", args: []string{"=8080"}, wantErr: "empty NAME"},
		{name: "duplicate", args: []string{"a=8080", "a=9090"}, wantErr: `"a" given twice`},
		{name: "not a port", args: []string{"http"}, wantErr: "1 to 65535"},
		{name: "port zero", args: []string{"0"}, wantErr: "1 to 65535"},
		{name: "port too big", args: []string{"localhost:70000"}, wantErr: "1 to 65535"},
		{name: "url", args: []string{"http://localhost:8080"}, wantErr: "HOST:PORT"},
		{name: "bare ipv6", args: []string{"::1:8080"}, wantErr: "HOST:PORT"},
		{name: "invalid --name, every fault", flag: "Wiki_", args: []string{"8080"},
			wantErr: `--name: invalid name: "Wiki_": uppercase 'W' at offset 0: names are lowercase; character '_' at offset 4`},
		{name: "invalid NAME=", args: []string{"wiki=8080", "-blog=9090"}, wantErr: `target "-blog=9090": invalid name: "-blog": starts with '-'`},
		{name: "flag after a target", args: []string{"8080", "--name", "wiki"}, wantErr: `"--name" after a TARGET: flags go before the TARGETs (global ones before http)`},
		{name: "global flag after a target", args: []string{"8080", "-dev"}, wantErr: `"-dev" after a TARGET`},
		{name: "reserved name", args: []string{"www=8080"}, wantErr: `target "www=8080": reserved name: "www"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseTargets(tt.flag, tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// configFrom runs the app's flag parsing on args and env and returns what
// clientConfig makes of them.
func configFrom(t *testing.T, env map[string]string, args ...string) (mux.ClientConfig, error) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	var cfg mux.ClientConfig
	var cfgErr error
	app := newApp()
	capture := func(c *cli.Context) error {
		cfg, cfgErr = clientConfig(c, zerolog.Nop(), io.Discard)
		return nil
	}
	app.Commands[0].Action = capture
	app.Action = capture
	if err := app.Run(append([]string{"tunnel"}, args...)); err != nil {
		t.Fatalf("parse %q: %v", args, err)
	}
	return cfg, cfgErr
}

func TestClientConfig_FileEnvAndFlags(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "tunnels.json")
	os.WriteFile(file, []byte(`{
  "server": "file.example:443",
  "token": "from-file",
  "peer_timeout": "10s",
  "retry_max": "5s",
  "stream_window": "4MiB",
  "tunnels": [{"name": "wiki", "target": "8080"}, {"target": "127.0.0.1:9090"}]
}`), 0o600)
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"server": "x:1", "sever": "typo"}`), 0o600)

	tests := []struct {
		name        string
		env         map[string]string
		args        []string
		server      string
		token       string
		tunnels     []mux.Tunnel
		peerTimeout time.Duration
		retryMax    time.Duration
		window      uint32
		wantErr     string
	}{
		{name: "file alone", args: []string{"--config", file},
			server: "file.example:443", token: "from-file", peerTimeout: 10 * time.Second, retryMax: 5 * time.Second,
			window:  4 << 20,
			tunnels: []mux.Tunnel{{Name: "wiki", Target: "localhost:8080"}, {Target: "127.0.0.1:9090"}}},
		{name: "env wins over file", env: map[string]string{"TUNNEL_CONFIG": file, "TUNNEL_SERVER": "env.example:443", "TUNNEL_PEER_TIMEOUT": "4s",
			"TUNNEL_STREAM_WINDOW": "512k"},
			args:   []string{"http", "3000"},
			server: "env.example:443", token: "from-file", peerTimeout: 4 * time.Second, retryMax: 5 * time.Second, window: 512 << 10,
			tunnels: []mux.Tunnel{{Target: "localhost:3000"}}},
		{name: "env alone", env: map[string]string{"TUNNEL_SERVER": "env.example:443", "TUNNEL_TOKEN": "t", "TUNNEL_TARGETS": "a=8080, b=9090", "TUNNEL_RETRY_MAX": "1m"},
			args:   []string{"http"},
			server: "env.example:443", token: "t", peerTimeout: 30 * time.Second, retryMax: time.Minute, window: 1 << 20,
			tunnels: []mux.Tunnel{{Name: "a", Target: "localhost:8080"}, {Name: "b", Target: "localhost:9090"}}},
		{name: "window too small", env: map[string]string{"TUNNEL_SERVER": "x:1", "TUNNEL_STREAM_WINDOW": "64KiB"},
			args: []string{"http", "8080"}, wantErr: "--stream-window"},
		{name: "unknown field", args: []string{"--config", bad}, wantErr: `unknown field "sever"`},
		{name: "missing file", args: []string{"--config", filepath.Join(dir, "none.json")}, wantErr: "--config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := configFrom(t, tt.env, tt.args...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Server != tt.server || cfg.Token != tt.token || !slices.Equal(cfg.Tunnels, tt.tunnels) ||
				cfg.PeerTimeout() != tt.peerTimeout || cfg.Backoff.Max != tt.retryMax || cfg.StreamWindow != tt.window {
				t.Fatalf("got server %q token %q tunnels %+v peer timeout %v retry max %v window %d; want %q %q %+v %v %v %d",
					cfg.Server, cfg.Token, cfg.Tunnels, cfg.PeerTimeout(), cfg.Backoff.Max, cfg.StreamWindow,
					tt.server, tt.token, tt.tunnels, tt.peerTimeout, tt.retryMax, tt.window)
			}
		})
	}
}

// TestClientConfig_DefaultsAreTheMuxs: with no tuning flags, clientConfig
// gives mux's own defaults back. The flag defaults are read from
// mux.DefaultConfig and mux.DefaultBackoff; this catches one that does not
// survive its round trip through the flag's text.
func TestClientConfig_DefaultsAreTheMuxs(t *testing.T) {
	cfg, err := configFrom(t, map[string]string{"TUNNEL_SERVER": "x.example:443"}, "http", "8080")
	if err != nil {
		t.Fatal(err)
	}
	type tuning struct {
		KeepAlive, WriteTimeout, Drain, RetryMax time.Duration
		Window                                   uint32
	}
	def := mux.DefaultConfig()
	got := tuning{cfg.KeepAliveInterval, cfg.WriteTimeout, cfg.DrainTimeout, cfg.Backoff.Max, cfg.StreamWindow}
	want := tuning{def.KeepAliveInterval, def.WriteTimeout, def.DrainTimeout, mux.DefaultBackoff().Max, def.StreamWindow}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}
