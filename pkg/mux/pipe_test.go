package mux

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunnelhq/tunnel/internal/testlog"
	"github.com/tunnelhq/tunnel/internal/testwait"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// endlessServer is a local service that writes until its connection fails,
// then reports that on the returned channel: it stands for a large download
// whose visitor has left.
func endlessServer(t *testing.T) (string, <-chan struct{}) {
	t.Helper()
	ended := make(chan struct{}, 1)
	addr := localService(t, func(c net.Conn) {
		defer c.Close()
		buf := make([]byte, 32<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				select {
				case ended <- struct{}{}:
				default: // a later connection; the test waits for the first
				}
				return
			}
		}
	})
	return addr, ended
}

// TestPipe_CloseOnFINEndsTheLocalConnection: when tunneld closes an HTTP
// stream (a visitor cut a download), the client must hang up on the local
// service at once rather than half-close and keep copying its output until
// the stream's window is full, where it would sit for yamux's close
// timeout holding a window of tunneld's memory.
func TestPipe_CloseOnFINEndsTheLocalConnection(t *testing.T) {
	c, s, err := session(t, transports()["tcp"], hello("dl"), nil)
	if err != nil {
		t.Fatal(err)
	}
	addr, ended := endlessServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	errc := serve(t, ctx, c, map[string]string{"dl": addr})
	defer func() {
		cancel()
		testwait.Recv(t, errc, 10*time.Second)
	}()

	st, err := s.Open(context.Background(), &proto.StreamHeader{Tunnel: "dl", CloseOnFIN: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(st, make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	st.Close()
	testwait.Recv(t, ended, 5*time.Second)
}

// countingCopier copies raw and counts what each direction copied.
type countingCopier struct{ in, out chan int64 }

func (c countingCopier) CopyIn(dst io.Writer, src io.Reader) (int64, error) {
	n, err := io.Copy(dst, src)
	c.in <- n
	return n, err
}

func (c countingCopier) CopyOut(dst io.Writer, src io.Reader) (int64, error) {
	n, err := io.Copy(dst, src)
	c.out <- n
	return n, err
}

// TestPipe_CopierCopiesBothDirections: with ClientConfig.Copier set, the
// stream's two directions go through the copier it returns, which is told
// the stream's tunnel and target, and the pipe still half-closes.
func TestPipe_CopierCopiesBothDirections(t *testing.T) {
	c, s, err := session(t, transports()["tcp"], hello("echo"), nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := localService(t, func(conn net.Conn) {
		defer conn.Close()
		io.Copy(conn, conn)
	})
	cp := countingCopier{in: make(chan int64, 1), out: make(chan int64, 1)}
	infos := make(chan StreamInfo, 1)
	c.copier = func(info StreamInfo) StreamCopier {
		infos <- info
		return cp
	}
	c.copied = map[string]bool{"echo": true} // as Run sets it for HTTP tunnels
	ctx, cancel := context.WithCancel(context.Background())
	errc := serve(t, ctx, c, map[string]string{"echo": addr})
	defer func() {
		cancel()
		testwait.Recv(t, errc, 10*time.Second)
	}()
	st, err := s.Open(context.Background(), &proto.StreamHeader{Tunnel: "echo"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(st, "ping"); err != nil {
		t.Fatal(err)
	}
	st.Close() // yamux: FIN, reading goes on
	got, err := io.ReadAll(st)
	if err != nil || string(got) != "ping" {
		t.Fatalf("echo: %q, %v; want ping", got, err)
	}
	if info := testwait.Recv(t, infos, 5*time.Second); info.Tunnel != "echo" || info.Target != addr {
		t.Errorf("copier told %+v, want tunnel echo, target %s", info, addr)
	}
	if in, out := testwait.Recv(t, cp.in, 5*time.Second), testwait.Recv(t, cp.out, 5*time.Second); in != 4 || out != 4 {
		t.Errorf("copier copied %d in, %d out; want 4 and 4", in, out)
	}
}

// panickyCopier copies raw, but panics on a stream whose first bytes say
// "boom", as a bug in the inspector's parser would.
type panickyCopier struct{}

func (panickyCopier) CopyIn(dst io.Writer, src io.Reader) (int64, error) {
	buf := make([]byte, 4)
	k, err := io.ReadFull(src, buf)
	if err == nil && string(buf) == "boom" {
		panic("the copier's bug")
	}
	n, err := dst.Write(buf[:k])
	m, err2 := io.Copy(dst, src)
	if err == nil {
		err = err2
	}
	return int64(n) + m, err
}

func (panickyCopier) CopyOut(dst io.Writer, src io.Reader) (int64, error) { return io.Copy(dst, src) }

// TestPipe_CopierPanicCostsOneStream: a copier that panics closes its own
// stream, logged with its stack; the client goes on serving other streams
// (a panic not contained would end the test binary).
func TestPipe_CopierPanicCostsOneStream(t *testing.T) {
	c, s, err := session(t, transports()["tcp"], hello("echo"), nil)
	if err != nil {
		t.Fatal(err)
	}
	var logs testlog.Buffer
	c.log = zerolog.New(&logs)
	addr := localService(t, func(conn net.Conn) {
		defer conn.Close()
		io.Copy(conn, conn)
	})
	c.copier = func(StreamInfo) StreamCopier { return panickyCopier{} }
	c.copied = map[string]bool{"echo": true}
	ctx, cancel := context.WithCancel(context.Background())
	errc := serve(t, ctx, c, map[string]string{"echo": addr})
	defer func() {
		cancel()
		testwait.Recv(t, errc, 10*time.Second)
	}()
	for _, say := range []string{"boom", "ping", "boom", "pong"} {
		st, err := s.Open(context.Background(), &proto.StreamHeader{Tunnel: "echo"})
		if err != nil {
			t.Fatal(err)
		}
		st.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(st, say); err != nil {
			t.Fatal(err)
		}
		st.Close()
		got, err := io.ReadAll(st)
		if say == "boom" {
			if len(got) != 0 {
				t.Fatalf("a stream whose copier panicked answered %q", got)
			}
			continue
		}
		if err != nil || string(got) != say {
			t.Fatalf("after a panicked stream: %q, %v; want %q", got, err, say)
		}
	}
	if n := logs.Count("panic in the stream copier"); n != 2 || logs.Count("the copier's bug") != 2 || logs.Count("pipe_test.go") != 2 {
		t.Fatalf("want two panics logged with their stacks, got:\n%s", logs.String())
	}
}
