package peer

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/internal/testnet"
	"github.com/tunnelhq/tunnel/internal/testtls"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// counting is an OpenFunc that only counts its calls: the tests here must
// see none.
func counting(n *atomic.Int64) OpenFunc {
	return func(ctx context.Context, req *Request) (net.Conn, error) {
		n.Add(1)
		return nil, &proto.Error{Code: proto.CodeUnknownTunnel}
	}
}

func TestAuth_WrongSecretIsRefused(t *testing.T) {
	var opened atomic.Int64
	b := startNode(t, "b", counting(&opened), func(c *Config) {
		c.Secret = []byte("another secret, also 32 bytes long")
	})
	a := startNode(t, "a", nil, nil)
	_, err := a.Open(context.Background(), "b", b.addr, &Request{Header: proto.StreamHeader{Tunnel: "x"}})
	if !errors.Is(err, ErrUnreachable) || !errors.Is(err, ErrBadSecret) {
		t.Fatalf("got %v, want ErrUnreachable and ErrBadSecret", err)
	}
	if n := opened.Load(); n != 0 {
		t.Errorf("b's OpenFunc ran %d times", n)
	}
	if sa, sb := a.Stats(), b.Stats(); sa.Links != 0 || sb.Links != 0 || sb.Refused != 1 || sa.DialFailures != 1 {
		t.Errorf("a %+v, b %+v: want no link, one refusal by b, one failed dial by a", sa, sb)
	}
	if !strings.Contains(b.log.String(), "node link refused: wrong cluster secret") {
		t.Errorf("b's log says nothing of a wrong secret:\n%s", b.log)
	}
	if !strings.Contains(a.log.String(), "cluster secret does not match") {
		t.Errorf("a's log says nothing of a wrong secret:\n%s", a.log)
	}
	if strings.Contains(a.log.String()+b.log.String(), string(testSecret)) {
		t.Error("a secret reached the log")
	}
}

// TestAuth_RelayCannotReplayTheProof: a machine in the middle that
// terminates TLS on both sides and passes the bytes on (which is what the
// ephemeral certificates would let it do) gets nowhere: the proofs are
// bound to each TLS connection, and its two connections differ.
func TestAuth_RelayCannotReplayTheProof(t *testing.T) {
	var opened atomic.Int64
	b := startNode(t, "b", counting(&opened), nil)
	a := startNode(t, "a", nil, nil)

	cert, err := selfSigned("mitm")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tln := tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{ALPN}, MinVersion: tls.VersionTLS13})
	var mu sync.Mutex
	var conns []net.Conn
	testnet.ServeOn(t, tln, func(c net.Conn) {
		defer c.Close()
		up, err := tlsDial(b.addr, ALPN)
		if err != nil {
			return
		}
		defer up.Close()
		mu.Lock()
		conns = append(conns, c, up)
		mu.Unlock()
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			io.Copy(up, c)
			up.Close()
		}()
		io.Copy(c, up)
		c.Close()
		wg.Wait()
	})

	t.Cleanup(func() { // before ServeOn's, which waits for the relay's handlers
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})

	_, err = a.Open(context.Background(), "b", ln.Addr().String(), &Request{Header: proto.StreamHeader{Tunnel: "x"}})
	if !errors.Is(err, ErrBadSecret) {
		t.Fatalf("through the relay: got %v, want ErrBadSecret", err)
	}
	if n := opened.Load(); n != 0 {
		t.Errorf("b's OpenFunc ran %d times", n)
	}
	if s := b.Stats(); s.Refused != 1 || s.Links != 0 {
		t.Errorf("b: got %+v, want one refusal and no link", s)
	}
}

// TestAuth_UnauthenticatedConnectionsAreDropped: whatever a stranger sends
// (nothing, HTTP, TLS for a browser, TLS for us with a bad or half a
// hello), the connection is closed within the handshake bound, costs no
// goroutine after (goleak), and its log lines are bounded.
func TestAuth_UnauthenticatedConnectionsAreDropped(t *testing.T) {
	const bound = 300 * time.Millisecond
	var opened atomic.Int64
	b := startNode(t, "b", counting(&opened), func(c *Config) { c.HandshakeTimeout = bound })
	within := 3 * time.Second // generous for -race on a busy machine; bound is what the node applies

	dial := func(t *testing.T) net.Conn {
		c, err := net.Dial("tcp", b.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	tlsConn := func(t *testing.T, alpn ...string) *tls.Conn {
		c, err := tlsDial(b.addr, alpn...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	t.Run("silent", func(t *testing.T) {
		if d := closedWithin(t, dial(t), within); d < bound/2 {
			t.Errorf("closed after %v, before the handshake bound %v", d, bound)
		}
	})
	t.Run("http", func(t *testing.T) {
		c := dial(t)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: b\r\n\r\n")
		closedWithin(t, c, within)
	})
	t.Run("browser alpn", func(t *testing.T) {
		if c, err := tlsDial(b.addr, "h2", "http/1.1"); err == nil {
			c.Close()
			t.Fatal("a browser's TLS handshake succeeded on the node port")
		}
	})
	t.Run("no alpn", func(t *testing.T) {
		closedWithin(t, tlsConn(t), within)
	})
	t.Run("silent after tls", func(t *testing.T) {
		closedWithin(t, tlsConn(t, ALPN), within)
	})
	t.Run("garbage after tls", func(t *testing.T) {
		c := tlsConn(t, ALPN)
		c.Write(bytes.Repeat([]byte{0xff}, 600))
		closedWithin(t, c, within)
	})
	t.Run("half a hello", func(t *testing.T) {
		c := tlsConn(t, ALPN)
		c.Write([]byte(helloMagic + "\xffabc")) // a 255-byte name that never comes
		closedWithin(t, c, within)
	})
	t.Run("forged hello", func(t *testing.T) {
		c := tlsConn(t, ALPN)
		var buf bytes.Buffer
		writeHello(&buf, []byte("a guess at the secret, 32 bytes!"), make([]byte, 32), hello{from: "a", to: "b", incarnation: 1})
		c.Write(buf.Bytes())
		c.SetReadDeadline(time.Now().Add(within))
		var status [1]byte
		if _, err := io.ReadFull(c, status[:]); err != nil || status[0] != statusBadSecret {
			t.Errorf("got status %d (%v), want %d", status[0], err, statusBadSecret)
		}
		closedWithin(t, c, within)
	})
	for i := range 6 {
		c := dial(t)
		io.WriteString(c, "garbage garbage garbage")
		closedWithin(t, c, within)
		_ = i
	}

	if n := opened.Load(); n != 0 {
		t.Errorf("b's OpenFunc ran %d times", n)
	}
	// A TLS alert leaves before b counts the refusal: the counts are final
	// once b is closed.
	b.Close()
	s := b.Stats()
	if s.Links != 0 || s.Refused < 12 {
		t.Errorf("b: got %+v, want no link and every connection refused", s)
	}
	if lines := strings.Count(b.log.String(), "node link refused"); lines > logBurst {
		t.Errorf("%d log lines for %d refusals, want at most %d", lines, s.Refused, logBurst)
	}
	b.mu.Lock()
	inProgress := b.handshakes
	b.mu.Unlock()
	if inProgress != 0 {
		t.Errorf("%d handshakes still counted", inProgress)
	}
}

// TestAuth_HandshakeLimitPerAddress: past MaxHandshakesPerIP connections
// in their handshake from one address, the next is closed at once, long
// before the handshake bound.
func TestAuth_HandshakeLimitPerAddress(t *testing.T) {
	b := startNode(t, "b", nil, func(c *Config) {
		c.HandshakeTimeout = time.Minute
		c.MaxHandshakesPerIP = 2
	})
	for range 2 {
		c, err := net.Dial("tcp", b.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	// The node port accepts in order, so the third is admitted after the
	// first two, which wait for a minute.
	c, err := net.Dial("tcp", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	closedWithin(t, c, 10*time.Second)
	if s := b.Stats(); s.Refused != 1 {
		t.Errorf("refused %d, want 1", s.Refused)
	}
}

// TestAuth_ClusterCA: with a cluster CA, nodes with its certificates link
// up, and a node with the secret but another CA's certificate does not.
func TestAuth_ClusterCA(t *testing.T) {
	ca, other := testtls.NewCA(t), testtls.NewCA(t)
	withCert := func(cert tls.Certificate) func(*Config) {
		return func(c *Config) { c.Certificate, c.CA = &cert, ca.Pool() }
	}
	echo := testnet.Echo(t)
	b := startNode(t, "b", services(map[string]string{"echo": echo}), withCert(ca.Issue(t, "b")))
	a := startNode(t, "a", nil, withCert(ca.Issue(t, "a")))
	conn, err := a.Open(context.Background(), "b", b.addr, &Request{Header: proto.StreamHeader{Tunnel: "echo"}})
	if err != nil {
		t.Fatal(err)
	}
	echoRoundTrip(t, conn, 1000, 4)

	c := startNode(t, "c", nil, withCert(other.Issue(t, "c")))
	if _, err := c.Open(context.Background(), "b", b.addr, &Request{Header: proto.StreamHeader{Tunnel: "echo"}}); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("a node with another CA's certificate: got %v, want ErrUnreachable", err)
	}
	// Nor does a node without the CA reach one that has it.
	d := startNode(t, "d", nil, nil)
	if _, err := d.Open(context.Background(), "b", b.addr, &Request{Header: proto.StreamHeader{Tunnel: "echo"}}); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("a node without a certificate of the CA: got %v, want ErrUnreachable", err)
	}
	if s := b.Stats(); s.Links != 1 {
		t.Errorf("b: %d links, want a's only", s.Links)
	}
	// TLS refuses before b counts: its count is final once it is closed.
	b.Close()
	if s := b.Stats(); s.Refused != 2 {
		t.Errorf("b refused %d connections, want 2", s.Refused)
	}
}

func TestReadSecret(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	got, err := ReadSecret(write("ok", string(testSecret)+"\n", 0o600))
	if err != nil || !bytes.Equal(got, testSecret) {
		t.Errorf("got %q, %v, want the secret without its newline", got, err)
	}
	if _, err := ReadSecret(write("open", string(testSecret), 0o644)); err == nil || !strings.Contains(err.Error(), "other users") {
		t.Errorf("world-readable: got %v, want a refusal", err)
	}
	if _, err := ReadSecret(write("short", "short\n", 0o600)); err == nil || !strings.Contains(err.Error(), "at least") {
		t.Errorf("short: got %v, want a refusal", err)
	}
	if _, err := ReadSecret(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file: no error")
	}
}

// TestAuth_DialerChecksTheNode: the dialing node believes nothing until the
// node it reached has proved the secret too: an impostor that takes any
// hello and answers "ok" without the secret is refused, and so is an
// address where another node answers.
func TestAuth_DialerChecksTheNode(t *testing.T) {
	a := startNode(t, "a", nil, nil)
	cert, err := selfSigned("impostor")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tln := tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{ALPN}, MinVersion: tls.VersionTLS13})
	var mu sync.Mutex
	var conns []net.Conn
	testnet.ServeOn(t, tln, func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
		defer c.Close()
		c.Read(make([]byte, 600)) // the hello, or enough of it
		reply := appendName([]byte{statusOK}, "b")
		reply = append(reply, make([]byte, 8+macSize)...) // an incarnation and a made-up proof
		c.Write(reply)
		io.Copy(io.Discard, c)
	})
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	_, err = a.Open(context.Background(), "b", ln.Addr().String(), &Request{Header: proto.StreamHeader{Tunnel: "x"}})
	if !errors.Is(err, ErrBadSecret) {
		t.Fatalf("impostor: got %v, want ErrBadSecret", err)
	}

	b := startNode(t, "b", nil, nil)
	_, err = a.Open(context.Background(), "c", b.addr, &Request{Header: proto.StreamHeader{Tunnel: "x"}})
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "not the node asked for") {
		t.Fatalf("b's address named as c: got %v, want a refusal", err)
	}
	if s := a.Stats(); s.Links != 0 {
		t.Errorf("a: %d links, want none", s.Links)
	}
}
