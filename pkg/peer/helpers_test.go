package peer

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/tunnelhq/tunnel/internal/testlog"
	"github.com/tunnelhq/tunnel/internal/testnet"
	"github.com/tunnelhq/tunnel/internal/testwait"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var testSecret = []byte("0123456789abcdef0123456789abcdef")

// testNode is one node's Links serving a loopback node port.
type testNode struct {
	*Links
	name     string
	addr     string
	accepted atomic.Int64 // connections the node port accepted
	log      *testlog.Buffer
}

// startNode starts a node named name whose forwarded streams go to open;
// mod, if not nil, changes its config first. The test's cleanup closes it
// and checks that Serve returned nil.
func startNode(t testing.TB, name string, open OpenFunc, mod func(*Config)) *testNode {
	t.Helper()
	n := &testNode{name: name, log: &testlog.Buffer{}}
	cfg := DefaultConfig()
	cfg.Node, cfg.Secret, cfg.Open = name, testSecret, open
	cfg.Logger = zerolog.New(n.log)
	cfg.HandshakeTimeout = time.Second
	cfg.KeepAliveInterval, cfg.WriteTimeout = time.Second, 2*time.Second
	if mod != nil {
		mod(&cfg)
	}
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.Links, n.addr = l, ln.Addr().String()
	served := make(chan error, 1)
	go func() { served <- l.Serve(countingListener{ln, &n.accepted}) }()
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close %s: %v", name, err)
		}
		// ErrClosed: a short test closed the Links before Serve began.
		if err := testwait.Recv(t, served, 5*time.Second); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("serve %s: %v", name, err)
		}
	})
	return n
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// services is an OpenFunc that connects each tunnel name to a loopback
// TCP service, as a client would connect it to its local service.
func services(m map[string]string) OpenFunc {
	return func(ctx context.Context, req *Request) (net.Conn, error) {
		addr, ok := m[req.Header.Tunnel]
		if !ok {
			return nil, &proto.Error{Code: proto.CodeUnknownTunnel, Message: "no tunnel " + req.Header.Tunnel}
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, &proto.Error{Code: proto.CodeLocalUnreachable, Message: err.Error()}
		}
		return c, nil
	}
}

// keptLink returns the link n keeps to node, nil if none.
func (n *testNode) keptLink(node string) *link {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ps := n.peers[node]; ps != nil {
		return ps.link
	}
	return nil
}

// anyLink returns a link n has started to node, kept or not, nil if none.
func (n *testNode) anyLink(node string) *link {
	n.mu.Lock()
	defer n.mu.Unlock()
	for lk := range n.all {
		if lk.peer == node {
			return lk
		}
	}
	return nil
}

// sameConn reports whether a's link and b's link are the two ends of one
// TCP connection.
func sameConn(a, b *link) bool {
	return a != nil && b != nil &&
		a.sess.LocalAddr().String() == b.sess.RemoteAddr().String() &&
		a.sess.RemoteAddr().String() == b.sess.LocalAddr().String()
}

// relay is a TCP relay between a node and another node's port, which a test
// can cut (close every connection) or freeze (stop moving bytes without
// closing anything: a silent network failure).
type relay struct {
	addr     string
	accepted atomic.Int64

	mu    sync.Mutex
	conns []net.Conn
	gate  chan struct{} // non-nil while frozen; closed to thaw
}

func newRelay(t *testing.T, target string) *relay {
	r := &relay{}
	r.addr = testnet.Serve(t, func(c net.Conn) {
		r.accepted.Add(1)
		up, err := net.Dial("tcp", target)
		if err != nil {
			c.Close()
			return
		}
		r.mu.Lock()
		r.conns = append(r.conns, c, up)
		r.mu.Unlock()
		done := make(chan struct{})
		go func() {
			defer close(done)
			r.copy(up, c)
		}()
		r.copy(c, up)
		<-done
	})
	t.Cleanup(r.cut) // runs before testnet's cleanup, which waits for the handlers
	return r
}

func (r *relay) copy(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			r.mu.Lock()
			gate := r.gate
			r.mu.Unlock()
			if gate != nil {
				<-gate
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// cut closes every connection through the relay (and thaws it).
func (r *relay) cut() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		c.Close()
	}
	r.conns = nil
	if r.gate != nil {
		close(r.gate)
		r.gate = nil
	}
}

// freeze stops the relay moving bytes until cut.
func (r *relay) freeze() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gate == nil {
		r.gate = make(chan struct{})
	}
}

// closedWithin reports how a connection that the node port should drop
// ends: it reads until an error, and fails the test if none comes within d.
func closedWithin(t *testing.T, c net.Conn, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(d))
	_, err := io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("connection still open after %v", d)
	}
	return time.Since(start)
}

// tlsDial dials addr with TLS asking for the protocols alpn, trusting any
// certificate, and completes the handshake.
func tlsDial(addr string, alpn ...string) (*tls.Conn, error) {
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: alpn, MinVersion: tls.VersionTLS13})
	if err != nil {
		return nil, err
	}
	return c, nil
}
