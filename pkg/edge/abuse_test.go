package edge_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/rs/zerolog"
	"golang.org/x/net/websocket"

	"github.com/tunnelhq/tunnel/internal/edgetest"
	"github.com/tunnelhq/tunnel/internal/testhttp"
	"github.com/tunnelhq/tunnel/internal/testlog"
	"github.com/tunnelhq/tunnel/internal/testwait"
	"github.com/tunnelhq/tunnel/pkg/edge"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/name"
	"github.com/tunnelhq/tunnel/pkg/proto"
	"github.com/tunnelhq/tunnel/pkg/token"
)

// attacker is the source address of every hostile row; the canary visitor
// and the healthy tunnel use 127.0.0.1, so per-address limits hit only the
// attacker, as they would on the internet.
const attacker = "127.0.0.2"

// abuse is one running edge with a healthy tunnel, "canary", whose backend
// checks that every request it gets was meant for it.
type abuse struct {
	*harness
	logs      *testlog.Buffer
	wrongHost atomic.Value // string: a Host the canary backend should never see
}

func startAbuse(t *testing.T, mod func(*edge.Config)) *abuse {
	t.Helper()
	a := &abuse{logs: &testlog.Buffer{}}
	a.harness = edgetest.Start(t, func(c *edge.Config) {
		c.Logger = zerolog.New(zerolog.MultiLevelWriter(zerolog.NewTestWriter(t), a.logs)).Level(zerolog.InfoLevel)
		if mod != nil {
			mod(c)
		}
	})
	want := fmt.Sprintf("canary.%s:%d", domain, a.Port)
	addr := edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host != want {
			a.wrongHost.Store(r.Host)
		}
		io.WriteString(w, "canary ok")
	}))
	if _, err := a.Connect(aliceToken, mux.Tunnel{Name: "canary", Target: addr}); err != nil {
		t.Fatal(err)
	}
	return a
}

// canary fetches through the healthy tunnel on a new connection from
// 127.0.0.1 and fails the test unless it is served.
func (a *abuse) canary(t *testing.T) {
	t.Helper()
	c := a.HTTPClient(false)
	c.Transport.(*http.Transport).DisableKeepAlives = true
	if status, body := testhttp.Get(t, c, a.URL("canary", "/")); status != 200 || body != "canary ok" {
		t.Fatalf("healthy tunnel: got %d %q, want 200 %q", status, body, "canary ok")
	}
	if h, _ := a.wrongHost.Load().(string); h != "" {
		t.Fatalf("the canary's backend got a request for Host %q", h)
	}
}

// dialFrom opens a TCP connection to the edge from the attacker's address.
func (a *abuse) dialFrom(t *testing.T) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(attacker)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", a.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (a *abuse) tlsFrom(t *testing.T, alpn, sni string) *tls.Conn {
	t.Helper()
	c := tls.Client(a.dialFrom(t), &tls.Config{RootCAs: a.Pool, ServerName: sni, NextProtos: []string{alpn}})
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if err := c.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	c.SetDeadline(time.Time{})
	return c
}

// controlStream is a hand-made client session from the attacker's address:
// TLS with the tunnel ALPN, yamux, and the control stream opened.
func (a *abuse) controlStream(t *testing.T) (*yamux.Session, *yamux.Stream) {
	t.Helper()
	return controlStreamOn(t, a.tlsFrom(t, proto.ALPN, domain))
}

// controlStreamOn starts a hand-made client session on conn, a TLS
// connection with the tunnel ALPN, and opens its control stream.
func controlStreamOn(t *testing.T, conn net.Conn) (*yamux.Session, *yamux.Stream) {
	t.Helper()
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	sess, err := yamux.Client(conn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	st, err := sess.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	st.SetDeadline(time.Now().Add(30 * time.Second))
	return sess, st
}

// helloFrom sends one Hello from the attacker's address and returns the
// server's answer.
func (a *abuse) helloFrom(t *testing.T, hello *proto.Hello) (*yamux.Session, proto.Message) {
	t.Helper()
	sess, st := a.controlStream(t)
	return sess, sendHello(t, st, hello)
}

// sendHello writes hello on the control stream st and returns the
// server's answer.
func sendHello(t *testing.T, st net.Conn, hello *proto.Hello) proto.Message {
	t.Helper()
	if err := proto.WriteFrame(st, hello); err != nil {
		t.Fatal(err)
	}
	m, err := proto.ReadFrame(st)
	if err != nil {
		t.Fatalf("read answer to hello: %v", err)
	}
	return m
}

func wantCode(t *testing.T, m any, code proto.ErrorCode) {
	t.Helper()
	var perr *proto.Error
	switch v := m.(type) {
	case *proto.Error:
		perr = v
	case error:
		errors.As(v, &perr)
	}
	if perr == nil || perr.Code != code {
		t.Fatalf("got %v, want an Error with code %s", m, code)
	}
	if perr.Message == "" {
		t.Errorf("refusal %s has no message", perr.Code)
	}
}

func helloFor(token string, names ...string) *proto.Hello {
	h := &proto.Hello{Version: proto.Version, Token: token}
	for _, n := range names {
		h.Tunnels = append(h.Tunnels, proto.TunnelRequest{Name: n, Kind: proto.KindHTTP})
	}
	return h
}

// rawFrame writes a frame header by hand, for frames WriteFrame refuses.
func rawFrame(typ byte, length uint32, payload []byte) []byte {
	b := make([]byte, 5, 5+len(payload))
	b[0] = typ
	binary.BigEndian.PutUint32(b[1:], length)
	return append(b, payload...)
}

// wantClosed reads c until it ends and fails if the server has not closed
// it within a generous bound (our read deadline).
func wantClosed(t *testing.T, c net.Conn) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server kept the connection open (read %d bytes)", len(b))
	}
	return b
}

// visitorRaw sends a raw HTTP/1.1 request from the attacker's address over
// TLS and returns the response.
func (a *abuse) visitorRaw(t *testing.T, sni, raw string) *http.Response {
	t.Helper()
	c := a.tlsFrom(t, "http/1.1", sni)
	c.SetDeadline(time.Now().Add(30 * time.Second))
	go func() { io.WriteString(c, raw) }() // the server may answer before reading it all
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp
}

func bodyOf(r *http.Response) string {
	b, _ := io.ReadAll(r.Body)
	return string(b)
}

func wantStatus(t *testing.T, r *http.Response, status int, text string) {
	t.Helper()
	body := bodyOf(r)
	if r.StatusCode != status || !strings.Contains(body, text) {
		t.Fatalf("got %d %q, want %d containing %q", r.StatusCode, body, status, text)
	}
}

// echoBackend answers with the request's headers, one "Name: value" a line.
func echoBackend(t *testing.T) string {
	return edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "X-Resp-Hop")
		w.Header().Set("X-Resp-Hop", "secret")
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "Host: %s\nRequestURI: %s\nBody: %d\n", r.Host, r.RequestURI, n)
		r.Header.Write(w)
	}))
}

// TestEdge_HostileInput is the table of hostile input: each row attacks the
// edge and checks the clear error it gets; the healthy "canary" tunnel is
// then checked (and, for attacks that hold resources, also while they do).
func TestEdge_HostileInput(t *testing.T) {
	tests := append(baseHostileRows(), muxHostileRows()...)
	tests = append(tests, proxyHostileRows()...)
	tests = append(tests, slowHostileRows()...)
	tests = append(tests, registryHostileRows()...)
	tests = append(tests, connectHostileRows()...)
	tests = append(tests, passthroughHostileRows()...)
	tests = append(tests, accessHostileRows()...)
	tests = append(tests, smuggleHostileRows()...)
	for _, tt := range tests {
		t.Run(strings.ReplaceAll(tt.name, " ", "_"), func(t *testing.T) {
			a := startAbuse(t, tt.config)
			a.canary(t)
			tt.attack(t, a)
			a.canary(t)
			// tunneld keeps a panic to its connection, but a panic is a
			// bug whatever an attacker sent.
			if n := a.logs.Count("panic serving"); n != 0 {
				t.Fatalf("%d panics contained while serving the attack; see the log", n)
			}
		})
	}
}

// hostileRow is one attack of TestEdge_HostileInput: the edge is started
// with config applied, the canary is checked before and after attack.
// The rows live in one file per part of the edge they attack.
type hostileRow struct {
	name   string
	config func(*edge.Config)
	attack func(t *testing.T, a *abuse)
}

// host is the Host a visitor of the tunnel name sends.
func (a *abuse) host(name string) string { return fmt.Sprintf("%s.%s:%d", name, domain, a.Port) }

func baseHostileRows() []hostileRow {
	host := func(a *abuse, name string) string { return a.host(name) }
	return []hostileRow{
		{"plain http on the tls port", nil, func(t *testing.T, a *abuse) {
			c := a.dialFrom(t)
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: canary."+domain+"\r\n\r\n")
			if got := string(wantClosed(t, c)); !strings.Contains(got, "400 Bad Request") || !strings.Contains(got, "HTTPS only") {
				t.Fatalf("got %q, want a 400 saying HTTPS only", got)
			}
		}},
		{"random bytes", nil, func(t *testing.T, a *abuse) {
			c := a.dialFrom(t)
			junk := make([]byte, 4096)
			mrand.NewChaCha8([32]byte{6}).Read(junk)
			c.Write(junk)
			wantClosed(t, c)
		}},
		{"tls handshake that never finishes", func(c *edge.Config) { c.TLSHandshakeTimeout = time.Second }, func(t *testing.T, a *abuse) {
			c := a.dialFrom(t)
			c.Write([]byte{0x16, 0x03, 0x01}) // the start of a record header, then nothing
			a.canary(t)
			wantClosed(t, c)
		}},
		{"handshake then silence", func(c *edge.Config) {
			c.Mux.HandshakeTimeout = time.Second
			c.AuthFailMaxDelay = 500 * time.Millisecond
		},
			func(t *testing.T, a *abuse) {
				c := a.tlsFrom(t, proto.ALPN, domain)
				a.canary(t)
				wantClosed(t, c)
			}},
		{"hello with a wrong version", nil, func(t *testing.T, a *abuse) {
			h := helloFor(aliceToken, "v2")
			h.Version = proto.Version + 1
			_, m := a.helloFrom(t, h)
			wantCode(t, m, proto.CodeUnsupportedVersion)
		}},
		{"oversized frame", nil, func(t *testing.T, a *abuse) {
			_, st := a.controlStream(t)
			st.Write(rawFrame(1, 1<<20, nil))
			m, err := proto.ReadFrame(st)
			if err != nil {
				t.Fatal(err)
			}
			wantCode(t, m, proto.CodeBadRequest)
		}},
		{"truncated frame", nil, func(t *testing.T, a *abuse) {
			_, st := a.controlStream(t)
			st.Write(rawFrame(1, 100, []byte(`{"version":`)))
			st.Close() // half-close: the frame ends early
			m, err := proto.ReadFrame(st)
			if err != nil {
				t.Fatal(err)
			}
			wantCode(t, m, proto.CodeBadRequest)
		}},
		{"unknown message type", nil, func(t *testing.T, a *abuse) {
			_, st := a.controlStream(t)
			st.Write(rawFrame(0xc8, 2, []byte("{}")))
			m, err := proto.ReadFrame(st)
			if err != nil {
				t.Fatal(err)
			}
			wantCode(t, m, proto.CodeBadRequest)
		}},
		{"50 wrong tokens from one ip", func(c *edge.Config) { c.AuthFailDelay = time.Millisecond; c.AuthFailMaxDelay = 20 * time.Millisecond },
			func(t *testing.T, a *abuse) {
				for i := range 50 {
					sess, m := a.helloFrom(t, helloFor(fmt.Sprintf("tk_guess_%d", i), "x"))
					wantCode(t, m, proto.CodeBadToken)
					sess.Close()
				}
				if n := a.logs.Count("repeated authentication failures"); n != 1 {
					t.Errorf("burst logged %d times, want once", n)
				}
				// A valid token from another address still gets in.
				if _, err := a.Connect(bobToken, mux.Tunnel{Name: "after-burst", Target: echoBackend(t)}); err != nil {
					t.Fatalf("valid token after the burst: %v", err)
				}
			}},
		{"1000 connections from one ip", func(c *edge.Config) { c.TLSHandshakeTimeout = 2 * time.Second }, func(t *testing.T, a *abuse) {
			needFDs(t, 2*1000+200)
			conns := make([]net.Conn, 1000)
			for i := range conns {
				conns[i] = a.dialFrom(t)
			}
			a.canary(t) // while they all hang
			var wg sync.WaitGroup
			open := make(chan int, len(conns))
			for i, c := range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c.SetReadDeadline(time.Now().Add(60 * time.Second))
					_, err := io.Copy(io.Discard, c)
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() {
						open <- i
					}
				}()
			}
			wg.Wait()
			close(open)
			if n := len(open); n > 0 {
				t.Fatalf("%d of 1000 connections still open after 60s", n)
			}
			if n := a.logs.Count("too many handshakes in progress"); n != 1 {
				t.Errorf("refusals logged %d times, want once", n)
			}
		}},
		{"client opens a stream toward tunneld", nil, func(t *testing.T, a *abuse) {
			sess, m := a.helloFrom(t, helloFor(bobToken, "opener"))
			if _, ok := m.(*proto.Welcome); !ok {
				t.Fatalf("got %v, want Welcome", m)
			}
			st, err := sess.OpenStream()
			if errors.Is(err, yamux.ErrSessionShutdown) {
				// tunneld read the SYN and closed the session before
				// yamux reported the frame written: refused, as wanted.
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			st.SetDeadline(time.Now().Add(30 * time.Second))
			st.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
			if n, err := st.Read(make([]byte, 1)); err == nil {
				t.Fatalf("read %d bytes from a client-opened stream, want it closed", n)
			}
		}},
		{"sessions per ip", func(c *edge.Config) { c.MaxSessionsPerIP = 2 }, func(t *testing.T, a *abuse) {
			for i := range 2 {
				if _, m := a.helloFrom(t, helloFor("", fmt.Sprintf("s%d", i))); m == nil {
					t.Fatal("no answer")
				}
			}
			_, m := a.helloFrom(t, helloFor("", "s3"))
			wantCode(t, m, proto.CodeRateLimited)
		}},
		{"tunnels per token across sessions", func(c *edge.Config) { c.MaxTunnelsPerToken = 3 }, func(t *testing.T, a *abuse) {
			target := echoBackend(t)
			if _, err := a.Connect(bobToken, mux.Tunnel{Name: "b1", Target: target}, mux.Tunnel{Name: "b2", Target: target}); err != nil {
				t.Fatal(err)
			}
			_, err := a.Connect(bobToken, mux.Tunnel{Name: "b3", Target: target}, mux.Tunnel{Name: "b4", Target: target})
			wantCode(t, err, proto.CodeTooManyTunnels)
		}},
		{"invalid name A..b", nil, nameRow("A..b", proto.CodeInvalidName)},
		{"invalid name -x", nil, nameRow("-x", proto.CodeInvalidName)},
		{"invalid name of 64 characters", nil, nameRow(strings.Repeat("a", 64), proto.CodeInvalidName)},
		{"invalid name xn-- look-alike", nil, nameRow("xn--pple-43d", proto.CodeInvalidName)},
		{"invalid name ../etc", nil, nameRow("../etc", proto.CodeInvalidName)},
		{"invalid name with a cyrillic letter", nil, nameRow("c\u0430nary", proto.CodeInvalidName)},
		{"invalid name with a trailing dot", nil, nameRow("canary.", proto.CodeInvalidName)},
		{"invalid name in uppercase", nil, nameRow("CANARY", proto.CodeInvalidName)},
		{"reserved name", nil, nameRow("www", proto.CodeNameNotAllowed)},
		{"empty name gets a random one", nil, func(t *testing.T, a *abuse) {
			// The protocol's empty name means "pick one for me": the
			// client gets a valid random name, never an empty one.
			_, m := a.helloFrom(t, helloFor(bobToken, ""))
			w, ok := m.(*proto.Welcome)
			if !ok {
				t.Fatalf("got %v, want Welcome", m)
			}
			if err := name.Validate(w.Tunnels[0].Name); err != nil {
				t.Fatalf("granted %q: %v", w.Tunnels[0].Name, err)
			}
		}},
		{"name held by another token", nil, nameRow("canary", proto.CodeNameTaken)},
		{"token pattern bypasses", func(c *edge.Config) {
			carol, err := token.New([]token.Entry{
				{Label: "alice", SHA256: token.Hash(aliceToken), Names: []string{"*"}},
				{Label: "carol", SHA256: token.Hash("tk_carol"), Names: []string{"dev-*"}},
			})
			if err != nil {
				panic(err)
			}
			c.Auth = carol
		}, func(t *testing.T, a *abuse) {
			// carol may claim dev-*: no spelling of another name gets past
			// the pattern, because names are validated before matching and
			// nothing is folded.
			for _, tt := range []struct {
				name string
				code proto.ErrorCode
			}{
				{"DEV-api", proto.CodeInvalidName},
				{"dev-api.", proto.CodeInvalidName},
				{"d\u0435v-api", proto.CodeInvalidName}, // Cyrillic е
				{"xn--dev-api-9za", proto.CodeInvalidName},
				{"dev-", proto.CodeInvalidName},
				{"prod", proto.CodeNameNotAllowed},
				{"dev", proto.CodeNameNotAllowed},
			} {
				sess, m := a.helloFrom(t, helloFor("tk_carol", tt.name))
				wantCode(t, m, tt.code)
				sess.Close()
			}
			if _, m := a.helloFrom(t, helloFor("tk_carol", "dev-api")); m == nil {
				t.Fatal("no answer")
			} else if _, ok := m.(*proto.Welcome); !ok {
				t.Fatalf("dev-api: got %v, want Welcome", m)
			}
		}},
		{"custom domain refusals", func(c *edge.Config) {
			tokens, err := token.New([]token.Entry{
				{Label: "alice", SHA256: token.Hash(aliceToken), Names: []string{"*"}},
				{Label: "dora", SHA256: token.Hash("tk_dora"), Names: []string{"*"}, Domains: []string{"wiki.example.org", "*.apps.example.org"}},
			})
			if err != nil {
				panic(err)
			}
			c.Auth = tokens
		}, func(t *testing.T, a *abuse) {
			// A domain the token was not given, however spelt, and any
			// domain of an anonymous client, is refused for good.
			for _, tt := range []struct{ token, domain string }{
				{"tk_dora", "other.example.org"},
				{"tk_dora", "apps.example.org"},
				{"tk_dora", "a.b.apps.example.org"},
				{"tk_dora", "WIKI.example.org"},
				{"tk_dora", "wiki.example.org."},
				{"tk_dora", "wiki.canary." + domain},
				{aliceToken, "wiki.example.org"},
				{"", "wiki.example.org"},
			} {
				h := helloFor(tt.token, "")
				h.Tunnels[0].Domain = tt.domain
				sess, m := a.helloFrom(t, h)
				wantCode(t, m, proto.CodeDomainNotAllowed)
				if !proto.CodeDomainNotAllowed.Permanent() {
					t.Fatal("domain_not_allowed is retryable")
				}
				sess.Close()
			}
			// A domain the token may claim, on a server with no DNS
			// checker (Config.Domains nil), is refused for good too.
			h := helloFor("tk_dora", "")
			h.Tunnels[0].Domain = "x.apps.example.org"
			_, m := a.helloFrom(t, h)
			wantCode(t, m, proto.CodeDomainNotAllowed)
			if perr := m.(*proto.Error); !strings.Contains(perr.Message, "serves no custom domains") {
				t.Fatalf("refusal %q, want it to say the server serves none", perr.Message)
			}
		}},
		{"visitor slowloris on headers", func(c *edge.Config) { c.ReadHeaderTimeout = time.Second }, func(t *testing.T, a *abuse) {
			c := a.tlsFrom(t, "http/1.1", "canary."+domain)
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: canary."+domain+"\r\nX-Slow: ")
			a.canary(t)
			if got := string(wantClosed(t, c)); got != "" && !strings.Contains(got, "408") {
				t.Fatalf("got %q, want the connection closed or a 408", got)
			}
		}},
		{"1 MiB of headers", nil, func(t *testing.T, a *abuse) {
			raw := "GET / HTTP/1.1\r\nHost: " + host(a, "canary") + "\r\nX-Big: " + strings.Repeat("a", 1<<20) + "\r\n\r\n"
			wantStatus(t, a.visitorRaw(t, "canary."+domain, raw), 431, "")
		}},
		{"content-length with transfer-encoding", nil, func(t *testing.T, a *abuse) {
			// A smuggling attempt: a proxy trusting Content-Length would
			// take "0\r\n\r\n" as the body and the service could read
			// the rest differently. net/http lets Transfer-Encoding win and
			// drops Content-Length (RFC 9112 §6.3), and the edge re-frames
			// every request, so the service sees exactly what the edge
			// routed: an empty POST, then the visitor's own second request.
			if _, err := a.Connect(bobToken, mux.Tunnel{Name: "smug", Target: echoBackend(t)}); err != nil {
				t.Fatal(err)
			}
			c := a.tlsFrom(t, "http/1.1", "smug."+domain)
			c.SetDeadline(time.Now().Add(30 * time.Second))
			io.WriteString(c, "POST / HTTP/1.1\r\nHost: "+host(a, "smug")+"\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"+
				"0\r\n\r\nGET /second HTTP/1.1\r\nHost: "+host(a, "smug")+"\r\nConnection: close\r\n\r\n")
			br := bufio.NewReader(c)
			for _, want := range []string{"RequestURI: /\nBody: 0\n", "RequestURI: /second\nBody: 0\n"} {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if !strings.Contains(string(body), want) || strings.Contains(string(body), "Content-Length: 4") {
					t.Fatalf("got %d %q, want %q and no Content-Length: 4", resp.StatusCode, body, want)
				}
			}
			// Two different Content-Lengths cannot be reconciled: 400.
			raw := "POST / HTTP/1.1\r\nHost: " + host(a, "smug") + "\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde"
			wantStatus(t, a.visitorRaw(t, "smug."+domain, raw), 400, "")
		}},
		{"absolute-form uri naming another tunnel", nil, func(t *testing.T, a *abuse) {
			a.wrongHost.Store("")
			raw := "GET https://" + host(a, "ghost") + "/x HTTP/1.1\r\nHost: " + host(a, "canary") + "\r\nConnection: close\r\n\r\n"
			wantStatus(t, a.visitorRaw(t, "canary."+domain, raw), 404, "ghost."+domain)
			raw = "GET https://evil.example/x HTTP/1.1\r\nHost: " + host(a, "canary") + "\r\nConnection: close\r\n\r\n"
			wantStatus(t, a.visitorRaw(t, "canary."+domain, raw), 404, "evil.example")
			// Naming a tunnel that exists routes there, and its service
			// sees its own Host and an origin-form URI.
			if _, err := a.Connect(bobToken, mux.Tunnel{Name: "victim", Target: echoBackend(t)}); err != nil {
				t.Fatal(err)
			}
			raw = "GET https://" + host(a, "victim") + "/x HTTP/1.1\r\nHost: " + host(a, "canary") + "\r\nConnection: close\r\n\r\n"
			wantStatus(t, a.visitorRaw(t, "canary."+domain, raw), 200, "Host: "+host(a, "victim")+"\nRequestURI: /x\nBody: 0\n")
		}},
		{"host header tricks", nil, func(t *testing.T, a *abuse) {
			for _, h := range []string{
				"canary." + domain + ".evil.example", "evil.example", "canary." + domain + "@evil.example",
				"x.canary." + domain, "127.0.0.1", "c\u0430nary." + domain,
			} {
				r := a.visitorRaw(t, "canary."+domain, "GET / HTTP/1.1\r\nHost: "+h+"\r\nConnection: close\r\n\r\n")
				if r.StatusCode != 404 && r.StatusCode != 400 {
					t.Errorf("Host %q: got %d %q, want 404 or 400", h, r.StatusCode, bodyOf(r))
				}
			}
			r := a.visitorRaw(t, "canary."+domain, "GET / HTTP/1.1\r\nHost: "+host(a, "canary")+"\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
			wantStatus(t, r, 400, "")
		}},
		{"forged x-forwarded-for", nil, func(t *testing.T, a *abuse) {
			if _, err := a.Connect(bobToken, mux.Tunnel{Name: "echo", Target: echoBackend(t)}); err != nil {
				t.Fatal(err)
			}
			r := a.visitorRaw(t, "echo."+domain, "GET / HTTP/1.1\r\nHost: "+host(a, "echo")+
				"\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: http\r\n"+
				"Forwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nTrue-Client-IP: 6.6.6.6\r\nConnection: close\r\n\r\n")
			body := bodyOf(r)
			for _, want := range []string{"X-Forwarded-For: " + attacker + "\r\n", "X-Forwarded-Host: " + host(a, "echo") + "\r\n", "X-Forwarded-Proto: https\r\n"} {
				if !strings.Contains(body, want) {
					t.Errorf("the service did not get %q; it got:\n%s", want, body)
				}
			}
			if strings.Contains(body, "6.6.6.6") || strings.Contains(body, "evil") {
				t.Errorf("a forged value reached the service:\n%s", body)
			}
		}},
		{"hop-by-hop headers", nil, func(t *testing.T, a *abuse) {
			if _, err := a.Connect(bobToken, mux.Tunnel{Name: "hop", Target: echoBackend(t)}); err != nil {
				t.Fatal(err)
			}
			r := a.visitorRaw(t, "hop."+domain, "GET / HTTP/1.1\r\nHost: "+host(a, "hop")+
				"\r\nConnection: close, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: 5\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic c2VjcmV0\r\n\r\n")
			body := bodyOf(r)
			for _, h := range []string{"X-Hop", "Keep-Alive", "Proxy-Connection", "Proxy-Authorization"} {
				if strings.Contains(body, h+":") {
					t.Errorf("hop-by-hop header %s reached the service:\n%s", h, body)
				}
			}
			if r.Header.Get("X-Resp-Hop") != "" {
				t.Errorf("hop-by-hop header X-Resp-Hop reached the visitor")
			}
		}},
		{"more concurrent streams than the limit", func(c *edge.Config) { c.MaxStreamsPerTunnel = 2 }, func(t *testing.T, a *abuse) {
			arrived, release := make(chan struct{}, 2), make(chan struct{})
			addr := holdBackend(t, arrived, release, "busy ok")
			if _, err := a.Connect(bobToken, mux.Tunnel{Name: "busy", Target: addr}); err != nil {
				t.Fatal(err)
			}
			c := a.HTTPClient(false)
			done := make(chan int, 2)
			for range 2 {
				go func() {
					resp, err := c.Get(a.URL("busy", "/hold"))
					if err != nil {
						done <- 0
						return
					}
					resp.Body.Close()
					done <- resp.StatusCode
				}()
			}
			testwait.Recv(t, arrived, 20*time.Second)
			testwait.Recv(t, arrived, 20*time.Second)
			resp, err := c.Get(a.URL("busy", "/more"))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
				t.Fatalf("over the limit: got %d Retry-After %q, want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
			}
			a.canary(t) // another tunnel is not affected
			close(release)
			for range 2 {
				if s := testwait.Recv(t, done, 20*time.Second); s != 200 {
					t.Errorf("held request: got %d, want 200", s)
				}
			}
			if status, body := testhttp.Get(t, c, a.URL("busy", "/after")); status != 200 || body != "busy ok" {
				t.Fatalf("after the burst: got %d %q", status, body)
			}
		}},
		{"stream header for a tunnel the client does not serve", nil, func(t *testing.T, a *abuse) {
			unknownTunnelStream(t)
		}},
		{"server without a valid certificate", nil, func(t *testing.T, a *abuse) {
			// A man in the middle with its own certificate: the client
			// refuses it before sending its token or dialing anything.
			var dialed atomic.Int32
			target := edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { dialed.Add(1) }))
			mitm, _ := edgetest.NewTLS(t)
			ln, err := tls.Listen("tcp", "127.0.0.1:0", mitm)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.(*tls.Conn).Handshake()
					c.Close()
				}
			}()
			cfg := mux.ClientConfig{Config: mux.DefaultConfig(), Server: ln.Addr().String(), TLS: &tls.Config{RootCAs: a.Pool},
				Token: aliceToken, Tunnels: []mux.Tunnel{{Name: "mitm", Target: target}}}
			err = mux.Run(context.Background(), cfg)
			var uerr x509UnknownAuthority
			if !errors.As(err, &uerr) {
				t.Fatalf("got %v, want an unknown-authority error", err)
			}
			if dialed.Load() != 0 {
				t.Fatal("the client dialed its target for a server it does not trust")
			}
		}},
		{"websocket outlives the idle timeout", func(c *edge.Config) { c.IdleTimeout = 500 * time.Millisecond }, func(t *testing.T, a *abuse) {
			websocketOutlivesIdle(t, a)
		}},
	}
}

// nameRow asks for a name as bob, from the attacker's address.
func nameRow(name string, code proto.ErrorCode) func(*testing.T, *abuse) {
	return func(t *testing.T, a *abuse) {
		_, m := a.helloFrom(t, helloFor(bobToken, name))
		wantCode(t, m, code)
	}
}

// needFDs makes sure the test may hold n file descriptors, raising the soft
// limit to the hard one if needed.
func needFDs(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	if lim.Max < n {
		t.Skipf("RLIMIT_NOFILE hard limit %d is below the %d this test needs", lim.Max, n)
	}
	old := lim
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

type x509UnknownAuthority = x509.UnknownAuthorityError

// unknownTunnelStream plays a hostile tunneld against a real client: a
// stream header naming a tunnel the client does not serve is refused with
// unknown_tunnel, and the tunnel it does serve keeps working.
func unknownTunnelStream(t *testing.T) {
	srvTLS, pool := edgetest.NewTLS(t)
	srvTLS.NextProtos = []string{proto.ALPN}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := echoBackend(t)
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() {
		runErr <- mux.Run(ctx, mux.ClientConfig{Config: mux.DefaultConfig(), Server: ln.Addr().String(),
			TLS: &tls.Config{RootCAs: pool}, Tunnels: []mux.Tunnel{{Name: "served", Target: served}}})
	}()
	defer func() {
		cancel()
		testwait.Recv(t, runErr, 20*time.Second)
	}()
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	cfg := mux.DefaultConfig()
	ms, _, err := mux.Server(ctx, conn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ms.Close()
	if err := ms.Accept(&proto.Welcome{SessionID: "evil", Tunnels: []proto.TunnelInfo{{Name: "served", Kind: proto.KindHTTP, URL: "https://served.evil"}}}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"other", "127.0.0.1:22", served} {
		_, err := ms.Open(ctx, &proto.StreamHeader{Tunnel: name})
		wantCode(t, err, proto.CodeUnknownTunnel)
	}
	st, err := ms.Open(ctx, &proto.StreamHeader{Tunnel: "served"})
	if err != nil {
		t.Fatalf("open the served tunnel after the refusals: %v", err)
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(st, "GET /ok HTTP/1.1\r\nHost: served\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(st), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("served tunnel: got %d, want 200", resp.StatusCode)
	}
}

// websocketOutlivesIdle checks that the visitor idle timeout, which closes
// a plain keep-alive connection, leaves an upgraded WebSocket alone.
func websocketOutlivesIdle(t *testing.T, a *abuse) {
	addr := edgetest.Backend(t, websocket.Handler(func(ws *websocket.Conn) { io.Copy(ws, ws) }))
	if _, err := a.Connect(bobToken, mux.Tunnel{Name: "ws", Target: addr}); err != nil {
		t.Fatal(err)
	}
	ws := wsClient(t, a.tlsFrom(t, "http/1.1", "ws."+domain), a.Port, "/")
	defer ws.Close()
	echo := func(msg string) {
		t.Helper()
		wsEcho(t, ws, msg, 20*time.Second)
	}
	echo("before")
	// A keep-alive connection opened after the WebSocket and left idle:
	// once the server has closed it, the idle timeout has passed for the
	// WebSocket too.
	idle := a.tlsFrom(t, "http/1.1", "canary."+domain)
	io.WriteString(idle, "GET / HTTP/1.1\r\nHost: canary."+domain+fmt.Sprintf(":%d", a.Port)+"\r\n\r\n")
	if got := string(wantClosed(t, idle)); !strings.Contains(got, "canary ok") {
		t.Fatalf("idle connection: got %q", got)
	}
	echo("after the idle timeout")
}

// holdBackend answers body, except that a request for /hold first reports
// on arrived and waits for release (or its visitor to leave).
func holdBackend(t *testing.T, arrived chan<- struct{}, release <-chan struct{}, body string) string {
	return edgetest.Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			arrived <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, body)
	}))
}
