// Package edgetest runs a real edge for tests: an edge.Server on
// 127.0.0.1:0 with an in-memory certificate, two tokens, tunnel clients
// against it and an HTTP client that reaches its tunnels. It exists because
// both the edge's own tests and the admin listener's (package admin), which
// shows what an edge is doing, need the same running edge; only tests
// import it.
package edgetest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/internal/testtls"
	"github.com/tunnelhq/tunnel/internal/testwait"
	"github.com/tunnelhq/tunnel/pkg/edge"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/proto"
	"github.com/tunnelhq/tunnel/pkg/token"
)

// Domain is the apex domain of every test edge.
const Domain = "tunnel.test"

// The tokens of the two owners every test edge knows, labelled "alice" and
// "bob", each allowed any name.
const (
	AliceToken = "tk_alice"
	BobToken   = "tk_bob"
)

// NewTLS makes an in-memory CA and a certificate for Domain, its wildcard
// and 127.0.0.1.
func NewTLS(t testing.TB) (*tls.Config, *x509.CertPool) {
	t.Helper()
	return testtls.New(t, Domain, "*."+Domain, "127.0.0.1")
}

// Edge is a running edge.Server; Start makes one.
type Edge struct {
	T    testing.TB
	Addr string         // host:port of its listener
	Port int            // the port of Addr
	Pool *x509.CertPool // trusts its certificate
	Srv  *edge.Server
}

// Start runs an edge.Server on 127.0.0.1:0 with two tokens, alice and bob,
// and anonymous clients allowed; mod, if not nil, changes the config first.
// The server stops when the test ends.
func Start(t testing.TB, mod func(*edge.Config)) *Edge {
	t.Helper()
	e, _ := StartStoppable(t, mod)
	return e
}

// StartStoppable is Start for a test that stops the server itself: stop
// ends Serve and returns its result, the same on every call. The test's
// end stops it too, if the test did not.
func StartStoppable(t testing.TB, mod func(*edge.Config)) (e *Edge, stop func() error) {
	t.Helper()
	tlsCfg, pool := NewTLS(t)
	tokens, err := token.New([]token.Entry{
		{Label: "alice", SHA256: token.Hash(AliceToken), Names: []string{"*"}},
		{Label: "bob", SHA256: token.Hash(BobToken), Names: []string{"*"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	cfg := edge.DefaultConfig()
	cfg.Logger = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	cfg.Domain = Domain
	cfg.TLSConfig = tlsCfg
	cfg.PublicPort = port
	cfg.Auth = tokens
	cfg.AllowAnonymous = true
	cfg.ShutdownGrace = 5 * time.Second
	if mod != nil {
		mod(&cfg)
	}
	srv, err := edge.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	var once sync.Once
	var result error
	stop = func() error {
		once.Do(func() {
			cancel()
			result = testwait.Recv(t, done, 20*time.Second)
		})
		return result
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &Edge{T: t, Addr: ln.Addr().String(), Port: port, Pool: pool, Srv: srv}, stop
}

// Client is a running tunnel client.
type Client struct {
	Welcome *proto.Welcome
	Done    chan struct{} // closed when Run has returned
	Err     error         // Run's result, once Done is closed
	Stop    context.CancelFunc
}

// Wait returns Run's result, failing the test if it takes over 20 s.
func (c *Client) Wait(t testing.TB) error {
	t.Helper()
	select {
	case <-c.Done:
		return c.Err
	case <-time.After(20 * time.Second):
		t.Fatal("client did not stop within 20s")
		return nil
	}
}

// Connect runs a tunnel client; it returns once the tunnels are up, or the
// handshake error.
func (e *Edge) Connect(token string, tunnels ...mux.Tunnel) (*Client, error) {
	e.T.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *proto.Welcome, 1)
	cfg := mux.ClientConfig{
		Config:  mux.DefaultConfig(),
		Server:  e.Addr,
		TLS:     &tls.Config{RootCAs: e.Pool},
		Token:   token,
		Tunnels: tunnels,
		OnReady: func(w *proto.Welcome) { ready <- w },
	}
	cfg.Logger = zerolog.New(zerolog.NewTestWriter(e.T)).Level(zerolog.WarnLevel)
	c := &Client{Done: make(chan struct{}), Stop: cancel}
	go func() {
		c.Err = mux.Run(ctx, cfg)
		close(c.Done)
	}()
	select {
	case w := <-ready:
		c.Welcome = w
		e.T.Cleanup(func() {
			cancel()
			c.Wait(e.T)
		})
		return c, nil
	case <-c.Done:
		cancel()
		return nil, c.Err
	case <-time.After(20 * time.Second):
		cancel()
		e.T.Fatal("client did not connect within 20s")
		return nil, nil
	}
}

// HTTPClient dials the edge for any host, as DNS for *.tunnel.test would.
func (e *Edge) HTTPClient(http2 bool) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, e.Addr)
		},
		TLSClientConfig:   &tls.Config{RootCAs: e.Pool},
		ForceAttemptHTTP2: http2,
		MaxConnsPerHost:   0,
	}
	if !http2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	e.T.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

// URL is the public URL of path on the tunnel name.
func (e *Edge) URL(name, path string) string {
	return fmt.Sprintf("https://%s.%s:%d%s", name, Domain, e.Port, path)
}

// Backend serves handler on 127.0.0.1 until the test ends and returns its
// address: the local service a tunnel points at.
func Backend(t testing.TB, handler http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}
