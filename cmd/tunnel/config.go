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

// checkServers reports the first entry of a --server value that is not
// host:port.
func checkServers(server string) error {
	servers := mux.SplitServers(server)
	if len(servers) == 0 {
		return fmt.Errorf("--server %q: want host:port", server)
	}
	for _, a := range servers {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("--server %q: want host:port (several separated by commas)", a)
		}
	}
	return nil
}

func globalFlags() []cli.Flag {
	def := mux.DefaultConfig() // each default is the package's, so the two cannot drift apart
	return []cli.Flag{
		&cli.StringFlag{Name: "server", EnvVars: []string{"TUNNEL_SERVER"},
			Usage: "tunneld address, host:port, or several separated by commas (a cluster's nodes, tried in a random order); required unless --dev, which means " + devServer},
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
		&cli.StringFlag{Name: "inspect", Value: defaultInspect, EnvVars: []string{"TUNNEL_INSPECT"},
			Usage: "serve the request inspector (a page and a JSON API of every HTTP request through the tunnels) on host:port, or false for none; when 4040 is taken, the next free port (printed on stderr)"},
		&cli.StringFlag{Name: "inspect-token", EnvVars: []string{"TUNNEL_INSPECT_TOKEN"}, DefaultText: "none; off loopback one is made up and printed",
			Usage: "bearer token the inspector requires (Authorization: Bearer TOKEN, or ?token=TOKEN)"},
		&cli.StringFlag{Name: "inspect-max-body", Value: "1MiB", EnvVars: []string{"TUNNEL_INSPECT_MAX_BODY"},
			Usage: "the inspector keeps this much of each body; the rest is counted, not kept"},
		&cli.StringFlag{Name: "inspect-max-memory", Value: "64MiB", EnvVars: []string{"TUNNEL_INSPECT_MAX_MEMORY"},
			Usage: "the inspector's recorded requests hold at most this; the oldest are forgotten first"},
	}
}

// fileConfig is the --config file: every global setting but --config
// itself, under the flag's name with _ for -, and the tunnels. An absent key
// (or an empty string) leaves the setting to its default; see resolve.
type fileConfig struct {
	Server        string       `json:"server"`
	Token         string       `json:"token"`
	CA            string       `json:"ca"`
	Dev           *bool        `json:"dev"`
	CertsDir      string       `json:"certs_dir"`
	PeerTimeout   string       `json:"peer_timeout"`
	StreamWindow  string       `json:"stream_window"`
	MaxStreams    int          `json:"max_streams"`
	RetryMax      string       `json:"retry_max"`
	DrainTimeout  string       `json:"drain_timeout"`
	LogLevel      string       `json:"log_level"`
	LogFormat     string       `json:"log_format"`
	Quiet         *bool        `json:"quiet"`
	MetricsListen string       `json:"metrics_listen"`
	Inspect       string       `json:"inspect"`
	InspectToken  string       `json:"inspect_token"`
	InspectBody   string       `json:"inspect_max_body"`
	InspectMemory string       `json:"inspect_max_memory"`
	Pool          *bool        `json:"pool"` // as --pool, for every tunnel
	Tunnels       []fileTunnel `json:"tunnels"`
}

type fileTunnel struct {
	Name   string `json:"name"`
	Target string `json:"target"`
	// Kind is http (the default), tcp or tls.
	Kind string `json:"kind"`
	// AllowTokens, for a tcp tunnel, are the tokens besides the owner's
	// that may reach it (as tunnel tcp --allow-token).
	AllowTokens []string `json:"allow_tokens"`
	// The tunnel's visitor access rules (access.go), as the http flags
	// of the same names; those, when given, replace them.
	BasicAuth         []string `json:"basic_auth"`
	AllowCIDR         []string `json:"allow_cidr"`
	DenyCIDR          []string `json:"deny_cidr"`
	PassAuthorization bool     `json:"pass_authorization"`
	OIDCAllow         []string `json:"oidc_allow"`
	// Domain, for an http tunnel, is a custom domain to serve besides
	// NAME.DOMAIN (as tunnel http --domain).
	Domain string `json:"domain"`
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
	for i, t := range fc.Tunnels {
		if t.Kind != "" && !proto.ValidKind(t.Kind) {
			return fc, fmt.Errorf("--config %s: tunnel %d: kind %q: want http, tcp or tls", path, i+1, t.Kind)
		}
	}
	return fc, nil
}

// options are the client's settings, each resolved by one rule (resolve):
// the flag if the command line has it, else its environment variable, else
// the --config file, else the default. The tunnels follow it as one
// setting: TARGET arguments, else --targets (TUNNEL_TARGETS), else the
// file's list, never a mix.
type options struct {
	server, token, ca string // with --dev, server and ca default to the local tunneld --dev's
	dev               bool
	devCA             bool // ca is --dev's CERTS-DIR/ca.pem, not one the user named
	certsDir          string

	peerTimeout, retryMax, drainTimeout time.Duration
	streamWindow                        string
	maxStreams                          int

	logLevel, logFormat string
	quiet               bool
	metricsListen       string

	inspect, inspectToken            string // --inspect: host:port, or false
	inspectMaxBody, inspectMaxMemory string

	name    string   // --name, for a single TARGET
	domain  string   // --domain, for a single http TARGET
	targets []string // the TARGETs, as written
	pool    bool     // --pool: every tunnel joins its name's pool

	kind        string        // the command's kind of tunnel: http (also bare tunnel), tcp or tls
	allowTokens []string      // tunnel tcp --allow-token, for each of its tcp tunnels
	fileAllow   [][]string    // the file's allow_tokens, by tunnel, when its tunnels are the ones run
	access      accessOptions // --basic-auth, --allow-cidr, ... (access.go)
	fileRules   []fileTunnel  // the file's tunnels, when targets are theirs: each its own access rules
}

// settings picks each option from the CLI context (a flag, or its env var:
// urfave/cli already lets the flag win and counts either as set) or the
// file.
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

func (s settings) boolean(flag string, fromFile *bool) bool {
	if s.c.IsSet(flag) || fromFile == nil {
		return s.c.Bool(flag)
	}
	return *fromFile
}

func (s settings) integer(flag string, fromFile int) int {
	if s.c.IsSet(flag) || fromFile == 0 {
		return s.c.Int(flag)
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

// targets are the TARGETs: the arguments, else --targets or TUNNEL_TARGETS
// (split on spaces and commas), else the config file's tunnels.
// A file tunnel's kind is written as a KIND:// prefix; allow holds each
// file tunnel's allow_tokens when the file's list is the one returned.
func (s settings) targets() (args []string, allow [][]string) {
	if args := s.c.Args().Slice(); len(args) > 0 {
		return args, nil
	}
	if list := httpSetting(s.c, "targets"); list != "" {
		return strings.FieldsFunc(list, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' }), nil
	}
	for _, t := range s.file.Tunnels {
		arg := t.Target
		if t.Name != "" {
			arg = t.Name + "=" + t.Target
		}
		if t.Kind != "" && t.Kind != proto.KindHTTP {
			arg = t.Kind + "://" + arg
		}
		args = append(args, arg)
		allow = append(allow, t.AllowTokens)
	}
	return args, allow
}

// tunnelCommands are the commands that run tunnels, each of its kind.
var tunnelCommands = []string{proto.KindHTTP, proto.KindTCP, proto.KindTLS}

// httpSetting is the value of a flag of "tunnel http" (--name, --targets).
// Bare "tunnel" (see hasTunnels) runs the tunnels too but does not take
// those flags, so there the value comes from their environment variables
// alone, as it would for "tunnel http".
func httpSetting(c *cli.Context, flag string) string {
	if slices.Contains(tunnelCommands, c.Command.Name) {
		return c.String(flag)
	}
	for _, f := range httpFlags() {
		if sf, ok := f.(*cli.StringFlag); ok && sf.Name == flag {
			for _, env := range sf.EnvVars {
				if v, ok := os.LookupEnv(env); ok {
					return v
				}
			}
		}
	}
	return ""
}

// pool is --pool: the flag or TUNNEL_POOL, else the file's pool. Bare
// "tunnel" has no --pool flag (see httpSetting), so there TUNNEL_POOL is
// read here.
func (s settings) pool() (bool, error) {
	if slices.Contains(tunnelCommands, s.c.Command.Name) {
		return s.boolean("pool", s.file.Pool), nil
	}
	if v, ok := os.LookupEnv("TUNNEL_POOL"); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return false, fmt.Errorf("TUNNEL_POOL %q: want true or false", v)
		}
		return b, nil
	}
	return s.file.Pool != nil && *s.file.Pool, nil
}

// hasTunnels reports whether bare "tunnel" (no command) has tunnels to run:
// a config file, or TUNNEL_TARGETS. Without, it shows the help.
func hasTunnels(c *cli.Context) bool {
	return c.String("config") != "" || httpSetting(c, "targets") != ""
}

// resolve reads every setting by the one rule of options. It is the only
// reader of the flags, the env vars and the file.
func resolve(c *cli.Context) (options, error) {
	file, err := loadFileConfig(c.String("config"))
	if err != nil {
		return options{}, err
	}
	s := settings{c: c, file: file}
	o := options{
		server:           s.str("server", file.Server),
		token:            s.str("token", file.Token),
		ca:               s.str("ca", file.CA),
		dev:              s.boolean("dev", file.Dev),
		certsDir:         s.str("certs-dir", file.CertsDir),
		streamWindow:     s.str("stream-window", file.StreamWindow),
		maxStreams:       s.integer("max-streams", file.MaxStreams),
		logLevel:         s.str("log-level", file.LogLevel),
		logFormat:        s.str("log-format", file.LogFormat),
		quiet:            s.boolean("quiet", file.Quiet),
		metricsListen:    s.str("metrics-listen", file.MetricsListen),
		inspect:          s.str("inspect", file.Inspect),
		inspectToken:     s.str("inspect-token", file.InspectToken),
		inspectMaxBody:   s.str("inspect-max-body", file.InspectBody),
		inspectMaxMemory: s.str("inspect-max-memory", file.InspectMemory),
		name:             httpSetting(c, "name"),
		domain:           domainSetting(c),
		kind:             proto.KindHTTP,
	}
	o.targets, o.fileAllow = s.targets()
	if o.pool, err = s.pool(); err != nil {
		return options{}, err
	}
	if slices.Contains(tunnelCommands, c.Command.Name) {
		o.kind = c.Command.Name
	}
	if o.kind == proto.KindTCP {
		o.allowTokens = c.StringSlice("allow-token")
	}
	o.access = accessSettings(c)
	if o.fileAllow != nil {
		o.fileRules = file.Tunnels
	}
	// --dev's defaults come last, below every source.
	if o.server == "" && o.dev {
		o.server = devServer
	}
	if o.ca == "" && o.dev {
		o.ca, o.devCA = filepath.Join(o.certsDir, devcert.CAFile), true
	}
	if o.peerTimeout, err = s.duration("peer-timeout", file.PeerTimeout); err != nil {
		return options{}, err
	}
	if o.retryMax, err = s.duration("retry-max", file.RetryMax); err != nil {
		return options{}, err
	}
	if o.drainTimeout, err = s.duration("drain-timeout", file.DrainTimeout); err != nil {
		return options{}, err
	}
	return o, nil
}

// clientConfig turns the flags of "tunnel http", the global ones, their env
// vars and the --config file (see resolve) into a mux.ClientConfig. The URLs
// go to stdout.
func clientConfig(c *cli.Context, log zerolog.Logger, stdout io.Writer) (mux.ClientConfig, error) {
	o, err := resolve(c)
	if err != nil {
		return mux.ClientConfig{}, err
	}
	return o.clientConfig(log, stdout)
}

// clientConfig checks the options and makes the mux.ClientConfig of them.
func (o options) clientConfig(log zerolog.Logger, stdout io.Writer) (mux.ClientConfig, error) {
	tunnels, err := parseKindTargets(o.kind, o.name, o.targets)
	if err != nil {
		return mux.ClientConfig{}, err
	}
	for i := range tunnels {
		var allow []string
		switch {
		case i < len(o.fileAllow):
			allow = o.fileAllow[i]
		case tunnels[i].Kind == proto.KindTCP:
			allow = o.allowTokens
		}
		if len(allow) > 0 && tunnels[i].Kind != proto.KindTCP {
			return mux.ClientConfig{}, fmt.Errorf("tunnel %d: allowed tokens are for tcp tunnels only", i+1)
		}
		if len(allow) > proto.MaxAllowTokens {
			return mux.ClientConfig{}, fmt.Errorf("tunnel %d: %d allowed tokens, at most %d", i+1, len(allow), proto.MaxAllowTokens)
		}
		tunnels[i].AllowTokens = allow
	}
	if err := applyAccess(tunnels, o.access, o.fileRules); err != nil {
		return mux.ClientConfig{}, err
	}
	for i := range tunnels {
		if !o.pool {
			break
		}
		if tunnels[i].Name == "" {
			return mux.ClientConfig{}, fmt.Errorf("tunnel %d: --pool needs a name (--name or NAME=TARGET): the clients of a pool share one", i+1)
		}
		tunnels[i].Pool = true
	}
	if err := applyDomains(tunnels, o.domain, o.fileRules); err != nil {
		return mux.ClientConfig{}, err
	}
	server := o.server
	if server == "" {
		return mux.ClientConfig{}, errors.New("--server (TUNNEL_SERVER) is required: tunneld's host:port; or pass --dev for a local tunneld --dev")
	}
	if err := checkServers(server); err != nil {
		return mux.ClientConfig{}, err
	}
	roots, err := rootCAs(o.ca, o.devCA)
	if err != nil {
		return mux.ClientConfig{}, err
	}
	if o.peerTimeout <= 0 || o.retryMax <= 0 || o.drainTimeout <= 0 {
		return mux.ClientConfig{}, errors.New("--peer-timeout, --retry-max and --drain-timeout must be positive")
	}
	if o.maxStreams < 0 {
		return mux.ClientConfig{}, fmt.Errorf("--max-streams %d: want a positive number, or 0 for the default", o.maxStreams)
	}
	window, err := mux.ParseWindow(o.streamWindow)
	if err != nil {
		return mux.ClientConfig{}, fmt.Errorf("--stream-window: %w", err)
	}

	var printed []string
	cfg := mux.ClientConfig{
		Config:        mux.DefaultConfig(),
		Server:        server,
		TLS:           &tls.Config{RootCAs: roots},
		CAFile:        o.ca,
		Token:         o.token,
		ClientVersion: version,
		Tunnels:       tunnels,
		Backoff:       mux.Backoff{Max: o.retryMax},
		OnReady: func(w *proto.Welcome) {
			urls := make([]string, 0, len(w.Tunnels))
			for _, t := range w.Tunnels {
				urls = append(urls, mux.Printable(t.URL, maxPrintedName))
			}
			// A custom domain's URL is the one asked for: it changes only
			// with its tunnel's name, so urls says when to print again.
			if slices.Equal(urls, printed) {
				log.Info().Msg("reconnected with the same URLs")
				return
			}
			printed = urls
			for i, url := range urls {
				// stdout is for scripts: the URLs and nothing else, again
				// only if a reconnect changed them; one line each, since
				// printable leaves no newline in them. A custom domain's
				// URL follows its tunnel's.
				fmt.Fprintln(stdout, url)
				ev := log.Info().Str("url", url).Str("target", tunnels[i].Target)
				if d := mux.Printable(w.Tunnels[i].DomainURL, maxPrintedName); d != "" {
					fmt.Fprintln(stdout, d)
					ev = ev.Str("domain_url", d) // mux checked the server serves it
				}
				if a := describeAccess(tunnels[i].Access); a != "" {
					ev = ev.Str("access", a) // tunneld confirmed it enforces them (mux checks)
				}
				ev.Msg("tunnel ready")
			}
		},
	}
	cfg.Logger = log
	cfg.SetPeerTimeout(o.peerTimeout)
	cfg.DrainTimeout = o.drainTimeout
	cfg.StreamWindow = window
	cfg.MaxStreams = o.maxStreams
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
	return parseKindTargets(proto.KindHTTP, nameFlag, args)
}

// parseKindTargets is parseTargets for tunnels of kind (the command's),
// unless a TARGET names its own with a tcp:// or tls:// prefix (tcp://pi-ssh=22), as
// TUNNEL_TARGETS and the config file may, to mix kinds in one session.
func parseKindTargets(kind, nameFlag string, args []string) ([]mux.Tunnel, error) {
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
		t := mux.Tunnel{Name: nameFlag, Kind: kind}
		target := arg
		// Only tcp:// and tls:// are kinds: http is every other TARGET's,
		// and "http://localhost:8080" is a URL pasted by mistake, which
		// targetAddr refuses with a message saying what to write.
		if k, rest, ok := strings.Cut(target, "://"); ok && (k == proto.KindTCP || k == proto.KindTLS) {
			t.Kind, target = k, rest
		}
		if n, rest, ok := strings.Cut(target, "="); ok {
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
		if t.Kind == proto.KindHTTP {
			t.Kind = "" // mux's default
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

// domainSetting is --domain of "tunnel http", or for bare "tunnel" its env
// var alone (as httpSetting does for --name); "tunnel tcp" and "tunnel
// tls" take none: custom domains are for HTTP tunnels. It is lowercased,
// as DNS compares names; the server checks the rest.
func domainSetting(c *cli.Context) string {
	d := ""
	switch c.Command.Name {
	case proto.KindTCP, proto.KindTLS:
		return ""
	case proto.KindHTTP:
		d = c.String("domain")
	default:
		d = os.Getenv("TUNNEL_DOMAIN")
	}
	return strings.ToLower(strings.TrimSuffix(d, "."))
}

// applyDomains sets each tunnel's custom domain: --domain for a single
// http TARGET, or else each file tunnel's own (fileRules, when the file's
// tunnels are the ones run).
func applyDomains(tunnels []mux.Tunnel, flag string, fileRules []fileTunnel) error {
	if flag != "" {
		if len(tunnels) != 1 {
			return errors.New("--domain goes with a single TARGET: for several, give each its domain in the --config file")
		}
		if tunnels[0].Kind != "" && tunnels[0].Kind != proto.KindHTTP {
			return errors.New("--domain: custom domains are for http tunnels only")
		}
		tunnels[0].Domain = flag
		return nil
	}
	for i := range tunnels {
		if i >= len(fileRules) || fileRules[i].Domain == "" {
			continue
		}
		if tunnels[i].Kind != "" && tunnels[i].Kind != proto.KindHTTP {
			return fmt.Errorf("tunnel %d: domain: custom domains are for http tunnels only", i+1)
		}
		tunnels[i].Domain = strings.ToLower(strings.TrimSuffix(fileRules[i].Domain, "."))
	}
	return nil
}
