package edge

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/pkg/mux"
)

// RateLimitRecorder is what a rate limiter reports to. kind names what was
// limited ("handshake", "request", ...); keep it to a small fixed set, it
// becomes a label. *Metrics implements it.
type RateLimitRecorder interface {
	RateLimited(kind string)
}

// CertRecorder is what certificate management (autocert) reports each
// issuance or renewal attempt to; err nil means a certificate was obtained.
// *Metrics implements it.
type CertRecorder interface {
	CertIssued(err error)
}

// Metrics holds tunneld's Prometheus collectors in a registry of its own
// (never the global default one), with the Go runtime and process
// collectors. Build one with NewMetrics and pass it in Config.Metrics to
// share it with other parts of tunneld (the rate limiter, autocert); a nil
// Config.Metrics gets a fresh one. All methods are safe for concurrent use.
// RateLimited and CertIssued do nothing on a nil *Metrics, so a recorder
// may be left out; Gatherer needs a real one.
type Metrics struct {
	reg *prometheus.Registry

	sessions      prometheus.Gauge
	sessionsTotal prometheus.Counter
	tunnels       prometheus.Gauge
	refused       *prometheus.CounterVec
	authFailures  prometheus.Counter
	requests      *prometheus.CounterVec
	inFlight      prometheus.Gauge
	bytesIn       prometheus.Counter
	bytesOut      prometheus.Counter
	reqDuration   prometheus.Histogram
	streamOpen    *prometheus.HistogramVec
	rateLimited   *prometheus.CounterVec
	certs         *prometheus.CounterVec
}

// NewMetrics builds and registers every collector.
func NewMetrics() *Metrics {
	const ns = "tunneld"
	m := &Metrics{
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
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "requests_in_flight",
			Help: "Visitor requests being served now."}),
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
	}
	m.reg.MustRegister(m.sessions, m.sessionsTotal, m.tunnels, m.refused, m.authFailures, m.requests,
		m.inFlight, m.bytesIn, m.bytesOut, m.reqDuration, m.streamOpen, m.rateLimited, m.certs,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Status classes exist from the start, so that rate() works on the first
	// request of a class and dashboards show zeros rather than gaps.
	for _, c := range []string{"1xx", "2xx", "3xx", "4xx", "5xx"} {
		m.requests.WithLabelValues(c)
	}
	for _, r := range []string{"ok", "error"} {
		m.streamOpen.WithLabelValues(r)
		m.certs.WithLabelValues(r)
	}
	return m
}

// Gatherer is the registry to scrape. m must not be nil.
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.reg }

// RateLimited counts one attempt refused by a rate limit.
func (m *Metrics) RateLimited(kind string) {
	if m != nil {
		m.rateLimited.WithLabelValues(kind).Inc()
	}
}

// CertIssued counts one certificate issuance attempt.
func (m *Metrics) CertIssued(err error) {
	if m != nil {
		m.certs.WithLabelValues(resultLabel(err)).Inc()
	}
}

func resultLabel(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

func statusClass(code int) string {
	if code < 100 || code > 599 {
		return "5xx"
	}
	return string(rune('0'+code/100)) + "xx"
}

// ops is the Server's observability state: metrics, per-tunnel counters for
// the status page, the access log and readiness. The Server calls into it
// at a few points (see the calls to s.ops in server.go and proxy.go).
type ops struct {
	metrics   *Metrics
	access    zerolog.Logger
	accessOn  bool
	listening atomic.Bool

	mu      sync.Mutex
	tunnels map[tunnelKey]*tunnelCounters
}

// tunnelKey is one name of one route: a name claimed again by a new
// session starts its figures afresh.
type tunnelKey struct {
	route Route
	name  string
}

// tunnelCounters are one tunnel's figures since its session connected.
type tunnelCounters struct {
	requests, bytesIn, bytesOut, inFlight atomic.Int64
}

func newOps(cfg Config) *ops {
	m := cfg.Metrics
	if m == nil {
		m = NewMetrics()
	}
	return &ops{
		metrics:  m,
		access:   cfg.Logger.With().Str("component", "access").Logger(),
		accessOn: cfg.AccessLog,
		tunnels:  make(map[tunnelKey]*tunnelCounters),
	}
}

// sessionUp records a registered session and its tunnels.
func (o *ops) sessionUp(sess *Session) {
	o.metrics.sessions.Inc()
	o.metrics.sessionsTotal.Inc()
	o.metrics.tunnels.Add(float64(len(sess.Names)))
	o.mu.Lock()
	for _, n := range sess.Names {
		o.tunnels[tunnelKey{sess, n}] = &tunnelCounters{}
	}
	o.mu.Unlock()
}

// sessionDown undoes sessionUp.
func (o *ops) sessionDown(sess *Session) {
	o.metrics.sessions.Dec()
	o.metrics.tunnels.Sub(float64(len(sess.Names)))
	o.mu.Lock()
	for _, n := range sess.Names {
		delete(o.tunnels, tunnelKey{sess, n})
	}
	o.mu.Unlock()
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

// refused records a refused client handshake.
func (o *ops) refused(code string) {
	o.metrics.refused.WithLabelValues(code).Inc()
	if code == "bad_token" {
		o.metrics.authFailures.Inc()
	}
}

// streamOpened records the time one stream open took.
func (o *ops) streamOpened(start time.Time, err error) {
	o.metrics.streamOpen.WithLabelValues(resultLabel(err)).Observe(time.Since(start).Seconds())
}

func (o *ops) counters(rt Route, name string) *tunnelCounters {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.tunnels[tunnelKey{rt, name}]
}

type reqInfoKey struct{}

// reqInfo is filled in by the proxy handler once it knows the tunnel, and
// read by instrument after the request.
type reqInfo struct {
	name, sessionID string
	tc              *tunnelCounters
}

// routed tells the instrumentation which route serves r; the proxy calls
// it once it has looked the tunnel up.
func (o *ops) routed(r *http.Request, rt Route, name string) {
	ri, _ := r.Context().Value(reqInfoKey{}).(*reqInfo)
	if ri == nil {
		return
	}
	ri.name, ri.sessionID = name, rt.String()
	if ri.tc = o.counters(rt, name); ri.tc != nil {
		ri.tc.inFlight.Add(1)
	}
}

// instrument wraps the visitor handler: metrics, per-tunnel counters and
// the access log, one event per request. Bytes are body bytes; after a
// protocol upgrade (WebSocket) the raw copy is not counted.
//
// Every request is counted and logged exactly once, however it ends: the
// books are kept in a deferred call, so a handler that panics (ReverseProxy
// aborts with http.ErrAbortHandler when the visitor hangs up in the middle
// of a response) is recorded too, as aborted, and its panic goes on to
// net/http, which then drops the connection as it should.
func (o *ops) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		o.metrics.inFlight.Inc()
		ri := &reqInfo{}
		// A copy of r, so the server's own request keeps its body: net/http
		// looks at that body's type after the handler, to skip waiting for
		// a large unread body before answering (finishRequest,
		// maxPostHandlerReadBytes). Wrapped, it would read up to 256 KiB of
		// a body that may never come before writing the response.
		r2 := r.WithContext(context.WithValue(r.Context(), reqInfoKey{}, ri))
		var body *countingBody
		if r.Body != nil && r.Body != http.NoBody {
			body = &countingBody{ReadCloser: r.Body}
			r2.Body = body
		}
		sw := &statusWriter{ResponseWriter: w}
		completed := false
		defer func() { o.record(r, ri, sw, body, start, !completed) }()
		next.ServeHTTP(sw, r2)
		completed = true
	})
}

// record keeps the books for one request that has ended; aborted: its
// handler panicked (the visitor left mid-response, usually).
func (o *ops) record(r *http.Request, ri *reqInfo, sw *statusWriter, body *countingBody, start time.Time, aborted bool) {
	dur := time.Since(start)
	status := sw.status
	if status == 0 {
		status = http.StatusOK
		if aborted { // nothing was answered
			status = http.StatusBadGateway
		}
	}
	var in int64
	if body != nil {
		in = body.n.Load()
	}
	m := o.metrics
	m.inFlight.Dec()
	m.requests.WithLabelValues(statusClass(status)).Inc()
	m.bytesIn.Add(float64(in))
	m.bytesOut.Add(float64(sw.n))
	m.reqDuration.Observe(dur.Seconds())
	if tc := ri.tc; tc != nil {
		tc.inFlight.Add(-1)
		tc.requests.Add(1)
		tc.bytesIn.Add(in)
		tc.bytesOut.Add(sw.n)
	}
	if o.accessOn {
		// The path only: a query string may carry secrets.
		ev := o.access.Info().Str("host", r.Host).Str("method", r.Method).Str("path", r.URL.Path).
			Int("status", status).Int64("bytes_in", in).Int64("bytes_out", sw.n).Dur("duration", dur).
			Str("remote_addr", r.RemoteAddr).Str("tunnel", ri.name).Str("session_id", ri.sessionID).
			Str("proto", r.Proto)
		if aborted {
			ev = ev.Bool("aborted", true)
		}
		ev.Msg("request")
	}
}

// statusWriter remembers the status and counts body bytes. Unwrap lets
// http.ResponseController (which ReverseProxy uses to flush and to hijack
// for upgrades) reach the real writer.
type statusWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (w *statusWriter) WriteHeader(code int) {
	// 1xx other than 101 are interim responses; the final status follows.
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// countingBody counts request body bytes. ReverseProxy reads it in the
// Transport's goroutine, hence the atomic.
type countingBody struct {
	io.ReadCloser
	n atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// TunnelStatus is one served tunnel, as /api/tunnels and the status page
// show it. Counters run from the session's connection.
type TunnelStatus struct {
	Name           string    `json:"name"`
	URL            string    `json:"url"`
	Label          string    `json:"label"`
	SessionID      string    `json:"session_id"`
	ClientAddr     string    `json:"client_addr"`
	ConnectedSince time.Time `json:"connected_since"`
	Requests       int64     `json:"requests"`
	BytesIn        int64     `json:"bytes_in"`
	BytesOut       int64     `json:"bytes_out"`
	InFlight       int64     `json:"in_flight"`
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
			ts := TunnelStatus{Name: n, URL: s.PublicURL(n), Label: sess.Label, SessionID: sess.ID,
				ClientAddr: sess.RemoteAddr, ConnectedSince: sess.Connected}
			if tc := s.ops.counters(sess, n); tc != nil {
				ts.Requests, ts.BytesIn = tc.requests.Load(), tc.bytesIn.Load()
				ts.BytesOut, ts.InFlight = tc.bytesOut.Load(), tc.inFlight.Load()
			}
			out = append(out, ts)
		}
	}
	slices.SortFunc(out, func(a, b TunnelStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Metrics returns the Server's metrics (Config.Metrics, or its own).
func (s *Server) Metrics() *Metrics { return s.ops.metrics }
