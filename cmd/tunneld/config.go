package main

import (
	"errors"
	"fmt"
	"math"
	"net"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"
	"golang.org/x/crypto/acme/autocert"

	"github.com/tunnelhq/tunnel/pkg/certs"
	"github.com/tunnelhq/tunnel/pkg/devcert"
	"github.com/tunnelhq/tunnel/pkg/domain"
	"github.com/tunnelhq/tunnel/pkg/edge"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/token"
)

// Defaults of --dev.
const (
	devListen = "127.0.0.1:8443"
	devDomain = "localhost"
)

func serveFlags() []cli.Flag {
	def := edge.DefaultConfig() // each default is the edge's, so the two cannot drift apart
	return []cli.Flag{
		&cli.StringFlag{Name: "listen", Value: ":443", EnvVars: []string{"TUNNELD_LISTEN"},
			Usage: "TLS address for clients and visitors, host:port (with --dev: " + devListen + ")"},
		&cli.StringFlag{Name: "domain", EnvVars: []string{"TUNNELD_DOMAIN"},
			Usage: "apex domain; tunnel NAME is served at NAME.DOMAIN (required unless --dev, which means " + devDomain + ")"},
		&cli.BoolFlag{Name: "dev", EnvVars: []string{"TUNNELD_DEV"},
			Usage: "local development: listen on " + devListen + ", domain " + devDomain + ", allow anonymous clients, TLS from a dev CA in --certs-dir (made on first run)"},
		&cli.StringFlag{Name: "certs-dir", Value: "certs", EnvVars: []string{"TUNNELD_CERTS_DIR"},
			Usage: "directory of the dev CA and certificates (--dev only)"},
		&cli.StringSliceFlag{Name: "cert", EnvVars: []string{"TUNNELD_CERT"},
			Usage: "static PEM certificate chain (e.g. *.DOMAIN) with its --key, or a directory of NAME.crt + NAME.key pairs; repeatable; used for the names it covers, ACME for the rest; reloaded on SIGHUP"},
		&cli.StringSliceFlag{Name: "key", EnvVars: []string{"TUNNELD_KEY"},
			Usage: "PEM private key of each file --cert, in the same order"},
		&cli.BoolFlag{Name: "acme", Value: true, EnvVars: []string{"TUNNELD_ACME"},
			Usage: "get certificates from ACME (Let's Encrypt) for the apex and the names tunnels hold, unless --cert covers them (not with --dev)"},
		&cli.StringFlag{Name: "acme-email", EnvVars: []string{"TUNNELD_ACME_EMAIL"},
			Usage: "contact address given to the ACME CA, for expiry notices"},
		&cli.StringFlag{Name: "acme-directory", Value: autocert.DefaultACMEDirectory, EnvVars: []string{"TUNNELD_ACME_DIRECTORY"},
			Usage: "ACME directory URL (Let's Encrypt staging: https://acme-staging-v02.api.letsencrypt.org/directory)"},
		&cli.StringFlag{Name: "acme-ca-root", EnvVars: []string{"TUNNELD_ACME_CA_ROOT"},
			Usage: "PEM root to trust, besides the system's, for a private ACME server's HTTPS"},
		&cli.IntFlag{Name: "acme-orders-per-week", Value: certs.DefaultOrdersPerWeek, EnvVars: []string{"TUNNELD_ACME_ORDERS_PER_WEEK"},
			Usage: "certificates ordered in any 7 days, in all (Let's Encrypt allows 50 per domain); past it a name gets none, logged; renewals and the apex do not count"},
		&cli.IntFlag{Name: "acme-orders-per-owner", Value: certs.DefaultOrdersPerOwnerPerWeek, EnvVars: []string{"TUNNELD_ACME_ORDERS_PER_OWNER"},
			Usage: "certificates ordered in any 7 days for one token's names (anonymous clients: one IP address's)"},
		&cli.StringFlag{Name: "cert-cache", EnvVars: []string{"TUNNELD_CERT_CACHE"}, DefaultText: "$STATE_DIRECTORY/autocert, else ~/.local/state/tunneld/autocert",
			Usage: "directory where ACME account and certificates are kept across restarts (created 0700)"},
		&cli.StringFlag{Name: "http-listen", Value: ":80", EnvVars: []string{"TUNNELD_HTTP_LISTEN"}, DefaultText: `":80"; with --dev: none`,
			Usage: "plain-HTTP address: ACME HTTP-01 challenges, and a 308 redirect to https; empty disables"},
		&cli.BoolFlag{Name: "http-redirect", Value: true, EnvVars: []string{"TUNNELD_HTTP_REDIRECT"},
			Usage: "on --http-listen, redirect to https; false serves the tunnels over plain HTTP (behind a TLS-terminating load balancer)"},
		&cli.StringSliceFlag{Name: "trusted-proxies", EnvVars: []string{"TUNNELD_TRUSTED_PROXIES"},
			Usage: "CIDRs (or addresses) of proxies whose X-Forwarded-For/-Proto are believed; default nobody's"},
		&cli.StringFlag{Name: "tokens-file", EnvVars: []string{"TUNNELD_TOKENS_FILE"},
			Usage: "JSON file of token hashes and the names each may claim (write it with \"tunneld token add\")"},
		&cli.StringFlag{Name: "token", EnvVars: []string{"TUNNELD_TOKEN"},
			Usage: "one shared secret that may claim any name (prefer the env var over the flag)"},
		&cli.BoolFlag{Name: "allow-anonymous", EnvVars: []string{"TUNNELD_ALLOW_ANONYMOUS"},
			Usage: "let clients without a token in (their names belong to the client process, by a random key it sends; their limits count per IP address)"},
		&cli.BoolFlag{Name: "require-access-anonymous", EnvVars: []string{"TUNNELD_REQUIRE_ACCESS_ANONYMOUS"},
			Usage: "refuse an anonymous client's tunnel without a visitor access rule (tunnel http --basic-auth, --allow-cidr, --deny-cidr or --oidc-allow); tokens have their own \"access\" in --tokens-file"},
		&cli.IntFlag{Name: "public-port", EnvVars: []string{"TUNNELD_PUBLIC_PORT"}, DefaultText: "the port tunneld listens on",
			Usage: "port written in public URLs, for when a proxy or NAT forwards another port (443 writes none)"},
		&cli.DurationFlag{Name: "name-hold", Value: def.NameHold, EnvVars: []string{"TUNNELD_NAME_HOLD"},
			Usage: "how long a disconnected client's names stay reserved for its token (at most as many as it may have tunnels; the oldest go first)"},
		&cli.StringFlag{Name: "dns-resolver", EnvVars: []string{"TUNNELD_DNS_RESOLVER"}, DefaultText: "the system's",
			Usage: "DNS server, host:port, that custom domains' records (tunnel http --domain) are checked with"},
		&cli.DurationFlag{Name: "domain-recheck", Value: def.DomainRecheck, EnvVars: []string{"TUNNELD_DOMAIN_RECHECK"},
			Usage: "how often the custom domains of connected clients are checked again; one that no longer points at its tunnel stops being served"},
		&cli.DurationFlag{Name: "offline-wait", Value: def.OfflineWait, EnvVars: []string{"TUNNELD_OFFLINE_WAIT"},
			Usage: "how long a visitor's request waits for a reconnecting client before a 502 \"tunnel offline\" page (0: none)"},
		&cli.DurationFlag{Name: "peer-timeout", Value: def.Mux.PeerTimeout(), EnvVars: []string{"TUNNELD_PEER_TIMEOUT"},
			Usage: "a silent client (dead link) is noticed within this and its names put on hold; keepalive pings every half of it"},
		&cli.StringFlag{Name: "stream-window", Value: fmt.Sprintf("%dMiB", def.Mux.StreamWindow>>20), EnvVars: []string{"TUNNELD_STREAM_WINDOW"},
			Usage: "per stream, what a client may send before tunneld acknowledges (256KiB to 64MiB): one download moves at most this per round trip, and tunneld buffers up to this for a slow visitor"},
		&cli.IntFlag{Name: "max-tunnels", Value: def.MaxTunnelsPerSession, EnvVars: []string{"TUNNELD_MAX_TUNNELS"},
			Usage: "tunnels one client may open, unless its token says otherwise"},
		&cli.IntFlag{Name: "max-tunnels-per-token", Value: def.MaxTunnelsPerToken, EnvVars: []string{"TUNNELD_MAX_TUNNELS_PER_TOKEN"},
			Usage: "tunnels one token (or one anonymous address) may hold across all its sessions, unless the token says otherwise"},
		&cli.IntFlag{Name: "max-sessions-per-ip", Value: def.MaxSessionsPerIP, EnvVars: []string{"TUNNELD_MAX_SESSIONS_PER_IP"},
			Usage: "tunnel client sessions from one IP address (IPv6: one /64)"},
		&cli.IntFlag{Name: "max-handshakes", Value: def.MaxHandshakes, EnvVars: []string{"TUNNELD_MAX_HANDSHAKES"},
			Usage: "connections in their TLS handshake or client Hello at once; more are closed"},
		&cli.IntFlag{Name: "max-handshakes-per-ip", Value: def.MaxHandshakesPerIP, EnvVars: []string{"TUNNELD_MAX_HANDSHAKES_PER_IP"},
			Usage: "handshakes in progress from one IP address (IPv6: one /64)"},
		&cli.IntFlag{Name: "max-streams-per-tunnel", Value: def.MaxStreamsPerTunnel, EnvVars: []string{"TUNNELD_MAX_STREAMS_PER_TUNNEL"},
			Usage: "requests in flight through one tunnel; more get 503 with Retry-After"},
		&cli.IntFlag{Name: "max-requests-per-visitor", Value: def.MaxRequestsPerVisitor, EnvVars: []string{"TUNNELD_MAX_REQUESTS_PER_VISITOR"},
			Usage: "requests in flight through one tunnel from one visitor address (IPv6: one /64), so that one visitor cannot take all of --max-streams-per-tunnel; more wait for one of its own to finish (at most 256, for 30s), then get 429 with Retry-After"},
		&cli.DurationFlag{Name: "visitor-idle-timeout", Value: def.VisitorIdleTimeout, EnvVars: []string{"TUNNELD_VISITOR_IDLE_TIMEOUT"},
			Usage: "a visitor that sends nothing of its request body, or takes nothing of its response, for this long has its request cut (a pause, not a transfer: downloads may take as long as they keep moving)"},
		&cli.StringFlag{Name: "slow-reader-budget", Value: fmt.Sprintf("%dMiB", def.SlowReaderBudget>>20), EnvVars: []string{"TUNNELD_SLOW_READER_BUDGET"},
			Usage: "memory for responses visitors do not take: each blocked over a second, or abandoned in the last 5s, counts 1.5 --stream-window plus 64KiB; over the budget, addresses holding more than an equal share have their stalled responses cut and get 429 (KiB, MiB or GiB)"},
		&cli.DurationFlag{Name: "auth-fail-delay", Value: def.AuthFailDelay, EnvVars: []string{"TUNNELD_AUTH_FAIL_DELAY"},
			Usage: "after 3 failed token checks from one IP, its next check waits this long, doubling with each failure"},
		&cli.DurationFlag{Name: "auth-fail-max-delay", Value: def.AuthFailMaxDelay, EnvVars: []string{"TUNNELD_AUTH_FAIL_MAX_DELAY"},
			Usage: "the most --auth-fail-delay grows to (below the 10s handshake timeout)"},
		&cli.DurationFlag{Name: "shutdown-grace", Value: def.ShutdownGrace, EnvVars: []string{"TUNNELD_SHUTDOWN_GRACE"},
			Usage: "on SIGINT/SIGTERM, how long in-flight requests may finish; also how long a client that said GoAway keeps its session"},
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

	certPaths, keys := c.StringSlice("cert"), c.StringSlice("key")
	switch {
	case dev && (len(certPaths) > 0 || len(keys) > 0):
		return cfg, "", errors.New("--cert/--key and --dev do not go together: --dev makes its own certificates in --certs-dir")
	case !dev && len(certPaths) == 0 && !c.Bool("acme"):
		return cfg, "", errors.New("no TLS certificate: pass --cert and --key (a certificate for the domain and *.domain), leave --acme on, or pass --dev to try it locally")
	}
	files, err := certFiles(certPaths, keys)
	if err != nil {
		return cfg, "", err
	}

	cfg.AllowAnonymous = dev || c.Bool("allow-anonymous")
	cfg.RequireAccessAnonymous = c.Bool("require-access-anonymous")
	tokensFile, sharedToken := c.String("tokens-file"), c.String("token")
	if tokensFile == "" && sharedToken == "" && !cfg.AllowAnonymous {
		return cfg, "", errors.New("no tokens configured, so no client could connect: pass --tokens-file (see \"tunneld token add\") or TUNNELD_TOKEN, or --allow-anonymous to let anyone in")
	}

	if dev {
		tlsCfg, err := devcert.TLSConfig(c.String("certs-dir"), cfg.Domain)
		if err != nil {
			return cfg, "", err
		}
		cfg.TLSConfig = tlsCfg
		log.Info().Str("ca", filepath.Join(c.String("certs-dir"), devcert.CAFile)).
			Msg("dev mode: clients trust this CA (tunnel --ca, curl --cacert)")
	} else if err := certConfig(c, &cfg, files); err != nil {
		return cfg, "", err
	}
	cfg.PlainServesTunnels = !c.Bool("http-redirect")
	for _, p := range c.StringSlice("trusted-proxies") {
		prefix, err := parsePrefix(p)
		if err != nil {
			return cfg, "", fmt.Errorf("--trusted-proxies: %w", err)
		}
		cfg.TrustedProxies = append(cfg.TrustedProxies, prefix)
	}

	if tokensFile != "" || sharedToken != "" {
		set, err := token.Load(tokensFile, sharedToken)
		if err != nil {
			return cfg, "", err
		}
		cfg.Auth = set
	}

	cfg.PublicPort = c.Int("public-port")
	cfg.NameHold = c.Duration("name-hold")
	cfg.OfflineWait = c.Duration("offline-wait")
	if r := c.String("dns-resolver"); r != "" {
		if _, _, err := net.SplitHostPort(r); err != nil {
			return cfg, "", fmt.Errorf("--dns-resolver %q: want host:port: %w", r, err)
		}
	}
	cfg.Domains = domain.NewChecker(domain.Config{Resolver: c.String("dns-resolver")})
	if cfg.DomainRecheck = c.Duration("domain-recheck"); cfg.DomainRecheck <= 0 {
		return cfg, "", errors.New("--domain-recheck must be positive")
	}
	if d := c.Duration("peer-timeout"); d > 0 {
		cfg.Mux.SetPeerTimeout(d)
	} else {
		return cfg, "", errors.New("--peer-timeout must be positive")
	}
	w, err := mux.ParseWindow(c.String("stream-window"))
	if err != nil {
		return cfg, "", fmt.Errorf("--stream-window: %w", err)
	}
	cfg.Mux.StreamWindow = w
	cfg.MaxTunnelsPerSession = c.Int("max-tunnels")
	cfg.ShutdownGrace = c.Duration("shutdown-grace")
	cfg.MaxTunnelsPerToken = c.Int("max-tunnels-per-token")
	cfg.MaxSessionsPerIP = c.Int("max-sessions-per-ip")
	cfg.MaxHandshakes = c.Int("max-handshakes")
	cfg.MaxHandshakesPerIP = c.Int("max-handshakes-per-ip")
	cfg.MaxStreamsPerTunnel = c.Int("max-streams-per-tunnel")
	cfg.MaxRequestsPerVisitor = c.Int("max-requests-per-visitor")
	cfg.VisitorIdleTimeout = c.Duration("visitor-idle-timeout")
	if cfg.SlowReaderBudget, err = parseBytes(c.String("slow-reader-budget")); err != nil {
		return cfg, "", fmt.Errorf("--slow-reader-budget: %w", err)
	}
	cfg.AuthFailDelay = c.Duration("auth-fail-delay")
	cfg.AuthFailMaxDelay = c.Duration("auth-fail-max-delay")
	cfg.AccessLog = c.Bool("access-log")
	return cfg, addr, nil
}

// parseBytes reads a size as the flags take it: a number of bytes, or a
// number followed by KiB, MiB or GiB (K, M, G for short, any case).
func parseBytes(s string) (int64, error) {
	num, unit := strings.TrimSpace(s), int64(1)
	lower := strings.ToLower(num)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}} {
		if strings.HasSuffix(lower, u.suffix) {
			num, unit = strings.TrimSpace(num[:len(num)-len(u.suffix)]), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt64/unit {
		return 0, fmt.Errorf("%q: want a positive number of bytes, or one with KiB, MiB or GiB (e.g. 256MiB)", s)
	}
	return n * unit, nil
}
