package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// clientMetrics is what --metrics-listen serves: the Go runtime and the
// process (memory, goroutines, CPU, open files), and the streams the client
// has carried, so a Pi's tunnel can be watched like its tunneld.
type clientMetrics struct {
	reg     *prometheus.Registry
	streams *prometheus.CounterVec
	active  *prometheus.GaugeVec
	bytes   *prometheus.CounterVec

	mu     sync.Mutex
	asked  []mux.Tunnel    // the tunnels asked for, in order
	labels map[string]bool // the tunnel label values in use, besides otherTunnel
	// randomSlots marks the tunnels asked without a name whose granted
	// name is already a label.
	randomSlots []bool
}

// otherTunnel is the tunnel label of streams for any name the client did
// not ask for: tunneld names each stream's tunnel, and one that made up
// names would otherwise add series without bound.
const otherTunnel = "(other)"

// newClientMetrics labels streams by the names in asked, and for a tunnel
// asked without a name by the first name tunneld grants it (RunForever asks
// for that same name on every reconnect); at most len(asked) names.
func newClientMetrics(asked []mux.Tunnel) *clientMetrics {
	m := &clientMetrics{
		asked:  asked,
		labels: make(map[string]bool, len(asked)),
		reg:    prometheus.NewRegistry(),
		streams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tunnel_streams_total",
			Help: "Streams tunneld opened to this client, by tunnel and result (ok, refused).",
		}, []string{"tunnel", "result"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tunnel_streams_active",
			Help: "Streams connected to the local service right now, by tunnel.",
		}, []string{"tunnel"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tunnel_bytes_total",
			Help: "Bytes carried by finished streams, by tunnel and direction (in: to the local service).",
		}, []string{"tunnel", "direction"}),
	}
	m.reg.MustRegister(m.streams, m.active, m.bytes,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, t := range asked {
		if t.Name != "" {
			m.labels[t.Name] = true
		}
	}
	m.randomSlots = make([]bool, len(asked))
	return m
}

// granted is a mux.ClientConfig.OnReady hook: it adopts the names granted
// to tunnels asked for without one, once per tunnel.
func (m *clientMetrics) granted(w *proto.Welcome) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, t := range w.Tunnels {
		if i < len(m.asked) && m.asked[i].Name == "" && !m.randomSlots[i] {
			m.randomSlots[i] = true
			m.labels[t.Name] = true
		}
	}
}

// label is the tunnel label for a name tunneld sent.
func (m *clientMetrics) label(name string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.labels[name] {
		return name
	}
	return otherTunnel
}

// observe is a mux.ClientConfig.OnStream hook.
func (m *clientMetrics) observe(ev mux.StreamEvent) {
	tunnel := m.label(ev.Tunnel)
	switch {
	case ev.Err != nil:
		m.streams.WithLabelValues(tunnel, "refused").Inc()
	case !ev.Closed:
		m.streams.WithLabelValues(tunnel, "ok").Inc()
		m.active.WithLabelValues(tunnel).Inc()
	default:
		m.active.WithLabelValues(tunnel).Dec()
		m.bytes.WithLabelValues(tunnel, "in").Add(float64(ev.BytesIn))
		m.bytes.WithLabelValues(tunnel, "out").Add(float64(ev.BytesOut))
	}
}

// serveMetrics binds addr and serves /metrics until ctx ends. It returns once
// the listener is bound (or failed), logging "metrics serving" with the bound
// address; the server stops by itself when ctx ends.
func serveMetrics(ctx context.Context, addr string, m *clientMetrics, log zerolog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s (--metrics-listen): %w", addr, err)
	}
	srv := &http.Server{Handler: metricsHandler(m), ReadHeaderTimeout: 10 * time.Second}
	log.Info().Str("addr", ln.Addr().String()).Msg("metrics serving")
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Msg("metrics listener failed")
		}
	}()
	context.AfterFunc(ctx, func() { srv.Close() })
	return nil
}

// metricsHandler serves /metrics to requests whose Host is an IP address or
// localhost. The listener has no authentication, so a Host check is what
// stops a web page the user visits from reading it by DNS rebinding: the
// browser then sends the attacker's name as Host, never an IP literal.
func metricsHandler(m *clientMetrics) http.Handler {
	mx := http.NewServeMux()
	mx.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !literalHost(r.Host) {
			http.Error(w, "--metrics-listen answers only Host: localhost or an IP address", http.StatusForbidden)
			return
		}
		mx.ServeHTTP(w, r)
	})
}

// literalHost reports whether host (with or without a port) is "localhost"
// or an IP address.
func literalHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"), ".")
	return strings.EqualFold(host, "localhost") || net.ParseIP(host) != nil
}

// withMetrics starts --metrics-listen, if set, and hooks its counters into
// cfg's stream events.
func withMetrics(ctx context.Context, addr string, cfg *mux.ClientConfig, log zerolog.Logger) error {
	if addr == "" {
		return nil
	}
	m := newClientMetrics(cfg.Tunnels)
	if err := serveMetrics(ctx, addr, m, log); err != nil {
		return err
	}
	prev := cfg.OnStream
	cfg.OnStream = func(ev mux.StreamEvent) {
		m.observe(ev)
		if prev != nil {
			prev(ev)
		}
	}
	ready := cfg.OnReady
	cfg.OnReady = func(w *proto.Welcome) {
		m.granted(w)
		if ready != nil {
			ready(w)
		}
	}
	return nil
}
