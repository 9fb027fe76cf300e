package mux

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/tunnelhq/tunnel/internal/testnet"
	"github.com/tunnelhq/tunnel/internal/testtls"
	"github.com/tunnelhq/tunnel/internal/testwait"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newTestTLS makes an in-memory CA and a 127.0.0.1 server certificate.
func newTestTLS(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	server, pool := testtls.New(t, "127.0.0.1")
	server.NextProtos = []string{proto.ALPN}
	client = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", NextProtos: []string{proto.ALPN}}
	return server, client
}

// transports returns connected pairs (client end, server end) over each
// transport the session must work on.
func transports() map[string]func(t *testing.T) (net.Conn, net.Conn) {
	tcpPair := func(t *testing.T) (net.Conn, net.Conn) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		accepted := make(chan net.Conn, 1)
		go func() {
			c, _ := ln.Accept()
			accepted <- c
		}()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s := testwait.Recv(t, accepted, 5*time.Second)
		if s == nil {
			t.Fatal("accept failed")
		}
		return c, s
	}
	return map[string]func(t *testing.T) (net.Conn, net.Conn){
		"pipe": func(t *testing.T) (net.Conn, net.Conn) { return net.Pipe() },
		"tcp":  tcpPair,
		"tls": func(t *testing.T) (net.Conn, net.Conn) {
			srvCfg, cliCfg := newTestTLS(t)
			c, s := tcpPair(t)
			return tls.Client(c, cliCfg), tls.Server(s, srvCfg)
		},
		// As tunnel and tunneld run it: each frame corked into one write.
		"tls-wire": func(t *testing.T) (net.Conn, net.Conn) {
			srvCfg, cliCfg := newTestTLS(t)
			c, s := tcpPair(t)
			return tls.Client(WireConn(c), cliCfg), tls.Server(WireConn(s), srvCfg)
		},
	}
}

func testConfig(t *testing.T) Config {
	cfg := DefaultConfig()
	cfg.Logger = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	cfg.HandshakeTimeout = 5 * time.Second
	cfg.DrainTimeout = 5 * time.Second
	return cfg
}

func hello(names ...string) *proto.Hello {
	h := &proto.Hello{Version: proto.Version, ClientVersion: "test"}
	for _, n := range names {
		h.Tunnels = append(h.Tunnels, proto.TunnelRequest{Name: n, Kind: proto.KindHTTP})
	}
	return h
}

func welcome(h *proto.Hello) *proto.Welcome {
	w := &proto.Welcome{SessionID: "s1"}
	for _, tr := range h.Tunnels {
		w.Tunnels = append(w.Tunnels, proto.TunnelInfo{Name: tr.Name, Kind: tr.Kind, URL: "https://" + tr.Name + ".example.com"})
	}
	return w
}

// welcomingServer starts a server on loopback TLS that welcomes every
// client, after edit (if not nil) changed the Welcome it would send: how
// the tests play servers of before a feature, which welcome a tunnel
// without confirming what it asked for. It returns a client configuration
// for it with no tunnels.
func welcomingServer(t *testing.T, edit func(h *proto.Hello, w *proto.Welcome)) ClientConfig {
	t.Helper()
	srvTLS, cliTLS := newTestTLS(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvTLS)
	if err != nil {
		t.Fatal(err)
	}
	testnet.ServeOn(t, ln, func(c net.Conn) {
		s, h, err := Server(context.Background(), c, testConfig(t))
		if err != nil {
			c.Close()
			return
		}
		w := welcome(h)
		if edit != nil {
			edit(h, w)
		}
		s.Accept(w)
		<-s.Done()
	})
	return ClientConfig{Config: testConfig(t), Server: ln.Addr().String(), TLS: cliTLS}
}

type serverResult struct {
	s     *ServerSession
	hello *proto.Hello
	err   error
}

// session sets up a client and server session over a transport and accepts
// the client's Hello with decide (nil: accept all).
func session(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn), h *proto.Hello, decide func(*proto.Hello) *proto.Error) (*ClientSession, *ServerSession, error) {
	t.Helper()
	return sessionWith(t, pair, h, decide, testConfig(t))
}

// sessionWith is session with both ends on cfg.
func sessionWith(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn), h *proto.Hello, decide func(*proto.Hello) *proto.Error, cfg Config) (*ClientSession, *ServerSession, error) {
	t.Helper()
	cc, sc := pair(t)
	results := make(chan serverResult, 1)
	go func() {
		s, got, err := Server(context.Background(), sc, cfg)
		if err == nil {
			if e := decideOrAccept(decide, got); e != nil {
				err = s.Reject(e)
				if err == nil {
					err = e
				}
				s = nil
			} else {
				err = s.Accept(welcome(got))
			}
		}
		results <- serverResult{s, got, err}
	}()
	c, cerr := Client(context.Background(), cc, h, cfg)
	r := testwait.Recv(t, results, 10*time.Second)
	if r.s != nil {
		t.Cleanup(func() { r.s.Close() })
	}
	if c != nil {
		t.Cleanup(func() { c.Close() })
	}
	if cerr != nil {
		return nil, r.s, cerr
	}
	if r.err != nil {
		t.Fatalf("server: %v", r.err)
	}
	return c, r.s, nil
}

func decideOrAccept(decide func(*proto.Hello) *proto.Error, h *proto.Hello) *proto.Error {
	if decide == nil {
		return nil
	}
	return decide(h)
}

// echoServer is a local TCP service that echoes until EOF, then closes.
func echoServer(t *testing.T) string {
	t.Helper()
	return localService(t, func(c net.Conn) {
		io.Copy(c, c)
		c.Close()
	})
}

// localService listens on 127.0.0.1 and hands each accepted connection, one
// at a time, to serve, which may close it or leave it open. The test's
// clean-up closes the listener, waits for the serving goroutine, then closes
// every connection it accepted.
func localService(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn // the serving goroutine's; read after it is done
	done := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			serve(c)
		}
	}()
	return ln.Addr().String()
}

// serve runs the client's Serve in the background and returns its result.
func serve(t *testing.T, ctx context.Context, c *ClientSession, targets map[string]string) <-chan error {
	errc := make(chan error, 1)
	go func() { errc <- c.Serve(ctx, targets) }()
	return errc
}

func TestSession_Transports(t *testing.T) {
	for name, pair := range transports() {
		t.Run(name, func(t *testing.T) {
			h := hello("wiki", "blog")
			c, s, err := session(t, pair, h, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Welcome().Tunnels[1].URL; got != "https://blog.example.com" {
				t.Errorf("got URL %q, want https://blog.example.com", got)
			}
			ctx, cancel := context.WithCancel(context.Background())
			errc := serve(t, ctx, c, map[string]string{"wiki": echoServer(t), "blog": echoServer(t)})

			// Several streams at once, each with its own payload, half-closed
			// after writing: the echo must come back whole, then EOF.
			const n = 8
			results := make(chan error, n)
			for i := range n {
				go func() {
					tunnel := []string{"wiki", "blog"}[i%2]
					st, err := s.Open(context.Background(), &proto.StreamHeader{Tunnel: tunnel, RemoteAddr: "192.0.2.1:1"})
					if err != nil {
						results <- err
						return
					}
					defer st.Close()
					payload := bytes.Repeat([]byte{byte(i)}, 300<<10)
					go func() {
						st.Write(payload)
						closeWrite(st)
					}()
					got, err := io.ReadAll(st)
					if err == nil && !bytes.Equal(got, payload) {
						err = errors.New("echo mismatch")
					}
					results <- err
				}()
			}
			for range n {
				if err := testwait.Recv(t, results, 20*time.Second); err != nil {
					t.Fatal(err)
				}
			}
			cancel()
			if err := testwait.Recv(t, errc, 10*time.Second); err != nil {
				t.Fatalf("Serve after cancel: got %v, want nil", err)
			}
			testwait.Recv(t, s.Draining(), 5*time.Second)
		})
	}
}

func TestSession_StreamRefusals(t *testing.T) {
	c, s, err := session(t, transports()["tcp"], hello("wiki", "down"), nil)
	if err != nil {
		t.Fatal(err)
	}
	// A port that was just free: nothing listens there.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	downAddr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := serve(t, ctx, c, map[string]string{"wiki": echoServer(t), "down": downAddr})

	tests := []struct {
		tunnel string
		want   proto.ErrorCode
	}{
		{"other", proto.CodeUnknownTunnel},
		{"down", proto.CodeLocalUnreachable},
	}
	for _, tt := range tests {
		_, err := s.Open(context.Background(), &proto.StreamHeader{Tunnel: tt.tunnel})
		var perr *proto.Error
		if !errors.As(err, &perr) || perr.Code != tt.want {
			t.Errorf("open %q: got %v, want code %s", tt.tunnel, err, tt.want)
		}
	}
	// The session still serves after refusals.
	st, err := s.Open(context.Background(), &proto.StreamHeader{Tunnel: "wiki"})
	if err != nil {
		t.Fatalf("open after refusals: %v", err)
	}
	st.Close()
	cancel()
	testwait.Recv(t, errc, 10*time.Second)
}

func TestSession_Reject(t *testing.T) {
	for name, pair := range transports() {
		t.Run(name, func(t *testing.T) {
			_, _, err := session(t, pair, hello("wiki"), func(*proto.Hello) *proto.Error {
				return &proto.Error{Code: proto.CodeBadToken, Message: "unknown token"}
			})
			var perr *proto.Error
			if !errors.As(err, &perr) || perr.Code != proto.CodeBadToken || perr.Message != "unknown token" {
				t.Fatalf("got %v, want bad_token: unknown token", err)
			}
		})
	}
}

func TestServer_RejectsWrongVersion(t *testing.T) {
	h := hello("wiki")
	h.Version = proto.Version + 1
	cc, sc := transports()["tcp"](t)
	srvErr := make(chan error, 1)
	go func() {
		_, _, err := Server(context.Background(), sc, testConfig(t))
		srvErr <- err
	}()
	_, err := Client(context.Background(), cc, h, testConfig(t))
	var perr *proto.Error
	if !errors.As(err, &perr) || perr.Code != proto.CodeUnsupportedVersion {
		t.Fatalf("client: got %v, want unsupported_version", err)
	}
	if err := testwait.Recv(t, srvErr, 5*time.Second); !errors.Is(err, proto.ErrVersionMismatch) {
		t.Fatalf("server: got %v, want ErrVersionMismatch", err)
	}
}

func TestServer_HandshakeTimeout(t *testing.T) {
	// A peer that completes TCP but never says anything is dropped after
	// the handshake timeout.
	cc, sc := transports()["tcp"](t)
	defer cc.Close()
	cfg := testConfig(t)
	cfg.HandshakeTimeout = 100 * time.Millisecond
	srvErr := make(chan error, 1)
	go func() {
		_, _, err := Server(context.Background(), sc, cfg)
		srvErr <- err
	}()
	if err := testwait.Recv(t, srvErr, 5*time.Second); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want deadline exceeded", err)
	}
	// The server closed the connection.
	cc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, cc); err != nil {
		t.Fatalf("connection not closed by server: %v", err)
	}
}

func TestServer_MalformedHello(t *testing.T) {
	cc, sc := transports()["tcp"](t)
	cfg := testConfig(t)
	srvErr := make(chan error, 1)
	go func() {
		_, _, err := Server(context.Background(), sc, cfg)
		srvErr <- err
	}()
	// Speak yamux correctly but send garbage as the Hello.
	sess, err := yamuxClientForTest(cc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	ctrl, err := sess.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	ctrl.Write([]byte{0x01, 0, 0, 0, 3, 'x', 'y', 'z'})
	_, err = proto.ReadAs[*proto.Welcome](ctrl)
	var perr *proto.Error
	if !errors.As(err, &perr) || perr.Code != proto.CodeBadRequest {
		t.Fatalf("client: got %v, want bad_request", err)
	}
	if err := testwait.Recv(t, srvErr, 5*time.Second); !errors.Is(err, proto.ErrMalformed) {
		t.Fatalf("server: got %v, want ErrMalformed", err)
	}
}

// A client opens its control stream and nothing else: a second stream is a
// broken or hostile client, and ends its session at once, before yamux
// queues it (it used to be refused, with a warning per stream).
func TestServer_EndsSessionOnClientStream(t *testing.T) {
	cfg := testConfig(t)
	// Long enough that yamux's own open timeout (an unanswered SYN ends
	// the session too) cannot be what ends it within recvWithin's bound.
	cfg.HandshakeTimeout = time.Minute
	c, s, err := sessionWith(t, transports()["tcp"], hello("wiki"), nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The server may end the session before OpenStream has returned: then
	// OpenStream fails with the session's end, which is the point.
	st, err := c.sess.OpenStream()
	switch {
	case errors.Is(err, yamux.ErrSessionShutdown):
	case err != nil:
		t.Fatal(err)
	default:
		defer st.Close()
		st.Write([]byte("let me in"))
		st.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, _ := io.Copy(io.Discard, st); n != 0 {
			t.Fatalf("client-opened stream: read %d bytes, want none", n)
		}
	}
	testwait.Recv(t, s.Done(), 10*time.Second)
	testwait.Recv(t, c.Done(), 10*time.Second)
}

func TestClient_ServerGoAway(t *testing.T) {
	c, s, err := session(t, transports()["tcp"], hello("wiki"), nil)
	if err != nil {
		t.Fatal(err)
	}
	errc := serve(t, context.Background(), c, map[string]string{"wiki": echoServer(t)})
	if err := s.GoAway("restart"); err != nil {
		t.Fatal(err)
	}
	testwait.Recv(t, c.GoAway(), 5*time.Second)
	// Streams still work after GoAway, until the server closes the session.
	st, err := s.Open(context.Background(), &proto.StreamHeader{Tunnel: "wiki"})
	if err != nil {
		t.Fatalf("open after goaway: %v", err)
	}
	st.Close()
	s.Close()
	if err := testwait.Recv(t, errc, 10*time.Second); !errors.Is(err, ErrServerGoAway) {
		t.Fatalf("got %v, want ErrServerGoAway", err)
	}
}

func TestClient_SessionLost(t *testing.T) {
	c, s, err := session(t, transports()["tcp"], hello("wiki"), nil)
	if err != nil {
		t.Fatal(err)
	}
	errc := serve(t, context.Background(), c, map[string]string{"wiki": echoServer(t)})
	s.Close()
	if err := testwait.Recv(t, errc, 10*time.Second); !errors.Is(err, ErrSessionLost) {
		t.Fatalf("got %v, want ErrSessionLost", err)
	}
	testwait.Recv(t, c.Done(), 5*time.Second)
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestConfig_Validate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
		ok   bool
	}{
		{"default", func(*Config) {}, true},
		{"small window", func(c *Config) { c.StreamWindow = 1024 }, false},
		{"zero keepalive", func(c *Config) { c.KeepAliveInterval = 0 }, false},
		{"keepalive the peer takes for a flood", func(c *Config) { c.KeepAliveInterval = 50 * time.Millisecond }, false},
		{"negative handshake", func(c *Config) { c.HandshakeTimeout = -1 }, false},
		{"zero backlog", func(c *Config) { c.AcceptBacklog = 0 }, false},
	}
	for _, tt := range tests {
		cfg := DefaultConfig()
		tt.mod(&cfg)
		if err := cfg.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: got %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func yamuxClientForTest(conn net.Conn, cfg Config) (*yamux.Session, error) {
	return yamux.Client(conn, cfg.yamuxConfig(&yamuxLog{l: cfg.Logger}))
}

func TestBackoff_Delay(t *testing.T) {
	b := Backoff{Initial: time.Second, Max: 30 * time.Second}
	tests := []struct {
		failures int
		ceiling  time.Duration
	}{
		{0, time.Second},
		{1, 2 * time.Second},
		{2, 4 * time.Second},
		{4, 16 * time.Second},
		{5, 30 * time.Second},
		{60, 30 * time.Second},
	}
	for _, tt := range tests {
		if got := b.withDefaults().ceiling(tt.failures); got != tt.ceiling {
			t.Errorf("ceiling after %d failures: got %v, want %v", tt.failures, got, tt.ceiling)
		}
		// Full jitter: every draw is in [0, ceiling), and they spread.
		seen := map[time.Duration]bool{}
		for range 50 {
			d := b.Delay(tt.failures)
			if d < 0 || d >= tt.ceiling {
				t.Fatalf("delay after %d failures: got %v, want in [0, %v)", tt.failures, d, tt.ceiling)
			}
			seen[d] = true
		}
		if len(seen) < 10 {
			t.Errorf("delay after %d failures: only %d distinct values in 50 draws, want jitter", tt.failures, len(seen))
		}
	}
	if got := (Backoff{}).withDefaults(); got != DefaultBackoff() {
		t.Errorf("zero Backoff: got %+v, want the defaults %+v", got, DefaultBackoff())
	}
}

func TestConfig_SetPeerTimeout(t *testing.T) {
	c := DefaultConfig()
	c.SetPeerTimeout(3 * time.Second)
	if c.KeepAliveInterval != 1500*time.Millisecond || c.WriteTimeout != 1500*time.Millisecond || c.PeerTimeout() != 3*time.Second {
		t.Fatalf("got keepalive %v, write timeout %v; want 1.5s each", c.KeepAliveInterval, c.WriteTimeout)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestIsPermanent(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{&proto.Error{Code: proto.CodeBadToken}, true},
		{fmt.Errorf("wrapped: %w", &proto.Error{Code: proto.CodeNameNotAllowed}), true},
		{&proto.Error{Code: proto.CodeNameTaken}, false},
		{&proto.Error{Code: proto.CodeDraining}, false},
		{&proto.Error{Code: proto.CodeUnavailable}, false}, // the cluster store is away: retried
		{ErrSessionLost, false},
		{errors.New("dial: connection refused"), false},
	}
	for _, tt := range tests {
		if got := IsPermanent(tt.err); got != tt.want {
			t.Errorf("IsPermanent(%v): got %v, want %v", tt.err, got, tt.want)
		}
	}
}

// TestServer_NotifyHooks: the control loop calls onDrain when the client
// says GoAway and onDone once the session has ended, and onDone may Close
// the session (tunneld's cleanup does).
func TestServer_NotifyHooks(t *testing.T) {
	cc, sc := transports()["tcp"](t)
	cfg := testConfig(t)
	drained, done := make(chan struct{}), make(chan bool, 1)
	accepted := make(chan error, 1)
	go func() {
		s, got, err := Server(context.Background(), sc, cfg)
		if err != nil {
			accepted <- err
			return
		}
		s.Notify(func() { close(drained) }, func() {
			s.Close()
			select {
			case <-s.Done():
				done <- true
			default:
				done <- false
			}
		})
		accepted <- s.Accept(welcome(got))
	}()
	c, err := Client(context.Background(), cc, hello("web"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := testwait.Recv(t, accepted, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := serve(t, ctx, c, map[string]string{"web": echoServer(t)})
	select {
	case <-drained:
		t.Fatal("onDrain ran before the client said GoAway")
	case <-done:
		t.Fatal("onDone ran while the session was up")
	default:
	}
	cancel() // the client drains: GoAway
	testwait.Recv(t, drained, 10*time.Second)
	if err := testwait.Recv(t, errc, 10*time.Second); err != nil {
		t.Fatalf("client Serve: %v", err)
	}
	select {
	case <-done:
		t.Fatal("onDone ran while the session was up")
	default:
	}
	c.Close() // now the session ends
	if ended := testwait.Recv(t, done, 10*time.Second); !ended {
		t.Error("onDone ran before the session's Done was closed")
	}
}

func TestParseWindow(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint32
		ok   bool
	}{
		{"1MiB", 1 << 20, true}, {"1mib", 1 << 20, true}, {"512KiB", 512 << 10, true}, {"512k", 512 << 10, true},
		{" 2 M ", 2 << 20, true}, {"262144", 256 << 10, true}, {"64MiB", 64 << 20, true},
		{"255KiB", 0, false}, {"65MiB", 0, false}, {"", 0, false}, {"1GiB", 0, false}, {"-1", 0, false},
		{"1.5MiB", 0, false}, {"99999999999MiB", 0, false},
	} {
		got, err := ParseWindow(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseWindow(%q) = %d, %v; want %d, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}
