package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/tunnelhq/tunnel/pkg/edge"
)

// Defaults of --dev.
const (
	devListen = "127.0.0.1:8443"
	devDomain = "localhost"
)

func serveFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "listen", Value: ":443", EnvVars: []string{"TUNNELD_LISTEN"},
			Usage: "TLS address for clients and visitors, host:port (with --dev: " + devListen + ")"},
		&cli.StringFlag{Name: "domain", EnvVars: []string{"TUNNELD_DOMAIN"},
			Usage: "apex domain; tunnel NAME is served at NAME.DOMAIN (required unless --dev, which means " + devDomain + ")"},
		&cli.BoolFlag{Name: "dev", EnvVars: []string{"TUNNELD_DEV"},
			Usage: "local development: listen on " + devListen + ", domain " + devDomain + ", allow anonymous clients, TLS from a dev CA in --certs-dir (made on first run)"},
		&cli.StringFlag{Name: "certs-dir", Value: "certs", EnvVars: []string{"TUNNELD_CERTS_DIR"},
			Usage: "directory of the dev CA and certificates (--dev only)"},
		&cli.StringFlag{Name: "cert", EnvVars: []string{"TUNNELD_CERT"},
			Usage: "PEM certificate chain for *.DOMAIN (without --dev; with --key)"},
		&cli.StringFlag{Name: "key", EnvVars: []string{"TUNNELD_KEY"},
			Usage: "PEM private key of --cert"},
		&cli.StringFlag{Name: "tokens-file", EnvVars: []string{"TUNNELD_TOKENS_FILE"},
			Usage: "JSON file of token hashes and the names each may claim (write it with \"tunneld token add\")"},
		&cli.StringFlag{Name: "token", EnvVars: []string{"TUNNELD_TOKEN"},
			Usage: "one shared secret that may claim any name (prefer the env var over the flag)"},
		&cli.BoolFlag{Name: "allow-anonymous", EnvVars: []string{"TUNNELD_ALLOW_ANONYMOUS"},
			Usage: "let clients without a token in (their names belong to their IP address)"},
		&cli.IntFlag{Name: "public-port", EnvVars: []string{"TUNNELD_PUBLIC_PORT"}, DefaultText: "the port tunneld listens on",
			Usage: "port written in public URLs, for when a proxy or NAT forwards another port (443 writes none)"},
		&cli.DurationFlag{Name: "name-hold", Value: 5 * time.Minute, EnvVars: []string{"TUNNELD_NAME_HOLD"},
			Usage: "how long a disconnected client's names stay reserved for its token"},
		&cli.DurationFlag{Name: "offline-wait", Value: 5 * time.Second, EnvVars: []string{"TUNNELD_OFFLINE_WAIT"},
			Usage: "how long a visitor's request waits for a reconnecting client before a 502 \"tunnel offline\" page (0: none)"},
		&cli.DurationFlag{Name: "peer-timeout", Value: 30 * time.Second, EnvVars: []string{"TUNNELD_PEER_TIMEOUT"},
			Usage: "a silent client (dead link) is noticed within this and its names put on hold; keepalive pings every half of it"},
		&cli.IntFlag{Name: "max-tunnels", Value: 8, EnvVars: []string{"TUNNELD_MAX_TUNNELS"},
			Usage: "tunnels one client may open, unless its token says otherwise"},
		&cli.DurationFlag{Name: "shutdown-grace", Value: 10 * time.Second, EnvVars: []string{"TUNNELD_SHUTDOWN_GRACE"},
			Usage: "on SIGINT/SIGTERM, how long in-flight requests may finish"},
		&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"TUNNELD_LOG_LEVEL"},
			Usage: "trace, debug, info, warn, error or disabled"},
		&cli.StringFlag{Name: "log-format", Value: "auto", EnvVars: []string{"TUNNELD_LOG_FORMAT"},
			Usage: "auto (pretty on a terminal, JSON otherwise), pretty or json"},
	}
}

// serverConfig turns the main command's flags into an edge.Config and the
// address to listen on. It is the only reader of those flags. PublicPort is
// set only if --public-port was given; the caller fills it in from the bound
// listener otherwise.
func serverConfig(c *cli.Context, log zerolog.Logger) (edge.Config, string, error) {
	dev := c.Bool("dev")
	cfg := edge.DefaultConfig()
	cfg.Logger = log
	cfg.Mux.Logger = log

	addr := c.String("listen")
	if dev && !c.IsSet("listen") {
		addr = devListen
	}
	cfg.Domain = strings.TrimSuffix(strings.ToLower(c.String("domain")), ".")
	if cfg.Domain == "" {
		if !dev {
			return cfg, "", errors.New("--domain (TUNNELD_DOMAIN) is required: the apex under which tunnels get names; or pass --dev to try it locally")
		}
		cfg.Domain = devDomain
	}

	certFile, keyFile := c.String("cert"), c.String("key")
	switch {
	case dev && (certFile != "" || keyFile != ""):
		return cfg, "", errors.New("--cert/--key and --dev do not go together: --dev makes its own certificates in --certs-dir")
	case (certFile == "") != (keyFile == ""):
		return cfg, "", errors.New("--cert and --key go together: pass both")
	case !dev && certFile == "":
		return cfg, "", errors.New("no TLS certificate: pass --cert and --key (a certificate for the domain and *.domain), or --dev to try it locally (automatic certificates from ACME are not supported yet)")
	}

	cfg.AllowAnonymous = dev || c.Bool("allow-anonymous")
	tokensFile, sharedToken := c.String("tokens-file"), c.String("token")
	if tokensFile == "" && sharedToken == "" && !cfg.AllowAnonymous {
		return cfg, "", errors.New("no tokens configured, so no client could connect: pass --tokens-file (see \"tunneld token add\") or TUNNELD_TOKEN, or --allow-anonymous to let anyone in")
	}

	if dev {
		tlsCfg, err := edge.DevTLSConfig(c.String("certs-dir"), cfg.Domain)
		if err != nil {
			return cfg, "", err
		}
		cfg.TLSConfig = tlsCfg
		log.Info().Str("ca", filepath.Join(c.String("certs-dir"), edge.DevCAFile)).
			Msg("dev mode: clients trust this CA (tunnel --ca, curl --cacert)")
	} else {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return cfg, "", fmt.Errorf("load --cert %s and --key %s: %w", certFile, keyFile, err)
		}
		cfg.TLSConfig = &tls.Config{Certificates: []tls.Certificate{pair}}
	}

	auth, err := authenticator(tokensFile, sharedToken)
	if err != nil {
		return cfg, "", err
	}
	cfg.Auth = auth

	cfg.PublicPort = c.Int("public-port")
	cfg.NameHold = c.Duration("name-hold")
	cfg.OfflineWait = c.Duration("offline-wait")
	if d := c.Duration("peer-timeout"); d > 0 {
		cfg.Mux.SetPeerTimeout(d)
	} else {
		return cfg, "", errors.New("--peer-timeout must be positive")
	}
	cfg.MaxTunnelsPerSession = c.Int("max-tunnels")
	cfg.ShutdownGrace = c.Duration("shutdown-grace")
	return cfg, addr, nil
}

// authenticator combines the tokens file and the shared token; nil if
// neither is configured.
func authenticator(tokensFile, sharedToken string) (edge.Authenticator, error) {
	var auths firstMatch
	if tokensFile != "" {
		set, err := edge.LoadTokensFile(tokensFile)
		if err != nil {
			return nil, err
		}
		auths = append(auths, set)
	}
	if sharedToken != "" {
		set, err := edge.NewTokenSet([]edge.TokenEntry{edge.SharedTokenEntry(sharedToken)})
		if err != nil {
			return nil, fmt.Errorf("TUNNELD_TOKEN: %w", err)
		}
		auths = append(auths, set)
	}
	switch len(auths) {
	case 0:
		return nil, nil
	case 1:
		return auths[0], nil
	}
	return auths, nil
}

// firstMatch asks each Authenticator in turn and returns the first
// identity. It asks all of them every time, so that the time taken does not
// tell which one matched. It exists because edge can load a tokens file only
// as a finished TokenSet, so the file's entries and the shared token cannot
// go into one NewTokenSet.
type firstMatch []edge.Authenticator

func (a firstMatch) Authenticate(token string) (*edge.Identity, error) {
	var id *edge.Identity
	for _, auth := range a {
		if got, err := auth.Authenticate(token); err == nil && id == nil {
			id = got
		}
	}
	if id == nil {
		return nil, edge.ErrBadToken
	}
	return id, nil
}
