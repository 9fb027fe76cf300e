package peer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/internal/testnet"
	"github.com/tunnelhq/tunnel/internal/testtls"
	"github.com/tunnelhq/tunnel/internal/testwait"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// clientSession connects a real tunnel client (mux.Run) for the tunnels
// names -> local service addresses, through a TLS listener the test serves
// as tunneld would, and returns tunneld's end of the session.
func clientSession(t *testing.T, targets map[string]string) *mux.ServerSession {
	t.Helper()
	srvTLS, pool := testtls.New(t, "127.0.0.1")
	srvTLS.NextProtos = []string{proto.ALPN}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cfg := mux.DefaultConfig()
	var tunnels []mux.Tunnel
	for name, target := range targets {
		tunnels = append(tunnels, mux.Tunnel{Name: name, Target: target})
	}
	ran := make(chan error, 1)
	go func() {
		ran <- mux.Run(ctx, mux.ClientConfig{
			Config: cfg, Server: ln.Addr().String(), Tunnels: tunnels,
			TLS: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"},
		})
	}()
	conn, err := ln.Accept()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	ss, h, err := mux.Server(ctx, conn, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	w := &proto.Welcome{SessionID: "s1"}
	for _, tr := range h.Tunnels {
		w.Tunnels = append(w.Tunnels, proto.TunnelInfo{Name: tr.Name, Kind: tr.Kind, URL: "https://" + tr.Name + ".example.com"})
	}
	if err := ss.Accept(w); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		ss.Close()
		testwait.Recv(t, ran, 10*time.Second)
	})
	return ss
}

// TestLinks_ThroughAClientSession: the path of a forwarded request as
// tunneld will run it: the forwarding node's stream, the node link, the
// owning node's session with a real tunnel client, the client's local
// service. Bytes, half-close and CloseOnFIN pass all of it, and a session
// fenced by its ID refuses a stale one.
func TestLinks_ThroughAClientSession(t *testing.T) {
	echo := testnet.Echo(t)
	counter := testnet.Serve(t, func(c net.Conn) {
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		fmt.Fprintf(c, "read %d bytes", n)
	})
	ended := make(chan struct{}, 1)
	endless := testnet.Serve(t, func(c net.Conn) {
		defer c.Close()
		buf := make([]byte, 32<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				ended <- struct{}{}
				return
			}
		}
	})
	ss := clientSession(t, map[string]string{"echo": echo, "count": counter, "dl": endless})
	b := startNode(t, "b", func(ctx context.Context, req *Request) (net.Conn, error) {
		if req.Session != "s1" {
			return nil, ErrWrongSession
		}
		return ss.Open(ctx, &req.Header)
	}, nil)
	a := startNode(t, "a", nil, nil)
	open := func(tunnel string, closeOnFIN bool) net.Conn {
		t.Helper()
		conn, err := a.Open(context.Background(), "b", b.addr, &Request{Header: proto.StreamHeader{Tunnel: tunnel, CloseOnFIN: closeOnFIN}, Session: "s1"})
		if err != nil {
			t.Fatalf("open %s: %v", tunnel, err)
		}
		return conn
	}

	echoRoundTrip(t, open("echo", false), 2<<20, 5)

	conn := open("count", false)
	io.WriteString(conn, "hello")
	conn.Close()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if got, err := io.ReadAll(conn); err != nil || string(got) != "read 5 bytes" {
		t.Errorf("half-close through the client: got %q, %v, want %q", got, err, "read 5 bytes")
	}

	conn = open("dl", true)
	if _, err := io.ReadFull(conn, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	testwait.Recv(t, ended, 10*time.Second)

	// Forward, as the cluster registry calls it, is the same Open.
	conn, err := a.Forward(context.Background(), "b", b.addr, "s1", &proto.StreamHeader{Tunnel: "echo"})
	if err != nil {
		t.Fatal(err)
	}
	echoRoundTrip(t, conn, 1000, 7)

	_, err = a.Open(context.Background(), "b", b.addr, &Request{Header: proto.StreamHeader{Tunnel: "echo"}, Session: "s0"})
	if !errors.Is(err, ErrWrongSession) {
		t.Errorf("stale session: got %v, want ErrWrongSession", err)
	}
	_, err = a.Open(context.Background(), "b", b.addr, &Request{Header: proto.StreamHeader{Tunnel: "nope"}, Session: "s1"})
	var perr *proto.Error
	if !errors.As(err, &perr) {
		t.Errorf("a tunnel the client does not serve: got %v, want the client's *proto.Error", err)
	}
}

// forwarder is the cluster registry's interface for node links
// (edge.Forwarder, on branch i-cluster), which this package may not import:
// *Links must keep satisfying it.
type forwarder interface {
	Forward(ctx context.Context, node, addr, session string, h *proto.StreamHeader) (net.Conn, error)
}

var _ forwarder = (*Links)(nil)
