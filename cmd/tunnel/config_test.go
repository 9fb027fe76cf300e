package main

import (
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/tunnelhq/tunnel/internal/testtls"
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
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// configFrom runs the app's flag parsing on args and env and returns what
// clientConfig makes of them.
func configFrom(t *testing.T, env map[string]string, args ...string) (mux.ClientConfig, error) {
	t.Helper()
	cfg, _, helped, err := resolveFrom(t, env, args...)
	if helped {
		t.Fatalf("%v %q: bare tunnel shows the help, want it to run", env, args)
	}
	return cfg, err
}

// resolveFrom runs the app on args with exactly the TUNNEL_* variables in
// env, as the real binary would up to the point of connecting: it returns
// the resolved options and clientConfig's result, or helped if the app
// showed its help instead of running.
func resolveFrom(t *testing.T, env map[string]string, args ...string) (cfg mux.ClientConfig, o options, helped bool, err error) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "TUNNEL_") {
			t.Setenv(k, "") // restored after the test
			os.Unsetenv(k)
		}
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	app := newApp()
	app.Writer = io.Discard
	helped = true
	capture := func(c *cli.Context) error {
		helped = false
		if o, err = resolve(c); err == nil {
			cfg, err = o.clientConfig(zerolog.Nop(), io.Discard)
		}
		return nil
	}
	for _, cmd := range app.Commands {
		if slices.Contains(tunnelCommands, cmd.Name) {
			cmd.Action = capture
		}
	}
	app.Action = runOrHelp(capture)
	if perr := app.Run(append([]string{"tunnel"}, args...)); perr != nil {
		t.Fatalf("parse %q: %v", args, perr)
	}
	return cfg, o, helped, err
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
	kinds := filepath.Join(dir, "kinds.json")
	os.WriteFile(kinds, []byte(`{"server": "file.example:443", "tunnels": [
  {"name": "wiki", "target": "8080"},
  {"name": "pi-ssh", "target": "22", "kind": "tcp", "allow_tokens": ["tk_guest"]},
  {"name": "secure", "target": "8443", "kind": "tls"}]}`), 0o600)
	domains := filepath.Join(dir, "domains.json")
	os.WriteFile(domains, []byte(`{"server": "file.example:443", "tunnels": [
  {"name": "wiki", "target": "8080", "domain": "Wiki.Example.org."},
  {"name": "blog", "target": "8081"}]}`), 0o600)
	tcpDomain := filepath.Join(dir, "tcpdomain.json")
	os.WriteFile(tcpDomain, []byte(`{"server": "x:1", "tunnels": [{"name": "pi", "target": "22", "kind": "tcp", "domain": "pi.example.org"}]}`), 0o600)
	badKind := filepath.Join(dir, "badkind.json")
	os.WriteFile(badKind, []byte(`{"server": "x:1", "tunnels": [{"target": "53", "kind": "udp"}]}`), 0o600)
	poolFile := filepath.Join(dir, "pool.json")
	os.WriteFile(poolFile, []byte(`{"server": "file.example:443", "pool": true, "tunnels": [{"name": "wiki", "target": "8080"}]}`), 0o600)
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
		{name: "kinds from the file", args: []string{"--config", kinds},
			server: "file.example:443", peerTimeout: 30 * time.Second, retryMax: 30 * time.Second, window: 1 << 20,
			tunnels: []mux.Tunnel{{Name: "wiki", Target: "localhost:8080"},
				{Name: "pi-ssh", Target: "localhost:22", Kind: "tcp", AllowTokens: []string{"tk_guest"}},
				{Name: "secure", Target: "localhost:8443", Kind: "tls"}}},
		{name: "unknown kind in the file", args: []string{"--config", badKind}, wantErr: `kind "udp"`},
		{name: "kinds from TUNNEL_TARGETS", env: map[string]string{"TUNNEL_SERVER": "x:1", "TUNNEL_TARGETS": "web=8080 tcp://pi-ssh=22 tls://secure=8443"},
			server: "x:1", peerTimeout: 30 * time.Second, retryMax: 30 * time.Second, window: 1 << 20,
			tunnels: []mux.Tunnel{{Name: "web", Target: "localhost:8080"}, {Name: "pi-ssh", Target: "localhost:22", Kind: "tcp"},
				{Name: "secure", Target: "localhost:8443", Kind: "tls"}}},
		{name: "tcp with allowed tokens", env: map[string]string{"TUNNEL_SERVER": "x:1", "TUNNEL_ALLOW_TOKENS": "tk_a,tk_b"},
			args:   []string{"tcp", "--name", "pi-ssh", "22"},
			server: "x:1", peerTimeout: 30 * time.Second, retryMax: 30 * time.Second, window: 1 << 20,
			tunnels: []mux.Tunnel{{Name: "pi-ssh", Target: "localhost:22", Kind: "tcp", AllowTokens: []string{"tk_a", "tk_b"}}}},
		{name: "tls", env: map[string]string{"TUNNEL_SERVER": "x:1"}, args: []string{"tls", "secure=8443"},
			server: "x:1", peerTimeout: 30 * time.Second, retryMax: 30 * time.Second, window: 1 << 20,
			tunnels: []mux.Tunnel{{Name: "secure", Target: "localhost:8443", Kind: "tls"}}},
		{name: "missing file", args: []string{"--config", filepath.Join(dir, "none.json")}, wantErr: "--config"},
		{name: "pool flag", env: map[string]string{"TUNNEL_SERVER": "x:1"}, args: []string{"http", "--pool", "--name", "wiki", "8080"},
			server: "x:1", peerTimeout: 30 * time.Second, retryMax: 30 * time.Second, window: 1 << 20,
			tunnels: []mux.Tunnel{{Name: "wiki", Target: "localhost:8080", Pool: true}}},
		{name: "pool env, tcp", env: map[string]string{"TUNNEL_SERVER": "x:1", "TUNNEL_POOL": "true"}, args: []string{"tcp", "pi-ssh=22"},
			server: "x:1", peerTimeout: 30 * time.Second, retryMax: 30 * time.Second, window: 1 << 20,
			tunnels: []mux.Tunnel{{Name: "pi-ssh", Target: "localhost:22", Kind: "tcp", Pool: true}}},
		{name: "pool from the file, bare tunnel", args: []string{"--config", poolFile},
			server: "file.example:443", peerTimeout: 30 * time.Second, retryMax: 30 * time.Second, window: 1 << 20,
			tunnels: []mux.Tunnel{{Name: "wiki", Target: "localhost:8080", Pool: true}}},
		{name: "pool env over the file", env: map[string]string{"TUNNEL_POOL": "false"}, args: []string{"--config", poolFile},
			server: "file.example:443", peerTimeout: 30 * time.Second, retryMax: 30 * time.Second, window: 1 << 20,
			tunnels: []mux.Tunnel{{Name: "wiki", Target: "localhost:8080"}}},
		{name: "pool without a name", env: map[string]string{"TUNNEL_SERVER": "x:1"}, args: []string{"http", "--pool", "8080"},
			wantErr: "--pool needs a name"},
		{name: "pool env not a bool", env: map[string]string{"TUNNEL_POOL": "maybe"}, args: []string{"--config", poolFile},
			wantErr: `TUNNEL_POOL "maybe"`},
		{name: "domain flag", env: map[string]string{"TUNNEL_SERVER": "x:1"}, args: []string{"http", "--domain", "wiki.example.org", "wiki=8080"},
			server: "x:1", peerTimeout: 30 * time.Second, retryMax: 30 * time.Second, window: 1 << 20,
			tunnels: []mux.Tunnel{{Name: "wiki", Target: "localhost:8080", Domain: "wiki.example.org"}}},
		{name: "domain env, bare tunnel", env: map[string]string{"TUNNEL_SERVER": "x:1", "TUNNEL_TARGETS": "wiki=8080", "TUNNEL_DOMAIN": "wiki.example.org"},
			server: "x:1", peerTimeout: 30 * time.Second, retryMax: 30 * time.Second, window: 1 << 20,
			tunnels: []mux.Tunnel{{Name: "wiki", Target: "localhost:8080", Domain: "wiki.example.org"}}},
		{name: "domains from the file", args: []string{"--config", domains},
			server: "file.example:443", peerTimeout: 30 * time.Second, retryMax: 30 * time.Second, window: 1 << 20,
			tunnels: []mux.Tunnel{{Name: "wiki", Target: "localhost:8080", Domain: "wiki.example.org"}, {Name: "blog", Target: "localhost:8081"}}},
		{name: "domain flag with two targets", env: map[string]string{"TUNNEL_SERVER": "x:1"}, args: []string{"http", "--domain", "wiki.example.org", "a=8080", "b=8081"},
			wantErr: "--domain goes with a single TARGET"},
		{name: "domain on a tcp tunnel in the file", args: []string{"--config", tcpDomain}, wantErr: "custom domains are for http tunnels only"},
		{name: "tcp takes no domain", env: map[string]string{"TUNNEL_SERVER": "x:1", "TUNNEL_DOMAIN": "pi.example.org"}, args: []string{"tcp", "pi=22"},
			server: "x:1", peerTimeout: 30 * time.Second, retryMax: 30 * time.Second, window: 1 << 20,
			tunnels: []mux.Tunnel{{Name: "pi", Target: "localhost:22", Kind: "tcp"}}},
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
			if cfg.Server != tt.server || cfg.Token != tt.token || !reflect.DeepEqual(cfg.Tunnels, tt.tunnels) ||
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

// describe writes every resolved setting as text, by its flag's name.
func describe(o options) map[string]string {
	return map[string]string{
		"server": o.server, "token": o.token, "ca": o.ca, "dev": strconv.FormatBool(o.dev), "certs-dir": o.certsDir,
		"peer-timeout": o.peerTimeout.String(), "retry-max": o.retryMax.String(), "drain-timeout": o.drainTimeout.String(),
		"stream-window": o.streamWindow, "max-streams": strconv.Itoa(o.maxStreams),
		"log-level": o.logLevel, "log-format": o.logFormat, "quiet": strconv.FormatBool(o.quiet), "metrics-listen": o.metricsListen,
		"inspect": o.inspect, "inspect-token": o.inspectToken, "inspect-max-body": o.inspectMaxBody, "inspect-max-memory": o.inspectMaxMemory,
		"name": o.name, "targets": strings.Join(o.targets, " "),
	}
}

// TestClientConfig_OneRule: every setting comes from its flag, else its
// environment variable, else the --config file, else its default (for
// server and ca, --dev's); the tunnel list is one setting: TARGET
// arguments, else --targets/TUNNEL_TARGETS, else the file's tunnels. Bare
// "tunnel" runs when TUNNEL_TARGETS or a file gives tunnels.
func TestClientConfig_OneRule(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, testtls.NewCA(t).PEM(), 0o600)
	devCerts := filepath.Join(dir, "devcerts")
	os.Mkdir(devCerts, 0o700)
	os.WriteFile(filepath.Join(devCerts, "ca.pem"), testtls.NewCA(t).PEM(), 0o600)

	// FILE sets every setting it can, each to a value that is not the
	// default; DEVFILE says dev and where its certificates are.
	file := filepath.Join(dir, "all.json")
	os.WriteFile(file, []byte(`{
  "server": "file.example:443", "token": "file-token", "ca": "`+ca+`",
  "peer_timeout": "10s", "retry_max": "5s", "drain_timeout": "3s",
  "stream_window": "4MiB", "max_streams": 300,
  "log_level": "debug", "log_format": "json", "quiet": true, "metrics_listen": "127.0.0.1:9101",
  "inspect": "false", "inspect_token": "file-itoken", "inspect_max_body": "2MiB", "inspect_max_memory": "8MiB",
  "tunnels": [{"name": "wiki", "target": "8080"}, {"target": "127.0.0.1:9090"}]
}`), 0o600)
	devFile := filepath.Join(dir, "dev.json")
	os.WriteFile(devFile, []byte(`{"dev": true, "certs_dir": "`+devCerts+`", "tunnels": [{"target": "8080"}]}`), 0o600)
	badFile := filepath.Join(dir, "bad.json")
	os.WriteFile(badFile, []byte(`{"server": "x:1", "peer_timeout": "ten seconds", "tunnels": [{"target": "8080"}]}`), 0o600)

	srv := map[string]string{"TUNNEL_SERVER": "env.example:443"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		want    map[string]string // settings to check, by flag name
		help    bool              // bare tunnel shows the help instead
		wantErr string
	}{
		// Defaults.
		{name: "defaults", env: srv, args: []string{"http", "8080"}, want: map[string]string{
			"server": "env.example:443", "token": "", "ca": "", "dev": "false", "certs-dir": "certs",
			"peer-timeout": "30s", "retry-max": "30s", "drain-timeout": "10s", "stream-window": "1MiB", "max-streams": "0",
			"log-level": "info", "log-format": "auto", "quiet": "false", "metrics-listen": "", "targets": "8080",
			"inspect": "127.0.0.1:4040", "inspect-token": "", "inspect-max-body": "1MiB", "inspect-max-memory": "64MiB"}},
		{name: "no server", args: []string{"http", "8080"}, wantErr: "--server (TUNNEL_SERVER) is required"},
		{name: "dev defaults", args: []string{"--dev", "--certs-dir", devCerts, "http", "8080"},
			want: map[string]string{"server": "localhost:8443", "ca": filepath.Join(devCerts, "ca.pem")}},

		// The file over the defaults, for every setting it holds.
		{name: "file", args: []string{"--config", "FILE"}, want: map[string]string{
			"server": "file.example:443", "token": "file-token", "ca": ca, "dev": "false",
			"peer-timeout": "10s", "retry-max": "5s", "drain-timeout": "3s", "stream-window": "4MiB", "max-streams": "300",
			"log-level": "debug", "log-format": "json", "quiet": "true", "metrics-listen": "127.0.0.1:9101",
			"inspect": "false", "inspect-token": "file-itoken", "inspect-max-body": "2MiB", "inspect-max-memory": "8MiB",
			"targets": "wiki=8080 127.0.0.1:9090"}},
		{name: "file by env", env: with("TUNNEL_CONFIG", "FILE"), args: []string{"http"},
			want: map[string]string{"server": "file.example:443", "targets": "wiki=8080 127.0.0.1:9090"}},
		{name: "file dev and certs dir", args: []string{"--config", "DEVFILE"},
			want: map[string]string{"dev": "true", "certs-dir": devCerts, "server": "localhost:8443", "ca": filepath.Join(devCerts, "ca.pem")}},
		{name: "file server over --dev's", args: []string{"--dev", "--config", "FILE"},
			want: map[string]string{"server": "file.example:443", "ca": ca}},

		// The environment over the file.
		{name: "env over file", env: with("TUNNEL_CONFIG", "FILE", "TUNNEL_SERVER", "env.example:443", "TUNNEL_TOKEN", "env-token",
			"TUNNEL_PEER_TIMEOUT", "4s", "TUNNEL_RETRY_MAX", "1m", "TUNNEL_DRAIN_TIMEOUT", "2s", "TUNNEL_STREAM_WINDOW", "512k",
			"TUNNEL_MAX_STREAMS", "64", "TUNNEL_LOG_LEVEL", "warn", "TUNNEL_LOG_FORMAT", "pretty", "TUNNEL_QUIET", "false",
			"TUNNEL_METRICS_LISTEN", "127.0.0.1:9999", "TUNNEL_INSPECT", "127.0.0.1:4999", "TUNNEL_INSPECT_TOKEN", "env-itoken",
			"TUNNEL_INSPECT_MAX_BODY", "3MiB", "TUNNEL_INSPECT_MAX_MEMORY", "9MiB"),
			args: []string{"http"},
			want: map[string]string{"server": "env.example:443", "token": "env-token", "peer-timeout": "4s", "retry-max": "1m0s",
				"drain-timeout": "2s", "stream-window": "512k", "max-streams": "64", "log-level": "warn", "log-format": "pretty",
				"quiet": "false", "metrics-listen": "127.0.0.1:9999", "ca": ca,
				"inspect": "127.0.0.1:4999", "inspect-token": "env-itoken", "inspect-max-body": "3MiB", "inspect-max-memory": "9MiB"}},
		{name: "env dev=false over file's true", env: with("TUNNEL_DEV", "false"), args: []string{"--config", "DEVFILE"},
			wantErr: "--server (TUNNEL_SERVER) is required"},
		{name: "env certs dir over file's", env: with("TUNNEL_CERTS_DIR", dir), args: []string{"--config", "DEVFILE"},
			want: map[string]string{"certs-dir": dir, "ca": filepath.Join(dir, "ca.pem")}},

		// The flag over the environment and the file.
		{name: "flag over env and file", env: with("TUNNEL_CONFIG", "FILE", "TUNNEL_SERVER", "env.example:443", "TUNNEL_TOKEN", "env-token",
			"TUNNEL_PEER_TIMEOUT", "4s", "TUNNEL_MAX_STREAMS", "64", "TUNNEL_LOG_LEVEL", "warn", "TUNNEL_QUIET", "true"),
			args: []string{"--server", "flag.example:443", "--token", "flag-token", "--peer-timeout", "2s", "--max-streams", "20",
				"--log-level", "error", "--quiet=false", "--retry-max", "7s", "--inspect=false", "http"},
			want: map[string]string{"server": "flag.example:443", "token": "flag-token", "peer-timeout": "2s", "max-streams": "20",
				"log-level": "error", "quiet": "false", "retry-max": "7s", "drain-timeout": "3s", "inspect": "false"}},

		// The tunnel list: arguments, else --targets or TUNNEL_TARGETS,
		// else the file's, whole.
		{name: "TUNNEL_TARGETS replaces the file's, bare", env: with("TUNNEL_TARGETS", "x1=9090"), args: []string{"--config", "FILE"},
			want: map[string]string{"targets": "x1=9090", "server": "file.example:443"}},
		{name: "TUNNEL_TARGETS replaces the file's, http", env: with("TUNNEL_TARGETS", "x1=9090"), args: []string{"--config", "FILE", "http"},
			want: map[string]string{"targets": "x1=9090"}},
		{name: "--targets over TUNNEL_TARGETS", env: with("TUNNEL_CONFIG", "FILE", "TUNNEL_TARGETS", "x1=9090"),
			args: []string{"http", "--targets", "x2=9091,x3=9092"}, want: map[string]string{"targets": "x2=9091 x3=9092"}},
		{name: "arguments over all", env: with("TUNNEL_CONFIG", "FILE", "TUNNEL_TARGETS", "x1=9090"),
			args: []string{"http", "3000"}, want: map[string]string{"targets": "3000"}},
		{name: "TUNNEL_NAME with TUNNEL_TARGETS, bare", env: with("TUNNEL_SERVER", "x:1", "TUNNEL_TARGETS", "8080", "TUNNEL_NAME", "wiki"),
			want: map[string]string{"targets": "8080", "name": "wiki"}},
		{name: "--name over TUNNEL_NAME", env: with("TUNNEL_SERVER", "x:1", "TUNNEL_NAME", "wiki"), args: []string{"http", "--name", "blog", "8080"},
			want: map[string]string{"name": "blog"}},

		// Bare tunnel: runs with tunnels from the environment or a file.
		{name: "bare, env alone", env: with("TUNNEL_SERVER", "env.example:443", "TUNNEL_TARGETS", "a=8080, b=9090"),
			want: map[string]string{"server": "env.example:443", "targets": "a=8080 b=9090"}},
		{name: "bare, TUNNEL_CONFIG", env: with("TUNNEL_CONFIG", "FILE"), want: map[string]string{"server": "file.example:443"}},
		{name: "bare, nothing", help: true},
		{name: "bare, a server but no tunnels", env: srv, help: true},

		// Mistakes in the file are found and named.
		{name: "bad duration in the file", args: []string{"--config", "BADFILE"}, wantErr: "--config: peer_timeout"},
		{name: "bad duration in the file, flag set", args: []string{"--config", "BADFILE", "--peer-timeout", "1s"},
			want: map[string]string{"peer-timeout": "1s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			paths := strings.NewReplacer("BADFILE", badFile, "DEVFILE", devFile, "FILE", file)
			env := map[string]string{}
			for k, v := range tt.env {
				env[k] = paths.Replace(v)
			}
			var args []string
			for _, a := range tt.args {
				args = append(args, paths.Replace(a))
			}
			_, o, helped, err := resolveFrom(t, env, args...)
			if helped != tt.help {
				t.Fatalf("showed the help: %v, want %v", helped, tt.help)
			}
			if tt.help {
				return
			}
			got := describe(o)
			for k, want := range tt.want {
				if got[k] != want {
					t.Errorf("%s: got %q, want %q", k, got[k], want)
				}
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("got error %v, want none", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// Every global setting but --config has its key in the file, under the
// flag's name with _ for -, so the one rule holds for all of them.
func TestFileConfig_HasEveryGlobalSetting(t *testing.T) {
	keys := map[string]bool{}
	ft := reflect.TypeFor[fileConfig]()
	for i := range ft.NumField() {
		keys[strings.Split(ft.Field(i).Tag.Get("json"), ",")[0]] = true
	}
	for _, f := range globalFlags() {
		name := f.Names()[0]
		if name == "config" {
			continue
		}
		if key := strings.ReplaceAll(name, "-", "_"); !keys[key] {
			t.Errorf("--%s has no %q key in the config file", name, key)
		}
	}
}
