package mux

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/internal/testwait"
)

// countingConn records the length of each Write that reaches the socket.
type countingConn struct {
	net.Conn
	mu   sync.Mutex
	data [][]byte
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.data = append(c.data, bytes.Clone(p))
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *countingConn) writes() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.data)
}

// wirePair is a TLS connection over a WireConn over a counted TCP socket,
// handshaken, with the plain TLS server end.
func wirePair(t *testing.T) (cli *tls.Conn, wc *wireConn, counted *countingConn, srv *tls.Conn) {
	srvCfg, cliCfg := newTestTLS(t)
	c, s := transports()["tcp"](t)
	counted = &countingConn{Conn: c}
	wc = WireConn(counted).(*wireConn)
	cli = tls.Client(wc, cliCfg)
	srv = tls.Server(s, srvCfg)
	hs := make(chan error, 1)
	go func() { hs <- srv.Handshake() }()
	if err := cli.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := testwait.Recv(t, hs, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cli.Close()
		srv.Close()
	})
	return cli, wc, counted, srv
}

// wholeRecords reports whether b, bytes of a TLS stream, splits into whole
// records.
func wholeRecords(b []byte) bool {
	for len(b) > 0 {
		if len(b) < 5 {
			return false
		}
		n := 5 + (int(b[3])<<8 | int(b[4]))
		if n > len(b) {
			return false
		}
		b = b[n:]
	}
	return true
}

// TestWireConn_FramesLeaveWhole sends data frames larger than a TLS record
// through frameWriter over TLS over a WireConn: the peer must read exactly
// the bytes sent, no frame may be split across writes (so there are at most
// as many writes as frames, where crypto/tls alone makes one per record),
// and every write holds whole TLS records.
func TestWireConn_FramesLeaveWhole(t *testing.T) {
	cli, wc, counted, srv := wirePair(t)
	before := len(counted.writes())

	frames := []int{5, 20 << 10, 100 << 10, maxMergedWrite + 1000, 7, 3 << 10}
	var want []byte
	for _, n := range frames {
		frame := append(yamuxHeader(yamuxTypeData, uint32(n)), make([]byte, n)...)
		rand.Read(frame[yamuxHeaderSize:])
		want = append(want, frame...)
	}
	type result struct {
		b   []byte
		err error
	}
	got := make(chan result, 1)
	go func() {
		b := make([]byte, len(want))
		_, err := io.ReadFull(srv, b)
		got <- result{b, err}
	}()
	w := newFrameWriter(cli)
	if w.wire != wc {
		t.Fatal("frameWriter did not find the WireConn under the TLS connection")
	}
	off := 0
	for _, n := range frames {
		if _, err := w.Write(want[off : off+yamuxHeaderSize]); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(want[off+yamuxHeaderSize : off+yamuxHeaderSize+n]); err != nil {
			t.Fatal(err)
		}
		off += yamuxHeaderSize + n
	}
	r := testwait.Recv(t, got, 10*time.Second)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !bytes.Equal(r.b, want) {
		t.Error("the peer read other bytes than were written")
	}
	if err := wc.waitFlushed(); err != nil {
		t.Fatal(err)
	}
	writes := counted.writes()[before:]
	if len(writes) == 0 || len(writes) > len(frames) {
		t.Errorf("%d frames left in %d writes, want 1 to %d", len(frames), len(writes), len(frames))
	}
	for i, b := range writes {
		if !wholeRecords(b) {
			t.Errorf("write %d of %d bytes splits a TLS record", i, len(b))
		}
	}
}

// TestWireConn_BatchesUnderLoad: frames queued while the flusher is busy
// leave together. The socket's first write is held until many frames are
// queued, so they must go out in far fewer writes than frames.
func TestWireConn_BatchesUnderLoad(t *testing.T) {
	cli, wc, counted, srv := wirePair(t)
	go io.Copy(io.Discard, srv)
	w := newFrameWriter(cli)
	gate := make(chan struct{})
	var once sync.Once
	wc.Conn = &gatedConn{Conn: wc.Conn, gate: gate, once: &once}
	before := len(counted.writes())
	const frames = 100
	for i := range frames {
		w.Write(yamuxHeader(yamuxTypeData, 10))
		w.Write(bytes.Repeat([]byte{byte(i)}, 10))
	}
	close(gate)
	if err := wc.waitFlushed(); err != nil {
		t.Fatal(err)
	}
	if n := len(counted.writes()) - before; n < 1 || n > 2 {
		t.Errorf("%d small frames queued behind one stalled write left in %d writes, want 2 at most", frames, n)
	}
}

// gatedConn holds its first Write until gate closes.
type gatedConn struct {
	net.Conn
	gate chan struct{}
	once *sync.Once
}

func (c *gatedConn) Write(p []byte) (int, error) {
	c.once.Do(func() { <-c.gate })
	return c.Conn.Write(p)
}

// TestWireConn_WriteErrorIsSticky: once the socket fails, frames are
// refused, so yamux ends the session instead of believing it sent them.
func TestWireConn_WriteErrorIsSticky(t *testing.T) {
	cli, wc, counted, _ := wirePair(t)
	w := newFrameWriter(cli)
	counted.Conn.Close() // the socket under the WireConn is gone
	w.Write(yamuxHeader(yamuxTypeData, 3))
	w.Write([]byte("abc"))
	if err := wc.waitFlushed(); err == nil {
		t.Fatal("the flusher wrote to a closed socket without an error")
	}
	w.Write(yamuxHeader(yamuxTypeData, 3))
	if _, err := w.Write([]byte("abc")); err == nil {
		t.Error("Write of a frame after a write error succeeded")
	}
}

// TestWireConn_CloseWritesQueuedFirst: a frame queued just before Close
// (yamux's GoAway, say) still reaches the peer.
func TestWireConn_CloseWritesQueuedFirst(t *testing.T) {
	cli, _, _, srv := wirePair(t)
	w := newFrameWriter(cli)
	body := bytes.Repeat([]byte("x"), 200<<10)
	w.Write(yamuxHeader(yamuxTypeData, uint32(len(body))))
	w.Write(body)
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(srv)
		got <- b
	}()
	if err := cli.Close(); err != nil {
		t.Fatal(err)
	}
	if b := testwait.Recv(t, got, 10*time.Second); len(b) != yamuxHeaderSize+len(body) {
		t.Errorf("peer read %d bytes before EOF, want %d", len(b), yamuxHeaderSize+len(body))
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
