package edge

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/tunnelhq/tunnel/internal/testwait"
)

// A kept stream nobody takes is closed after the pool's idle time, so the
// client's connection to its service does not stay open for good; and the
// pool keeps at most max.
func TestStreamPool_ClosesStreamsKeptTooLong(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// The "client" answers each request on a connection and reports when
	// the pool closes that connection.
	closed := make(chan int, 4)
	served := make(chan struct{})
	go func() {
		defer close(served)
		for i := 0; ; i++ {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				buf := make([]byte, 4096)
				for {
					if _, err := conn.Read(buf); err != nil {
						conn.Close()
						closed <- i
						return
					}
					io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			}()
		}
	}()
	var d net.Dialer
	p := &streamPool{
		dial: func(ctx context.Context, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", ln.Addr().String())
		},
		max:  1,
		idle: 50 * time.Millisecond,
	}
	// Two requests in flight at once need two streams; only one is kept.
	var bodies []io.ReadCloser
	for range 2 {
		req, _ := http.NewRequest("GET", "http://wiki/", nil)
		res, err := p.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		bodies = append(bodies, res.Body)
	}
	for _, b := range bodies {
		io.ReadAll(b)
		b.Close()
	}
	first := testwait.Recv(t, closed, 5*time.Second) // over max: closed at once
	// The kept one is closed by the reaper after the idle time.
	second := testwait.Recv(t, closed, 5*time.Second)
	if first == second {
		t.Fatalf("the same stream closed twice")
	}
	p.mu.Lock()
	kept := len(p.kept["wiki"])
	p.mu.Unlock()
	if kept != 0 {
		t.Fatalf("%d streams still kept after the idle time", kept)
	}
	ln.Close()
	<-served
}

// A request that cannot be sent twice (a POST with a body) never goes out
// on a kept stream the client has closed meanwhile: take checks it first.
// The streams are real yamux streams, which is what the check relies on.
func TestStreamPool_UnreplayableRequestSkipsAClosedStream(t *testing.T) {
	a, b := net.Pipe()
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	edgeSide, err := yamux.Client(a, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer edgeSide.Close()
	clientSide, err := yamux.Server(b, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer clientSide.Close()
	// The client answers one request per stream, then closes it, as when
	// its local service drops an idle connection.
	opened := make(chan struct{}, 4)
	served := make(chan struct{})
	go func() {
		defer close(served)
		for {
			st, err := clientSide.AcceptStream()
			if err != nil {
				return
			}
			opened <- struct{}{}
			req, err := http.ReadRequest(bufio.NewReader(st))
			if err == nil {
				io.Copy(io.Discard, req.Body)
				io.WriteString(st, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}
			st.Close()
		}
	}()
	p := &streamPool{
		dial: func(ctx context.Context, _ string) (net.Conn, error) { return edgeSide.OpenStream() },
		max:  4,
		idle: time.Minute,
	}
	defer p.close()
	roundTrip := func(method string) {
		t.Helper()
		var payload io.Reader
		if method == "POST" {
			payload = strings.NewReader("payload")
		}
		req, _ := http.NewRequest(method, "http://wiki/", payload)
		res, err := p.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if string(body) != "ok" {
			t.Fatalf("%s: got %q", method, body)
		}
	}
	roundTrip("GET")
	testwait.Recv(t, opened, 5*time.Second)
	// Wait for the client's FIN on the kept stream: a yamux stream closed
	// by its peer reads EOF, and keeps reading EOF, without consuming
	// anything the check would see.
	p.mu.Lock()
	kept := p.kept["wiki"][0].conn
	p.mu.Unlock()
	if n, err := kept.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("kept stream: read %d, %v; want the client's EOF", n, err)
	}
	roundTrip("POST")
	testwait.Recv(t, opened, 5*time.Second) // it went out on a new stream
	clientSide.Close()
	<-served
}
