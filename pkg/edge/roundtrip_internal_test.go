package edge

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

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
	kept := len(p.kept)
	p.mu.Unlock()
	if kept != 0 {
		t.Fatalf("%d streams still kept after the idle time", kept)
	}
	ln.Close()
	<-served
}
