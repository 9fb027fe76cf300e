package edge_test

import (
	"crypto/tls"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/internal/testwait"
	"github.com/tunnelhq/tunnel/pkg/edge"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// connectFrom sends one raw frame from the attacker's address on a
// connection with the connect ALPN and returns the server's answer.
func (a *abuse) connectFrom(t *testing.T, frame []byte) proto.Message {
	t.Helper()
	c := a.tlsFrom(t, proto.ConnectALPN, domain)
	c.SetDeadline(time.Now().Add(30 * time.Second))
	c.Write(frame)
	m, err := proto.ReadFrame(c)
	if err != nil {
		t.Fatalf("read the answer: %v", err)
	}
	wantClosed(t, c)
	return m
}

func frameOf(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.AppendFrame(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// connectHostileRows attack the connect ALPN, a TCP tunnel's visitor side:
// no row may reach the tunnel's client, and each ends with a clear answer
// or a closed connection within the handshake bounds.
func connectHostileRows() []hostileRow {
	return []hostileRow{
		{"connect then silence", func(c *edge.Config) {
			c.Mux.HandshakeTimeout = time.Second
			c.AuthFailMaxDelay = 500 * time.Millisecond
		}, func(t *testing.T, a *abuse) {
			c := a.tlsFrom(t, proto.ConnectALPN, domain)
			a.canary(t)
			wantClosed(t, c)
		}},
		{"connect oversized frame", nil, func(t *testing.T, a *abuse) {
			wantCode(t, a.connectFrom(t, rawFrame(9, 1<<20, nil)), proto.CodeBadRequest)
		}},
		{"connect with a hello instead", nil, func(t *testing.T, a *abuse) {
			wantCode(t, a.connectFrom(t, frameOf(t, helloFor(aliceToken, "x"))), proto.CodeBadRequest)
		}},
		{"connect malformed json", nil, func(t *testing.T, a *abuse) {
			wantCode(t, a.connectFrom(t, rawFrame(9, 12, []byte(`{"tunnel":1}`))), proto.CodeBadRequest)
		}},
		{"connect with a wrong version", nil, func(t *testing.T, a *abuse) {
			m := &proto.Connect{Version: proto.Version + 1, Tunnel: "canary", Token: aliceToken}
			wantCode(t, a.connectFrom(t, frameOf(t, m)), proto.CodeUnsupportedVersion)
		}},
		{"connect to an http tunnel with its owner's token", nil, func(t *testing.T, a *abuse) {
			m := &proto.Connect{Version: proto.Version, Tunnel: "canary", Token: aliceToken}
			wantCode(t, a.connectFrom(t, frameOf(t, m)), proto.CodeBadToken)
		}},
		{"50 wrong connect tokens from one ip", func(c *edge.Config) {
			c.AuthFailDelay = time.Millisecond
			c.AuthFailMaxDelay = 20 * time.Millisecond
		}, func(t *testing.T, a *abuse) {
			_, events := tcpOwner(t, a.harness, bobToken, "pi-ssh", tcpEcho(t))
			for i := range 50 {
				m := &proto.Connect{Version: proto.Version, Tunnel: "pi-ssh", Token: fmt.Sprintf("tk_guess_%d", i)}
				wantCode(t, a.connectFrom(t, frameOf(t, m)), proto.CodeBadToken)
			}
			if n := a.logs.Count("repeated authentication failures"); n != 1 {
				t.Errorf("burst logged %d times, want once", n)
			}
			select {
			case ev := <-events:
				t.Fatalf("a refused connect reached the owner: %+v", ev)
			default:
			}
			// The owner still connects, from its own address.
			c, err := mux.Connect(t.Context(), connectCfg(a.harness, "pi-ssh", bobToken))
			if err != nil {
				t.Fatalf("owner after the burst: %v", err)
			}
			c.Close()
		}},
		{"tls tunnel whose client is away", func(c *edge.Config) {
			c.OfflineWait = 100 * time.Millisecond
			c.NameHold = time.Minute
		}, func(t *testing.T, a *abuse) {
			addr, visitorTLS := localHTTPS(t, "away."+domain)
			cl, err := a.Connect(bobToken, mux.Tunnel{Name: "away", Target: addr, Kind: proto.KindTLS})
			if err != nil {
				t.Fatal(err)
			}
			cl.Stop()
			cl.Wait(t)
			c := a.dialFrom(t)
			cfg := visitorTLS.Clone()
			conn := tlsClient(c, cfg)
			if err := conn.Handshake(); err == nil {
				t.Fatal("handshake for an away TLS tunnel completed")
			}
		}},
	}
}

// segmentConn writes every byte in a TCP segment of its own (Go sets
// TCP_NODELAY), as a hostile or broken client may split its ClientHello.
type segmentConn struct{ net.Conn }

func (c segmentConn) Write(p []byte) (int, error) {
	for i := range p {
		if _, err := c.Conn.Write(p[i : i+1]); err != nil {
			return i, err
		}
	}
	return len(p), nil
}

// passthroughHostileRows attack the SNI reader in front of every handshake.
func passthroughHostileRows() []hostileRow {
	return []hostileRow{
		{"client hello in one-byte segments", nil, func(t *testing.T, a *abuse) {
			addr, visitorTLS := localHTTPS(t, "split."+domain)
			if _, err := a.Connect(bobToken, mux.Tunnel{Name: "split", Target: addr, Kind: proto.KindTLS}); err != nil {
				t.Fatal(err)
			}
			// To the TLS tunnel: the service's own certificate.
			c := tlsClient(segmentConn{a.dialFrom(t)}, visitorTLS)
			if err := c.Handshake(); err != nil {
				t.Fatalf("split hello to a TLS tunnel: %v", err)
			}
			c.Close()
			// To the edge's own TLS: its certificate, as before.
			c = tlsClient(segmentConn{a.dialFrom(t)}, &tls.Config{RootCAs: a.Pool, ServerName: "canary." + domain})
			if err := c.Handshake(); err != nil {
				t.Fatalf("split hello to the edge: %v", err)
			}
			c.Close()
		}},
		{"oversized client hello", nil, func(t *testing.T, a *abuse) {
			c := a.dialFrom(t)
			// A handshake record announcing a ClientHello of 16 MiB, then
			// records of zeros: refused once past sni.MaxHelloSize.
			c.Write([]byte{22, 3, 1, 0x40, 0, 1, 0xff, 0xff, 0xff})
			wrote := make(chan struct{})
			go func() {
				defer close(wrote)
				rec := append([]byte{22, 3, 1, 0x40, 0}, make([]byte, 0x4000)...)
				for range 16 {
					if _, err := c.Write(rec); err != nil {
						return
					}
				}
			}()
			wantClosed(t, c)
			c.Close() // ends the writes if the server's close has not yet
			testwait.Recv(t, wrote, 30*time.Second)
		}},
		{"truncated client hello", func(c *edge.Config) { c.TLSHandshakeTimeout = time.Second }, func(t *testing.T, a *abuse) {
			c := a.dialFrom(t)
			c.Write([]byte{22, 3, 1, 0, 200, 1, 0, 0, 196, 3, 3}) // then nothing
			a.canary(t)
			wantClosed(t, c)
		}},
		{"client hello without sni", nil, func(t *testing.T, a *abuse) {
			c := tlsClient(a.dialFrom(t), &tls.Config{RootCAs: a.Pool, ServerName: "127.0.0.1"}) // an IP: no SNI sent
			if err := c.Handshake(); err != nil {
				t.Fatalf("hello without SNI: %v, want the edge's certificate for 127.0.0.1", err)
			}
			c.Close()
		}},
	}
}
