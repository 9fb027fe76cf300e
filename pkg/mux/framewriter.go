package mux

import (
	"encoding/binary"
	"net"
	"sync"
)

// yamux's frame header: version, type, flags (2), stream id (4), length (4).
const (
	yamuxHeaderSize = 12
	yamuxTypeData   = 0
)

// maxMergedWrite bounds the buffer one merged write borrows.
const maxMergedWrite = 64 << 10

var mergeBufs = sync.Pool{New: func() any {
	b := make([]byte, 0, maxMergedWrite)
	return &b
}}

// frameWriter sits between yamux and the TLS connection and merges each data
// frame's header with its body. yamux's send loop writes the 12-byte header
// and the body as two Writes; on a *tls.Conn each Write is its own TLS record
// and its own syscall, so every frame cost an extra record (29 bytes of
// overhead for 12 of payload), an extra seal and an extra syscall. Profiles of
// bulk transfers showed that write path as the largest single cost.
//
// A data header with a non-zero length is held back; the next Write is sent
// together with it when its length is the one the header announces (always,
// with yamux's send loop, which is the only writer). Anything else is written
// as it came, after the held header, so the bytes on the wire are exactly
// yamux's. Like the connection under it, a frameWriter is not safe for
// concurrent Writes; yamux writes from one goroutine.
type frameWriter struct {
	net.Conn
	wire    *wireConn // under the TLS connection, if any: corked per frame
	hdr     [yamuxHeaderSize]byte
	pending bool
}

// FrameWriter wraps conn, the TLS connection a yamux session is about to
// run on, as Client and Server do for tunnel sessions: each yamux data frame
// then leaves as one TLS record and, when the TLS runs over a WireConn, in
// one write(2) with the frames queued behind it. tunneld's node links
// (package peer) use it so that a forwarded stream's extra hop costs what
// the first hop does. Give the result to yamux only: like conn, it is not
// safe for concurrent Writes.
func FrameWriter(conn net.Conn) net.Conn { return newFrameWriter(conn) }

func newFrameWriter(conn net.Conn) *frameWriter {
	w := &frameWriter{Conn: conn, wire: corker(conn)}
	if w.wire != nil {
		w.wire.batch()
	}
	return w
}

func (w *frameWriter) Write(p []byte) (int, error) {
	if w.pending && w.wire != nil {
		w.wire.cork()
		n, err := w.write(p)
		if ferr := w.wire.flush(); err == nil && ferr != nil {
			return 0, ferr
		}
		return n, err
	}
	return w.write(p)
}

func (w *frameWriter) write(p []byte) (int, error) {
	if w.pending {
		w.pending = false
		want := binary.BigEndian.Uint32(w.hdr[8:])
		if uint32(len(p)) == want {
			return w.writeMerged(p)
		}
		if _, err := w.Conn.Write(w.hdr[:]); err != nil {
			return 0, err
		}
	}
	if len(p) == yamuxHeaderSize && p[1] == yamuxTypeData && binary.BigEndian.Uint32(p[8:]) > 0 {
		copy(w.hdr[:], p)
		w.pending = true
		return len(p), nil
	}
	return w.Conn.Write(p)
}

// writeMerged writes the held header and body in one Write (or, for a body
// larger than maxMergedWrite, the header with the body's start, then the
// rest).
func (w *frameWriter) writeMerged(body []byte) (int, error) {
	bp := mergeBufs.Get().(*[]byte)
	defer mergeBufs.Put(bp)
	head := min(len(body), maxMergedWrite-yamuxHeaderSize)
	buf := append(append((*bp)[:0], w.hdr[:]...), body[:head]...)
	if _, err := w.Conn.Write(buf); err != nil {
		return 0, err
	}
	if head == len(body) {
		return len(body), nil
	}
	n, err := w.Conn.Write(body[head:])
	return head + n, err
}
