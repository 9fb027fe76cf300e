package mux

import (
	"io"
	"net"
	"sync"
)

// copyBufSize is the unit of one copy: large enough that a yamux data frame
// carries a useful payload, small enough to keep idle memory low.
const copyBufSize = 32 << 10

var copyBufs = sync.Pool{New: func() any {
	b := make([]byte, copyBufSize)
	return &b
}}

// pipe copies between a stream and a local connection in both directions.
// When one direction ends cleanly it half-closes the other side's write and
// keeps the other direction running; when one fails it closes both so the
// other direction stops too. It returns when both directions are done, with
// the bytes copied stream->local (in) and local->stream (out), having closed
// both connections.
func pipe(stream, local net.Conn) (in, out int64) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		in = copyHalf(local, stream)
	}()
	out = copyHalf(stream, local)
	wg.Wait()
	local.Close()
	stream.Close()
	return in, out
}

// copyHalf copies src to dst, then half-closes dst. On an error it closes
// both, which unblocks the opposite direction.
func copyHalf(dst, src net.Conn) int64 {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	// Hide ReadFrom/WriteTo: *net.TCPConn's ReadFrom falls back to io.Copy
	// with a fresh 32 KiB buffer for a non-TCP source, on every call.
	n, err := io.CopyBuffer(writerOnly{dst}, readerOnly{src}, *bp)
	if err != nil {
		dst.Close()
		src.Close()
		return n
	}
	closeWrite(dst)
	return n
}

type writerOnly struct{ io.Writer }
type readerOnly struct{ io.Reader }

// closeWrite half-closes c: TCP and TLS connections have CloseWrite; closing
// a yamux stream only sends FIN and leaves its read side open.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}
