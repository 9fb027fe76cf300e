// Package admin is tunneld's admin listener (--admin-listen): /healthz,
// /readyz, /metrics, /api/tunnels, a status page and, on request, pprof.
//
// It is a package of its own because it is a reader of the edge, not part
// of it: the edge (package edge) records its metrics and keeps its tunnels,
// and this package only shows them, through edge.Server's Tunnels, Ready,
// Domain and Metrics().Gatherer(). The edge never imports it; cmd/tunneld
// builds it next to the edge and serves it on its own listener.
//
// Who may read it: a token (Config.Token) when set, which is required off
// loopback; without one, only requests whose Host is a loopback name
// (IsLoopback), so a web page that rebinds its name to 127.0.0.1 is refused.
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/internal/httpserve"
	"github.com/tunnelhq/tunnel/internal/logging"
	"github.com/tunnelhq/tunnel/internal/units"
	"github.com/tunnelhq/tunnel/pkg/edge"
)

// Config configures the admin listener: metrics, health, status.
type Config struct {
	// Edge is the edge server whose state is shown. Required.
	Edge *edge.Server

	// Logger receives the admin server's events. Use zerolog.Nop() for
	// silence.
	Logger zerolog.Logger

	// Token, if set, must come with every request, as "Authorization:
	// Bearer TOKEN" (or as the password of HTTP basic auth, so a browser
	// can open the status page). It is required when the listener is not
	// on a loopback address. On loopback, empty means no token check, but
	// then the request's Host must be a loopback name (localhost or a
	// loopback IP): a web page whose own name rebinds to 127.0.0.1 (DNS
	// rebinding) is refused with 403, as it sends its own name.
	Token string

	// Pprof serves net/http/pprof under /debug/pprof/, except
	// /debug/pprof/cmdline: the command line may carry secrets (tokens
	// passed as flags), so it is never served.
	Pprof bool

	// IsLoopback decides whether a listener address is reachable only from
	// this machine. Nil means: a loopback IP (127.0.0.0/8, ::1). Tests
	// replace it to exercise a public bind without making one.
	IsLoopback func(net.Addr) bool
}

// Server serves the admin endpoints:
//
//	/             status page (HTML, no JavaScript, refreshes itself)
//	/api/tunnels  the same as JSON
//	/metrics      Prometheus exposition
//	/healthz      200 while the process runs
//	/readyz       200 when the edge is listening and has a certificate for its domain
//	/debug/pprof/ only with Config.Pprof (never cmdline)
//
// Build it with New and run it with Serve.
type Server struct {
	cfg       Config
	log       zerolog.Logger
	tokenHash [32]byte
}

// New validates cfg and builds a Server. It starts nothing.
func New(cfg Config) (*Server, error) {
	if cfg.Edge == nil {
		return nil, errors.New("admin: edge server is required")
	}
	if cfg.IsLoopback == nil {
		cfg.IsLoopback = isLoopbackAddr
	}
	return &Server{
		cfg:       cfg,
		log:       cfg.Logger.With().Str("component", "admin").Logger(),
		tokenHash: sha256.Sum256([]byte(cfg.Token)),
	}, nil
}

// CheckAddr refuses a listener address that is not loopback when no token
// is configured. Serve calls it too; call it first to fail before starting
// anything else.
func (a *Server) CheckAddr(addr net.Addr) error {
	if a.cfg.Token == "" && !a.cfg.IsLoopback(addr) {
		return fmt.Errorf("admin: %s is not a loopback address: a token is required", addr)
	}
	return nil
}

func isLoopbackAddr(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	return ok && IsLoopback(tcp.IP.String())
}

// Serve serves the admin endpoints on ln until ctx ends, then shuts down
// (in-flight scrapes get 5 s) and returns nil. It closes ln.
func (a *Server) Serve(ctx context.Context, ln net.Listener) error {
	if err := a.CheckAddr(ln.Addr()); err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{
		Handler:           a.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          logging.Std(a.log, zerolog.DebugLevel),
	}
	a.log.Info().Str("addr", ln.Addr().String()).Bool("token", a.cfg.Token != "").Bool("pprof", a.cfg.Pprof).Msg("admin serving")
	if err := httpserve.Serve(ctx, srv, ln, 5*time.Second, nil); err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	return nil
}

// Handler is the admin mux behind the token check.
func (a *Server) Handler() http.Handler {
	s := a.cfg.Edge
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.Metrics().Gatherer(), promhttp.HandlerOpts{
		ErrorLog: logging.Std(a.log, zerolog.WarnLevel),
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		plain(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := s.Ready(); err != nil {
			plain(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
			return
		}
		plain(w, http.StatusOK, "ready")
	})
	mux.HandleFunc("GET /api/tunnels", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		tunnels := s.Tunnels()
		if tunnels == nil {
			tunnels = []edge.TunnelStatus{}
		}
		_ = json.NewEncoder(w).Encode(struct {
			Tunnels []edge.TunnelStatus `json:"tunnels"`
		}{tunnels})
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
		if err := statusPage.Execute(w, statusData{Domain: s.Domain(), Now: time.Now(), Tunnels: s.Tunnels()}); err != nil {
			a.log.Debug().Err(err).Msg("status page")
		}
	})
	if a.cfg.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		// Not pprof.Cmdline: it shows tokens passed as flags.
		mux.HandleFunc("GET /debug/pprof/cmdline", http.NotFound)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	if a.cfg.Token == "" {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !IsLoopback(r.Host) {
				plain(w, http.StatusForbidden, "the admin listener without a token answers only Host: localhost or a loopback address")
				return
			}
			mux.ServeHTTP(w, r)
		})
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.authorized(r) {
			w.Header().Add("WWW-Authenticate", `Bearer realm="tunneld admin"`)
			w.Header().Add("WWW-Authenticate", `Basic realm="tunneld admin"`)
			plain(w, http.StatusUnauthorized, "a token is required (Authorization: Bearer TOKEN)")
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// IsLoopback is the admin listener's one loopback rule: it reports whether
// host, with or without a port, names this machine: "localhost" or a
// loopback IP. The admin handler applies it to a request's Host (only such a
// Host proves the request was meant for the loopback listener; a browser
// lured by DNS rebinding sends the attacker's name), Server.CheckAddr to the
// bound address, and tunneld to --admin-listen before binding.
func IsLoopback(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"), ".")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// authorized compares hashes in constant time, so neither the token's
// length nor its content leaks through timing.
func (a *Server) authorized(r *http.Request) bool {
	var got string
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		got = tok
	} else if _, pw, ok := r.BasicAuth(); ok {
		got = pw
	} else {
		return false
	}
	h := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(h[:], a.tokenHash[:]) == 1
}

func plain(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	fmt.Fprintln(w, msg)
}

type statusData struct {
	Domain  string
	Now     time.Time
	Tunnels []edge.TunnelStatus
}

var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"since": func(now, t time.Time) string { return now.Sub(t).Round(time.Second).String() },
	"bytes": units.Bytes,
	"join":  strings.Join,
}).Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="5">
<title>tunneld: {{len .Tunnels}} tunnels</title>
<style>
body { font: 15px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; margin: 0 0 .2em; }
p.sub { color: #666; margin: 0 0 1.2em; }
table { border-collapse: collapse; min-width: 60em; }
th, td { text-align: left; padding: .35em .8em; border-bottom: 1px solid #ddd; }
th { background: #f4f4f4; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.up { color: #080; font-weight: 600; }
.domain { font-weight: 400; font-size: .9em; }
.domain.dropped { color: #a00; }
</style>
</head>
<body>
<h1>tunneld on {{.Domain}}</h1>
<p class="sub">{{len .Tunnels}} tunnels online &middot; {{.Now.UTC.Format "2006-01-02 15:04:05 UTC"}} &middot; this page refreshes every 5 s &middot; <a href="api/tunnels">JSON</a> &middot; <a href="metrics">metrics</a></p>
{{if .Tunnels}}
<table id="tunnels">
<thead><tr><th>tunnel</th><th>URL</th><th>token</th><th>client</th><th>node</th><th>connected for</th><th>requests</th><th>in flight</th><th>bytes in</th><th>bytes out</th><th>access</th></tr></thead>
<tbody>
{{range .Tunnels}}<tr class="tunnel" data-name="{{.Name}}">
<td class="up" title="session {{.SessionID}}">{{.Name}}{{if .Pool}} <span class="pool">(pool member)</span>{{end}}{{if .Domain}}<br><span class="domain {{.DomainStatus}}" title="custom domain: {{.DomainStatus}}">{{.Domain}} ({{.DomainStatus}})</span>{{end}}</td><td>{{if eq .Kind "tcp" "tls"}}{{.URL}}{{else}}<a href="{{.URL}}">{{.URL}}</a>{{end}}</td><td>{{.Label}}</td><td>{{.ClientAddr}}</td><td class="node">{{.Node}}</td>
{{if .ConnectedSince.IsZero}}<td title="another node's client: that node reports it">-</td>{{else}}<td title="{{.ConnectedSince.UTC.Format "2006-01-02 15:04:05 UTC"}}">{{since $.Now .ConnectedSince}}</td>{{end}}
<td class="num">{{.Requests}}</td><td class="num">{{.InFlight}}</td><td class="num">{{bytes .BytesIn}}</td><td class="num">{{bytes .BytesOut}}</td>
<td class="access">{{with .Access}}{{with .BasicAuthUsers}}basic auth: {{join . ", "}} {{end}}{{with .AllowCIDR}}allow {{join . ", "}} {{end}}{{with .DenyCIDR}}deny {{join . ", "}}{{end}}{{with .OIDCAllow}} sign-in: {{join . ", "}}{{end}}{{else}}open{{end}}</td>
</tr>
{{end}}</tbody>
</table>
{{else}}
<p id="none">No tunnels are connected.</p>
{{end}}
</body>
</html>
`))
