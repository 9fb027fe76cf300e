package metrics

import (
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Tunnel is one tunnel's figures, for a status page: requests answered,
// their body bytes in and out, and requests being served now. The owner
// makes one when the tunnel starts (so its figures start afresh) and hands
// it to Routed for each request. Safe for concurrent use.
type Tunnel struct {
	Requests, BytesIn, BytesOut, InFlight atomic.Int64
}

// request is what Routed tells Instrument about one request.
type request struct {
	tunnel, sessionID string
	counts            *Tunnel
}

// Routed tells Instrument which tunnel serves the request w answers, once
// the handler knows: the access log names tunnel and sessionID, and counts,
// if not nil, counts the request (in flight from now, and its figures when
// it ends). w is the ResponseWriter the handler was given, or any writer
// wrapped around it since that can Unwrap to it. Call it at most once per
// request, from the handler Instrument wraps; on a request Instrument did
// not wrap it does nothing.
//
// The request is found through w rather than a context value: a context
// value would cost each request a context and a copy of its http.Request.
func Routed(w http.ResponseWriter, tunnel, sessionID string, counts *Tunnel) {
	sw := statusWriterOf(w)
	if sw == nil {
		return
	}
	sw.req.tunnel, sw.req.sessionID, sw.req.counts = tunnel, sessionID, counts
	if counts != nil {
		counts.InFlight.Add(1)
	}
}

// statusWriterOf finds Instrument's writer under w and the writers wrapped
// around it since, or nil.
func statusWriterOf(w http.ResponseWriter) *statusWriter {
	for {
		switch x := w.(type) {
		case *statusWriter:
			return x
		case interface{ Unwrap() http.ResponseWriter }:
			w = x.Unwrap()
		default:
			return nil
		}
	}
}

// Instrument wraps the visitor handler next: it counts each request in the
// tunneld_request* collectors and in the Tunnel given to Routed, and, if
// access is not nil, writes one Info event for it there (the access log).
// Bytes are body bytes; after a protocol upgrade (WebSocket) the raw copy
// is not counted.
//
// Every request is counted and logged exactly once, however it ends: the
// books are kept in a deferred call, so a handler that panics (ReverseProxy
// aborts with http.ErrAbortHandler when the visitor hangs up in the middle
// of a response) is recorded too, as aborted, and its panic goes on to
// net/http, which then drops the connection as it should.
func (m *Set) Instrument(next http.Handler, access *zerolog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		m.inFlight.Add(1)
		sw := &statusWriter{ResponseWriter: w}
		r2 := r
		var body *countingBody
		if r.Body != nil && r.Body != http.NoBody {
			// A copy of r, so the server's own request keeps its body:
			// net/http looks at that body's type after the handler, to
			// skip waiting for a large unread body before answering
			// (finishRequest, maxPostHandlerReadBytes). Wrapped, it would
			// read up to 256 KiB of a body that may never come before
			// writing the response.
			body = &countingBody{ReadCloser: r.Body}
			r2 = new(http.Request)
			*r2 = *r
			r2.Body = body
		}
		completed := false
		defer func() { m.record(access, r, sw, body, start, !completed) }()
		next.ServeHTTP(sw, r2)
		completed = true
	})
}

// record keeps the books for one request that has ended; aborted: its
// handler panicked (the visitor left mid-response, usually).
func (m *Set) record(access *zerolog.Logger, r *http.Request, sw *statusWriter, body *countingBody, start time.Time, aborted bool) {
	req := &sw.req
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
	m.inFlight.Add(-1)
	m.byClass[statusClass(status)].Inc()
	// Most requests have no body, and some no response body: adding 0
	// would still be an atomic operation on a shared cache line.
	if in != 0 {
		m.bytesIn.Add(float64(in))
	}
	if sw.n != 0 {
		m.bytesOut.Add(float64(sw.n))
	}
	m.reqDuration.Observe(dur.Seconds())
	if tc := req.counts; tc != nil {
		tc.InFlight.Add(-1)
		tc.Requests.Add(1)
		if in != 0 {
			tc.BytesIn.Add(in)
		}
		if sw.n != 0 {
			tc.BytesOut.Add(sw.n)
		}
	}
	if access != nil {
		// The path only: a query string may carry secrets.
		ev := access.Info().Str("host", r.Host).Str("method", r.Method).Str("path", r.URL.Path).
			Int("status", status).Int64("bytes_in", in).Int64("bytes_out", sw.n).Dur("duration", dur).
			Str("remote_addr", r.RemoteAddr).Str("tunnel", req.tunnel).Str("session_id", req.sessionID).
			Str("proto", r.Proto)
		if aborted {
			ev = ev.Bool("aborted", true)
		}
		ev.Msg("request")
	}
}

// statusClass is the index in Set.byClass of code's counter in
// tunneld_requests_total: 0 for 1xx up to 4 for 5xx; a code outside
// 100..599 counts as a server error.
func statusClass(code int) int {
	if code < 100 || code > 599 {
		return 4
	}
	return code/100 - 1
}

// statusWriter remembers the status, counts body bytes, and holds what
// Routed said of the request. Unwrap lets
// http.ResponseController (which ReverseProxy uses to flush and to hijack
// for upgrades) reach the real writer.
type statusWriter struct {
	http.ResponseWriter
	status int
	n      int64
	req    request
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
