package metrics_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/pkg/metrics"
)

// served is what one request through Instrument left behind.
type served struct {
	m      *metrics.Set
	tunnel *metrics.Tunnel
	log    map[string]any // the access log event; nil if there was none
}

// serve sends one request with body (GET if empty) through a real HTTP
// server whose handler is h wrapped by Instrument, and returns once the
// wrapped handler has ended, however it ended.
func serve(t *testing.T, h http.HandlerFunc, body string, accessLog bool) served {
	t.Helper()
	s := served{m: metrics.New(), tunnel: &metrics.Tunnel{}}
	var logs bytes.Buffer
	var access *zerolog.Logger
	if accessLog {
		l := zerolog.New(&logs)
		access = &l
	}
	routed := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		metrics.Routed(w, "wiki", "s1", s.tunnel)
		h(w, r)
	})
	inner := s.m.Instrument(routed, access)
	ended := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { ended <- struct{}{} }() // runs on a panic too, which goes on
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)

	req, err := http.NewRequest(http.MethodGet, srv.URL+"/p?secret=x", nil)
	if body != "" {
		req, err = http.NewRequest(http.MethodPost, srv.URL+"/p?secret=x", strings.NewReader(body))
	}
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := srv.Client().Do(req); err == nil { // an aborted request has no response
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("handler did not end within 10s")
	}
	if accessLog {
		if err := json.Unmarshal(logs.Bytes(), &s.log); err != nil {
			t.Fatalf("access log %q: %v", logs.String(), err)
		}
	}
	return s
}

func TestSet_Instrument(t *testing.T) {
	for _, c := range []struct {
		name      string
		h         http.HandlerFunc
		body      string
		status    int
		in, out   int64
		aborted   bool
		accessLog bool
	}{
		{"status and bytes", func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.WriteHeader(http.StatusCreated)
			w.Write([]byte("abc"))
		}, "hello", http.StatusCreated, 5, 3, false, true},
		{"nothing written is 200", func(w http.ResponseWriter, r *http.Request) {}, "", http.StatusOK, 0, 0, false, true},
		{"unread body counts what was read", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusNotFound)
		}, "hello", http.StatusNotFound, 0, 0, false, false},
		{"interim 1xx is not the status", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusEarlyHints)
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("busy"))
		}, "", http.StatusServiceUnavailable, 0, 4, false, true},
		{"flush reaches the real writer", func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte("a"))
			if err := http.NewResponseController(w).Flush(); err != nil {
				panic(err) // counted as aborted, so the row fails
			}
			w.Write([]byte("b"))
		}, "", http.StatusOK, 0, 2, false, false},
		{"panic before an answer is 502", func(w http.ResponseWriter, r *http.Request) {
			panic(http.ErrAbortHandler)
		}, "", http.StatusBadGateway, 0, 0, true, true},
		{"panic after an answer keeps its status", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusOK)
			w.Write([]byte("par"))
			panic(http.ErrAbortHandler)
		}, "", http.StatusOK, 0, 3, true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := serve(t, c.h, c.body, c.accessLog)
			class := map[string]string{"code": string(rune('0'+c.status/100)) + "xx"}
			for _, v := range []struct {
				name   string
				labels map[string]string
				want   float64
			}{
				{"tunneld_requests_total", class, 1},
				{"tunneld_requests_in_flight", nil, 0},
				{"tunneld_request_bytes_total", nil, float64(c.in)},
				{"tunneld_response_bytes_total", nil, float64(c.out)},
				{"tunneld_request_duration_seconds", nil, 1},
			} {
				if got := mustValue(t, s.m, v.name, v.labels); got != v.want {
					t.Errorf("%s%v: got %v, want %v", v.name, v.labels, got, v.want)
				}
			}
			tc := s.tunnel
			if r, in, out, f := tc.Requests.Load(), tc.BytesIn.Load(), tc.BytesOut.Load(), tc.InFlight.Load(); r != 1 || in != c.in || out != c.out || f != 0 {
				t.Errorf("tunnel: got requests %d, in %d, out %d, in flight %d; want 1, %d, %d, 0", r, in, out, f, c.in, c.out)
			}
			if !c.accessLog {
				return
			}
			want := map[string]any{"level": "info", "message": "request", "method": http.MethodGet, "path": "/p",
				"status": float64(c.status), "bytes_in": float64(c.in), "bytes_out": float64(c.out),
				"tunnel": "wiki", "session_id": "s1", "proto": "HTTP/1.1"}
			if c.body != "" {
				want["method"] = http.MethodPost
			}
			if c.aborted {
				want["aborted"] = true
			}
			for k, v := range want {
				if s.log[k] != v {
					t.Errorf("access log %s: got %v, want %v", k, s.log[k], v)
				}
			}
			if _, ok := s.log["aborted"]; ok != c.aborted {
				t.Errorf("access log aborted present: got %v, want %v", ok, c.aborted)
			}
			for _, k := range []string{"host", "remote_addr", "duration"} {
				if _, ok := s.log[k]; !ok {
					t.Errorf("access log has no %s", k)
				}
			}
		})
	}
}

// TestSet_RoutedOutsideInstrument: Routed on a request Instrument never saw
// counts nothing and does not panic.
func TestSet_RoutedOutsideInstrument(t *testing.T) {
	tc := &metrics.Tunnel{}
	metrics.Routed(httptest.NewRecorder(), "wiki", "s1", tc)
	if f := tc.InFlight.Load(); f != 0 {
		t.Errorf("in flight: got %d, want 0", f)
	}
}

// wrapper is a ResponseWriter wrapped around Instrument's, as the edge's
// pacer wraps it.
type wrapper struct{ http.ResponseWriter }

func (w wrapper) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// TestSet_RoutedThroughWrapper: Routed finds the request Instrument serves
// under writers wrapped around its own since.
func TestSet_RoutedThroughWrapper(t *testing.T) {
	m := metrics.New()
	tc := &metrics.Tunnel{}
	var logs bytes.Buffer
	l := zerolog.New(&logs)
	h := m.Instrument(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		metrics.Routed(wrapper{w}, "wiki", "s1", tc)
		if f := tc.InFlight.Load(); f != 1 {
			t.Errorf("in flight while served: got %d, want 1", f)
		}
		w.Write([]byte("ok"))
	}), &l)
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/x", nil))
	if n, f := tc.Requests.Load(), tc.InFlight.Load(); n != 1 || f != 0 {
		t.Errorf("requests, in flight: got %d %d, want 1 0", n, f)
	}
	var ev map[string]any
	if err := json.Unmarshal(logs.Bytes(), &ev); err != nil {
		t.Fatal(err)
	}
	if ev["tunnel"] != "wiki" || ev["session_id"] != "s1" {
		t.Errorf("got tunnel %v session %v, want wiki s1", ev["tunnel"], ev["session_id"])
	}
}

// TestSet_InstrumentUnrouted: a request no tunnel served (an unknown host)
// is counted in the totals, and logged without a tunnel.
func TestSet_InstrumentUnrouted(t *testing.T) {
	m := metrics.New()
	var logs bytes.Buffer
	l := zerolog.New(&logs)
	rec := httptest.NewRecorder()
	m.Instrument(http.NotFoundHandler(), &l).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/x", nil))
	if got := mustValue(t, m, "tunneld_requests_total", map[string]string{"code": "4xx"}); got != 1 {
		t.Errorf("4xx: got %v, want 1", got)
	}
	var ev map[string]any
	if err := json.Unmarshal(logs.Bytes(), &ev); err != nil {
		t.Fatal(err)
	}
	if ev["tunnel"] != "" || ev["status"] != float64(404) {
		t.Errorf("got tunnel %v status %v, want \"\" 404", ev["tunnel"], ev["status"])
	}
}

// TestSet_StatusClasses: each status counts in its class, and a code past
// 599 as a server error.
func TestSet_StatusClasses(t *testing.T) {
	for _, tc := range []struct {
		code int
		want string
	}{{101, "1xx"}, {200, "2xx"}, {299, "2xx"}, {302, "3xx"}, {404, "4xx"}, {503, "5xx"}, {599, "5xx"}, {600, "5xx"}, {999, "5xx"}} {
		m := metrics.New()
		m.Instrument(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(tc.code)
		}), nil).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
		if got := mustValue(t, m, "tunneld_requests_total", map[string]string{"code": tc.want}); got != 1 {
			t.Errorf("status %d: %s got %v, want 1", tc.code, tc.want, got)
		}
	}
}
