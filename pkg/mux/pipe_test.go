package mux

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

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
