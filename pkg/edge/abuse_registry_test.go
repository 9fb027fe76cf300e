package edge_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/internal/edgetest"
	"github.com/tunnelhq/tunnel/internal/testhttp"
	"github.com/tunnelhq/tunnel/internal/testwait"
	"github.com/tunnelhq/tunnel/pkg/edge"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// registryHostileRows attack the name table, held names and ACME orders.
func registryHostileRows() []hostileRow {
	return []hostileRow{
		churnRow("held names of one token stay bounded", bobToken),
		churnRow("held names of anonymous clients from one address stay bounded", ""),
		{"anonymous clients behind one address cannot take each other's names", nil, func(t *testing.T, a *abuse) {
			// The victim is a real client, anonymous, from 127.0.0.1; the
			// attacker shares its address (one NAT) and asks for its name.
			victim, err := a.Connect("", mux.Tunnel{Name: "natted", Target: echoBackend(t)})
			if err != nil {
				t.Fatal(err)
			}
			_, m := a.helloAt(t, "127.0.0.1", helloFor("", "natted"))
			wantCode(t, m, proto.CodeNameTaken)
			select {
			case <-victim.Done:
				t.Fatalf("the victim's session ended: %v", victim.Err)
			default:
			}
			if status, body := testhttp.Get(t, a.HTTPClient(false), a.URL("natted", "/")); status != 200 || body == "" {
				t.Fatalf("the victim's tunnel: got %d %q, want 200", status, body)
			}
		}},
		ownerKeyRow(),
	}
}

// ownerKeyRow: an anonymous client's names follow its owner key. The same
// key gets them back from another address (an IPv6 privacy address, a new
// NAT mapping); another key, or none, from the same address cannot take
// them, live or on hold, and a client without a key cannot lose its names
// to anyone either.
func ownerKeyRow() hostileRow {
	gone := make(chan struct{}, 8)
	return hostileRow{"anonymous names follow the owner key, not the address", func(c *edge.Config) { disconnects(c, gone) },
		func(t *testing.T, a *abuse) {
			const key, other = "k1-0123456789abcdef", "k2-0123456789abcdef"
			withKey := func(key, name string) *proto.Hello {
				h := helloFor("", name)
				h.OwnerKey = key
				return h
			}
			first, m := a.helloAt(t, "127.0.0.1", withKey(key, "roamer"))
			if _, ok := m.(*proto.Welcome); !ok {
				t.Fatalf("first connect: got %v, want Welcome", m)
			}
			for _, h := range []*proto.Hello{withKey(other, "roamer"), helloFor("", "roamer")} {
				_, m := a.helloAt(t, "127.0.0.1", h)
				wantCode(t, m, proto.CodeNameTaken)
			}
			if first.IsClosed() {
				t.Fatal("the first client's session was closed by another's claim")
			}
			first.Close()
			testwait.Recv(t, gone, 20*time.Second)
			for _, h := range []*proto.Hello{withKey(other, "roamer"), helloFor("", "roamer")} {
				_, m := a.helloFrom(t, h)
				wantCode(t, m, proto.CodeNameTaken)
			}
			if _, m := a.helloFrom(t, withKey(key, "roamer")); m == nil {
				t.Fatal("no answer")
			} else if _, ok := m.(*proto.Welcome); !ok {
				t.Fatalf("same key from another address: got %v, want Welcome", m)
			}

			// Without a key the names are the session's own.
			keyless, m := a.helloAt(t, "127.0.0.1", helloFor("", "keyless"))
			if _, ok := m.(*proto.Welcome); !ok {
				t.Fatalf("keyless: got %v, want Welcome", m)
			}
			_, m = a.helloAt(t, "127.0.0.1", helloFor("", "keyless"))
			wantCode(t, m, proto.CodeNameTaken)
			if keyless.IsClosed() {
				t.Fatal("a keyless client's session was closed by another's claim")
			}
		}}
}

// TestRunForever_AnonymousKeepsItsNameAcrossALostLink: the real client
// sends the same owner key on every reconnect, so an anonymous client gets
// its name back as a token holder does.
func TestRunForever_AnonymousKeepsItsNameAcrossALostLink(t *testing.T) {
	h := edgetest.Start(t, nil)
	link := newCutter(t, h.Addr)
	addr := edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "anon") }))
	ready, _ := runForever(t, h, link.ln.Addr().String(), "", zerolog.NewTestWriter(t), mux.Tunnel{Name: "anon-named", Target: addr}, mux.Tunnel{Target: addr})
	first := testwait.Recv(t, ready, 20*time.Second)
	for i := range 2 {
		link.cut()
		again := testwait.Recv(t, ready, 20*time.Second)
		for j := range first.Tunnels {
			if again.Tunnels[j].URL != first.Tunnels[j].URL {
				t.Fatalf("reconnect %d: got URL %s, want the same %s", i, again.Tunnels[j].URL, first.Tunnels[j].URL)
			}
		}
	}
	c := h.HTTPClient(false)
	defer c.CloseIdleConnections()
	if status, body := testhttp.Get(t, c, h.URL("anon-named", "/")); status != 200 || body != "anon" {
		t.Fatalf("after the reconnects: got %d %q", status, body)
	}
}

// disconnects is a row's hook on the edge's log: one value per session the
// edge has finished with (its names released), whether it ended after its
// Welcome was sent or, hanging up at once, while it was being sent.
func disconnects(c *edge.Config, ch chan<- struct{}) {
	c.Logger = c.Logger.Hook(zerolog.HookFunc(func(_ *zerolog.Event, _ zerolog.Level, msg string) {
		if msg == "tunnel disconnected" || msg == "client left during handshake" {
			ch <- struct{}{}
		}
	}))
}

// churnRow connects and disconnects 20 times with a fresh name each time,
// as token (or anonymously from the attacker's address), with a tunnel
// limit of 4. Only the 4 most recent names may stay on hold: a visitor of
// an older one finds no tunnel (404), of a held one "offline" (502).
func churnRow(name, token string) hostileRow {
	const limit, rounds = 4, 20
	gone := make(chan struct{}, rounds+8)
	return hostileRow{name, func(c *edge.Config) {
		c.MaxTunnelsPerToken = limit
		c.OfflineWait = 0
		disconnects(c, gone)
	}, func(t *testing.T, a *abuse) {
		for i := range rounds {
			sess, m := a.helloFrom(t, helloFor(token, fmt.Sprintf("churn-%d", i)))
			if _, ok := m.(*proto.Welcome); !ok {
				t.Fatalf("round %d: got %v, want Welcome", i, m)
			}
			sess.Close()
			select {
			case <-gone:
			case <-time.After(20 * time.Second):
				t.Fatalf("round %d: the edge did not release the session within 20s", i)
			}
		}
		c := a.HTTPClient(false)
		for i := range rounds {
			want := http.StatusNotFound
			if i >= rounds-limit {
				want = http.StatusBadGateway
			}
			if status, body := testhttp.Get(t, c, a.URL(fmt.Sprintf("churn-%d", i), "/")); status != want {
				t.Errorf("churn-%d: got %d %q, want %d", i, status, body, want)
			}
		}
	}}
}

// helloAt is helloFrom from another local address.
func (a *abuse) helloAt(t *testing.T, ip string, hello *proto.Hello) (*yamux.Session, proto.Message) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	raw, err := d.Dial("tcp", a.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	conn := tls.Client(raw, &tls.Config{RootCAs: a.Pool, ServerName: domain, NextProtos: []string{proto.ALPN}})
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if err := conn.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	conn.SetDeadline(time.Time{})
	sess, st := controlStreamOn(t, conn)
	return sess, sendHello(t, st, hello)
}
