package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/tunnelhq/tunnel/pkg/oidc"
)

func TestOIDCConfig(t *testing.T) {
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	os.WriteFile(secretFile, []byte("  s3cret\n"), 0o600)
	keyFile := filepath.Join(dir, "key")
	os.WriteFile(keyFile, []byte(strings.Repeat("k", 32)), 0o600)
	shortKey := filepath.Join(dir, "short")
	os.WriteFile(shortKey, []byte("short"), 0o600)
	parse := func(t *testing.T, env map[string]string, args ...string) (*oidc.Config, error) {
		t.Helper()
		for k, v := range env {
			t.Setenv(k, v)
		}
		var got *oidc.Config
		app := &cli.App{Name: "tunneld", Flags: oidcFlags(), Action: func(c *cli.Context) error {
			var err error
			got, err = oidcConfig(c, "tunnel.test", 8443, zerolog.Nop())
			return err
		}}
		err := app.Run(append([]string{"tunneld"}, args...))
		return got, err
	}
	issuer := []string{"--oidc-issuer", "https://issuer.example", "--oidc-client-id", "tunneld"}

	if cfg, err := parse(t, nil); cfg != nil || err != nil {
		t.Fatalf("no flags: got %+v, %v; want no login", cfg, err)
	}
	cfg, err := parse(t, nil, append(issuer, "--oidc-client-secret-file", secretFile, "--oidc-cookie-key-file", keyFile)...)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ClientSecret != "s3cret" || string(cfg.CookieKey) != strings.Repeat("k", 32) ||
		cfg.RedirectURL != "https://tunnel.test:8443"+oidc.CallbackPath || cfg.SessionTTL != oidc.DefaultSessionTTL {
		t.Fatalf("got %+v", cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the config made does not validate: %v", err)
	}
	t.Run("env", func(t *testing.T) {
		cfg, err := parse(t, map[string]string{"TUNNELD_OIDC_ISSUER": "https://issuer.example", "TUNNELD_OIDC_CLIENT_ID": "id",
			"TUNNELD_OIDC_CLIENT_SECRET": "env-secret", "TUNNELD_OIDC_SESSION": "1h"})
		if err != nil || cfg.ClientSecret != "env-secret" || len(cfg.CookieKey) != oidc.MinCookieKey || cfg.SessionTTL.Hours() != 1 {
			t.Fatalf("got %+v, %v; want the env's values and a key made for the run", cfg, err)
		}
	})
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"client id without issuer", []string{"--oidc-client-id", "x"}, "--oidc-client-id without --oidc-issuer"},
		{"no secret", issuer, "needs --oidc-client-id and a client secret"},
		{"two secrets", append(issuer, "--oidc-client-secret", "a", "--oidc-client-secret-file", secretFile), "give one"},
		{"short key", append(issuer, "--oidc-client-secret", "a", "--oidc-cookie-key-file", shortKey), "5 bytes, want at least 32"},
		{"missing key file", append(issuer, "--oidc-client-secret", "a", "--oidc-cookie-key-file", filepath.Join(dir, "none")), "--oidc-cookie-key-file"},
	} {
		if _, err := parse(t, nil, tt.args...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want %q", tt.name, err, tt.want)
		}
	}
}
