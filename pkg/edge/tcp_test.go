package edge_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/internal/edgetest"
	"github.com/tunnelhq/tunnel/internal/testhttp"
	"github.com/tunnelhq/tunnel/internal/testnet"
	"github.com/tunnelhq/tunnel/internal/testwait"
	"github.com/tunnelhq/tunnel/pkg/edge"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/proto"
	"github.com/tunnelhq/tunnel/pkg/token"
)

// carolToken's tokens-file entry grants it "tunnel connect" to pi-ssh,
// whoever owns it (token add --connect pi-ssh), and no names.
const carolToken = "tk_carol"

// withCarol adds carol to the test edge's tokens.
func withCarol(t *testing.T) func(*edge.Config) {
	return func(c *edge.Config) {
		set, err := token.New([]token.Entry{
			{Label: "alice", SHA256: token.Hash(aliceToken), Names: []string{"*"}},
			{Label: "bob", SHA256: token.Hash(bobToken), Names: []string{"*"}},
			{Label: "carol", SHA256: token.Hash(carolToken), Connect: []string{"pi-*"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		c.Auth = set
	}
}

// tcpEcho is a local TCP service that echoes each connection until the
// peer half-closes, then half-closes its own side (testnet.Echo).
func tcpEcho(t *testing.T) string { return testnet.Echo(t) }

// tcpOwner runs a client holding the TCP tunnel name to target, with
// allow as its --allow-token list; its stream events arrive on the
// returned channel.
func tcpOwner(t *testing.T, h *harness, tok, name, target string, allow ...string) (*proto.Welcome, <-chan mux.StreamEvent) {
	t.Helper()
	events := make(chan mux.StreamEvent, 1024)
	ready := make(chan *proto.Welcome, 1)
	cfg := mux.ClientConfig{
		Config:   mux.DefaultConfig(),
		Server:   h.Addr,
		TLS:      &tls.Config{RootCAs: h.Pool},
		Token:    tok,
		Tunnels:  []mux.Tunnel{{Name: name, Target: target, Kind: proto.KindTCP, AllowTokens: allow}},
		OnReady:  func(w *proto.Welcome) { ready <- w },
		OnStream: func(ev mux.StreamEvent) { events <- ev },
	}
	cfg.Logger = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mux.Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		testwait.Recv(t, done, 20*time.Second)
	})
	select {
	case w := <-ready:
		return w, events
	case err := <-done:
		t.Fatalf("tcp owner: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("tcp owner did not connect within 20s")
	}
	return nil, nil
}

func connectCfg(h *harness, name, tok string) mux.ConnectConfig {
	return mux.ConnectConfig{Server: h.Addr, TLS: &tls.Config{RootCAs: h.Pool, ServerName: domain},
		Tunnel: name, Token: tok, Logger: zerolog.Nop()}
}

// echoThrough writes msg on c, half-closes and reads everything back.
func echoThrough(t *testing.T, c *tls.Conn, msg []byte) []byte {
	t.Helper()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		if err == nil {
			err = c.CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read the echo: %v", err)
	}
	if err := testwait.Recv(t, errc, 60*time.Second); err != nil {
		t.Fatalf("write: %v", err)
	}
	return got
}

func TestTCP_OwnerConnectsAndHalfCloseGoesEndToEnd(t *testing.T) {
	h := edgetest.Start(t, nil)
	w, events := tcpOwner(t, h, aliceToken, "pi-ssh", tcpEcho(t))
	if want := fmt.Sprintf("tcp://pi-ssh.%s:%d", domain, h.Port); w.Tunnels[0].URL != want || w.Tunnels[0].Kind != proto.KindTCP {
		t.Fatalf("granted: got %+v, want kind tcp and URL %s", w.Tunnels[0], want)
	}
	c, err := mux.Connect(context.Background(), connectCfg(h, "pi-ssh", aliceToken))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := bytes.Repeat([]byte("ssh bytes "), 100_000) // 1 MB, more than a stream window
	if got := echoThrough(t, c, msg); !bytes.Equal(got, msg) {
		t.Fatalf("echo after half-close: got %d bytes, want the %d sent", len(got), len(msg))
	}
	ev := testwait.Recv(t, events, 20*time.Second)
	if ev.Tunnel != "pi-ssh" || ev.Closed {
		t.Fatalf("first stream event: got %+v, want pi-ssh opening", ev)
	}
	// The connection counts in the tunnel's figures: in flight until the
	// edge has finished its copies, then as one of the tunnel's requests.
	var st edge.TunnelStatus
	for _, s := range h.Srv.Tunnels() {
		if s.Name == "pi-ssh" {
			st = s
		}
	}
	if st.Kind != proto.KindTCP || st.Requests+st.InFlight != 1 || st.URL != w.Tunnels[0].URL {
		t.Fatalf("status of pi-ssh: got %+v, want kind tcp, its URL, one connection", st)
	}
}

// TestTCP_RefusedVisitorsNeverReachTheOwner: every refused connect gets
// the same bad_token and opens no stream; the owner's client sees only the
// allowed visitors' streams.
func TestTCP_RefusedVisitorsNeverReachTheOwner(t *testing.T) {
	h := edgetest.Start(t, withCarol(t))
	allowed := "tk_guest_of_alice"
	_, events := tcpOwner(t, h, aliceToken, "pi-ssh", tcpEcho(t), allowed)
	if _, err := h.Connect(bobToken, mux.Tunnel{Name: "web", Target: tcpEcho(t)}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, tunnel, token string }{
		{"missing token", "pi-ssh", ""},
		{"unknown token", "pi-ssh", "tk_nobody"},
		{"another owner's token", "pi-ssh", bobToken},
		{"no such tunnel", "pi-db", aliceToken},
		{"an http tunnel", "web", bobToken},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := mux.Connect(context.Background(), connectCfg(h, tt.tunnel, tt.token))
			if err == nil {
				c.Close()
				t.Fatal("connected, want a refusal")
			}
			wantCode(t, err, proto.CodeBadToken)
		})
	}
	for _, tok := range []string{allowed, carolToken, aliceToken} {
		c, err := mux.Connect(context.Background(), connectCfg(h, "pi-ssh", tok))
		if err != nil {
			t.Fatalf("token %s: %v", tok, err)
		}
		if got := echoThrough(t, c, []byte("hi")); string(got) != "hi" {
			t.Fatalf("token %s: echo got %q", tok, got)
		}
		c.Close()
		// The stream this visitor opened is the next event: none came
		// from the refused ones before it.
		if ev := testwait.Recv(t, events, 20*time.Second); ev.Closed || ev.Err != nil {
			t.Fatalf("token %s: got event %+v, want its stream opening", tok, ev)
		}
		if ev := testwait.Recv(t, events, 20*time.Second); !ev.Closed {
			t.Fatalf("token %s: got event %+v, want its stream closing", tok, ev)
		}
	}
	select {
	case ev := <-events:
		t.Fatalf("unexpected stream event %+v", ev)
	default:
	}
}

func TestTCP_NotServedOverHTTP(t *testing.T) {
	h := edgetest.Start(t, nil)
	tcpOwner(t, h, aliceToken, "pi-ssh", tcpEcho(t))
	if status, _ := testhttp.Get(t, h.HTTPClient(false), h.URL("pi-ssh", "/")); status != http.StatusNotFound {
		t.Fatalf("HTTP request for a TCP tunnel: got %d, want 404", status)
	}
}

// TestTCP_ListenHundredConnections: "tunnel connect --listen" serving 100
// connections at once, each echoing 1 MiB, checked by hash.
func TestTCP_ListenHundredConnections(t *testing.T) {
	// 100 connections move 200 MiB through one session: a connect queues its
	// frames behind that bulk, so the handshakes get more than the default
	// 10 s on a loaded machine (-race, 2 cores).
	h := edgetest.Start(t, func(c *edge.Config) {
		c.MaxRequestsPerVisitor = 128
		c.Mux.HandshakeTimeout = 90 * time.Second
	})
	tcpOwner(t, h, aliceToken, "pi-db", tcpEcho(t))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	ccfg := connectCfg(h, "pi-db", aliceToken)
	ccfg.Timeout = 90 * time.Second
	ccfg.Logger = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	go func() { served <- mux.ServeConnect(ctx, ln, ccfg) }()
	defer func() {
		cancel()
		if err := testwait.Recv(t, served, 20*time.Second); err != nil {
			t.Errorf("ServeConnect: %v", err)
		}
	}()

	const conns, size = 100, 1 << 20
	errs := make(chan error, conns)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- echoOnce(ln.Addr().String(), size, i)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// echoOnce sends size random bytes through addr, half-closes, and checks
// the echo by hash.
func echoOnce(addr string, size, i int) error {
	c, err := net.DialTimeout("tcp", addr, 60*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(120 * time.Second))
	msg := make([]byte, size)
	rand.Read(msg)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	sum := sha256.New()
	n, err := io.Copy(sum, c)
	if err2 := <-werr; err == nil {
		err = err2
	}
	if err != nil {
		return fmt.Errorf("conn %d: %w", i, err)
	}
	if want := sha256.Sum256(msg); n != int64(size) || !bytes.Equal(sum.Sum(nil), want[:]) {
		return fmt.Errorf("conn %d: echo of %d bytes differs (got %d)", i, size, n)
	}
	return nil
}

// rawCopier copies raw, like the pipe, and reports each stream it is
// asked for.
type rawCopier struct{}

func (rawCopier) CopyIn(dst io.Writer, src io.Reader) (int64, error)  { return io.Copy(dst, src) }
func (rawCopier) CopyOut(dst io.Writer, src io.Reader) (int64, error) { return io.Copy(dst, src) }

// The client's copier (the request inspector) is asked only for the
// streams of its HTTP tunnels: a TCP tunnel's bytes in the same session are
// never handed to it.
func TestTCP_CopierOnlyForHTTPTunnels(t *testing.T) {
	h := edgetest.Start(t, nil)
	web := edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "web")
	}))
	asked := make(chan string, 16)
	ready := make(chan *proto.Welcome, 1)
	cfg := mux.ClientConfig{
		Config: mux.DefaultConfig(),
		Server: h.Addr,
		TLS:    &tls.Config{RootCAs: h.Pool},
		Token:  aliceToken,
		Tunnels: []mux.Tunnel{
			{Name: "web", Target: web},
			{Name: "pi-ssh", Target: tcpEcho(t), Kind: proto.KindTCP},
		},
		OnReady: func(w *proto.Welcome) { ready <- w },
		Copier: func(info mux.StreamInfo) mux.StreamCopier {
			asked <- info.Tunnel
			return rawCopier{}
		},
	}
	cfg.Logger = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mux.Run(ctx, cfg) }()
	defer func() {
		cancel()
		testwait.Recv(t, done, 20*time.Second)
	}()
	testwait.Recv(t, ready, 20*time.Second)

	c, err := mux.Connect(context.Background(), connectCfg(h, "pi-ssh", aliceToken))
	if err != nil {
		t.Fatal(err)
	}
	if got := echoThrough(t, c, []byte("ssh bytes")); string(got) != "ssh bytes" {
		t.Fatalf("tcp echo: got %q", got)
	}
	c.Close()
	resp, err := h.HTTPClient(false).Get(h.URL("web", "/"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "web" {
		t.Fatalf("http: got %q", body)
	}
	// The HTTP request's stream was handed to the copier; had the TCP
	// connection's been, its name would have come first.
	if name := testwait.Recv(t, asked, 5*time.Second); name != "web" {
		t.Fatalf("copier asked for %q's stream, want only web's", name)
	}
}
