package edge

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/pkg/metrics"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// ops is the Server's observability state: metrics and the access log
// (package metrics), per-tunnel counters for the status page, and
// readiness. The Server calls into it at a few points (see the calls to
// s.ops in server.go and proxy.go).
type ops struct {
	metrics   *metrics.Set
	access    *zerolog.Logger // nil: no access log
	listening atomic.Bool

	mu      sync.Mutex
	tunnels map[tunnelKey]*metrics.Tunnel
}

// tunnelKey is one name of one route: a name claimed again by a new
// session starts its figures afresh.
type tunnelKey struct {
	route Route
	name  string
}

func newOps(cfg Config) *ops {
	o := &ops{metrics: cfg.Metrics, tunnels: make(map[tunnelKey]*metrics.Tunnel)}
	if o.metrics == nil {
		o.metrics = metrics.New()
	}
	if cfg.AccessLog {
		base := &cfg.Logger
		if cfg.AccessLogger != nil {
			base = cfg.AccessLogger
		}
		access := base.With().Str("component", "access").Logger()
		o.access = &access
	}
	return o
}

// instrument wraps the visitor handler: metrics and the access log, one
// event per request (metrics.Set.Instrument); routed says which tunnel.
func (o *ops) instrument(next http.Handler) http.Handler {
	return o.metrics.Instrument(next, o.access)
}

// routed tells the instrumentation which route serves the request w
// answers; the proxy calls it once it has looked the tunnel up.
func (o *ops) routed(w http.ResponseWriter, rt Route, name string) {
	metrics.Routed(w, name, rt.String(), o.counters(rt, name))
}

// sessionUp records a registered session and its tunnels.
func (o *ops) sessionUp(sess *Session) {
	o.metrics.SessionUp(len(sess.Names))
	o.mu.Lock()
	for _, n := range sess.Names {
		o.tunnels[tunnelKey{sess, n}] = &metrics.Tunnel{}
	}
	o.mu.Unlock()
}

// sessionDown undoes sessionUp.
func (o *ops) sessionDown(sess *Session) {
	o.metrics.SessionDown(len(sess.Names))
	o.mu.Lock()
	for _, n := range sess.Names {
		delete(o.tunnels, tunnelKey{sess, n})
	}
	o.mu.Unlock()
}

// counters is the figures of one name of one route; nil once (or before)
// its session is down.
func (o *ops) counters(rt Route, name string) *metrics.Tunnel {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.tunnels[tunnelKey{rt, name}]
}

// refused records a refused client handshake.
func (o *ops) refused(code string) {
	o.metrics.Refused(code, code == string(proto.CodeBadToken))
}

// streamOpened records the time one stream open took.
func (o *ops) streamOpened(start time.Time, err error) {
	o.metrics.StreamOpened(time.Since(start), err)
}

// disconnectReason says why a session that has ended did.
func disconnectReason(ctx context.Context, ms *mux.ServerSession) string {
	select {
	case <-ms.Draining():
		return "client stopping"
	default:
	}
	if ctx.Err() != nil {
		return "server shutting down"
	}
	return "connection closed" // lost, or replaced by the same token
}

// TunnelStatus is one served tunnel, as /api/tunnels and the status page
// show it. Counters run from the session's connection.
type TunnelStatus struct {
	Name           string    `json:"name"`
	Kind           string    `json:"kind"`
	URL            string    `json:"url"`
	Label          string    `json:"label"`
	SessionID      string    `json:"session_id"`
	ClientAddr     string    `json:"client_addr"`
	ConnectedSince time.Time `json:"connected_since"`
	Requests       int64     `json:"requests"`
	BytesIn        int64     `json:"bytes_in"`
	BytesOut       int64     `json:"bytes_out"`
	InFlight       int64     `json:"in_flight"`
	// Access are the tunnel's visitor access rules, without the password
	// hashes; nil: open to every visitor.
	Access *AccessStatus `json:"access,omitempty"`
	// Node is the cluster node whose client serves the tunnel (empty on
	// a single node). A tunnel of another node shows what the name table
	// knows of it: its counters, client address and connection time are
	// that node's to report.
	Node string `json:"node,omitempty"`
}

// Tunnels lists the tunnels served now, sorted by name. Safe to call
// concurrently with Serve.
func (s *Server) Tunnels() []TunnelStatus {
	s.mu.Lock()
	sessions := make([]*Session, 0, len(s.sessions))
	for sess := range s.sessions {
		sessions = append(sessions, sess)
	}
	s.mu.Unlock()
	var out []TunnelStatus
	for _, sess := range sessions {
		for _, n := range sess.Names {
			k := sess.Kind(n)
			ts := TunnelStatus{Name: n, Kind: k, URL: s.kindURL(k, n), Label: sess.Label, SessionID: sess.ID,
				ClientAddr: sess.RemoteAddr, ConnectedSince: sess.Connected}
			if r := sess.access(n); r != nil {
				sum := r.summary
				ts.Access = &sum
			}
			if tc := s.ops.counters(sess, n); tc != nil {
				ts.Requests, ts.BytesIn = tc.Requests.Load(), tc.BytesIn.Load()
				ts.BytesOut, ts.InFlight = tc.BytesOut.Load(), tc.InFlight.Load()
			}
			out = append(out, ts)
		}
	}
	if cr, ok := s.registry.(*ClusterRegistry); ok {
		for i := range out {
			out[i].Node = cr.c.Node()
		}
		out = append(out, cr.remoteTunnels(s)...)
	}
	slices.SortFunc(out, func(a, b TunnelStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Metrics returns the Server's metrics (Config.Metrics, or its own).
func (s *Server) Metrics() *metrics.Set { return s.ops.metrics }
