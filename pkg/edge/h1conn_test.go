package edge_test

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/internal/edgetest"
	"github.com/tunnelhq/tunnel/internal/testnet"
	"github.com/tunnelhq/tunnel/internal/testwait"
	"github.com/tunnelhq/tunnel/pkg/edge"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// The edge's own HTTP/1.1 path (h1conn.go) serves what it can and hands
// net/http the rest of a connection with every byte it read.

// h1Visitor is a raw HTTP/1.1 connection to the edge over TLS (ALPN
// http/1.1), reading responses in order.
type h1Visitor struct {
	conn net.Conn
	br   *bufio.Reader
}

func dialH1(t *testing.T, h *harness) *h1Visitor {
	t.Helper()
	conn, err := tls.Dial("tcp", h.Addr, &tls.Config{RootCAs: h.Pool, ServerName: "wiki." + edgetest.Domain,
		NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &h1Visitor{conn: conn, br: bufio.NewReader(conn)}
}

func (v *h1Visitor) send(t *testing.T, raw string) {
	t.Helper()
	if _, err := io.WriteString(v.conn, raw); err != nil {
		t.Fatal(err)
	}
}

// read reads the next response and its body.
func (v *h1Visitor) read(t *testing.T) (*http.Response, string) {
	t.Helper()
	v.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(v.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func getFrom(h *harness, name, path string) string {
	return fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s.%s:%d\r\n\r\n", path, name, edgetest.Domain, h.Port)
}

// echoProto answers with its path and the X-Forwarded-Proto it was given.
var echoProto = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	io.WriteString(w, r.URL.Path+" "+r.Header.Get("X-Forwarded-Proto"))
})

// A request to an open tunnel is served on the own path and the
// connection stays there; one the own path does not serve (no such
// tunnel) hands the connection to net/http with the bytes already read,
// pipelined requests after it included, and net/http serves the rest of
// the connection with its TLS state.
func TestEdge_H1_ServesOpenTunnelsAndHandsOffTheRest(t *testing.T) {
	h := edgetest.Start(t, nil)
	if _, err := h.Connect(aliceToken, mux.Tunnel{Name: "wiki", Target: edgetest.Backend(t, echoProto)}); err != nil {
		t.Fatal(err)
	}
	v := dialH1(t, h)
	v.send(t, getFrom(h, "wiki", "/one"))
	if resp, body := v.read(t); resp.StatusCode != 200 || body != "/one https" {
		t.Fatalf("first request: got %d %q, want 200 \"/one https\"", resp.StatusCode, body)
	}
	if n := h.Srv.H1Conns(); n != 1 {
		t.Fatalf("after a request to an open tunnel: %d connections on the own path, want 1", n)
	}
	// Three requests in one write: the second one goes to net/http with
	// the third already read by the own path.
	v.send(t, getFrom(h, "wiki", "/two")+getFrom(h, "nobody", "/x")+getFrom(h, "wiki", "/three"))
	if resp, body := v.read(t); resp.StatusCode != 200 || body != "/two https" {
		t.Fatalf("second request: got %d %q, want 200 \"/two https\"", resp.StatusCode, body)
	}
	if resp, body := v.read(t); resp.StatusCode != 404 || !strings.Contains(body, "No tunnel is registered") {
		t.Fatalf("request to no tunnel: got %d %q, want 404 from net/http's path", resp.StatusCode, body)
	}
	if resp, body := v.read(t); resp.StatusCode != 200 || body != "/three https" {
		t.Fatalf("request after the handoff: got %d %q, want 200 \"/three https\"", resp.StatusCode, body)
	}
	if !eventually(func() bool { return h.Srv.H1Conns() == 0 }, 10*time.Second) {
		t.Fatalf("after the handoff: %d connections on the own path, want 0", h.Srv.H1Conns())
	}
}

// A visitor that leaves while the service has not answered frees its
// slot: the own path watches a long exchange's connection (as net/http's
// background read does) and closes the stream, so the next visitor of a
// tunnel with one slot is served.
func TestEdge_H1_VisitorLeavingFreesItsSlot(t *testing.T) {
	h := edgetest.Start(t, func(c *edge.Config) { c.MaxStreamsPerTunnel = 1 })
	arrived := make(chan struct{}, 1)
	left := make(chan struct{}, 1)
	backend := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hang" {
			arrived <- struct{}{}
			<-r.Context().Done() // the edge closed the stream
			left <- struct{}{}
			return
		}
		io.WriteString(w, "ok")
	})
	if _, err := h.Connect(aliceToken, mux.Tunnel{Name: "wiki", Target: edgetest.Backend(t, backend)}); err != nil {
		t.Fatal(err)
	}
	v := dialH1(t, h)
	v.send(t, getFrom(h, "wiki", "/hang"))
	testwait.Recv(t, arrived, 20*time.Second)
	v.conn.Close()
	testwait.Recv(t, left, 20*time.Second)
	inFlight := func() bool {
		for _, ts := range h.Srv.Tunnels() {
			if ts.Name == "wiki" {
				return ts.InFlight == 0
			}
		}
		return false
	}
	if !eventually(inFlight, 10*time.Second) {
		t.Fatal("the request of the visitor that left is still in flight")
	}
	w := dialH1(t, h)
	w.send(t, getFrom(h, "wiki", "/next"))
	if resp, body := w.read(t); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("next visitor: got %d %q, want 200 \"ok\": the slot did not come back", resp.StatusCode, body)
	}
}

// A failure before any answer (the client refuses the stream: its local
// service is down) gets the edge's own page, and the connection carries
// the next request.
func TestEdge_H1_FailureBeforeTheHeadIsAnswered(t *testing.T) {
	h := edgetest.Start(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	if _, err := h.Connect(aliceToken, mux.Tunnel{Name: "wiki", Target: dead},
		mux.Tunnel{Name: "echo", Target: edgetest.Backend(t, echoProto)}); err != nil {
		t.Fatal(err)
	}
	v := dialH1(t, h)
	v.send(t, getFrom(h, "wiki", "/"))
	resp, body := v.read(t)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "its local service refused the connection") ||
		resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("got %d %q %v, want the edge's 502 page", resp.StatusCode, body, resp.Header)
	}
	v.send(t, getFrom(h, "echo", "/after"))
	if resp, body := v.read(t); resp.StatusCode != 200 || body != "/after https" {
		t.Fatalf("next request on the connection: got %d %q", resp.StatusCode, body)
	}
}

// At shutdown, an idle connection of the own path is closed at once and
// an exchange in flight finishes within the grace period.
func TestEdge_H1_ShutdownClosesIdleAndFinishesInFlight(t *testing.T) {
	h, stop := edgetest.StartStoppable(t, func(c *edge.Config) { c.ShutdownGrace = 10 * time.Second })
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	backend := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			arrived <- struct{}{}
			<-release
		}
		io.WriteString(w, "done "+r.URL.Path)
	})
	if _, err := h.Connect(aliceToken, mux.Tunnel{Name: "wiki", Target: edgetest.Backend(t, backend)}); err != nil {
		t.Fatal(err)
	}
	idle := dialH1(t, h)
	idle.send(t, getFrom(h, "wiki", "/idle"))
	if resp, _ := idle.read(t); resp.StatusCode != 200 {
		t.Fatalf("idle visitor's request: %d", resp.StatusCode)
	}
	busy := dialH1(t, h)
	busy.send(t, getFrom(h, "wiki", "/slow"))
	testwait.Recv(t, arrived, 20*time.Second)

	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	idleClosed := make(chan error, 1)
	go func() {
		_, err := idle.br.ReadByte()
		idleClosed <- err
	}()
	// Well within the grace period: closed as idle, not at its end.
	if err := testwait.Recv(t, idleClosed, 5*time.Second); err == nil {
		t.Fatal("the idle connection got a byte at shutdown; want it closed")
	}
	close(release)
	if resp, body := busy.read(t); resp.StatusCode != 200 || body != "done /slow" {
		t.Fatalf("request in flight at shutdown: got %d %q, want 200 \"done /slow\"", resp.StatusCode, body)
	}
	if err := testwait.Recv(t, stopped, 30*time.Second); err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

// The plain-HTTP listener that serves tunnels goes through the own path
// too, and its handoffs keep X-Forwarded-Proto http.
func TestEdge_H1_PlainServesTunnels(t *testing.T) {
	h := edgetest.Start(t, func(c *edge.Config) { c.PlainServesTunnels = true })
	if _, err := h.Connect(aliceToken, mux.Tunnel{Name: "wiki", Target: edgetest.Backend(t, echoProto)}); err != nil {
		t.Fatal(err)
	}
	addr := servePlain(t, h)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	v := &h1Visitor{conn: conn, br: bufio.NewReader(conn)}
	host := "wiki." + edgetest.Domain
	v.send(t, "GET /a HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
	if resp, body := v.read(t); resp.StatusCode != 200 || body != "/a http" {
		t.Fatalf("plain request: got %d %q, want 200 \"/a http\"", resp.StatusCode, body)
	}
	// A request to no tunnel is net/http's: handed off, the next one too.
	v.send(t, "GET /b HTTP/1.1\r\nHost: nobody."+edgetest.Domain+"\r\n\r\nGET /c HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
	if resp, _ := v.read(t); resp.StatusCode != 404 {
		t.Fatalf("plain request to no tunnel: got %d, want 404", resp.StatusCode)
	}
	if resp, body := v.read(t); resp.StatusCode != 200 || body != "/c http" {
		t.Fatalf("plain request after the handoff: got %d %q, want 200 \"/c http\"", resp.StatusCode, body)
	}
}

// A tunnel with basic auth or address rules is served on the own path
// when the request passes them at no cost: a password bcrypt accepted
// lately, an allowed address. The first try, a wrong password and a
// denied address go to net/http's path, which counts, checks and answers.
// The service never sees the tunnel's password on either path.
func TestEdge_H1_AccessRulesPassedAtOnceStayOnTheOwnPath(t *testing.T) {
	h := edgetest.Start(t, nil)
	sawAuth := make(chan string, 16)
	backend := edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawAuth <- r.Header.Get("Authorization")
		io.WriteString(w, "in "+r.URL.Path)
	}))
	locked := &proto.Access{BasicAuth: []proto.BasicAuthUser{{User: "ann", Hash: bcryptHash(t, "pw")}}}
	if _, err := h.Connect(aliceToken,
		mux.Tunnel{Name: "wiki", Target: backend, Access: locked},
		mux.Tunnel{Name: "near", Target: backend, Access: &proto.Access{AllowCIDR: []string{"127.0.0.0/8"}}},
		mux.Tunnel{Name: "far", Target: backend, Access: &proto.Access{DenyCIDR: []string{"127.0.0.0/8"}}},
	); err != nil {
		t.Fatal(err)
	}
	right := "Basic " + base64.StdEncoding.EncodeToString([]byte("ann:pw"))
	wrong := "Basic " + base64.StdEncoding.EncodeToString([]byte("ann:nope"))
	for _, step := range []struct {
		what, name, auth string
		status           int
		own              bool // served on the own path, not handed off
	}{
		{"no password", "wiki", "", http.StatusUnauthorized, false},
		{"the right password, first time", "wiki", right, http.StatusOK, false},
		{"the right password again", "wiki", right, http.StatusOK, true},
		{"a wrong password", "wiki", wrong, http.StatusUnauthorized, false},
		{"the right password once more", "wiki", right, http.StatusOK, true},
		{"an allowed address", "near", "", http.StatusOK, true},
		{"a denied address", "far", "", http.StatusForbidden, false},
	} {
		before := h.Srv.H1Handoffs()
		v := dialH1(t, h)
		raw := fmt.Sprintf("GET /%s HTTP/1.1\r\nHost: %s.%s:%d\r\n", step.name, step.name, edgetest.Domain, h.Port)
		if step.auth != "" {
			raw += "Authorization: " + step.auth + "\r\n"
		}
		v.send(t, raw+"\r\n")
		resp, _ := v.read(t)
		v.conn.Close()
		if resp.StatusCode != step.status {
			t.Fatalf("%s: got %d, want %d", step.what, resp.StatusCode, step.status)
		}
		if own := h.Srv.H1Handoffs() == before; own != step.own {
			t.Errorf("%s: served on the own path: %v, want %v", step.what, own, step.own)
		}
		if resp.StatusCode == http.StatusOK {
			if got := testwait.Recv(t, sawAuth, 10*time.Second); got != "" {
				t.Errorf("%s: the service saw Authorization %q, want none", step.what, got)
			}
		}
	}
}

// A request on the own path is counted (status page, metrics) before the
// visitor can read the end of its answer, as on net/http's path: a
// script that asserts on /api/tunnels right after an answer finds it.
func TestEdge_H1_CountedBeforeTheAnswerEnds(t *testing.T) {
	h := edgetest.Start(t, nil)
	if _, err := h.Connect(aliceToken, mux.Tunnel{Name: "wiki", Target: edgetest.Backend(t, echoProto)}); err != nil {
		t.Fatal(err)
	}
	v := dialH1(t, h)
	const n = 200
	for i := range n {
		req := getFrom(h, "wiki", "/get")
		if i%2 == 1 {
			req = fmt.Sprintf("POST /post HTTP/1.1\r\nHost: wiki.%s:%d\r\nContent-Length: 5\r\n\r\nhello", edgetest.Domain, h.Port)
		}
		v.send(t, req)
		if resp, _ := v.read(t); resp.StatusCode != 200 {
			t.Fatalf("request %d: got %d, want 200", i, resp.StatusCode)
		}
		var got int64 = -1
		for _, ts := range h.Srv.Tunnels() {
			if ts.Name == "wiki" {
				got = ts.Requests
			}
		}
		if got != int64(i+1) {
			t.Fatalf("after answer %d the status page counts %d requests, want %d", i+1, got, i+1)
		}
	}
	if n := h.Srv.H1Conns(); n != 1 {
		t.Fatalf("%d connections on the own path, want 1 (the test must exercise it)", n)
	}
}

// The own path reads a plain response head with its own reader
// (H1FastHeads counts them) and leaves any other to net/http's; a head
// net/http's reader refuses is a 502 to the visitor either way, and the
// visitor's connection serves the next request.
func TestEdge_H1_PlainResponseHeadsReadByTheEdge(t *testing.T) {
	h := edgetest.Start(t, nil)
	answers := map[string]string{
		"/plain":    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nX-Up: 1\r\nContent-Length: 5\r\n\r\nplain",
		"/chunked":  "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n7\r\nchunked\r\n0\r\n\r\n",
		"/conflict": "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
	}
	backend := testnet.Serve(t, func(c net.Conn) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		br := bufio.NewReader(c)
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.WriteString(c, answers[r.URL.Path])
		}
	})
	if _, err := h.Connect(aliceToken, mux.Tunnel{Name: "wiki", Target: backend}); err != nil {
		t.Fatal(err)
	}
	v := dialH1(t, h)
	for _, step := range []struct {
		path   string
		status int
		body   string
		fast   bool
	}{
		{"/plain", 200, "plain", true},
		{"/chunked", 200, "chunked", false},
		{"/conflict", 502, "", false},
		{"/plain", 200, "plain", true},
	} {
		before := h.Srv.H1FastHeads()
		v.send(t, getFrom(h, "wiki", step.path))
		resp, body := v.read(t)
		if resp.StatusCode != step.status || step.body != "" && body != step.body {
			t.Fatalf("%s: got %d %q, want %d %q", step.path, resp.StatusCode, body, step.status, step.body)
		}
		if step.status == 200 && (resp.Header.Get("Content-Type") != "text/plain" || resp.Header.Get("Date") == "") {
			t.Errorf("%s: header %v, want the service's type and a Date", step.path, resp.Header)
		}
		if fast := h.Srv.H1FastHeads() > before; fast != step.fast {
			t.Errorf("%s: the edge's own reader read the head: %v, want %v", step.path, fast, step.fast)
		}
	}
	if n := h.Srv.H1Conns(); n != 1 {
		t.Fatalf("%d connections on the own path, want 1 (the test must exercise it)", n)
	}
}

// An HTTP/1.0 visitor that asks for keep-alive keeps its connection on
// the own path when the answer has a length, and is told so
// (Connection: keep-alive), as net/http's server does; one whose answer
// has no length, or that did not ask, gets the answer and the end of the
// connection. ApacheBench's -k speaks exactly this.
func TestEdge_H1_HTTP10KeepAlive(t *testing.T) {
	h := edgetest.Start(t, nil)
	stream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/stream":
			w.(http.Flusher).Flush() // no length: the body ends with the connection
		case "/slowhead":
			w.Header().Set("Close", "yes") // a head the edge's own reader leaves to net/http's
		}
		io.WriteString(w, r.URL.Path)
	})
	if _, err := h.Connect(aliceToken, mux.Tunnel{Name: "wiki", Target: edgetest.Backend(t, stream)}); err != nil {
		t.Fatal(err)
	}
	get10 := func(path, conn string) string {
		s := fmt.Sprintf("GET %s HTTP/1.0\r\nHost: wiki.%s:%d\r\n", path, edgetest.Domain, h.Port)
		if conn != "" {
			s += "Connection: " + conn + "\r\n"
		}
		return s + "\r\n"
	}
	v := dialH1(t, h)
	for i, path := range []string{"/one", "/two", "/slowhead"} {
		fast := h.Srv.H1FastHeads()
		v.send(t, get10(path, "keep-alive"))
		resp, body := v.read(t)
		if resp.StatusCode != 200 || body != path {
			t.Fatalf("%s: got %d %q, want 200 %q", path, resp.StatusCode, body, path)
		}
		if got := resp.Header.Get("Connection"); got != "keep-alive" || resp.Close {
			t.Fatalf("%s: Connection %q (close %v), want keep-alive", path, got, resp.Close)
		}
		if read := h.Srv.H1FastHeads() - fast; read != 0 && path == "/slowhead" || read != 1 && path != "/slowhead" {
			t.Fatalf("%s: the edge's own reader read %d heads, want 1 but for /slowhead", path, read)
		}
		if i == 0 {
			if n := h.Srv.H1Conns(); n != 1 {
				t.Fatalf("HTTP/1.0 keep-alive: %d connections on the own path, want 1", n)
			}
		}
	}
	// No length: the answer ends with the connection.
	v.send(t, get10("/stream", "keep-alive"))
	if resp, body := v.read(t); resp.StatusCode != 200 || body != "/stream" || !resp.Close {
		t.Fatalf("/stream: got %d %q close %v, want 200 \"/stream\" and the connection closed", resp.StatusCode, body, resp.Close)
	}
	expectEOF(t, v)
	// No keep-alive asked: closed after the answer.
	v = dialH1(t, h)
	v.send(t, get10("/once", ""))
	if resp, body := v.read(t); resp.StatusCode != 200 || body != "/once" || !resp.Close {
		t.Fatalf("/once: got %d %q close %v, want 200 and the connection closed", resp.StatusCode, body, resp.Close)
	}
	expectEOF(t, v)
}

func expectEOF(t *testing.T, v *h1Visitor) {
	t.Helper()
	v.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := v.br.ReadByte(); err != io.EOF {
		t.Fatalf("after the last answer: read %q, %v; want EOF", b, err)
	}
}
