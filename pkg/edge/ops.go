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
	// poolSkips counts requests and connections a pool member failed
	// before any answer, sent on to the next member.
	poolSkips atomic.Int64

	// tunnels maps a tunnelKey to its *metrics.Tunnel. A sync.Map: it is
	// read on every request and written when a session comes or goes,
	// and a mutex here was contended by every request in flight.
	tunnels sync.Map
}

// tunnelKey is one name of one route: a name claimed again by a new
// session starts its figures afresh.
type tunnelKey struct {
	route Route
	name  string
}

func newOps(cfg Config) *ops {
	o := &ops{metrics: cfg.Metrics}
	if o.metrics == nil {
		o.metrics = metrics.New()
	}
	// Registered once per Set: a second Server sharing it (tests) counts
	// in the first's figure no more.
	_ = o.metrics.CounterFunc("pool_member_skips_total",
		"Requests and connections a pool member failed before any answer (stream refused, client gone), sent on to the next member.",
		func() float64 { return float64(o.poolSkips.Load()) })
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
	for _, n := range sess.Names {
		o.tunnels.Store(tunnelKey{sess, n}, &metrics.Tunnel{})
	}
}

// sessionDown undoes sessionUp.
func (o *ops) sessionDown(sess *Session) {
	o.metrics.SessionDown(len(sess.Names))
	for _, n := range sess.Names {
		o.tunnels.Delete(tunnelKey{sess, n})
	}
}

// counters is the figures of one name of one route; nil once (or before)
// its session is down.
func (o *ops) counters(rt Route, name string) *metrics.Tunnel {
	if tc, ok := o.tunnels.Load(tunnelKey{rt, name}); ok {
		return tc.(*metrics.Tunnel)
	}
	return nil
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
	// Pool says the session serves the name as one member of a pool: the
	// name has one row per member.
	Pool bool `json:"pool,omitempty"`
	// Node is the cluster node whose client serves the tunnel (empty on
	// a single node). A tunnel of another node shows what the name table
	// knows of it: its counters, client address and connection time are
	// that node's to report.
	Node string `json:"node,omitempty"`
	// Domain is the tunnel's custom domain, empty for none, and
	// DomainStatus whether it is served now: "served", or "dropped" when
	// the re-check found its DNS pointing elsewhere (see Config.Domains).
	// Another node's tunnel shows its domain only while it is served.
	Domain       string `json:"domain,omitempty"`
	DomainStatus string `json:"domain_status,omitempty"`
}

// The values of TunnelStatus.DomainStatus.
const (
	DomainServed  = "served"
	DomainDropped = "dropped"
)

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
				ClientAddr: sess.RemoteAddr, ConnectedSince: sess.Connected, Pool: sess.pooled(n)}
			if r := sess.access(n); r != nil {
				sum := r.summary
				ts.Access = &sum
			}
			for d, t := range sess.domains {
				if t != n {
					continue
				}
				ts.Domain, ts.DomainStatus = d, DomainDropped
				if rt, _ := s.registry.Lookup(d); rt == Route(sess) {
					ts.DomainStatus = DomainServed
				}
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
