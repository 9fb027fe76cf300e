package peer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/internal/testnet"
	"github.com/tunnelhq/tunnel/internal/testwait"
	"github.com/tunnelhq/tunnel/pkg/mux"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// echoRoundTrip writes size pseudo-random bytes to conn, half-closes it,
// and checks that exactly the same bytes come back: an echo service behind
// the link answers them and half-closes after the half-close reached it.
func echoRoundTrip(t *testing.T, conn net.Conn, size int, seed uint64) {
	t.Helper()
	data := make([]byte, size)
	rng := rand.New(rand.NewChaCha8([32]byte{byte(seed)}))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	werr := make(chan error, 1)
	go func() {
		_, err := conn.Write(data)
		if err == nil {
			err = conn.Close() // a yamux stream's Close half-closes
		}
		werr <- err
	}()
	h := sha256.New()
	n, err := io.Copy(h, conn)
	if err != nil {
		t.Fatalf("read back: %v after %d bytes", err, n)
	}
	if err := testwait.Recv(t, werr, 10*time.Second); err != nil {
		t.Fatalf("write: %v", err)
	}
	if n != int64(size) || !bytes.Equal(h.Sum(nil), sum(data)) {
		t.Fatalf("got %d bytes back (sha256 %x), want %d (sha256 %x)", n, h.Sum(nil), size, sum(data))
	}
}

func sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

func TestLinks_BytesBothWaysByHash(t *testing.T) {
	echo := testnet.Echo(t)
	b := startNode(t, "b", services(map[string]string{"wiki": echo}), nil)
	a := startNode(t, "a", nil, nil)

	const size = 4 << 20
	conn, err := a.Open(context.Background(), "b", b.addr, &Request{Header: proto.StreamHeader{Tunnel: "wiki", RemoteAddr: "192.0.2.1:1234"}})
	if err != nil {
		t.Fatal(err)
	}
	echoRoundTrip(t, conn, size, 1)

	sa, sb := a.Stats(), b.Stats()
	if sa.StreamsOut != 1 || sa.Links != 1 || sa.Dials != 1 || sa.DialFailures != 0 {
		t.Errorf("a: got %+v, want one stream out on one dialed link", sa)
	}
	if sb.StreamsIn != 1 || sb.Links != 1 || sb.Refused != 0 {
		t.Errorf("b: got %+v, want one stream in on one link", sb)
	}
	// The owning node's counts are complete once its pipe has ended, which
	// the client's end cannot observe: check them only when they are in.
	if sb.BytesIn != 0 && (sb.BytesIn != size || sb.BytesOut != size) {
		t.Errorf("b: bytes in %d, out %d, want %d each", sb.BytesIn, sb.BytesOut, size)
	}
}

// TestLinks_HalfClosePassesThrough: a service that answers only after the
// visitor's side ends (a request body read to EOF) gets that end through
// both hops, and its answer and its own end come back.
func TestLinks_HalfClosePassesThrough(t *testing.T) {
	counter := testnet.Serve(t, func(c net.Conn) {
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		fmt.Fprintf(c, "read %d bytes", n)
	})
	b := startNode(t, "b", services(map[string]string{"count": counter}), nil)
	a := startNode(t, "a", nil, nil)
	conn, err := a.Open(context.Background(), "b", b.addr, &Request{Header: proto.StreamHeader{Tunnel: "count"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "hello"); err != nil {
		t.Fatal(err)
	}
	if err := conn.Close(); err != nil { // half-close: the read side stays open
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "read 5 bytes" {
		t.Fatalf("got %q, want %q", got, "read 5 bytes")
	}
}

// TestLinks_CloseOnFINEndsTheLocalConnection: with CloseOnFIN (HTTP), the
// forwarding node's close ends the owning node's local connection at once,
// as it does without a hop: a service writing an endless download notices.
func TestLinks_CloseOnFINEndsTheLocalConnection(t *testing.T) {
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
	b := startNode(t, "b", services(map[string]string{"dl": endless}), nil)
	a := startNode(t, "a", nil, nil)
	conn, err := a.Open(context.Background(), "b", b.addr, &Request{Header: proto.StreamHeader{Tunnel: "dl", CloseOnFIN: true}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(conn, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	testwait.Recv(t, ended, 10*time.Second)
}

// TestLinks_RefusalsArriveAsLocally: the owning node's errors reach the
// forwarding node as what the edge tells apart locally.
func TestLinks_RefusalsArriveAsLocally(t *testing.T) {
	refuse := &proto.Error{Code: proto.CodeLocalUnreachable, Message: "connection refused by 127.0.0.1:8080"}
	b := startNode(t, "b", func(ctx context.Context, req *Request) (net.Conn, error) {
		if req.Session != "s1" {
			return nil, fmt.Errorf("session %s: %w", req.Session, ErrWrongSession)
		}
		switch req.Header.Tunnel {
		case "refused":
			return nil, refuse
		case "gone":
			return nil, fmt.Errorf("open stream: %w", net.ErrClosed)
		case "slow":
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return nil, errors.New("disk on fire")
	}, nil)
	a := startNode(t, "a", nil, nil)
	open := func(tunnel, session string, timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		conn, err := a.Open(ctx, "b", b.addr, &Request{Header: proto.StreamHeader{Tunnel: tunnel}, Session: session})
		if err == nil {
			conn.Close()
			t.Fatalf("%s: opened, want a refusal", tunnel)
		}
		return err
	}

	var perr *proto.Error
	if err := open("refused", "s1", 5*time.Second); !errors.As(err, &perr) || *perr != *refuse {
		t.Errorf("refused: got %v, want the *proto.Error %v", err, refuse)
	}
	if err := open("refused", "s2", 5*time.Second); !errors.Is(err, ErrWrongSession) {
		t.Errorf("wrong session: got %v, want ErrWrongSession", err)
	}
	if err := open("gone", "s1", 5*time.Second); !mux.IsClosed(err) {
		t.Errorf("gone: got %v, want an error mux.IsClosed accepts (tunnel offline)", err)
	}
	if err := open("slow", "s1", 300*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("slow: got %v, want context.DeadlineExceeded", err)
	}
	err := open("other", "s1", 5*time.Second)
	if err == nil || errors.As(err, &perr) || mux.IsClosed(err) || strings.Contains(err.Error(), "disk") {
		t.Errorf("other: got %v, want a plain error that does not leak the owning node's detail", err)
	}
	if s := a.Stats(); s.StreamsOut != 0 || s.Links != 1 {
		t.Errorf("a: got %+v, want no stream out, one link", s)
	}
}

// TestLinks_CancelAbandonsTheOpen: an Open whose context ends while the
// owning node is still opening returns at once, and the owning node's
// OpenFunc sees its own context end.
func TestLinks_CancelAbandonsTheOpen(t *testing.T) {
	started, ended := make(chan struct{}, 1), make(chan error, 1)
	b := startNode(t, "b", func(ctx context.Context, req *Request) (net.Conn, error) {
		started <- struct{}{}
		<-ctx.Done()
		ended <- ctx.Err()
		return nil, ctx.Err()
	}, func(c *Config) { c.OpenTimeout = time.Minute })
	a := startNode(t, "a", nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() {
		conn, err := a.Open(ctx, "b", b.addr, &Request{Header: proto.StreamHeader{Tunnel: "x"}})
		if conn != nil {
			conn.Close()
		}
		res <- err
	}()
	testwait.Recv(t, started, 5*time.Second)
	cancel()
	if err := testwait.Recv(t, res, 2*time.Second); !errors.Is(err, context.Canceled) {
		t.Errorf("open: got %v, want context.Canceled", err)
	}
	if err := testwait.Recv(t, ended, 2*time.Second); !errors.Is(err, context.Canceled) {
		t.Errorf("owning node's OpenFunc: context ended with %v, want context.Canceled (abandoned, not timed out)", err)
	}
}

// TestLinks_OneHopOnly: an OpenFunc that tries to forward again is refused,
// so two nodes whose tables disagree cannot pass a request around.
func TestLinks_OneHopOnly(t *testing.T) {
	c := startNode(t, "c", services(map[string]string{}), nil)
	second := make(chan error, 1)
	var b *testNode
	b = startNode(t, "b", func(ctx context.Context, req *Request) (net.Conn, error) {
		conn, err := b.Open(ctx, "c", c.addr, req)
		if conn != nil {
			conn.Close()
		}
		second <- err
		return nil, err
	}, nil)
	a := startNode(t, "a", nil, nil)
	if _, err := a.Open(context.Background(), "b", b.addr, &Request{Header: proto.StreamHeader{Tunnel: "x"}}); err == nil {
		t.Fatal("opened through two hops")
	}
	if err := testwait.Recv(t, second, 5*time.Second); !errors.Is(err, ErrSecondHop) {
		t.Fatalf("second hop: got %v, want ErrSecondHop", err)
	}
	if n := c.accepted.Load(); n != 0 {
		t.Errorf("c accepted %d connections, want none", n)
	}
	if _, err := a.Open(context.Background(), "a", a.addr, &Request{Header: proto.StreamHeader{Tunnel: "x"}}); err == nil {
		t.Error("a opened a stream to itself")
	}
}

// TestLinks_ConcurrentOpensShareOneLink: many opens from both nodes at
// once, each dialing if it must, end with one link between the two, used
// both ways, and later opens dial nothing.
func TestLinks_ConcurrentOpensShareOneLink(t *testing.T) {
	echo := testnet.Echo(t)
	open := services(map[string]string{"echo": echo})
	a := startNode(t, "a", open, nil)
	b := startNode(t, "b", open, nil)

	const each = 16
	var wg sync.WaitGroup
	errs := make(chan error, 4*each)
	start := make(chan struct{})
	round := func() {
		for i := range 2 * each {
			from, to := a, b
			if i%2 == 1 {
				from, to = b, a
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				conn, err := from.Open(context.Background(), to.name, to.addr, &Request{Header: proto.StreamHeader{Tunnel: "echo"}})
				if err != nil {
					errs <- fmt.Errorf("%s -> %s: %w", from.name, to.name, err)
					return
				}
				defer conn.Close()
				msg := []byte("ping from " + from.name)
				conn.Write(msg)
				conn.Close()
				got, err := io.ReadAll(conn)
				if err == nil && !bytes.Equal(got, msg) {
					err = fmt.Errorf("got %q, want %q", got, msg)
				}
				if err != nil {
					errs <- fmt.Errorf("%s -> %s: %w", from.name, to.name, err)
				}
			}()
		}
		close(start)
		wg.Wait()
	}
	round()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	la, lb := a.keptLink("b"), b.keptLink("a")
	if !sameConn(la, lb) {
		t.Fatalf("a and b keep different links: %v and %v", la, lb)
	}
	if la.dialer != "a" && a.accepted.Load()+b.accepted.Load() > 1 {
		t.Errorf("both dialed, and the kept link was dialed by %s, want a (the name that sorts first)", la.dialer)
	}
	if sa, sb := a.Stats(), b.Stats(); sa.Links != 1 || sb.Links != 1 {
		t.Errorf("links: a %d, b %d, want 1 each", sa.Links, sb.Links)
	}
	if n := a.accepted.Load() + b.accepted.Load(); n > 2 {
		t.Errorf("%d connections between two nodes, want at most 2 (one each if both dialed at once)", n)
	}

	// A second round uses the kept link, from both sides.
	before := a.accepted.Load() + b.accepted.Load()
	errs = make(chan error, 4*each)
	start = make(chan struct{})
	round()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := a.accepted.Load() + b.accepted.Load(); n != before {
		t.Errorf("the second round made %d new connections, want none", n-before)
	}
	if sa, sb := a.Stats(), b.Stats(); sa.StreamsIn+sb.StreamsIn != 4*each {
		t.Errorf("streams served: a %d + b %d, want %d", sa.StreamsIn, sb.StreamsIn, 4*each)
	}
}

// TestLinks_TieBreak: when two nodes both hold a link they dialed, both
// keep the one dialed by the node whose name sorts first, whichever was
// there first, and the other is closed.
func TestLinks_TieBreak(t *testing.T) {
	for _, first := range []string{"a", "b"} {
		t.Run("first dialed by "+first, func(t *testing.T) {
			echo := testnet.Echo(t)
			open := services(map[string]string{"echo": echo})
			a := startNode(t, "a", open, func(c *Config) { c.HandshakeTimeout = 200 * time.Millisecond })
			b := startNode(t, "b", open, func(c *Config) { c.HandshakeTimeout = 200 * time.Millisecond })
			nodes := map[string]*testNode{"a": a, "b": b}
			x, y := nodes[first], a
			if first == "a" {
				y = b
			}
			conn, err := x.Open(context.Background(), y.name, y.addr, &Request{Header: proto.StreamHeader{Tunnel: "echo"}})
			if err != nil {
				t.Fatal(err)
			}
			conn.Close()
			firstLink := x.keptLink(y.name)

			// y dials too, as if it had not seen x's link yet.
			lk, err := y.dialLink(x.name, x.addr)
			if err != nil {
				t.Fatal(err)
			}
			if !y.start(lk) {
				t.Fatal("closed")
			}
			y.add(lk)

			winner, loser := firstLink, lk
			if first == "b" {
				winner, loser = lk, firstLink
			}
			if winner.dialer != "a" {
				t.Fatalf("bad test: the winner was dialed by %s", winner.dialer)
			}
			// The other side decides when its accept ends; the loser is
			// closed once both have decided and it is idle.
			testwait.Recv(t, loser.sess.CloseChan(), 5*time.Second)
			if !sameConn(a.keptLink("b"), b.keptLink("a")) || a.keptLink("b").dialer != "a" {
				t.Fatalf("a keeps %v, b keeps %v, want both the link a dialed", a.keptLink("b"), b.keptLink("a"))
			}
			conn, err = b.Open(context.Background(), "a", a.addr, &Request{Header: proto.StreamHeader{Tunnel: "echo"}})
			if err != nil {
				t.Fatal(err)
			}
			echoRoundTrip(t, conn, 1000, 2)
			if n := a.accepted.Load() + b.accepted.Load(); n != 2 {
				t.Errorf("%d connections, want 2", n)
			}
		})
	}
}

// TestLinks_RedialAfterLoss: a link cut in the middle of a transfer fails
// that transfer (rather than hanging it) and the next Open dials again.
func TestLinks_RedialAfterLoss(t *testing.T) {
	echo := testnet.Echo(t)
	b := startNode(t, "b", services(map[string]string{"echo": echo}), nil)
	a := startNode(t, "a", nil, nil)
	r := newRelay(t, b.addr)
	req := &Request{Header: proto.StreamHeader{Tunnel: "echo"}}

	conn, err := a.Open(context.Background(), "b", r.addr, req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte("before the cut")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(conn, make([]byte, len("before the cut"))); err != nil {
		t.Fatal(err)
	}
	lost := a.keptLink("b")
	r.cut()
	// The stream ends (yamux ends a lost session's streams with EOF, as
	// on a local session); it does not hang, and takes no more writes.
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(conn); err != nil {
		t.Errorf("the stream on the cut link: %v, want its end", err)
	}
	testwait.Recv(t, lost.sess.CloseChan(), 5*time.Second)
	if _, err := conn.Write([]byte("after the cut")); err == nil {
		t.Error("a write on the cut link succeeded")
	}

	conn, err = a.Open(context.Background(), "b", r.addr, req)
	if err != nil {
		t.Fatalf("open after the cut: %v", err)
	}
	echoRoundTrip(t, conn, 64<<10, 3)
	if s := a.Stats(); s.Dials != 2 || s.Links != 1 {
		t.Errorf("got %+v, want 2 dials and one link", s)
	}
	if n := r.accepted.Load(); n != 2 {
		t.Errorf("relay carried %d connections, want 2", n)
	}
}

// TestLinks_KeepaliveNoticesADeadNode: a link that goes silent (no FIN, no
// reset) is closed by the keepalive within KeepAliveInterval+WriteTimeout.
func TestLinks_KeepaliveNoticesADeadNode(t *testing.T) {
	fast := func(c *Config) { c.KeepAliveInterval, c.WriteTimeout = 200*time.Millisecond, 300*time.Millisecond }
	b := startNode(t, "b", services(map[string]string{}), fast)
	a := startNode(t, "a", nil, fast)
	r := newRelay(t, b.addr)
	if _, err := a.Open(context.Background(), "b", r.addr, &Request{Header: proto.StreamHeader{Tunnel: "x"}}); err == nil {
		t.Fatal("opened an unknown tunnel")
	}
	lk := a.keptLink("b")
	if lk == nil {
		t.Fatal("no link")
	}
	r.freeze()
	start := time.Now()
	testwait.Recv(t, lk.sess.CloseChan(), 5*time.Second)
	t.Logf("silent link closed after %v", time.Since(start).Round(time.Millisecond))
	if s := a.Stats(); s.Links != 0 {
		t.Errorf("links: %d, want 0", s.Links)
	}
}

// TestLinks_UnreachableNodeBacksOff: a node that cannot be reached is an
// ErrUnreachable, and Opens within the redial wait fail without dialing.
func TestLinks_UnreachableNodeBacksOff(t *testing.T) {
	a := startNode(t, "a", nil, func(c *Config) { c.RedialMin, c.RedialMax = time.Minute, time.Minute })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	for i := range 3 {
		_, err := a.Open(context.Background(), "b", addr, &Request{Header: proto.StreamHeader{Tunnel: "x"}})
		if !errors.Is(err, ErrUnreachable) || !mux.IsClosed(err) {
			t.Fatalf("open %d: got %v, want ErrUnreachable, which the edge takes for offline (mux.IsClosed)", i, err)
		}
	}
	if s := a.Stats(); s.Dials != 1 || s.DialFailures != 1 {
		t.Errorf("got %+v, want one failed dial", s)
	}
}

func TestLinks_CloseTwice(t *testing.T) {
	echo := testnet.Echo(t)
	b := startNode(t, "b", services(map[string]string{"echo": echo}), nil)
	a := startNode(t, "a", nil, nil)
	conn, err := a.Open(context.Background(), "b", b.addr, &Request{Header: proto.StreamHeader{Tunnel: "echo"}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
		}()
	}
	wg.Wait()
	if err := a.Close(); err != nil {
		t.Errorf("third close: %v", err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(conn); err != nil {
		t.Errorf("a stream of closed Links: %v, want its end", err)
	}
	if _, err := conn.Write([]byte("after close")); err == nil {
		t.Error("a stream outlived its Links' Close")
	}
	if _, err := a.Open(context.Background(), "b", b.addr, &Request{Header: proto.StreamHeader{Tunnel: "echo"}}); !errors.Is(err, ErrClosed) {
		t.Errorf("open after close: got %v, want ErrClosed", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Serve(ln); !errors.Is(err, ErrClosed) {
		t.Errorf("serve after close: got %v, want ErrClosed", err)
	}
}

func TestConfig_Validate(t *testing.T) {
	ok := DefaultConfig()
	ok.Node, ok.Secret = "node-1.example.com", testSecret
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"short secret", func(c *Config) { c.Secret = testSecret[:31] }, "at least 32"},
		{"no node", func(c *Config) { c.Node = "" }, "node name"},
		{"space in node", func(c *Config) { c.Node = "a b" }, "node name"},
		{"long node", func(c *Config) { c.Node = strings.Repeat("n", 254) }, "node name"},
		{"ca without certificate", func(c *Config) { c.CA = x509.NewCertPool() }, "certificate"},
		{"zero timeout", func(c *Config) { c.HandshakeTimeout = 0 }, "handshake timeout"},
		{"small window", func(c *Config) { c.StreamWindow = 1024 }, "stream window"},
		{"redial max under min", func(c *Config) { c.RedialMax = time.Millisecond }, "redial max"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mod(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error about %q", err, tc.want)
			}
			if _, err := New(c); err == nil {
				t.Fatal("New accepted it")
			}
		})
	}
}

// TestLinks_ThreeNodesEachToEach: in a cluster of three, every node reaches
// every other's clients, over one link per pair (three in all).
func TestLinks_ThreeNodesEachToEach(t *testing.T) {
	nodes := make([]*testNode, 3)
	for i, name := range []string{"n1", "n2", "n3"} {
		echo := testnet.Echo(t)
		nodes[i] = startNode(t, name, services(map[string]string{"on-" + name: echo}), nil)
	}
	for round := range 2 {
		for _, from := range nodes {
			for _, to := range nodes {
				if from == to {
					continue
				}
				conn, err := from.Open(context.Background(), to.name, to.addr, &Request{Header: proto.StreamHeader{Tunnel: "on-" + to.name}})
				if err != nil {
					t.Fatalf("round %d, %s -> %s: %v", round, from.name, to.name, err)
				}
				echoRoundTrip(t, conn, 32<<10, uint64(round))
			}
		}
	}
	var conns int64
	for _, n := range nodes {
		conns += n.accepted.Load()
		if s := n.Stats(); s.Links != 2 || s.StreamsIn != 4 || s.StreamsOut != 4 {
			t.Errorf("%s: got %+v, want 2 links, 4 streams in and 4 out", n.name, s)
		}
	}
	if conns != 3 {
		t.Errorf("%d connections between three nodes, want 3", conns)
	}
}

// TestLinks_LinkLostBeforeTheAnswerIsRetried: a link lost while the owning
// node is still opening carries none of the caller's bytes yet, so Open
// tries once more on a new link and the caller sees nothing of the loss.
func TestLinks_LinkLostBeforeTheAnswerIsRetried(t *testing.T) {
	echo := testnet.Echo(t)
	dialEcho := services(map[string]string{"echo": echo})
	started := make(chan struct{}, 1)
	var calls sync.Map
	b := startNode(t, "b", func(ctx context.Context, req *Request) (net.Conn, error) {
		if _, again := calls.LoadOrStore("first", true); !again {
			started <- struct{}{}
			<-ctx.Done() // the link's loss ends it
			return nil, ctx.Err()
		}
		return dialEcho(ctx, req)
	}, nil)
	a := startNode(t, "a", nil, nil)
	r := newRelay(t, b.addr)
	res := make(chan error, 1)
	var conn net.Conn
	go func() {
		var err error
		conn, err = a.Open(context.Background(), "b", r.addr, &Request{Header: proto.StreamHeader{Tunnel: "echo"}})
		res <- err
	}()
	testwait.Recv(t, started, 5*time.Second)
	r.cut()
	if err := testwait.Recv(t, res, 10*time.Second); err != nil {
		t.Fatalf("open across a lost link: %v", err)
	}
	echoRoundTrip(t, conn, 1000, 6)
	if s := a.Stats(); s.Dials != 2 || s.StreamsOut != 1 {
		t.Errorf("got %+v, want 2 dials and one stream", s)
	}
}

// TestLinks_LostLinkEndsItsLocalStreams: yamux ends a lost link's streams
// with EOF, which reads like a half-close; a local service that stays
// quiet after one (an idle TCP tunnel) must not hold the owning node's
// pipe, and its Close, forever.
func TestLinks_LostLinkEndsItsLocalStreams(t *testing.T) {
	release := make(chan struct{})
	got := make(chan struct{}, 1)
	quiet := testnet.Serve(t, func(c net.Conn) {
		defer c.Close()
		io.Copy(io.Discard, c)
		got <- struct{}{}
		<-release // stays open and says nothing, after the half-close
	})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) }) // before Serve's cleanup waits for it
	b := startNode(t, "b", services(map[string]string{"quiet": quiet}), nil)
	a := startNode(t, "a", nil, nil)
	conn, err := a.Open(context.Background(), "b", b.addr, &Request{Header: proto.StreamHeader{Tunnel: "quiet", CloseOnFIN: false}})
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("x"))
	a.Close() // b's link is lost with the stream on it
	testwait.Recv(t, got, 5*time.Second)

	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		once.Do(func() { close(release) })
		<-closed
		t.Fatal("b's Close waited for a quiet local service after its link was lost")
	}
}

// TestLinks_MalformedRequestsAreRefused: a stream whose request is too
// large, not JSON, or names no tunnel is refused without reaching OpenFunc,
// and the link carries on.
func TestLinks_MalformedRequestsAreRefused(t *testing.T) {
	echo := testnet.Echo(t)
	var calls sync.Map
	dialEcho := services(map[string]string{"echo": echo})
	b := startNode(t, "b", func(ctx context.Context, req *Request) (net.Conn, error) {
		calls.Store(req.Header.Tunnel, true)
		return dialEcho(ctx, req)
	}, nil)
	a := startNode(t, "a", nil, nil)
	lk, err := a.link(context.Background(), "b", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	for name, raw := range map[string][]byte{
		"too large": {0xff, 0xff, '{'},
		"not json":  append([]byte{0, 5}, "hello"...),
		"no tunnel": append([]byte{0, 13}, `{"header":{}}`...),
	} {
		st, err := lk.sess.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		st.Write(raw)
		st.SetReadDeadline(time.Now().Add(5 * time.Second))
		var ans answer
		err = readFrame(st, &ans)
		switch {
		case name == "no tunnel" && (err != nil || ans.OK || ans.Error == nil || ans.Error.Code != proto.CodeBadRequest):
			t.Errorf("%s: got %+v, %v, want a bad_request answer", name, ans, err)
		case name != "no tunnel" && err == nil:
			t.Errorf("%s: got an answer %+v, want the stream closed", name, ans)
		}
		st.Close()
	}
	calls.Range(func(k, _ any) bool {
		t.Errorf("OpenFunc ran for %q", k)
		return true
	})
	conn, err := a.Open(context.Background(), "b", b.addr, &Request{Header: proto.StreamHeader{Tunnel: "echo"}})
	if err != nil {
		t.Fatalf("open after malformed requests: %v", err)
	}
	echoRoundTrip(t, conn, 1000, 8)
	if s := a.Stats(); s.Dials != 1 {
		t.Errorf("%d dials, want the one link throughout", s.Dials)
	}
}

// TestLinks_RestartedNodeReplacesItsOldLink: a node that comes back (a new
// incarnation under the same name) while the other still holds a link to
// its old self that died silently gets its new link kept at once, without
// waiting for the keepalive to give up on the old one.
func TestLinks_RestartedNodeReplacesItsOldLink(t *testing.T) {
	slow := func(c *Config) { c.KeepAliveInterval, c.WriteTimeout = time.Minute, time.Minute }
	a := startNode(t, "a", services(map[string]string{}), slow)
	b1 := startNode(t, "b", services(map[string]string{}), slow)
	r := newRelay(t, b1.addr)
	if _, err := a.Open(context.Background(), "b", r.addr, &Request{Header: proto.StreamHeader{Tunnel: "x"}}); err == nil {
		t.Fatal("opened an unknown tunnel")
	}
	old := a.keptLink("b")
	r.freeze() // b's old self is gone without a word

	echo := testnet.Echo(t)
	b2 := startNode(t, "b", services(map[string]string{"echo": echo}), slow)
	if _, err := b2.Open(context.Background(), "a", a.addr, &Request{Header: proto.StreamHeader{Tunnel: "x"}}); err == nil {
		t.Fatal("opened an unknown tunnel")
	}
	testwait.Recv(t, old.sess.CloseChan(), 5*time.Second)
	conn, err := a.Open(context.Background(), "b", r.addr, &Request{Header: proto.StreamHeader{Tunnel: "echo"}})
	if err != nil {
		t.Fatalf("open to the restarted node: %v", err)
	}
	echoRoundTrip(t, conn, 1000, 9)
	if !sameConn(a.keptLink("b"), b2.keptLink("a")) {
		t.Error("a does not keep the restarted node's link")
	}
}

// TestLinks_LinkDeadOnOneSideIsReplaced: the tie-break favours the link a
// dialed, but when b gave that link up (its keepalive ran out first) and
// dials a, a finds the old link does not answer a ping and keeps b's.
func TestLinks_LinkDeadOnOneSideIsReplaced(t *testing.T) {
	echo := testnet.Echo(t)
	open := services(map[string]string{"echo": echo})
	a := startNode(t, "a", open, func(c *Config) { c.KeepAliveInterval, c.WriteTimeout = time.Minute, 500*time.Millisecond })
	b := startNode(t, "b", open, func(c *Config) { c.KeepAliveInterval, c.WriteTimeout = 200*time.Millisecond, 300*time.Millisecond })
	r := newRelay(t, b.addr)
	if _, err := a.Open(context.Background(), "b", r.addr, &Request{Header: proto.StreamHeader{Tunnel: "x"}}); err == nil {
		t.Fatal("opened an unknown tunnel")
	}
	old := a.keptLink("b")
	bOld := b.anyLink("a") // b has started it: it answered on it
	r.freeze()
	start := time.Now()
	testwait.Recv(t, bOld.sess.CloseChan(), 5*time.Second) // b gave up; a has not
	t.Logf("b gave up after %v", time.Since(start))

	conn, err := b.Open(context.Background(), "a", a.addr, &Request{Header: proto.StreamHeader{Tunnel: "echo"}})
	if err != nil {
		t.Fatalf("b's open on its new link: %v", err)
	}
	echoRoundTrip(t, conn, 1000, 10)
	testwait.Recv(t, old.sess.CloseChan(), 5*time.Second)
	t.Logf("a dropped the old link after %v", time.Since(start))
	conn, err = a.Open(context.Background(), "b", r.addr, &Request{Header: proto.StreamHeader{Tunnel: "echo"}})
	if err != nil {
		t.Fatalf("a's open after the old link died: %v", err)
	}
	echoRoundTrip(t, conn, 1000, 11)
	if !sameConn(a.keptLink("b"), b.keptLink("a")) || a.keptLink("b").dialer != "b" {
		t.Errorf("a keeps %+v, b keeps %+v, want both b's new link", a.keptLink("b"), b.keptLink("a"))
	}
}

// TestLinks_LongRefusalIsCut: a client's refusal with a message longer
// than a frame still arrives, as a *proto.Error with its message cut.
func TestLinks_LongRefusalIsCut(t *testing.T) {
	long := strings.Repeat("é", 10<<10)
	b := startNode(t, "b", func(ctx context.Context, req *Request) (net.Conn, error) {
		return nil, &proto.Error{Code: proto.CodeLocalUnreachable, Message: long}
	}, nil)
	a := startNode(t, "a", nil, nil)
	_, err := a.Open(context.Background(), "b", b.addr, &Request{Header: proto.StreamHeader{Tunnel: "x"}})
	var perr *proto.Error
	if !errors.As(err, &perr) || perr.Code != proto.CodeLocalUnreachable || len(perr.Message) > maxMessage || !strings.HasPrefix(long, perr.Message) {
		t.Fatalf("got %v, want the refusal with its message cut to %d bytes", err, maxMessage)
	}
}
