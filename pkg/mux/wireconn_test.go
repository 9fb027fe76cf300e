package mux

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// countingConn counts the Writes that reach the socket.
type countingConn struct {
	net.Conn
	mu     sync.Mutex
	writes int
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes++
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *countingConn) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes
}

// TestWireConn_OneWritePerFrame sends data frames larger than a TLS record
// through frameWriter over TLS over a WireConn: each frame must reach the
// socket in one Write, and the peer must read exactly the bytes sent.
func TestWireConn_OneWritePerFrame(t *testing.T) {
	srvCfg, cliCfg := newTestTLS(t)
	c, s := transports()["tcp"](t)
	counted := &countingConn{Conn: c}
	cli := tls.Client(WireConn(counted), cliCfg)
	srv := tls.Server(s, srvCfg)
	defer cli.Close()
	defer srv.Close()

	type result struct {
		b   []byte
		err error
	}
	frames := []int{5, 20 << 10, 100 << 10, maxMergedWrite + 1000}
	var want []byte
	for _, n := range frames {
		want = append(append(want, yamuxHeader(yamuxTypeData, uint32(n))...), make([]byte, n)...)
	}
	got := make(chan result, 1)
	go func() {
		b := make([]byte, len(want))
		_, err := io.ReadFull(srv, b)
		got <- result{b, err}
	}()
	if err := cli.Handshake(); err != nil {
		t.Fatal(err)
	}
	w := newFrameWriter(cli)
	if w.wire == nil {
		t.Fatal("frameWriter did not find the WireConn under the TLS connection")
	}
	off := 0
	for _, n := range frames {
		body := want[off+yamuxHeaderSize : off+yamuxHeaderSize+n]
		rand.Read(body)
		before := counted.count()
		if _, err := w.Write(want[off : off+yamuxHeaderSize]); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(body); err != nil {
			t.Fatal(err)
		}
		if d := counted.count() - before; d != 1 {
			t.Errorf("frame of %d bytes: %d writes reached the socket, want 1", n, d)
		}
		off += yamuxHeaderSize + n
	}
	r := recvWithin(t, got, 10*time.Second)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !bytes.Equal(r.b, want) {
		t.Error("the peer read other bytes than were written")
	}

	// Writes that are not frames pass straight through, uncorked.
	before := counted.count()
	if _, err := w.Write(yamuxHeader(1, 9)); err != nil {
		t.Fatal(err)
	}
	if d := counted.count() - before; d != 1 {
		t.Errorf("window update: %d writes, want 1", d)
	}
}

// TestWireConn_FlushReportsWriteError: a frame that cannot be written
// fails its Write, so yamux ends the session instead of believing it sent.
func TestWireConn_FlushReportsWriteError(t *testing.T) {
	srvCfg, cliCfg := newTestTLS(t)
	c, s := transports()["tcp"](t)
	cli := tls.Client(WireConn(c), cliCfg)
	srv := tls.Server(s, srvCfg)
	hs := make(chan error, 1)
	go func() { hs <- srv.Handshake() }()
	if err := cli.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := recvWithin(t, hs, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	c.Close() // the socket under the WireConn is gone
	w := newFrameWriter(cli)
	w.Write(yamuxHeader(yamuxTypeData, 3))
	if _, err := w.Write([]byte("abc")); err == nil {
		t.Error("Write of a frame on a closed connection succeeded")
	}
}

// chunkReader returns its chunks one per Read, then EOF.
type chunkReader struct {
	chunks [][]byte
	sizes  []int // len(p) of each Read call
}

func (r *chunkReader) Read(p []byte) (int, error) {
	r.sizes = append(r.sizes, len(p))
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0])
	r.chunks[0] = r.chunks[0][n:]
	if len(r.chunks[0]) == 0 {
		r.chunks = r.chunks[1:]
	}
	return n, nil
}

// TestCopyAdaptive_GrowsForBulkAndShrinksAfter checks the buffer sizes the
// copy reads with: small at first, large once a read fills the small one,
// small again after a short read, and every byte copied in order.
func TestCopyAdaptive_GrowsForBulkAndShrinksAfter(t *testing.T) {
	mk := func(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }
	r := &chunkReader{chunks: [][]byte{
		mk(100, 'a'),            // a request: stays small
		mk(300<<10, 'b'),        // bulk: fills the small buffer, then large ones
		mk(10, 'c'),             // short read: back to small
		mk(smallCopyBuf-1, 'd'), // not full: stays small
	}}
	var want []byte
	for _, c := range r.chunks {
		want = append(want, c...)
	}
	var dst bytes.Buffer
	n, err := copyAdaptive(&dst, r)
	if err != nil || n != int64(len(want)) || !bytes.Equal(dst.Bytes(), want) {
		t.Fatalf("copied %d bytes (err %v), want %d identical bytes", n, err, len(want))
	}
	s, l := smallCopyBuf, largeCopyBuf
	// 100 | 8K (fills small) | 128K 128K 36K (bulk rest, 300K-8K) | 10
	// (read with the large buffer, then back to small) | 8K-1 | EOF
	wantSizes := []int{s, s, l, l, l, l, s, s}
	if len(r.sizes) != len(wantSizes) {
		t.Fatalf("read sizes %v, want %v", r.sizes, wantSizes)
	}
	for i := range wantSizes {
		if r.sizes[i] != wantSizes[i] {
			t.Fatalf("read sizes %v, want %v", r.sizes, wantSizes)
		}
	}
}

type shortWriter struct{}

func (shortWriter) Write(p []byte) (int, error) { return len(p) / 2, nil }

type failingReader struct{ err error }

func (r failingReader) Read([]byte) (int, error) { return 0, r.err }

func TestCopyAdaptive_Errors(t *testing.T) {
	if _, err := copyAdaptive(shortWriter{}, bytes.NewReader([]byte("hello"))); err != io.ErrShortWrite {
		t.Errorf("short write: got %v, want io.ErrShortWrite", err)
	}
	boom := io.ErrClosedPipe
	if _, err := copyAdaptive(io.Discard, failingReader{boom}); err != boom {
		t.Errorf("read error: got %v, want %v", err, boom)
	}
}
