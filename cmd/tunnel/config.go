package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/tunnelhq/tunnel/internal/certpool"
	"github.com/tunnelhq/tunnel/pkg/devcert"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/name"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// devServer is where tunneld --dev listens.
const devServer = "localhost:8443"

func globalFlags() []cli.Flag {
	def := mux.DefaultConfig() // each default is the package's, so the two cannot drift apart
	return []cli.Flag{
		&cli.StringFlag{Name: "server", EnvVars: []string{"TUNNEL_SERVER"},
			Usage: "tunneld address, host:port (required unless --dev, which means " + devServer + ")"},
		&cli.StringFlag{Name: "token", EnvVars: []string{"TUNNEL_TOKEN"},
			Usage: "token from \"tunneld token add\", or the server's shared secret (prefer the env var over the flag)"},
		&cli.StringFlag{Name: "ca", EnvVars: []string{"TUNNEL_CA"}, DefaultText: "none; with --dev: CERTS-DIR/ca.pem",
			Usage: "PEM file of an extra root CA to trust besides the system's"},
		&cli.BoolFlag{Name: "dev", EnvVars: []string{"TUNNEL_DEV"},
			Usage: "talk to a local \"tunneld --dev\": server " + devServer + ", trust the dev CA in --certs-dir"},
		&cli.StringFlag{Name: "certs-dir", Value: "certs", EnvVars: []string{"TUNNEL_CERTS_DIR"},
			Usage: "tunneld's dev certificates directory (--dev only)"},
		&cli.StringFlag{Name: "config", EnvVars: []string{"TUNNEL_CONFIG"},
			Usage: "JSON file of settings and tunnels (see README); flags and env vars override it"},
		&cli.DurationFlag{Name: "peer-timeout", Value: def.PeerTimeout(), EnvVars: []string{"TUNNEL_PEER_TIMEOUT"},
			Usage: "a silent tunneld (dead link) is noticed within this; keepalive pings every half of it"},
		&cli.StringFlag{Name: "stream-window", Value: fmt.Sprintf("%dMiB", def.StreamWindow>>20), EnvVars: []string{"TUNNEL_STREAM_WINDOW"},
			Usage: "per stream, what tunneld may send before the client acknowledges (256KiB to 64MiB): one upload moves at most this per round trip"},
		&cli.IntFlag{Name: "max-streams", EnvVars: []string{"TUNNEL_MAX_STREAMS"}, DefaultText: "512 per tunnel, at least 1024",
			Usage: "most streams tunneld may have open at once (each a local connection); a server that opens more is cut off and reconnected to"},
		&cli.DurationFlag{Name: "retry-max", Value: mux.DefaultBackoff().Max, EnvVars: []string{"TUNNEL_RETRY_MAX"},
			Usage: "longest wait between reconnect attempts (exponential backoff with jitter, the first within 1s)"},
		&cli.DurationFlag{Name: "drain-timeout", Value: def.DrainTimeout, EnvVars: []string{"TUNNEL_DRAIN_TIMEOUT"},
			Usage: "on SIGINT/SIGTERM, how long in-flight requests may finish"},
		&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"TUNNEL_LOG_LEVEL"},
			Usage: "trace, debug, info, warn, error or disabled"},
		&cli.StringFlag{Name: "log-format", Value: "auto", EnvVars: []string{"TUNNEL_LOG_FORMAT"},
			Usage: "auto (pretty on a terminal, JSON otherwise), pretty or json"},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, EnvVars: []string{"TUNNEL_QUIET"},
			Usage: "no live view on a terminal: plain log lines, as when stderr is not a terminal"},
		&cli.StringFlag{Name: "metrics-listen", EnvVars: []string{"TUNNEL_METRICS_LISTEN"}, DefaultText: "off",
			Usage: "serve Prometheus /metrics (Go runtime, process, streams) on host:port; it has no authentication, so keep it on loopback; only Host: localhost or an IP address is answered"},
	}
}

// fileConfig is the --config file: the same settings as the flags, and the
// tunnels. A flag or env var that is set wins over the file.
type fileConfig struct {
	Server       string       `json:"server"`
	Token        string       `json:"token"`
	CA           string       `json:"ca"`
	PeerTimeout  string       `json:"peer_timeout"`
	StreamWindow string       `json:"stream_window"`
	RetryMax     string       `json:"retry_max"`
	DrainTimeout string       `json:"drain_timeout"`
	MaxStreams   int          `json:"max_streams"`
	Tunnels      []fileTunnel `json:"tunnels"`
}

type fileTunnel struct {
	Name   string `json:"name"`
	Target string `json:"target"`
}

func loadFileConfig(path string) (fileConfig, error) {
	var fc fileConfig
	if path == "" {
		return fc, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return fc, fmt.Errorf("--config: %w", err)
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fc); err != nil {
		return fc, fmt.Errorf("--config %s: %w", path, err)
	}
	return fc, nil
}

// settings reads each option from its flag or env var, else from the
// config file, else the flag's default.
type settings struct {
	c    *cli.Context
	file fileConfig
}

func (s settings) str(flag, fromFile string) string {
	if s.c.IsSet(flag) || fromFile == "" {
		return s.c.String(flag)
	}
	return fromFile
}

func (s settings) duration(flag, fromFile string) (time.Duration, error) {
	if s.c.IsSet(flag) || fromFile == "" {
		return s.c.Duration(flag), nil
	}
	d, err := time.ParseDuration(fromFile)
	if err != nil {
		return 0, fmt.Errorf("--config: %s: %w", strings.ReplaceAll(flag, "-", "_"), err)
	}
	return d, nil
}

// targetArgs are the TARGETs: the arguments, else TUNNEL_TARGETS (split on
// spaces and commas), else the config file's tunnels.
func (s settings) targets() (name string, args []string) {
	if args := s.c.Args().Slice(); len(args) > 0 {
		return s.c.String("name"), args
	}
	if env := s.c.String("targets"); env != "" {
		return s.c.String("name"), strings.FieldsFunc(env, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' })
	}
	for _, t := range s.file.Tunnels {
		if t.Name != "" {
			args = append(args, t.Name+"="+t.Target)
		} else {
			args = append(args, t.Target)
		}
	}
	return s.c.String("name"), args
}

// clientConfig turns the flags of "tunnel http", the global ones and the
// --config file into a mux.ClientConfig. It is the only reader of those
// flags. The URLs go to stdout.
func clientConfig(c *cli.Context, log zerolog.Logger, stdout io.Writer) (mux.ClientConfig, error) {
	file, err := loadFileConfig(c.String("config"))
	if err != nil {
		return mux.ClientConfig{}, err
	}
	set := settings{c: c, file: file}
	tunnels, err := parseTargets(set.targets())
	if err != nil {
		return mux.ClientConfig{}, err
	}
	dev := c.Bool("dev")
	server := set.str("server", file.Server)
	if server == "" {
		if !dev {
			return mux.ClientConfig{}, errors.New("--server (TUNNEL_SERVER) is required: tunneld's host:port; or pass --dev for a local tunneld --dev")
		}
		server = devServer
	}
	if _, _, err := net.SplitHostPort(server); err != nil {
		return mux.ClientConfig{}, fmt.Errorf("--server %q: want host:port", server)
	}
	caFile := set.str("ca", file.CA)
	devCA := caFile == "" && dev
	if devCA {
		caFile = filepath.Join(c.String("certs-dir"), devcert.CAFile)
	}
	roots, err := rootCAs(caFile, devCA)
	if err != nil {
		return mux.ClientConfig{}, err
	}

	peerTimeout, err := set.duration("peer-timeout", file.PeerTimeout)
	if err != nil {
		return mux.ClientConfig{}, err
	}
	retryMax, err := set.duration("retry-max", file.RetryMax)
	if err != nil {
		return mux.ClientConfig{}, err
	}
	drain, err := set.duration("drain-timeout", file.DrainTimeout)
	if err != nil {
		return mux.ClientConfig{}, err
	}
	if peerTimeout <= 0 || retryMax <= 0 || drain <= 0 {
		return mux.ClientConfig{}, errors.New("--peer-timeout, --retry-max and --drain-timeout must be positive")
	}
	maxStreams := file.MaxStreams
	if c.IsSet("max-streams") || maxStreams == 0 {
		maxStreams = c.Int("max-streams")
	}
	if maxStreams < 0 {
		return mux.ClientConfig{}, fmt.Errorf("--max-streams %d: want a positive number, or 0 for the default", maxStreams)
	}
	window, err := mux.ParseWindow(set.str("stream-window", file.StreamWindow))
	if err != nil {
		return mux.ClientConfig{}, fmt.Errorf("--stream-window: %w", err)
	}

	var printed []string
	cfg := mux.ClientConfig{
		Config:        mux.DefaultConfig(),
		Server:        server,
		TLS:           &tls.Config{RootCAs: roots},
		CAFile:        caFile,
		Token:         set.str("token", file.Token),
		ClientVersion: version,
		Tunnels:       tunnels,
		Backoff:       mux.Backoff{Max: retryMax},
		OnReady: func(w *proto.Welcome) {
			urls := make([]string, 0, len(w.Tunnels))
			for _, t := range w.Tunnels {
				urls = append(urls, mux.Printable(t.URL, maxPrintedName))
			}
			if slices.Equal(urls, printed) {
				log.Info().Msg("reconnected with the same URLs")
				return
			}
			printed = urls
			for i, url := range urls {
				// stdout is for scripts: the URLs and nothing else, again
				// only if a reconnect changed them; one line each, since
				// printable leaves no newline in them.
				fmt.Fprintln(stdout, url)
				log.Info().Str("url", url).Str("target", tunnels[i].Target).Msg("tunnel ready")
			}
		},
	}
	cfg.Logger = log
	cfg.SetPeerTimeout(peerTimeout)
	cfg.DrainTimeout = drain
	cfg.StreamWindow = window
	cfg.MaxStreams = maxStreams
	return cfg, nil
}

// rootCAs returns the system roots plus the certificates in file, or nil
// (the system roots) when file is empty. dev says that file is --dev's
// default, CERTS-DIR/ca.pem, rather than --ca: a missing one then most
// likely means tunnel was started outside the directory tunneld --dev
// made its certs/ in, and the message says so.
func rootCAs(file string, dev bool) (*x509.CertPool, error) {
	if file == "" {
		return nil, nil
	}
	pool, err := certpool.WithFile(file)
	switch {
	case err == nil:
		return pool, nil
	case errors.Is(err, fs.ErrNotExist) && dev:
		return nil, fmt.Errorf("--dev trusts the dev CA in --certs-dir, but %s does not exist%s: "+
			"run tunnel from the directory tunneld --dev was started in (the repository root, for make demo), "+
			"or pass --certs-dir DIR (TUNNEL_CERTS_DIR) or --ca FILE (TUNNEL_CA)", file, lookedFor(file))
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("--ca (TUNNEL_CA) %s does not exist%s: "+
			"give the PEM file of the CA that signed tunneld's certificate", file, lookedFor(file))
	default:
		return nil, fmt.Errorf("--ca: %w", err)
	}
}

// lookedFor says where a relative file was looked for, for a message:
// " (looked for /home/me/certs/ca.pem)"; nothing for an absolute one.
func lookedFor(file string) string {
	if abs, err := filepath.Abs(file); err == nil && abs != file {
		return " (looked for " + abs + ")"
	}
	return ""
}

// parseTargets reads the TARGET arguments of "tunnel http": PORT,
// HOST:PORT, NAME=PORT or NAME=HOST:PORT. name is --name, allowed only with
// one target that has no NAME= of its own. Names are checked here with the
// server's own rules (pkg/name), so that a bad one stops the client at
// once, every fault said, before any connection; the server checks again.
func parseTargets(nameFlag string, args []string) ([]mux.Tunnel, error) {
	switch {
	case len(args) == 0:
		return nil, errors.New("no TARGET: want PORT, HOST:PORT, NAME=PORT or NAME=HOST:PORT")
	case len(args) > proto.MaxTunnels:
		return nil, fmt.Errorf("%d targets: at most %d per session", len(args), proto.MaxTunnels)
	case nameFlag != "" && len(args) > 1:
		return nil, errors.New("--name goes with a single TARGET: for several, write NAME=TARGET for each")
	}
	tunnels := make([]mux.Tunnel, 0, len(args))
	seen := make(map[string]bool, len(args))
	for _, arg := range args {
		if isFlagArg(arg) {
			// A flag after a TARGET, which the flag parser took for an
			// argument.
			return nil, fmt.Errorf("%q after a TARGET: flags go before the TARGETs (global ones before http), "+
				"as in tunnel --dev http --name wiki 8080", arg)
		}
		t := mux.Tunnel{Name: nameFlag}
		target := arg
		if n, rest, ok := strings.Cut(arg, "="); ok {
			if nameFlag != "" {
				return nil, fmt.Errorf("target %q names its tunnel and so does --name: use one", arg)
			}
			if n == "" {
				return nil, fmt.Errorf("target %q: empty NAME before '='", arg)
			}
			t.Name, target = n, rest
		}
		addr, err := targetAddr(target)
		if err != nil {
			return nil, fmt.Errorf("target %q: %w", arg, err)
		}
		t.Target = addr
		if t.Name != "" {
			if err := name.Validate(t.Name); err != nil {
				if t.Name == nameFlag {
					return nil, fmt.Errorf("--name: %w", err)
				}
				return nil, fmt.Errorf("target %q: %w", arg, err)
			}
			if seen[t.Name] {
				return nil, fmt.Errorf("name %q given twice", t.Name)
			}
			seen[t.Name] = true
		}
		tunnels = append(tunnels, t)
	}
	return tunnels, nil
}

// targetAddr turns PORT or HOST:PORT into host:port; PORT alone, or an
// empty host (":8080"), means localhost.
func targetAddr(s string) (string, error) {
	host, port := "localhost", s
	if strings.Contains(s, ":") {
		var err error
		if host, port, err = net.SplitHostPort(s); err != nil {
			return "", errors.New("want PORT or HOST:PORT (an IPv6 host in brackets: [::1]:8080)")
		}
		if host == "" {
			host = "localhost"
		}
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return "", fmt.Errorf("port %q: want a number from 1 to 65535", port)
	}
	return net.JoinHostPort(host, port), nil
}
