package mux

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/internal/testwait"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// silentService is a local TCP service that accepts connections and never
// reads, writes or closes them until the test ends: the local service the
// drain must not wait for. Each accepted connection is reported on the
// channel.
func silentService(t *testing.T) (string, <-chan struct{}) {
	t.Helper()
	accepted := make(chan struct{}, 16)
	return localService(t, func(net.Conn) { accepted <- struct{}{} }), accepted
}

// TestClient_DrainEndsAtTimeoutWhateverTheLocalService: a stream whose
// visitor side has finished (tunneld half-closed it) but whose local service
// never answers nor closes keeps the local->stream copy waiting on the local
// connection. Serve must still return by DrainTimeout, not wait for the
// local service: the drain cuts the local connections too.
func TestClient_DrainEndsAtTimeoutWhateverTheLocalService(t *testing.T) {
	for _, closeOnFIN := range []bool{false, true} {
		name := "half-closed"
		if closeOnFIN {
			name = "close-on-fin"
		}
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.DrainTimeout = 200 * time.Millisecond
			c, s, err := sessionWith(t, transports()["tcp"], hello("wiki"), nil, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			addr, accepted := silentService(t)
			ctx, cancel := context.WithCancel(context.Background())
			errc := serve(t, ctx, c, map[string]string{"wiki": addr})

			// Two streams: one the visitor half-closed (the local->stream
			// copy waits on the silent service), one still open both ways.
			for _, halfClose := range []bool{true, false} {
				st, err := s.Open(context.Background(), &proto.StreamHeader{Tunnel: "wiki", CloseOnFIN: closeOnFIN})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { st.Close() })
				testwait.Recv(t, accepted, 5*time.Second)
				if halfClose {
					if _, err := st.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
						t.Fatal(err)
					}
					closeWrite(st)
				}
			}

			cancel()
			// The local service never closes: only the drain timeout ends Serve.
			if err := testwait.Recv(t, errc, 5*time.Second); err != nil {
				t.Fatalf("Serve after cancel: got %v, want nil", err)
			}
			c.Close()
		})
	}
}
