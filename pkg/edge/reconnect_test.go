package edge_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/internal/edgetest"
	"github.com/tunnelhq/tunnel/internal/testhttp"
	"github.com/tunnelhq/tunnel/internal/testwait"
	"github.com/tunnelhq/tunnel/pkg/edge"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// watchedRegistry reports each Wait a visitor's request starts.
type watchedRegistry struct {
	edge.Registry
	waiting chan string
}

func (r watchedRegistry) Wait(ctx context.Context, name string) edge.Route {
	r.waiting <- name
	return r.Registry.Wait(ctx, name)
}

func TestEdge_VisitorWaitsForReconnectingClient(t *testing.T) {
	reg := watchedRegistry{Registry: edge.NewMemoryRegistry(time.Minute), waiting: make(chan string, 4)}
	h := edgetest.Start(t, func(c *edge.Config) {
		c.Registry = reg
		c.OfflineWait = 20 * time.Second // far longer than the test needs: the client comes back first
	})
	addr := edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "back") }))
	first, err := h.Connect(aliceToken, mux.Tunnel{Name: "app", Target: addr})
	if err != nil {
		t.Fatal(err)
	}
	first.Stop()
	if err := first.Wait(t); err != nil {
		t.Fatal(err)
	}

	type result struct {
		status int
		body   string
	}
	got := make(chan result, 1)
	c := h.HTTPClient(false)
	go func() {
		resp, err := c.Get(h.URL("app", "/"))
		if err != nil {
			got <- result{body: err.Error()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		got <- result{resp.StatusCode, string(b)}
	}()
	if name := testwait.Recv(t, reg.waiting, 20*time.Second); name != "app" {
		t.Fatalf("waiting for %q, want app", name)
	}
	if _, err := h.Connect(aliceToken, mux.Tunnel{Name: "app", Target: addr}); err != nil {
		t.Fatal(err)
	}
	if r := testwait.Recv(t, got, 20*time.Second); r.status != 200 || r.body != "back" {
		t.Fatalf("request made while the client was away: got %d %q, want 200 back", r.status, r.body)
	}
}

func TestEdge_OfflinePageAfterTheWait(t *testing.T) {
	h := edgetest.Start(t, func(c *edge.Config) { c.OfflineWait = 100 * time.Millisecond })
	addr := edgetest.Backend(t, http.NotFoundHandler())
	gone, err := h.Connect(aliceToken, mux.Tunnel{Name: "gone", Target: addr})
	if err != nil {
		t.Fatal(err)
	}
	gone.Stop()
	if err := gone.Wait(t); err != nil {
		t.Fatal(err)
	}
	if status, body := testhttp.Get(t, h.HTTPClient(false), h.URL("gone", "/")); status != 502 || !strings.Contains(body, "Tunnel offline") {
		t.Fatalf("got %d %q, want 502 Tunnel offline", status, body)
	}
}

// cutter forwards TCP connections to an upstream and can cut them all,
// as a dying link would.
type cutter struct {
	ln       net.Listener
	upstream string
	mu       sync.Mutex
	conns    []net.Conn
	wg       sync.WaitGroup
}

func newCutter(t *testing.T, upstream string) *cutter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &cutter{ln: ln, upstream: upstream}
	c.wg.Add(1)
	go c.acceptLoop()
	t.Cleanup(func() {
		ln.Close()
		c.cut()
		c.wg.Wait()
	})
	return c
}

func (c *cutter) acceptLoop() {
	defer c.wg.Done()
	for {
		down, err := c.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", c.upstream)
		if err != nil {
			down.Close()
			continue
		}
		c.mu.Lock()
		c.conns = append(c.conns, down, up)
		c.mu.Unlock()
		c.wg.Add(2)
		go c.copy(up, down)
		go c.copy(down, up)
	}
}

func (c *cutter) copy(dst, src net.Conn) {
	defer c.wg.Done()
	io.Copy(dst, src)
	dst.Close()
	src.Close()
}

func (c *cutter) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		conn.Close()
	}
	c.conns = nil
}

// runForever runs mux.RunForever with a quick backoff and reports each
// Welcome; it stops with the test.
func runForever(t *testing.T, h *harness, server, token string, log io.Writer, tunnels ...mux.Tunnel) (<-chan *proto.Welcome, *client) {
	t.Helper()
	ready := make(chan *proto.Welcome, 8)
	cfg := mux.ClientConfig{
		Config:  mux.DefaultConfig(),
		Server:  server,
		TLS:     &tls.Config{RootCAs: h.Pool, ServerName: "127.0.0.1"},
		Token:   token,
		Tunnels: tunnels,
		OnReady: func(w *proto.Welcome) { ready <- w },
		Backoff: mux.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond},
	}
	cfg.Logger = zerolog.New(log).Level(zerolog.InfoLevel)
	ctx, cancel := context.WithCancel(context.Background())
	c := &client{Done: make(chan struct{}), Stop: cancel}
	go func() {
		c.Err = mux.RunForever(ctx, cfg)
		close(c.Done)
	}()
	t.Cleanup(func() {
		cancel()
		c.Wait(t)
	})
	return ready, c
}

func TestRunForever_KeepsItsRandomNameAcrossALostLink(t *testing.T) {
	h := edgetest.Start(t, nil)
	link := newCutter(t, h.Addr)
	addr := edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "rnd") }))
	ready, _ := runForever(t, h, link.ln.Addr().String(), aliceToken, zerolog.NewTestWriter(t), mux.Tunnel{Target: addr})
	first := testwait.Recv(t, ready, 20*time.Second)
	c := h.HTTPClient(false)
	if _, body := testhttp.Get(t, c, first.Tunnels[0].URL+"/"); body != "rnd" {
		t.Fatalf("before the cut: got %q", body)
	}
	for i := range 3 {
		link.cut()
		again := testwait.Recv(t, ready, 20*time.Second)
		if again.Tunnels[0].URL != first.Tunnels[0].URL {
			t.Fatalf("reconnect %d: got URL %s, want the same %s", i, again.Tunnels[0].URL, first.Tunnels[0].URL)
		}
	}
	c.CloseIdleConnections()
	if status, body := testhttp.Get(t, c, first.Tunnels[0].URL+"/"); status != 200 || body != "rnd" {
		t.Fatalf("after the reconnects: got %d %q", status, body)
	}
}

func TestRunForever_PermanentRefusalStopsIt(t *testing.T) {
	h := edgetest.Start(t, func(c *edge.Config) { c.AllowAnonymous = false })
	_, c := runForever(t, h, h.Addr, "tk_wrong", zerolog.NewTestWriter(t), mux.Tunnel{Name: "x", Target: "127.0.0.1:1"})
	err := c.Wait(t)
	var perr *proto.Error
	if !errors.As(err, &perr) || perr.Code != proto.CodeBadToken || !mux.IsPermanent(err) {
		t.Fatalf("got %v, want a permanent bad_token refusal", err)
	}
}

// lineSignal is a log writer that reports lines containing want.
type lineSignal struct {
	want string
	seen chan struct{}
	once sync.Once
}

func (w *lineSignal) Write(p []byte) (int, error) {
	if strings.Contains(string(p), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

func TestRunForever_WaitsOutANameHeldByAnother(t *testing.T) {
	h := edgetest.Start(t, func(c *edge.Config) { c.NameHold = 0 })
	addr := edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "alice") }))
	bob, err := h.Connect(bobToken, mux.Tunnel{Name: "shared", Target: addr})
	if err != nil {
		t.Fatal(err)
	}
	refused := &lineSignal{want: string(proto.CodeNameTaken), seen: make(chan struct{})}
	ready, _ := runForever(t, h, h.Addr, aliceToken, refused, mux.Tunnel{Name: "shared", Target: addr})
	testwait.Recv(t, refused.seen, 20*time.Second)
	bob.Stop()
	if err := bob.Wait(t); err != nil {
		t.Fatal(err)
	}
	w := testwait.Recv(t, ready, 20*time.Second)
	if w.Tunnels[0].Name != "shared" {
		t.Fatalf("got name %q, want shared", w.Tunnels[0].Name)
	}
	if status, body := testhttp.Get(t, h.HTTPClient(false), h.URL("shared", "/")); status != 200 || body != "alice" {
		t.Fatalf("got %d %q, want 200 alice", status, body)
	}
}

func TestEdge_LocalServiceRestart(t *testing.T) {
	h := edgetest.Start(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	serveOn := func(ln net.Listener) *http.Server {
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "up") })}
		serveUntilCleanup(t, ln, srv)
		return srv
	}
	svc := serveOn(ln)
	cl, err := h.Connect(aliceToken, mux.Tunnel{Name: "svc", Target: addr})
	if err != nil {
		t.Fatal(err)
	}
	c := h.HTTPClient(false)
	if status, body := testhttp.Get(t, c, h.URL("svc", "/")); status != 200 || body != "up" {
		t.Fatalf("before: got %d %q", status, body)
	}
	svc.Close()
	c.CloseIdleConnections()
	if status, body := testhttp.Get(t, c, h.URL("svc", "/")); status != 502 || !strings.Contains(body, "local service refused") {
		t.Fatalf("service down: got %d %q, want 502 local service refused", status, body)
	}
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port %s taken by someone else meanwhile: %v", addr, err)
	}
	serveOn(ln)
	if status, body := testhttp.Get(t, c, h.URL("svc", "/")); status != 200 || body != "up" {
		t.Fatalf("service back: got %d %q", status, body)
	}
	select {
	case <-cl.Done:
		t.Fatalf("the tunnel dropped: %v", cl.Err)
	default:
	}
}

// TestEdge_ConnectDisconnectCycles connects and stops a client 500 times
// against one tunneld: goroutines, open files and heap come back to their
// starting level, as a soak test would show.
func TestEdge_ConnectDisconnectCycles(t *testing.T) {
	h := edgetest.Start(t, nil)
	addr := edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	c := h.HTTPClient(false)
	// Warm up once so lazily started pools are in the baseline.
	first, err := h.Connect(aliceToken, mux.Tunnel{Name: "cycle", Target: addr})
	if err != nil {
		t.Fatal(err)
	}
	testhttp.Get(t, c, h.URL("cycle", "/"))
	first.Stop()
	first.Wait(t)
	c.CloseIdleConnections()
	before := settledUsage(t, usage{})

	const cycles = 500
	for i := range cycles {
		cl, err := h.Connect(aliceToken, mux.Tunnel{Name: "cycle", Target: addr})
		if err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		if i%50 == 0 {
			if status, _ := testhttp.Get(t, c, h.URL("cycle", "/")); status != 200 {
				t.Fatalf("cycle %d: got %d", i, status)
			}
		}
		cl.Stop()
		if err := cl.Wait(t); err != nil {
			t.Fatalf("cycle %d: stop: %v", i, err)
		}
	}
	c.CloseIdleConnections()
	after := settledUsage(t, before)
	t.Logf("after %d cycles: goroutines %d -> %d, open files %d -> %d, heap %d KiB -> %d KiB",
		cycles, before.goroutines, after.goroutines, before.files, after.files, before.heap>>10, after.heap>>10)
	if after.goroutines > before.goroutines+2 || after.files > before.files+2 || after.heap > before.heap+4<<20 {
		t.Fatalf("resources grew over %d cycles: goroutines %d -> %d, open files %d -> %d, heap %d -> %d bytes",
			cycles, before.goroutines, after.goroutines, before.files, after.files, before.heap, after.heap)
	}
}

type usage struct {
	goroutines, files int
	heap              uint64
}

func measureUsage(t *testing.T) usage {
	t.Helper()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count open files: %v", err)
	}
	return usage{goroutines: runtime.NumGoroutine(), files: len(fds), heap: ms.HeapAlloc}
}

// settledUsage measures until the goroutine and file counts are at or
// below target's (zero target: until two readings agree), within 20 s.
// Connections end asynchronously on the server side, so the counts need a
// moment to come down; like goleak, it retries rather than sleeping once.
func settledUsage(t *testing.T, target usage) usage {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	prev := measureUsage(t)
	for wait := time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
		time.Sleep(wait)
		u := measureUsage(t)
		settled := u.goroutines == prev.goroutines && u.files == prev.files
		if target.goroutines > 0 {
			settled = u.goroutines <= target.goroutines && u.files <= target.files
		}
		if settled || time.Now().After(deadline) {
			return u
		}
		prev = u
	}
}
