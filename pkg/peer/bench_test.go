package peer

import (
	"context"
	"io"
	"net"
	"testing"

	"github.com/tunnelhq/tunnel/internal/testnet"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

// BenchmarkLinks: what the node link itself costs, a forwarded stream to a
// loopback service: small is one 1 KiB echo per stream (a small request),
// bulk is 1 MiB through one stream per op.
func BenchmarkLinks(b *testing.B) {
	sink := testnet.Serve(b, func(c net.Conn) {
		defer c.Close()
		io.Copy(io.Discard, c)
		c.Write([]byte{1})
	})
	echo := testnet.Echo(b)
	open := services(map[string]string{"sink": sink, "echo": echo})
	own := startNode(b, "b", open, nil)
	fwd := startNode(b, "a", nil, nil)
	b.Run("small", func(b *testing.B) {
		msg := make([]byte, 1024)
		b.ReportAllocs()
		for b.Loop() {
			conn, err := fwd.Open(context.Background(), "b", own.addr, &Request{Header: proto.StreamHeader{Tunnel: "echo"}})
			if err != nil {
				b.Fatal(err)
			}
			conn.Write(msg)
			conn.Close()
			if n, err := io.Copy(io.Discard, conn); err != nil || n != int64(len(msg)) {
				b.Fatalf("echo: %d bytes, %v", n, err)
			}
		}
	})
	b.Run("bulk", func(b *testing.B) {
		buf := make([]byte, 1<<20)
		b.SetBytes(int64(len(buf)))
		conn, err := fwd.Open(context.Background(), "b", own.addr, &Request{Header: proto.StreamHeader{Tunnel: "sink"}})
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := conn.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		conn.Close()
		io.Copy(io.Discard, conn)
	})
}
