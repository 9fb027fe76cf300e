package edge_test

import (
	"fmt"
	"testing"
	"time"

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
			if n := a.logs.count("repeated authentication failures"); n != 1 {
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
