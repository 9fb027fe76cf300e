package metrics

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// namespace prefixes every name tunneld registers.
const namespace = "tunneld"

// Set holds tunneld's Prometheus collectors in a registry of its own (never
// the global default one), with the Go runtime and process collectors.
// Build one with New and share it between the parts of tunneld that report
// to it (edge.Config.Metrics). All methods are safe for concurrent use.
// RateLimited and CertIssued do nothing on a nil *Set, so a recorder may be
// left out; every other method needs a Set from New.
type Set struct {
	reg *prometheus.Registry

	sessions      prometheus.Gauge
	sessionsTotal prometheus.Counter
	tunnels       prometheus.Gauge
	refused       *prometheus.CounterVec
	authFailures  prometheus.Counter
	requests      *prometheus.CounterVec
	byClass       [5]prometheus.Counter // requests' children, 1xx..5xx (see statusClass)
	inFlight      atomic.Int64          // tunneld_requests_in_flight, read at scrape time
	bytesIn       prometheus.Counter
	bytesOut      prometheus.Counter
	reqDuration   prometheus.Histogram
	streamOpen    *prometheus.HistogramVec
	rateLimited   *prometheus.CounterVec
	certs         *prometheus.CounterVec
	conns         *prometheus.CounterVec // TCP and TLS tunnel connections, by kind and result
	connBytes     *prometheus.CounterVec // their bytes, by kind and direction
}

// New builds and registers every collector.
func New() *Set {
	const ns = namespace
	m := &Set{
		reg: prometheus.NewRegistry(),
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "sessions",
			Help: "Tunnel clients connected now."}),
		sessionsTotal: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "sessions_total",
			Help: "Tunnel client sessions accepted since start."}),
		tunnels: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "tunnels",
			Help: "Tunnel names served now."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "sessions_refused_total",
			Help: "Client handshakes refused, by protocol error code."}, []string{"code"}),
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "auth_failures_total",
			Help: "Client handshakes refused for a missing or bad token."}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "requests_total",
			Help: "Visitor requests answered, by status class (1xx..5xx)."}, []string{"code"}),
		bytesIn: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "request_bytes_total",
			Help: "Request body bytes read from visitors."}),
		bytesOut: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "response_bytes_total",
			Help: "Response body bytes written to visitors."}),
		reqDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "request_duration_seconds",
			Help:    "Time from a visitor request's headers to the end of its response.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}}),
		streamOpen: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "stream_open_seconds",
			Help:    "Time to open a stream to a client, until it acknowledged (its local service connected), by result.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{"result"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "rate_limited_total",
			Help: "Attempts refused by a rate limit, by kind."}, []string{"kind"}),
		certs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "cert_issuance_total",
			Help: "Certificate issuance attempts, by result (ok, error)."}, []string{"result"}),
		conns: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "connections_total",
			Help: "Visitor connections to TCP and TLS tunnels, by kind (tcp, tls) and result (ok, refused, error)."}, []string{"kind", "result"}),
		connBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "connection_bytes_total",
			Help: "Bytes carried by visitor connections to TCP and TLS tunnels, by kind and direction (in: from visitors, out: to them)."}, []string{"kind", "direction"}),
	}
	// Requests in flight are an integer kept in an atomic.Int64 and read
	// at each scrape: a prometheus.Gauge would cost each request two
	// compare-and-swap loops on a float, under contention.
	inFlight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "requests_in_flight",
		Help: "Visitor requests being served now."}, func() float64 { return float64(m.inFlight.Load()) })
	m.reg.MustRegister(m.sessions, m.sessionsTotal, m.tunnels, m.refused, m.authFailures, m.requests,
		inFlight, m.bytesIn, m.bytesOut, m.reqDuration, m.streamOpen, m.rateLimited, m.certs,
		m.conns, m.connBytes,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Status classes exist from the start, so that rate() works on the first
	// request of a class and dashboards show zeros rather than gaps.
	// Each request counts in one of them, found by index rather than by
	// label, which would hash the label on every request.
	for i, c := range []string{"1xx", "2xx", "3xx", "4xx", "5xx"} {
		m.byClass[i] = m.requests.WithLabelValues(c)
	}
	for _, k := range []string{"tcp", "tls"} {
		for _, r := range []string{"ok", "refused", "error"} {
			m.conns.WithLabelValues(k, r)
		}
		m.connBytes.WithLabelValues(k, "in")
		m.connBytes.WithLabelValues(k, "out")
	}
	for _, r := range []string{"ok", "error"} {
		m.streamOpen.WithLabelValues(r)
		m.certs.WithLabelValues(r)
	}
	return m
}

// Connection records one visitor connection to a TCP or TLS tunnel (kind
// "tcp" or "tls") that ended with result "ok", "refused" or "error", and the
// bytes it carried from the visitor (in) and to it (out).
func (m *Set) Connection(kind, result string, in, out int64) {
	m.conns.WithLabelValues(kind, result).Inc()
	if in > 0 {
		m.connBytes.WithLabelValues(kind, "in").Add(float64(in))
	}
	if out > 0 {
		m.connBytes.WithLabelValues(kind, "out").Add(float64(out))
	}
}

// Gatherer is the registry to scrape.
func (m *Set) Gatherer() prometheus.Gatherer { return m.reg }

// GaugeFunc registers a gauge named tunneld_<name> whose value is f's at
// each scrape, so that a part of tunneld can report a figure it keeps
// without importing Prometheus. f is called from the scraping goroutine and
// must be safe for that. Registering a name already registered (a second
// Server sharing this Set) is an error, and the first gauge stays.
func (m *Set) GaugeFunc(name, help string, f func() float64) error {
	g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help}, f)
	if err := m.reg.Register(g); err != nil {
		return fmt.Errorf("metrics: register %s_%s: %w", namespace, name, err)
	}
	return nil
}

// CounterFunc registers a counter named tunneld_<name> whose value is f's
// at each scrape, for a part of tunneld that counts on its own (the
// cluster's etcd round trips); f must only grow. Like GaugeFunc otherwise.
func (m *Set) CounterFunc(name, help string, f func() float64) error {
	c := prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, f)
	if err := m.reg.Register(c); err != nil {
		return fmt.Errorf("metrics: register %s_%s: %w", namespace, name, err)
	}
	return nil
}

// RateLimited counts one attempt refused by a rate limit. kind names what
// was limited ("handshake", "stream", ...); keep it to a small fixed set,
// it becomes a label.
func (m *Set) RateLimited(kind string) {
	if m != nil {
		m.rateLimited.WithLabelValues(kind).Inc()
	}
}

// CertIssued counts one certificate issuance or renewal attempt; err nil
// means a certificate was obtained.
func (m *Set) CertIssued(err error) {
	if m != nil {
		m.certs.WithLabelValues(resultLabel(err)).Inc()
	}
}

// SessionUp counts an accepted client session and the number of tunnel
// names it serves.
func (m *Set) SessionUp(tunnels int) {
	m.sessions.Inc()
	m.sessionsTotal.Inc()
	m.tunnels.Add(float64(tunnels))
}

// SessionDown undoes SessionUp for a session that served tunnels names.
func (m *Set) SessionDown(tunnels int) {
	m.sessions.Dec()
	m.tunnels.Sub(float64(tunnels))
}

// Refused counts one refused client handshake by its protocol error code;
// authFailure says it was refused for a missing or bad token, which
// tunneld_auth_failures_total counts as well.
func (m *Set) Refused(code string, authFailure bool) {
	m.refused.WithLabelValues(code).Inc()
	if authFailure {
		m.authFailures.Inc()
	}
}

// StreamOpened records how long opening one stream to a client took, until
// it acknowledged or failed (err).
func (m *Set) StreamOpened(d time.Duration, err error) {
	m.streamOpen.WithLabelValues(resultLabel(err)).Observe(d.Seconds())
}

func resultLabel(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}
