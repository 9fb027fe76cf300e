package mux

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tunnelhq/tunnel/internal/testnet"
	"github.com/tunnelhq/tunnel/internal/testtls"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// acceptingServer is a tunneld stand-in on loopback that welcomes every
// session, counting the TCP connections it accepted.
func acceptingServer(t *testing.T, srvTLS *tls.Config) (addr string, conns *atomic.Int64) {
	t.Helper()
	conns = new(atomic.Int64)
	addr = testnet.Serve(t, func(raw net.Conn) {
		conns.Add(1)
		c := tls.Server(raw, srvTLS)
		s, h, err := Server(context.Background(), c, testConfig(t))
		if err != nil {
			c.Close()
			return
		}
		s.Accept(welcome(h))
		<-s.Done()
	})
	return addr, conns
}

// TestRun_SeveralServersShareTheClients gives Run the nodes of a cluster,
// one of them down: every connect succeeds, and the live nodes each get
// some of them (in a random order, 40 connects all going to one of two
// nodes has odds of 2^-39).
func TestRun_SeveralServersShareTheClients(t *testing.T) {
	srvTLS, cliTLS := newTestTLS(t)
	a, aConns := acceptingServer(t, srvTLS)
	b, bConns := acceptingServer(t, srvTLS)
	cfg := ClientConfig{Config: testConfig(t), Server: a + ", " + testnet.ClosedAddr(t) + "," + b, TLS: cliTLS,
		Tunnels: []Tunnel{{Name: "wiki", Target: "127.0.0.1:1"}}}
	const connects = 40
	for range connects {
		if err := runUntilWelcome(cfg); err != nil {
			t.Fatalf("Run: %v", err)
		}
	}
	if na, nb := aConns.Load(), bConns.Load(); na+nb != connects || na == 0 || nb == 0 {
		t.Fatalf("connections: %d to one node, %d to the other; want %d shared by both", na, nb, connects)
	}
}

// TestRun_AllServersDown names every address tried in one error.
func TestRun_AllServersDown(t *testing.T) {
	_, cliTLS := newTestTLS(t)
	d1, d2 := testnet.ClosedAddr(t), testnet.ClosedAddr(t)
	cfg := ClientConfig{Config: testConfig(t), Server: d1 + "," + d2, TLS: cliTLS,
		Tunnels: []Tunnel{{Name: "wiki", Target: "127.0.0.1:1"}}}
	err := Run(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "2 tried") || !strings.Contains(err.Error(), d1) || !strings.Contains(err.Error(), d2) {
		t.Fatalf("Run: got %v, want an error naming both addresses", err)
	}
	if IsPermanent(err) {
		t.Fatalf("Run: %v is permanent; nodes that are down may come back", err)
	}
}

// TestRun_CertificateErrorStopsTheDial: nodes of one deployment share
// their trust, so a certificate the client refuses ends the dial at once
// instead of trying (and hiding the fault behind) the other nodes.
func TestRun_CertificateErrorStopsTheDial(t *testing.T) {
	srvTLS, _ := newTestTLS(t)
	_, otherCA := testtls.New(t, "127.0.0.1") // the client trusts another CA
	a, aConns := acceptingServer(t, srvTLS)
	b, bConns := acceptingServer(t, srvTLS)
	cfg := ClientConfig{Config: testConfig(t), Server: a + "," + b,
		TLS:     &tls.Config{RootCAs: otherCA, ServerName: "127.0.0.1"},
		Tunnels: []Tunnel{{Name: "wiki", Target: "127.0.0.1:1"}}}
	err := Run(context.Background(), cfg)
	var cerr *CertificateError
	if !errors.As(err, &cerr) {
		t.Fatalf("Run: got %v, want a *CertificateError", err)
	}
	if n := aConns.Load() + bConns.Load(); n != 1 {
		t.Fatalf("%d nodes dialled, want 1", n)
	}
}

func TestValidServers(t *testing.T) {
	for _, tt := range []struct {
		in string
		ok bool
	}{
		{"a:443", true},
		{"a:443,b:443", true},
		{" a:443 , b:443 ,", true},
		{"", false},
		{",", false},
		{"a:443,b", false},
	} {
		if err := validServers(tt.in); (err == nil) != tt.ok {
			t.Errorf("validServers(%q) = %v, want ok %v", tt.in, err, tt.ok)
		}
	}
}

// runUntilWelcome runs a client with cfg until its first Welcome and
// returns Run's result: nil once it was served, or why it was refused.
func runUntilWelcome(cfg ClientConfig) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg.OnReady = func(*proto.Welcome) { cancel() }
	return Run(ctx, cfg)
}
