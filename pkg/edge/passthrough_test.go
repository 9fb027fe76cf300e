package edge_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/internal/edgetest"
	"github.com/tunnelhq/tunnel/internal/testtls"
	"github.com/tunnelhq/tunnel/internal/testwait"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// localHTTPS is a local HTTPS service with a certificate for host from a
// CA of its own, which the edge knows nothing of; it returns its address
// and that CA's pool.
func localHTTPS(t *testing.T, host string) (string, *tls.Config) {
	t.Helper()
	ca := testtls.NewCA(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", ca.ServerConfig(t, host))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "end to end %s", r.TLS.ServerName)
	}), ErrorLog: nil}
	serveUntilCleanup(t, ln, srv)
	return ln.Addr().String(), &tls.Config{RootCAs: ca.Pool(), ServerName: host}
}

func tlsOwner(t *testing.T, h *harness, name, target string) *proto.Welcome {
	t.Helper()
	c, err := h.Connect(aliceToken, mux.Tunnel{Name: name, Target: target, Kind: proto.KindTLS})
	if err != nil {
		t.Fatal(err)
	}
	return c.Welcome
}

// TestTLS_PassthroughVerifiedByTheLocalCA: a visitor that trusts only the
// local service's CA completes its handshake through the edge, so the
// edge did not terminate TLS; an HTTP request goes through.
func TestTLS_PassthroughVerifiedByTheLocalCA(t *testing.T) {
	h := edgetest.Start(t, nil)
	host := "secure." + domain
	addr, visitorTLS := localHTTPS(t, host)
	w := tlsOwner(t, h, "secure", addr)
	if want := fmt.Sprintf("tls://%s:%d", host, h.Port); w.Tunnels[0].URL != want {
		t.Errorf("URL: got %q, want %q", w.Tunnels[0].URL, want)
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, h.Addr)
		},
		TLSClientConfig: visitorTLS,
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Get(fmt.Sprintf("https://%s:%d/", host, h.Port))
	if err != nil {
		t.Fatalf("GET through the passthrough tunnel: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "end to end " + host; string(body) != want {
		t.Fatalf("got %q, want %q", body, want)
	}
	// The edge's own certificate is not for this name's visitors: the
	// apex and HTTP tunnels keep it.
	if _, err := tls.Dial("tcp", h.Addr, &tls.Config{RootCAs: h.Pool, ServerName: host}); err == nil {
		t.Fatal("a visitor trusting only the edge's CA completed a handshake for a TLS tunnel: the edge terminated it")
	}
}

// TestTLS_PassthroughCarriesHalfClose: a raw TLS echo service behind a TLS
// tunnel gets the visitor's close_notify and still answers in full.
func TestTLS_PassthroughCarriesHalfClose(t *testing.T) {
	h := edgetest.Start(t, nil)
	host := "echo." + domain
	ca := testtls.NewCA(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", ca.ServerConfig(t, host))
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		b, err := io.ReadAll(c) // until the visitor's close_notify
		if err == nil {
			_, err = fmt.Fprintf(c, "got %d bytes", len(b))
		}
		served <- err
	}()
	t.Cleanup(func() { ln.Close() })
	tlsOwner(t, h, "echo", ln.Addr().String())
	c, err := tls.Dial("tcp", h.Addr, &tls.Config{RootCAs: ca.Pool(), ServerName: host})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(c, "hello, only the service reads this")
	c.CloseWrite()
	reply, err := io.ReadAll(bufio.NewReader(c))
	if err != nil || string(reply) != "got 34 bytes" {
		t.Fatalf("reply after half-close: got %q, %v; want %q", reply, err, "got 34 bytes")
	}
	if err := testwait.Recv(t, served, 30*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestTLS_HTTPTunnelsUnchanged: with a TLS tunnel up, the edge's own
// HTTPS for an HTTP tunnel, and a TLS tunnel's name over the edge's HTTPS,
// behave as before (served; 404).
func TestTLS_HTTPTunnelsUnchanged(t *testing.T) {
	h := edgetest.Start(t, nil)
	addr, _ := localHTTPS(t, "secure."+domain)
	tlsOwner(t, h, "secure", addr)
	web := edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "web") }))
	if _, err := h.Connect(bobToken, mux.Tunnel{Name: "web", Target: web}); err != nil {
		t.Fatal(err)
	}
	hc := h.HTTPClient(false)
	resp, err := hc.Get(h.URL("web", "/"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "web" {
		t.Fatalf("HTTP tunnel beside a TLS one: got %q", body)
	}
}

// tlsClient starts a TLS client on c with a 30 s deadline.
func tlsClient(c net.Conn, cfg *tls.Config) *tls.Conn {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return tls.Client(c, cfg)
}
