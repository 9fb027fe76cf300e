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

// Request is one request's books, for a handler that has no
// ResponseWriter to wrap (tunneld's own HTTP/1.1 path): Begin starts them,
// the handler fills the fields in, Record keeps them once it has ended.
// Instrument keeps the same books the same way for the handlers it wraps.
type Request struct {
	Host, Method, Path, Proto, RemoteAddr string
	// Status is the final status answered; 0: none (200 for a request
	// that completed, 502 for an aborted one, as Instrument counts).
	Status  int
	In, Out int64 // body bytes read and written
	Start   time.Time
	Aborted bool // the response was cut short
	req     request
}

// Begin starts the books of one request: in flight from now.
func (m *Set) Begin(r *Request) {
	r.Start = time.Now()
	m.inFlight.Add(1)
}

// Routed is what the package function Routed does, for a Request: the
// access log names tunnel and sessionID, and counts (if not nil) counts
// the request from now. At most once per request.
func (r *Request) Routed(tunnel, sessionID string, counts *Tunnel) {
	r.req.tunnel, r.req.sessionID, r.req.counts = tunnel, sessionID, counts
	if counts != nil {
		counts.InFlight.Add(1)
	}
}

// Record keeps the books for r, begun with Begin, which has ended: in the
// collectors, in the Tunnel given to Routed, and in access if not nil.
func (m *Set) Record(access *zerolog.Logger, r *Request) {
	req := &r.req
	dur := time.Since(r.Start)
	status := r.Status
	if status == 0 {
		status = http.StatusOK
		if r.Aborted { // nothing was answered
			status = http.StatusBadGateway
		}
	}
	in, out := r.In, r.Out
	m.inFlight.Add(-1)
	m.byClass[statusClass(status)].Inc()
	// Most requests have no body, and some no response body: adding 0
	// would still be an atomic operation on a shared cache line.
	if in != 0 {
		m.bytesIn.Add(float64(in))
	}
	if out != 0 {
		m.bytesOut.Add(float64(out))
	}
	m.reqDuration.Observe(dur.Seconds())
	if tc := req.counts; tc != nil {
		tc.InFlight.Add(-1)
		tc.Requests.Add(1)
		if in != 0 {
			tc.BytesIn.Add(in)
		}
		if out != 0 {
			tc.BytesOut.Add(out)
		}
	}
	if access != nil {
		// The path only: a query string may carry secrets.
		ev := access.Info().Str("host", r.Host).Str("method", r.Method).Str("path", r.Path).
			Int("status", status).Int64("bytes_in", in).Int64("bytes_out", out).Dur("duration", dur).
			Str("remote_addr", r.RemoteAddr).Str("tunnel", req.tunnel).Str("session_id", req.sessionID).
			Str("proto", r.Proto)
		if r.Aborted {
			ev = ev.Bool("aborted", true)
		}
		ev.Msg("request")
	}
}

// record keeps the books for one request Instrument wrapped, which has
// ended; aborted: its handler panicked (the visitor left mid-response,
// usually).
func (m *Set) record(access *zerolog.Logger, r *http.Request, sw *statusWriter, body *countingBody, start time.Time, aborted bool) {
	rec := Request{Host: r.Host, Method: r.Method, Path: r.URL.Path, Proto: r.Proto, RemoteAddr: r.RemoteAddr,
		Status: sw.status, Out: sw.n, Start: start, Aborted: aborted, req: sw.req}
	if body != nil {
		rec.In = body.n.Load()
	}
	m.Record(access, &rec)
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
