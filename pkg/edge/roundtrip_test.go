package edge_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/internal/edgetest"
	"github.com/tunnelhq/tunnel/internal/testwait"
	"github.com/tunnelhq/tunnel/pkg/mux"
)

// The edge sends requests over its streams itself (roundtrip.go); these
// are the cases where doing so differs from a plain request and response.

// get fetches url with c and returns the status and body.
func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// A kept stream whose local connection the service closed (its keep-alive
// timeout) is not handed to the next request: that request is answered.
func TestEdge_KeptStreamClosedByServiceIsNotReused(t *testing.T) {
	h := edgetest.Start(t, nil)
	closed := make(chan struct{}, 16)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "page "+r.URL.Path)
	}))
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateClosed {
			closed <- struct{}{}
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	if _, err := h.Connect(aliceToken, mux.Tunnel{Name: "wiki", Target: srv.Listener.Addr().String()}); err != nil {
		t.Fatal(err)
	}
	c := h.HTTPClient(false)
	for i := range 3 {
		path := fmt.Sprintf("/%d", i)
		if code, body := get(t, c, h.URL("wiki", path)); code != 200 || body != "page "+path {
			t.Fatalf("request %d: got %d %q", i, code, body)
		}
		// The service drops every idle connection, so the stream the
		// edge kept now leads nowhere.
		srv.CloseClientConnections()
		testwait.Recv(t, closed, 5*time.Second)
	}
}

// 1xx responses (here 103 Early Hints) reach the visitor before the final
// one, with their headers.
func TestEdge_EarlyHintsReachTheVisitor(t *testing.T) {
	h := edgetest.Start(t, nil)
	addr := edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload; as=style")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "final")
	}))
	if _, err := h.Connect(aliceToken, mux.Tunnel{Name: "wiki", Target: addr}); err != nil {
		t.Fatal(err)
	}
	var hints []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, hdr textproto.MIMEHeader) error {
		hints = append(hints, fmt.Sprintf("%d %s", code, hdr.Get("Link")))
		return nil
	}}
	req, _ := http.NewRequest("GET", h.URL("wiki", "/"), nil)
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	resp, err := h.HTTPClient(false).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "final" {
		t.Fatalf("got %d %q, want 200 final", resp.StatusCode, body)
	}
	if want := "103 </style.css>; rel=preload; as=style"; len(hints) != 1 || hints[0] != want {
		t.Fatalf("1xx seen by the visitor: %q, want [%q]", hints, want)
	}
}

// rawBackend serves each connection with answer, which writes raw bytes
// after reading one request head.
func rawBackend(t *testing.T, answer func(conn net.Conn, n int)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	var count atomic.Int64
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				br := bufio.NewReader(conn)
				for {
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					answer(conn, int(count.Add(1)))
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// A response head past the bound (1 MiB) fails that request with 502 and
// leaves the tunnel serving the next one.
func TestEdge_OversizedResponseHeaderIsRefused(t *testing.T) {
	h := edgetest.Start(t, nil)
	addr := rawBackend(t, func(conn net.Conn, n int) {
		if n == 1 {
			io.WriteString(conn, "HTTP/1.1 200 OK\r\nX-Big: "+strings.Repeat("a", 2<<20)+"\r\nContent-Length: 2\r\n\r\nno")
			return
		}
		io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	if _, err := h.Connect(aliceToken, mux.Tunnel{Name: "wiki", Target: addr}); err != nil {
		t.Fatal(err)
	}
	c := h.HTTPClient(false)
	if code, _ := get(t, c, h.URL("wiki", "/")); code != http.StatusBadGateway {
		t.Fatalf("oversized head: got %d, want 502", code)
	}
	if code, body := get(t, c, h.URL("wiki", "/")); code != 200 || body != "ok" {
		t.Fatalf("next request: got %d %q, want 200 ok", code, body)
	}
}

// Bytes a service sends after its response, unasked, never become the
// answer to the next request: that stream is not kept.
func TestEdge_UnsolicitedBytesAfterAResponseAreNotAnAnswer(t *testing.T) {
	h := edgetest.Start(t, nil)
	addr := rawBackend(t, func(conn net.Conn, n int) {
		if n == 1 {
			io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst"+
				"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged")
			return
		}
		io.WriteString(conn, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nreal-%d", n%10))
	})
	if _, err := h.Connect(aliceToken, mux.Tunnel{Name: "wiki", Target: addr}); err != nil {
		t.Fatal(err)
	}
	c := h.HTTPClient(false)
	if code, body := get(t, c, h.URL("wiki", "/")); code != 200 || body != "first" {
		t.Fatalf("first: got %d %q", code, body)
	}
	for range 3 {
		if code, body := get(t, c, h.URL("wiki", "/")); code != 200 || !strings.HasPrefix(body, "real-") {
			t.Fatalf("next: got %d %q, want a real answer", code, body)
		}
	}
}

// A service that refuses an upload before reading it answers the visitor
// at once, and the tunnel serves the next request.
func TestEdge_EarlyAnswerToAnUpload(t *testing.T) {
	h := edgetest.Start(t, nil)
	addr := edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" {
			w.Header().Set("Connection", "close")
			http.Error(w, "too large", http.StatusRequestEntityTooLarge)
			return
		}
		io.WriteString(w, "ok")
	}))
	if _, err := h.Connect(aliceToken, mux.Tunnel{Name: "wiki", Target: addr}); err != nil {
		t.Fatal(err)
	}
	c := h.HTTPClient(false)
	resp, err := c.Post(h.URL("wiki", "/up"), "application/octet-stream", bytes.NewReader(make([]byte, 16<<20)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("upload: got %d, want 413", resp.StatusCode)
	}
	if code, body := get(t, c, h.URL("wiki", "/")); code != 200 || body != "ok" {
		t.Fatalf("next request: got %d %q", code, body)
	}
}

// A visitor that stops sending its upload halfway still gets the answer
// the service gave without reading it: the edge does not wait for the rest
// of the body before answering.
func TestEdge_EarlyAnswerReachesAStalledUploader(t *testing.T) {
	h := edgetest.Start(t, nil)
	addr := edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	}))
	if _, err := h.Connect(aliceToken, mux.Tunnel{Name: "wiki", Target: addr}); err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", h.Addr, &tls.Config{RootCAs: h.Pool, ServerName: "wiki." + domain})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /up HTTP/1.1\r\nHost: wiki.%s\r\nContent-Length: %d\r\n\r\n", domain, 1<<20)
	conn.Write(make([]byte, 64<<10)) // then nothing more
	// Bounded: an edge that waited for the body would answer only when the
	// visitor idle timeout (a minute) cut the upload.
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer while the upload is stalled: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("got %d, want 413", resp.StatusCode)
	}
}

// A visitor that asks for 100-continue gets one 100 Continue, then the
// answer: the service's own 100 is not passed on as a second one.
func TestEdge_ExpectContinueGetsOneContinue(t *testing.T) {
	h := edgetest.Start(t, nil)
	addr := edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "got %s", body)
	}))
	if _, err := h.Connect(aliceToken, mux.Tunnel{Name: "wiki", Target: addr}); err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", h.Addr, &tls.Config{RootCAs: h.Pool, ServerName: "wiki." + domain})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(conn)
	fmt.Fprintf(conn, "POST /up HTTP/1.1\r\nHost: wiki.%s\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", domain)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusContinue {
		t.Fatalf("before the body: got %v %v, want 100 Continue", resp, err)
	}
	io.WriteString(conn, "hello")
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "got hello" {
		t.Fatalf("after the body: got %d %q, want 200 \"got hello\"", resp.StatusCode, body)
	}
}

// One session serving two names: a stream kept after a request to one is
// never reused for the other, whose requests must reach its own service.
func TestEdge_KeptStreamsStayWithTheirName(t *testing.T) {
	h := edgetest.Start(t, nil)
	backend := func(name string) string {
		return edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, name)
		}))
	}
	if _, err := h.Connect(aliceToken,
		mux.Tunnel{Name: "wiki", Target: backend("wiki")},
		mux.Tunnel{Name: "blog", Target: backend("blog")}); err != nil {
		t.Fatal(err)
	}
	c := h.HTTPClient(false)
	for _, name := range []string{"wiki", "blog", "wiki", "blog", "blog", "wiki"} {
		if code, body := get(t, c, h.URL(name, "/")); code != 200 || body != name {
			t.Fatalf("%s: got %d %q, want 200 %q", name, code, body, name)
		}
	}
}
