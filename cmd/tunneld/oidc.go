package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/tunnelhq/tunnel/pkg/oidc"
)

// OpenID Connect login in front of tunnels (issue 18): tunneld signs
// visitors in at one issuer for the tunnels that ask (tunnel http
// --oidc-allow). These flags are read only by oidcConfig.
func oidcFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "oidc-issuer", EnvVars: []string{"TUNNELD_OIDC_ISSUER"},
			Usage: "OpenID Connect issuer URL (https) for tunnels that ask visitors to sign in (tunnel http --oidc-allow); register https://DOMAIN" + oidc.CallbackPath + " as the client's redirect URI; without it such tunnels are refused"},
		&cli.StringFlag{Name: "oidc-client-id", EnvVars: []string{"TUNNELD_OIDC_CLIENT_ID"},
			Usage: "tunneld's client id at --oidc-issuer"},
		&cli.StringFlag{Name: "oidc-client-secret", EnvVars: []string{"TUNNELD_OIDC_CLIENT_SECRET"},
			Usage: "tunneld's client secret at --oidc-issuer (prefer --oidc-client-secret-file or the env var over the flag)"},
		&cli.StringFlag{Name: "oidc-client-secret-file", EnvVars: []string{"TUNNELD_OIDC_CLIENT_SECRET_FILE"},
			Usage: "file holding the client secret (surrounding whitespace ignored)"},
		&cli.StringFlag{Name: "oidc-cookie-key-file", EnvVars: []string{"TUNNELD_OIDC_COOKIE_KEY_FILE"},
			Usage: "file of at least 32 random bytes (head -c 32 /dev/urandom) sealing visitors' sign-in cookies; several tunneld nodes serving the same names need the same file; without it a key is made at each start, and a restart signs every visitor out"},
		&cli.DurationFlag{Name: "oidc-session", Value: oidc.DefaultSessionTTL, EnvVars: []string{"TUNNELD_OIDC_SESSION"},
			Usage: "how long a visitor stays signed in to a tunnel before signing in again"},
	}
}

// oidcConfig turns the oidc flags into an oidc.Config for a tunneld
// serving domain on publicPort; nil without --oidc-issuer.
func oidcConfig(c *cli.Context, domain string, publicPort int, log zerolog.Logger) (*oidc.Config, error) {
	issuer := c.String("oidc-issuer")
	if issuer == "" {
		for _, f := range []string{"oidc-client-id", "oidc-client-secret", "oidc-client-secret-file", "oidc-cookie-key-file"} {
			if c.IsSet(f) {
				return nil, fmt.Errorf("--%s without --oidc-issuer", f)
			}
		}
		return nil, nil
	}
	secret := c.String("oidc-client-secret")
	if path := c.String("oidc-client-secret-file"); path != "" {
		if secret != "" {
			return nil, errors.New("--oidc-client-secret and --oidc-client-secret-file: give one")
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("--oidc-client-secret-file: %w", err)
		}
		secret = strings.TrimSpace(string(b))
	}
	if c.String("oidc-client-id") == "" || secret == "" {
		return nil, errors.New("--oidc-issuer needs --oidc-client-id and a client secret (--oidc-client-secret-file or TUNNELD_OIDC_CLIENT_SECRET)")
	}
	var key []byte
	if path := c.String("oidc-cookie-key-file"); path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("--oidc-cookie-key-file: %w", err)
		}
		if len(b) < oidc.MinCookieKey {
			return nil, fmt.Errorf("--oidc-cookie-key-file %s: %d bytes, want at least %d random ones (head -c 32 /dev/urandom > %s)", path, len(b), oidc.MinCookieKey, path)
		}
		key = b
	} else {
		key = make([]byte, oidc.MinCookieKey)
		rand.Read(key)
		log.Info().Msg("oidc: cookie key made for this run (--oidc-cookie-key-file keeps visitors signed in across restarts and nodes)")
	}
	redirect := "https://" + domain
	if publicPort != 0 && publicPort != 443 {
		redirect += ":" + strconv.Itoa(publicPort)
	}
	if c.Duration("oidc-session") <= 0 {
		return nil, errors.New("--oidc-session must be positive")
	}
	return &oidc.Config{
		Issuer:       issuer,
		ClientID:     c.String("oidc-client-id"),
		ClientSecret: secret,
		RedirectURL:  redirect + oidc.CallbackPath,
		CookieKey:    key,
		SessionTTL:   c.Duration("oidc-session"),
		Logger:       log,
	}, nil
}

// oidcLogin builds the login from the flags, discovering the issuer (within
// oidc.DefaultDiscoveryTimeout); nil without --oidc-issuer. The caller
// closes it.
func oidcLogin(ctx context.Context, c *cli.Context, domain string, publicPort int, log zerolog.Logger) (*oidc.Login, error) {
	cfg, err := oidcConfig(c, domain, publicPort, log)
	if err != nil || cfg == nil {
		return nil, err
	}
	l, err := oidc.New(ctx, *cfg)
	if err != nil {
		return nil, fmt.Errorf("--oidc-issuer: %w", err)
	}
	log.Info().Str("issuer", cfg.Issuer).Str("redirect_url", cfg.RedirectURL).Msg("oidc login ready")
	return l, nil
}
