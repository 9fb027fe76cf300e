package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/pkg/mux"
)

// clientMetrics is what --metrics-listen serves: the Go runtime and the
// process (memory, goroutines, CPU, open files), and the streams the client
// has carried, so a Pi's tunnel can be watched like its tunneld.
type clientMetrics struct {
	reg     *prometheus.Registry
	streams *prometheus.CounterVec
	active  *prometheus.GaugeVec
	bytes   *prometheus.CounterVec
}

func newClientMetrics() *clientMetrics {
	m := &clientMetrics{
		reg: prometheus.NewRegistry(),
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
	return m
}

// observe is a mux.ClientConfig.OnStream hook.
func (m *clientMetrics) observe(ev mux.StreamEvent) {
	switch {
	case ev.Err != nil:
		m.streams.WithLabelValues(ev.Tunnel, "refused").Inc()
	case !ev.Closed:
		m.streams.WithLabelValues(ev.Tunnel, "ok").Inc()
		m.active.WithLabelValues(ev.Tunnel).Inc()
	default:
		m.active.WithLabelValues(ev.Tunnel).Dec()
		m.bytes.WithLabelValues(ev.Tunnel, "in").Add(float64(ev.BytesIn))
		m.bytes.WithLabelValues(ev.Tunnel, "out").Add(float64(ev.BytesOut))
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
	mx := http.NewServeMux()
	mx.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mx, ReadHeaderTimeout: 10 * time.Second}
	log.Info().Str("addr", ln.Addr().String()).Msg("metrics serving")
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Msg("metrics listener failed")
		}
	}()
	context.AfterFunc(ctx, func() { srv.Close() })
	return nil
}

// withMetrics starts --metrics-listen, if set, and hooks its counters into
// cfg's stream events.
func withMetrics(ctx context.Context, addr string, cfg *mux.ClientConfig, log zerolog.Logger) error {
	if addr == "" {
		return nil
	}
	m := newClientMetrics()
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
	return nil
}
