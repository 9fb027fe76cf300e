package edge_test

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/websocket"

	"github.com/tunnelhq/tunnel/internal/edgetest"
	"github.com/tunnelhq/tunnel/internal/testhttp"
	"github.com/tunnelhq/tunnel/internal/testwait"
	"github.com/tunnelhq/tunnel/pkg/edge"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/name"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The edge's tests run on edgetest's edge; short names for its constants
// keep them readable.
const (
	domain     = edgetest.Domain
	aliceToken = edgetest.AliceToken
	bobToken   = edgetest.BobToken
)

type (
	harness = edgetest.Edge
	client  = edgetest.Client
)

func TestEdge_GetThroughTunnel(t *testing.T) {
	h := edgetest.Start(t, nil)
	got := make(chan *http.Request, 1)
	addr := edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r
		fmt.Fprintf(w, "hello from %s", r.URL.Path)
	}))
	c, err := h.Connect(aliceToken, mux.Tunnel{Name: "wiki", Target: addr})
	if err != nil {
		t.Fatal(err)
	}
	if want := h.URL("wiki", ""); c.Welcome.Tunnels[0].URL != want {
		t.Errorf("public URL: got %q, want %q", c.Welcome.Tunnels[0].URL, want)
	}
	req, _ := http.NewRequest("GET", h.URL("wiki", "/page?q=1"), nil)
	req.Header.Set("X-Forwarded-For", "6.6.6.6")
	req.Header.Set("Forwarded", "for=6.6.6.6")
	resp, err := h.HTTPClient(false).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "hello from /page" {
		t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, "hello from /page")
	}
	r := testwait.Recv(t, got, 5*time.Second)
	if r.Host != fmt.Sprintf("wiki.%s:%d", domain, h.Port) {
		t.Errorf("Host: got %q, want the visitor's host", r.Host)
	}
	if xff := r.Header.Get("X-Forwarded-For"); xff != "127.0.0.1" {
		t.Errorf("X-Forwarded-For: got %q, want the real address 127.0.0.1 only", xff)
	}
	if f := r.Header.Get("Forwarded"); f != "" {
		t.Errorf("Forwarded: got %q, want it dropped", f)
	}
	if p := r.Header.Get("X-Forwarded-Proto"); p != "https" {
		t.Errorf("X-Forwarded-Proto: got %q, want https", p)
	}
	if r.URL.RawQuery != "q=1" {
		t.Errorf("query: got %q, want q=1", r.URL.RawQuery)
	}
}

func TestEdge_LargeBodiesBothWays(t *testing.T) {
	const size = 50 << 20
	h := edgetest.Start(t, nil)
	payload := make([]byte, size)
	mrand.NewChaCha8([32]byte{1}).Read(payload)
	want := sha256.Sum256(payload)
	addr := edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case "POST":
			hash := sha256.New()
			n, err := io.Copy(hash, r.Body)
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			fmt.Fprintf(w, "%d %x", n, hash.Sum(nil))
		default:
			w.Header().Set("Content-Length", fmt.Sprint(size))
			w.Write(payload)
		}
	}))
	if _, err := h.Connect(aliceToken, mux.Tunnel{Name: "bulk", Target: addr}); err != nil {
		t.Fatal(err)
	}
	c := h.HTTPClient(false)

	resp, err := c.Post(h.URL("bulk", "/upload"), "application/octet-stream", bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if wantBody := fmt.Sprintf("%d %x", size, want); string(body) != wantBody {
		t.Fatalf("upload: got %q, want %q", body, wantBody)
	}

	resp, err = c.Get(h.URL("bulk", "/download"))
	if err != nil {
		t.Fatal(err)
	}
	hash := sha256.New()
	n, err := io.Copy(hash, resp.Body)
	resp.Body.Close()
	if err != nil || n != size {
		t.Fatalf("download: read %d bytes, err %v; want %d", n, err, size)
	}
	if got := hash.Sum(nil); !bytes.Equal(got, want[:]) {
		t.Fatalf("download hash: got %x, want %x", got, want)
	}
}

func TestEdge_ConcurrentRequestsOverTwoTunnels(t *testing.T) {
	const n = 200
	// All from one address: a visitor's share would hold most of them
	// back until the others finished, which they do not until all arrive.
	h := edgetest.Start(t, func(c *edge.Config) { c.MaxRequestsPerVisitor = n })
	// Each backend holds every request until all n have arrived, so the
	// requests are really in flight at the same time.
	var arrived sync.WaitGroup
	arrived.Add(n)
	allIn := make(chan struct{})
	go func() {
		arrived.Wait()
		close(allIn)
	}()
	handler := func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			arrived.Done()
			select {
			case <-allIn:
			case <-r.Context().Done():
				return
			}
			fmt.Fprintf(w, "%s %s", name, r.URL.Path)
		})
	}
	if _, err := h.Connect(aliceToken,
		mux.Tunnel{Name: "one", Target: edgetest.Backend(t, handler("one"))},
		mux.Tunnel{Name: "two", Target: edgetest.Backend(t, handler("two"))},
	); err != nil {
		t.Fatal(err)
	}
	c := h.HTTPClient(false)
	errs := make(chan error, n)
	for i := range n {
		go func() {
			name := []string{"one", "two"}[i%2]
			path := fmt.Sprintf("/r%d", i)
			resp, err := c.Get(h.URL(name, path))
			if err != nil {
				errs <- err
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := name + " " + path; resp.StatusCode != 200 || string(body) != want {
				err = fmt.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, want)
			}
			errs <- err
		}()
	}
	for range n {
		if err := testwait.Recv(t, errs, 60*time.Second); err != nil {
			t.Error(err)
		}
	}
}

func TestEdge_WebSocketEcho(t *testing.T) {
	h := edgetest.Start(t, nil)
	addr := edgetest.Backend(t, websocket.Handler(func(ws *websocket.Conn) { io.Copy(ws, ws) }))
	if _, err := h.Connect(aliceToken, mux.Tunnel{Name: "ws", Target: addr}); err != nil {
		t.Fatal(err)
	}
	raw, err := net.Dial("tcp", h.Addr)
	if err != nil {
		t.Fatal(err)
	}
	ws := wsClient(t, tls.Client(raw, &tls.Config{RootCAs: h.Pool, ServerName: "ws." + domain}), h.Port, "/echo")
	defer ws.Close()
	for i := range 3 {
		wsEcho(t, ws, fmt.Sprintf("message %d", i), 10*time.Second)
	}
}

// wsClient opens a WebSocket to path on ws.<domain> at the edge's port,
// over conn, a TLS connection to the edge. The caller closes it.
func wsClient(t *testing.T, conn net.Conn, port int, path string) *websocket.Conn {
	t.Helper()
	cfg, err := websocket.NewConfig(fmt.Sprintf("wss://ws.%s:%d%s", domain, port, path), "https://ws."+domain)
	if err != nil {
		t.Fatal(err)
	}
	ws, err := websocket.NewClient(cfg, conn)
	if err != nil {
		conn.Close()
		t.Fatalf("websocket handshake through the tunnel: %v", err)
	}
	return ws
}

// wsEcho sends msg on ws and fails the test unless the same message comes
// back within d.
func wsEcho(t *testing.T, ws *websocket.Conn, msg string, d time.Duration) {
	t.Helper()
	if err := websocket.Message.Send(ws, msg); err != nil {
		t.Fatal(err)
	}
	var got string
	ws.SetReadDeadline(time.Now().Add(d))
	if err := websocket.Message.Receive(ws, &got); err != nil || got != msg {
		t.Fatalf("echo: got %q, %v; want %q", got, err, msg)
	}
}

func TestEdge_ServerSentEventsStream(t *testing.T) {
	h := edgetest.Start(t, nil)
	next := make(chan struct{})
	addr := edgetest.Backend(t, testhttp.PacedEvents(3, next))
	if _, err := h.Connect(aliceToken, mux.Tunnel{Name: "sse", Target: addr}); err != nil {
		t.Fatal(err)
	}
	resp, err := h.HTTPClient(false).Get(h.URL("sse", "/events"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	testhttp.ReadPacedEvents(t, resp.Body, 3, next, 10*time.Second)
}

func TestEdge_HTTP2Visitor(t *testing.T) {
	h := edgetest.Start(t, nil)
	addr := edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "proto %s", r.Proto)
	}))
	if _, err := h.Connect(aliceToken, mux.Tunnel{Name: "h2", Target: addr}); err != nil {
		t.Fatal(err)
	}
	resp, err := h.HTTPClient(true).Get(h.URL("h2", "/"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Errorf("visitor protocol: got %s, want HTTP/2", resp.Proto)
	}
	if resp.StatusCode != 200 || string(body) != "proto HTTP/1.1" {
		t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, "proto HTTP/1.1")
	}
}

func TestEdge_ErrorPages(t *testing.T) {
	// No wait for the departed client: its name answers "offline" at once.
	h := edgetest.Start(t, func(c *edge.Config) { c.OfflineWait = 0 })
	up := edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "up") }))
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	downAddr := ln.Addr().String()
	ln.Close()
	if _, err := h.Connect(aliceToken, mux.Tunnel{Name: "down", Target: downAddr}); err != nil {
		t.Fatal(err)
	}
	gone, err := h.Connect(aliceToken, mux.Tunnel{Name: "gone", Target: up})
	if err != nil {
		t.Fatal(err)
	}
	c := h.HTTPClient(false)
	if status, body := testhttp.Get(t, c, h.URL("gone", "/")); status != 200 || body != "up" {
		t.Fatalf("before the client left: got %d %q", status, body)
	}
	gone.Stop()
	if err := gone.Wait(t); err != nil {
		t.Fatalf("client stop: got %v, want nil", err)
	}
	c.CloseIdleConnections()

	tests := []struct {
		name, url  string
		wantStatus int
		wantText   string
	}{
		{"unknown host", h.URL("nobody", "/"), 404, "No tunnel is registered at nobody." + domain},
		{"client gone", h.URL("gone", "/"), 502, "Tunnel offline"},
		{"local service down", h.URL("down", "/"), 502, "local service refused the connection"},
		{"apex", fmt.Sprintf("https://%s:%d/", domain, h.Port), 404, "Tunnels are served at NAME." + domain},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := testhttp.Get(t, c, tt.url)
			if status != tt.wantStatus || !strings.Contains(body, tt.wantText) {
				t.Fatalf("got %d %q, want %d containing %q", status, body, tt.wantStatus, tt.wantText)
			}
		})
	}
}

func TestEdge_HandshakeRefusals(t *testing.T) {
	h := edgetest.Start(t, func(c *edge.Config) { c.AllowAnonymous = false })
	addr := edgetest.Backend(t, http.NotFoundHandler())
	if _, err := h.Connect(aliceToken, mux.Tunnel{Name: "taken", Target: addr}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		token string
		tun   string
		want  proto.ErrorCode
	}{
		{"bad token", "tk_wrong", "x", proto.CodeBadToken},
		{"no token", "", "x", proto.CodeBadToken},
		{"name held by another token", bobToken, "taken", proto.CodeNameTaken},
		{"invalid name", aliceToken, "-x", proto.CodeInvalidName},
		{"reserved name", aliceToken, "www", proto.CodeNameNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.Connect(tt.token, mux.Tunnel{Name: tt.tun, Target: addr})
			var perr *proto.Error
			if !errors.As(err, &perr) || perr.Code != tt.want {
				t.Fatalf("got %v, want code %s", err, tt.want)
			}
			if perr.Message == "" {
				t.Errorf("refusal %s has no message", perr.Code)
			}
		})
	}
}

func TestEdge_ReconnectReplacesStaleSession(t *testing.T) {
	h := edgetest.Start(t, nil)
	first := edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "first") }))
	second := edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "second") }))
	old, err := h.Connect(aliceToken, mux.Tunnel{Name: "app", Target: first})
	if err != nil {
		t.Fatal(err)
	}
	c := h.HTTPClient(false)
	if _, body := testhttp.Get(t, c, h.URL("app", "/")); body != "first" {
		t.Fatalf("got %q, want first", body)
	}
	// The old session is still up (as a stale one would look to the server)
	// when its owner connects again: the new one takes over at once.
	if _, err := h.Connect(aliceToken, mux.Tunnel{Name: "app", Target: second}); err != nil {
		t.Fatalf("reconnect with the same token: %v", err)
	}
	if err := old.Wait(t); !errors.Is(err, mux.ErrSessionLost) {
		t.Errorf("old session: got %v, want ErrSessionLost", err)
	}
	if status, body := testhttp.Get(t, c, h.URL("app", "/")); status != 200 || body != "second" {
		t.Fatalf("after reconnect: got %d %q, want 200 second", status, body)
	}
}

func TestEdge_RandomNames(t *testing.T) {
	h := edgetest.Start(t, nil)
	addr := edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "rnd") }))
	c, err := h.Connect("", mux.Tunnel{Target: addr}, mux.Tunnel{Name: "named", Target: addr}, mux.Tunnel{Target: addr})
	if err != nil {
		t.Fatal(err)
	}
	tuns := c.Welcome.Tunnels
	if tuns[1].Name != "named" || tuns[0].Name == tuns[2].Name {
		t.Fatalf("got names %q %q %q, want a random, named, another random", tuns[0].Name, tuns[1].Name, tuns[2].Name)
	}
	for _, tun := range tuns {
		if err := name.Validate(tun.Name); err != nil {
			t.Errorf("granted name %q is invalid: %v", tun.Name, err)
		}
		if _, body := testhttp.Get(t, h.HTTPClient(false), tun.URL+"/"); body != "rnd" {
			t.Errorf("GET %s: got %q", tun.URL, body)
		}
	}
}
