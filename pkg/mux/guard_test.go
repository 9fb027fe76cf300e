package mux

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/tunnelhq/tunnel/internal/testwait"
	"github.com/tunnelhq/tunnel/pkg/proto"
)

func frameBytes(typ byte, flags uint16, id, length uint32, body []byte) []byte {
	b := make([]byte, yamuxHeaderSize, yamuxHeaderSize+len(body))
	b[1] = typ
	binary.BigEndian.PutUint16(b[2:], flags)
	binary.BigEndian.PutUint32(b[4:], id)
	binary.BigEndian.PutUint32(b[8:], length)
	return append(b, body...)
}

// legalStream is what a client may send tunneld: its stream, data whose
// bytes look like forbidden frames (bodies must be skipped, not parsed),
// pings, window updates, answers to pings, two GoAways.
func legalStream() []byte {
	var b bytes.Buffer
	b.Write(frameBytes(yamuxTypeWindow, yamuxFlagSYN, 1, 0, nil))
	var fake []byte
	for _, id := range []uint32{3, 5, 7} {
		fake = append(fake, frameBytes(yamuxTypeWindow, yamuxFlagSYN, id, 0, nil)...)
	}
	fake = append(fake, 1, 2, 3, 4)
	b.Write(frameBytes(yamuxTypeData, 0, 1, uint32(len(fake)), fake))
	for i := range 3 {
		b.Write(frameBytes(yamuxTypePing, yamuxFlagSYN, 0, uint32(i), nil))
	}
	b.Write(frameBytes(yamuxTypeWindow, 0, 1, 1000, nil))
	b.Write(frameBytes(yamuxTypePing, yamuxFlagACK, 0, 9, nil))
	b.Write(frameBytes(yamuxTypeData, 0, 2, 0, nil))
	b.Write(frameBytes(yamuxTypeGoAway, 0, 0, 0, nil))
	b.Write(frameBytes(yamuxTypeGoAway, 0, 0, 0, nil))
	goAway := frameBytes(yamuxTypeGoAway, 0, 0, 0, nil)
	b.Write(frameBytes(yamuxTypeData, 0, 1, uint32(len(goAway)), goAway))
	return b.Bytes()
}

// readThrough sends stream through a server-role guard over a real pipe,
// reading with a buffer of size chunk, and returns what came out.
func readThrough(t *testing.T, stream []byte, chunk int) ([]byte, error) {
	t.Helper()
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	go func() {
		c.Write(stream)
		c.Close()
	}()
	g := newGuard(s, true, 0)
	var out bytes.Buffer
	buf := make([]byte, chunk)
	for {
		n, err := g.Read(buf)
		out.Write(buf[:n])
		if err == io.EOF {
			return out.Bytes(), nil
		}
		if err != nil {
			return out.Bytes(), err
		}
	}
}

// The guard follows frames across reads split at every byte boundary, and
// passes every byte on unchanged.
func TestGuard_FramesSplitAnywhere(t *testing.T) {
	stream := legalStream()
	for chunk := 1; chunk <= len(stream); chunk++ {
		got, err := readThrough(t, stream, chunk)
		if err != nil {
			t.Fatalf("reads of %d bytes: %v", chunk, err)
		}
		if !bytes.Equal(got, stream) {
			t.Fatalf("reads of %d bytes: the bytes changed on the way", chunk)
		}
	}
	for _, tt := range []struct {
		name  string
		extra []byte
	}{
		{"second stream", frameBytes(yamuxTypeData, yamuxFlagSYN, 3, 0, nil)},
		{"third goaway", frameBytes(yamuxTypeGoAway, 0, 0, 0, nil)},
		{"bad version", append([]byte{1}, make([]byte, yamuxHeaderSize-1)...)},
		{"unknown type", frameBytes(7, 0, 0, 0, nil)},
	} {
		for _, chunk := range []int{1, 5, 12, 4096} {
			if _, err := readThrough(t, append(legalStream(), tt.extra...), chunk); !errors.Is(err, ErrPeerLimit) {
				t.Errorf("%s, reads of %d bytes: got %v, want ErrPeerLimit", tt.name, chunk, err)
			}
		}
	}
}

// Pings: at most maxPendingPings wait for their answers, and a bucket
// bounds them even when they are answered.
func TestGuard_Pings(t *testing.T) {
	unanswered := bytes.Repeat(frameBytes(yamuxTypePing, yamuxFlagSYN, 0, 1, nil), maxPendingPings+1)
	if _, err := readThrough(t, unanswered, 4096); !errors.Is(err, ErrPeerLimit) {
		t.Fatalf("%d pings never answered: got %v, want ErrPeerLimit", maxPendingPings+1, err)
	}

	// Answered as they come: the bucket still stops a flood.
	c, s := net.Pipe()
	defer c.Close()
	go io.Copy(io.Discard, c)
	g := newGuard(s, false, 0)
	ack := frameBytes(yamuxTypePing, yamuxFlagACK, 0, 1, nil)
	var err error
	n := 0
	for n < 10*pingBurst {
		n++
		copy(g.hdr[:], frameBytes(yamuxTypePing, yamuxFlagSYN, 0, 1, nil))
		if err = g.frame(); err != nil {
			break
		}
		if _, werr := g.Write(ack); werr != nil {
			t.Fatal(werr)
		}
	}
	if !errors.Is(err, ErrPeerLimit) || n > pingBurst+2 {
		t.Fatalf("answered pings: stopped after %d with %v, want ErrPeerLimit after about %d", n, err, pingBurst)
	}
	if p := g.pending.Load(); p != 0 {
		t.Fatalf("%d pings pending after all were answered", p)
	}
}

// Before Accept, a client may send a Hello's worth of bytes, not yamux's
// 256 KiB stream window.
func TestGuard_PreAuthBudget(t *testing.T) {
	body := make([]byte, preAuthBudget)
	stream := append(frameBytes(yamuxTypeWindow, yamuxFlagSYN, 1, 0, nil), frameBytes(yamuxTypeData, 0, 1, uint32(len(body)), body)...)
	if _, err := readThrough(t, stream, 4096); !errors.Is(err, ErrPeerLimit) {
		t.Fatalf("%d bytes before authentication: got %v, want ErrPeerLimit", len(stream), err)
	}
}

// hostileServer is a tunneld we drive by hand: raw yamux on TCP, a Welcome
// for whatever is asked, then whatever the test does.
func hostileServer(t *testing.T, maxStreams int) (*ClientSession, *yamux.Session, net.Conn) {
	t.Helper()
	cc, sc := transports()["tcp"](t)
	ycfg := yamux.DefaultConfig()
	ycfg.LogOutput = io.Discard
	ys, err := yamux.Server(sc, ycfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ys.Close() })
	go func() {
		ctrl, err := ys.AcceptStream()
		if err != nil {
			return
		}
		h, err := proto.ReadAs[*proto.Hello](ctrl)
		if err != nil {
			return
		}
		proto.WriteFrame(ctrl, welcome(h))
	}()
	cfg := testConfig(t)
	cfg.maxStreams = maxStreams
	c, err := Client(context.Background(), cc, hello("wiki"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, ys, sc
}

// A tunneld that opens more streams than ClientConfig.MaxStreams ends its
// session: the client dials its local service for no more than the bound.
func TestClient_HostileServerOpensTooManyStreams(t *testing.T) {
	const max = 8
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var dials atomic.Int32
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			dials.Add(1)
			go func() {
				io.Copy(io.Discard, conn)
				conn.Close()
			}()
		}
	}()
	c, ys, _ := hostileServer(t, max)
	errc := serve(t, context.Background(), c, map[string]string{"wiki": ln.Addr().String()})
	for range 4 * max {
		st, err := ys.OpenStream()
		if err != nil {
			break
		}
		if proto.WriteFrame(st, &proto.StreamHeader{Tunnel: "wiki"}) != nil {
			break
		}
	}
	if err := testwait.Recv(t, errc, 10*time.Second); !errors.Is(err, ErrSessionLost) {
		t.Fatalf("Serve: got %v, want ErrSessionLost", err)
	}
	if n := dials.Load(); n > max {
		t.Fatalf("the client dialled its local service %d times for a server that opened %d streams; want at most %d", n, 4*max, max)
	}
}

// A tunneld that floods pings ends its session; the client is not left
// with a goroutine per ping.
func TestClient_HostileServerPingFlood(t *testing.T) {
	c, _, sc := hostileServer(t, 0)
	errc := serve(t, context.Background(), c, map[string]string{"wiki": "127.0.0.1:1"})
	// Whole frames per Write: the server's yamux is idle meanwhile.
	pings := bytes.Repeat(frameBytes(yamuxTypePing, yamuxFlagSYN, 0, 1, nil), 5000)
	go sc.Write(pings)
	if err := testwait.Recv(t, errc, 10*time.Second); !errors.Is(err, ErrSessionLost) {
		t.Fatalf("Serve: got %v, want ErrSessionLost", err)
	}
	testwait.Recv(t, c.Done(), 10*time.Second)
}

func TestPrintable(t *testing.T) {
	for _, tt := range []struct {
		in   string
		max  int
		want string
	}{
		{"plain reason", 100, "plain reason"},
		{"\x1b[2J\x1b[31mred\x1b[0m", 100, "[2J[31mred[0m"},
		{"line\nbreak\r\x00", 100, "linebreak"},
		{"bidi \u202egnp.exe", 100, "bidi gnp.exe"},
		{"ééééé", 5, "éé…"},
		{"https://wiki.example.com\x1b]0;pwned\x07\x1b[2J\nhttps://evil.example\u202e", 100, "https://wiki.example.com]0;pwned[2Jhttps://evil.example"},
		{"a\r\nb\tc\x00d\x7f\u0085e", 100, "abcde"},
	} {
		if got := Printable(tt.in, tt.max); got != tt.want {
			t.Errorf("Printable(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
		}
	}
}

// loopConn reads the same bytes forever; only Read is used.
type loopConn struct {
	net.Conn
	b   []byte
	off int
}

func (c *loopConn) Read(p []byte) (int, error) {
	n := copy(p, c.b[c.off:])
	c.off = (c.off + n) % len(c.b)
	return n, nil
}

// The guard is on every byte's path: reading bulk data through it must cost
// next to nothing (data bodies are skipped, not parsed) and allocate nothing.
func BenchmarkGuard_ReadBulk(b *testing.B) {
	body := make([]byte, 128<<10)
	frame := append(frameBytes(yamuxTypeData, 0, 2, uint32(len(body)), nil), body...)
	g := newGuard(&loopConn{b: frame}, false, 0)
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := g.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
}
